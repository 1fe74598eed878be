"""The decoder-only byte LM: both APIs, causality, training with sequence labels and integer
inputs, bits per byte, ``max_steps``, grouped-query pruning and the command line."""
import gzip
import json
import math
import os
import warnings

import jax
import numpy as np
import pytest
from flax import nnx

import jaxprune
from jaxprune import _nnx, cli, models, train
from jaxprune.data import ArrayDataset
from jaxprune.models.lm import LM, NnxLM

L = 16
TINY = dict(dim=32, num_layers=2, num_heads=4, num_kv_heads=2, mlp_dim=48, max_len=L)


def _tokens(n=3, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, L)).astype(np.int32)


def _repetitive(n=64, period=5, seed=0) -> ArrayDataset:
    """Windows of a byte string that repeats every ``period`` bytes, labels one byte on."""
    pattern = np.random.default_rng(seed).integers(0, 256, period)
    stream = np.resize(pattern, n * L + 1).astype(np.int32)
    return ArrayDataset(stream[:-1].reshape(n, L), stream[1:].reshape(n, L), 256, "toy")


def _noisy(variables, seed=1):
    """``variables`` moved off their initial values (norm scales are all 1 at init)."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda x: x + 0.3 * rng.standard_normal(x.shape).astype(x.dtype),
                        variables)


@pytest.fixture(scope="module")
def lm_vars():
    lm = LM(**TINY)
    return lm, _noisy(jax.jit(lm.init)(jax.random.key(0), _tokens(1)))


def test_linen_and_nnx_share_shapes_names_and_outputs(lm_vars):
    lm, v = lm_vars
    tokens = _tokens()
    logits = jax.jit(lm.apply)(v, tokens)
    assert logits.shape == (3, L, 256) and np.isfinite(logits).all()
    module = NnxLM(**TINY, rngs=nnx.Rngs(0))
    assert jax.tree.map(np.shape, _nnx.variables_of(module)) == jax.tree.map(np.shape, v)
    np.testing.assert_allclose(_nnx.with_variables(module, v)(tokens), logits,
                               rtol=1e-4, atol=1e-4)
    tied = LM(**TINY, tie_embeddings=True)
    tv = tied.init(jax.random.key(0), tokens)
    assert "head" not in tv["params"] and tied.apply(tv, tokens).shape == (3, L, 256)


def test_logits_at_a_position_ignore_later_tokens(lm_vars):
    lm, v = lm_vars
    tokens = _tokens(2)
    t = L // 2
    changed = tokens.copy()
    changed[:, t] = (changed[:, t] + 1) % 256
    a, b = lm.apply(v, tokens), lm.apply(v, changed)
    np.testing.assert_allclose(a[:, :t], b[:, :t], rtol=1e-5, atol=1e-5)
    assert np.abs(np.asarray(a[:, t:] - b[:, t:])).max() > 1e-3


@pytest.mark.parametrize("bad, match", [
    (dict(num_heads=4, num_kv_heads=3), "multiple of num_kv_heads"),
    (dict(dim=30), "head_dim"),
    (dict(num_layers=0), "positive integers"),
])
def test_bad_sizes_are_one_value_error(bad, match):
    with pytest.raises(ValueError, match=match):
        NnxLM(**{**TINY, **bad}, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=match):
        LM(**{**TINY, **bad}).init(jax.random.key(0), _tokens(1))


def test_float_or_too_long_inputs_are_refused(lm_vars):
    lm, v = lm_vars
    with pytest.raises(ValueError, match="integer token ids"):
        lm.apply(v, np.zeros((1, L), np.float32))
    with pytest.raises(ValueError, match="exceeds max_len"):
        lm.apply(v, np.zeros((1, L + 1), np.int32))


def test_fit_lowers_the_next_byte_loss_and_evaluate_reports_bits_per_byte():
    ds = _repetitive()
    lm = LM(**TINY)
    cfg = train.TrainConfig(learning_rate=1e-2, epochs=2, batch_size=16, log_every=0)
    before = train.evaluate(lm, lm.init(jax.random.key(0), ds.images[:1]), ds)
    res = train.fit(lm, ds, cfg, progress=False, devices=1)
    after = train.evaluate(lm, res.variables, ds)
    assert res.state["params"]["embed"]["embedding"].dtype == np.float32
    assert after["loss"] < 0.5 * before["loss"]
    assert after["n"] == len(ds) and after["positions"] == len(ds) * L
    for ev in (before, after):
        assert math.isclose(ev["bits_per_byte"], ev["loss"] / math.log(2), rel_tol=1e-9)


def test_image_labels_have_no_bits_per_byte():
    import flax.linen as nn
    ds = ArrayDataset(np.ones((5, 3), np.float32), np.zeros(5, np.int32), 2, "img")
    net = nn.Dense(2)
    ev = train.evaluate(net, net.init(jax.random.key(0), ds.images[:1]), ds)
    assert set(ev) == {"accuracy", "loss", "n"}


def test_distillation_from_a_sequence_teacher_trains():
    ds = _repetitive(32)
    lm = LM(**TINY)
    teacher = train.fit(lm, ds, train.TrainConfig(learning_rate=1e-2, epochs=1, batch_size=16,
                                                  log_every=0), progress=False, devices=1)
    cfg = train.TrainConfig(learning_rate=1e-2, epochs=1, batch_size=16, log_every=0,
                            distill_alpha=1.0, seed=1)
    res = train.fit(lm, ds, cfg, teacher=(lm, teacher.variables), progress=False, devices=1)
    assert all(np.isfinite(h["loss"]) and h["loss"] >= 0 for h in res.history)


def test_max_steps_stops_mid_epoch_and_a_resume_adds_nothing(tmp_path):
    ds = _repetitive(64)  # 4 batches of 16 per epoch
    lm = LM(**TINY)
    cfg = train.TrainConfig(epochs=3, batch_size=16, max_steps=6, log_every=0)
    assert train.total_steps(cfg, 4) == 6
    res = train.fit(lm, ds, cfg, out_dir=tmp_path, progress=False, devices=1)
    assert int(res.state["step"]) == 6 and [h["step"] for h in res.history] == [4, 6]
    again = train.fit(lm, ds, cfg, out_dir=tmp_path, progress=False, devices=1)
    assert int(again.state["step"]) == 6 and len(again.history) == 2
    jax.tree.map(np.testing.assert_array_equal, again.variables, res.variables)
    with pytest.raises(ValueError, match="max_steps"):
        train.TrainConfig(max_steps=0)


def test_a_max_steps_run_squeezes_its_whole_schedule_into_its_steps():
    cfg = train.TrainConfig(learning_rate=1.0, epochs=100, schedule="cosine", warmup_epochs=10,
                            max_steps=40)
    lr = train.make_schedule(cfg, 10)  # 1000 steps unbounded, 40 run: warmup 4, cosine 36
    assert float(lr(4)) == pytest.approx(1.0) and float(lr(2)) == pytest.approx(0.5)
    assert float(lr(4 + 18)) == pytest.approx(0.5, abs=1e-6)
    assert float(lr(40)) == pytest.approx(0.0, abs=1e-6)
    plain = train.make_schedule(train.TrainConfig(epochs=4, warmup_epochs=1,
                                                  schedule="cosine"), 10)
    assert float(plain(10)) == pytest.approx(1e-3)  # unbounded: the warmup is one epoch


def test_gqa_pruning_removes_whole_kv_groups_and_the_smaller_model_matches(lm_vars):
    lm, v = lm_vars
    tokens = _tokens()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jaxprune.PruneWarning)
        res = jaxprune.prune(v, 0, 0.3, method="l1_norm", model=lm,
                             example_inputs=np.zeros((1, L), np.int32))
    heads_shrank = units_shrank = False
    for i in range(TINY["num_layers"]):
        attn = res.params["params"][f"block_{i}"]["attn"]
        kv, heads = attn["key"]["kernel"].shape[1], attn["query"]["kernel"].shape[1]
        assert attn["value"]["kernel"].shape[1] == kv and attn["out"]["kernel"].shape[0] == heads
        assert heads == kv * TINY["num_heads"] // TINY["num_kv_heads"]  # whole groups
        heads_shrank |= kv < TINY["num_kv_heads"]
        mlp = res.params["params"][f"block_{i}"]["mlp"]
        units = mlp["gate"]["kernel"].shape[1]
        assert mlp["up"]["kernel"].shape[1] == units == mlp["down"]["kernel"].shape[0]
        units_shrank |= units < TINY["mlp_dim"]
    assert heads_shrank and units_shrank
    small = res.model(lm)
    np.testing.assert_allclose(small.apply(res.params, tokens), lm.apply(res.masked, tokens),
                               rtol=2e-4, atol=2e-4)
    module = _nnx.with_variables(NnxLM(**TINY, rngs=nnx.Rngs(0)), v)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jaxprune.PruneWarning)
        nres = jaxprune.prune(module, 0, 0.3, method="l1_norm", example_inputs=tokens[:1])
    attn = nres.module.block_0.attn
    assert attn.num_kv_heads == nres.params["params"]["block_0"]["attn"]["key"]["kernel"].shape[1]
    assert attn.num_heads == attn.num_kv_heads * TINY["num_heads"] // TINY["num_kv_heads"]
    np.testing.assert_allclose(nres.module(tokens), nres.masked(tokens), rtol=2e-4, atol=2e-4)


def test_the_registry_knows_the_lm_and_its_token_input():
    assert models.default_input_dtype("lm") == "int32"
    assert models.default_input_dtype("lenet300") == "float32"
    x = models.example_input("lm", 2)
    assert x.shape == (2,) + models.default_input_shape("lm") and x.dtype == np.int32
    assert models.get_model("lm", num_classes=7).vocab_size == 7
    module = models.get_model("lm_nnx", **TINY)
    assert models.model_config(module)["name"] == "lm_nnx"
    assert train.default_config("lm").schedule == "cosine"


@pytest.mark.parametrize("argv", [
    ["train", "--model", "lm", "--dataset", "x", "--out", "o", "--max-steps", "0"],
    ["prune", "--checkpoint", "c", "--out", "o", "--ratio", "2"],
    ["evaluate", "--checkpoint", "c", "--no-such-flag"],
])
def test_a_bad_command_line_value_is_one_error_line(argv, capsys):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"jaxprune {argv[0]}: error: "), err


def test_help_still_prints_usage(capsys):
    assert cli.main(["train", "--help"]) == 0
    assert "--max-steps" in capsys.readouterr().out


def _corpus(root, seed=0):
    """A tiny text corpus folder ``root/toytext`` with its three splits."""
    folder = root / "toytext"
    folder.mkdir()
    rng = np.random.default_rng(seed)
    words = [b"def ", b"return ", b"self", b"(x)", b":\n    ", b"import ", b"np\n"]
    for split, n in (("train", 4000), ("valid", 1200), ("test", 1200)):
        text = b"".join(words[i] for i in rng.integers(0, len(words), n // 4))
        with gzip.open(folder / f"{split}.txt.gz", "wb") as f:
            f.write(text)
    return "toytext"


@pytest.mark.slow  # three jaxprune commands: trains, evaluates, prunes
def test_cli_trains_evaluates_and_prunes_an_lm(tmp_path, capsys):
    name = _corpus(tmp_path)
    data = ["--dataset", name, "--data-dir", str(tmp_path)]
    out, pruned = str(tmp_path / "run"), str(tmp_path / "pruned")
    assert cli.main(["train", "--model", "lm", *data, "--max-steps", "3", "--batch-size", "8",
                     "--no-progress", "--out", out]) == 0
    results = json.loads(capsys.readouterr().out)
    with open(os.path.join(out, "metrics.jsonl")) as f:
        steps = [json.loads(line)["step"] for line in f]
    assert steps[-1] == 3 and results["test_bits_per_byte"] > 0
    assert cli.main(["evaluate", "--checkpoint", out, "--data-dir", str(tmp_path)]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert math.isclose(ev["bits_per_byte"], ev["loss"] / math.log(2), rel_tol=1e-9)
    assert ev["n"] > 0 and ev["bits_per_byte"] > 0
    assert cli.main(["prune", "--checkpoint", out, "--method", "l1_norm", "--ratio", "0.2",
                     "--out", pruned]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["achieved_ratio"] > 0
    assert cli.main(["evaluate", "--checkpoint", pruned, "--data-dir", str(tmp_path)]) == 0
    small = json.loads(capsys.readouterr().out)
    assert small["params"] < ev["params"] and small["n"] == ev["n"]
    assert math.isclose(small["bits_per_byte"], small["loss"] / math.log(2), rel_tol=1e-9)
    # depth: one of the LM's blocks removed whole, on block influence over training windows
    shallow = str(tmp_path / "shallow")
    assert cli.main(["prune", "--checkpoint", out, "--depth", "1", "--data-batch", "8",
                     "--data-dir", str(tmp_path), "--out", shallow]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["units_removed"] == 1 and report["params_after"] < report["params_before"]
    assert cli.main(["evaluate", "--checkpoint", shallow, "--data-dir", str(tmp_path)]) == 0
    assert json.loads(capsys.readouterr().out)["params"] == report["params_after"]
    # hidden size (opt-in, approximate): a quarter of the residual stream, its error reported
    narrow = str(tmp_path / "narrow")
    assert cli.main(["prune", "--checkpoint", out, "--hidden", "0.25", "--round-to", "8",
                     "--data-batch", "8", "--data-dir", str(tmp_path), "--out", narrow]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["approximate"] is True and report["kl"] >= 0
    assert report["params_after"] < report["params_before"] and report["data_batch"] == 8
    assert cli.main(["evaluate", "--checkpoint", narrow, "--data-dir", str(tmp_path)]) == 0
    assert json.loads(capsys.readouterr().out)["params"] == report["params_after"]
    for argv in (["--ratio", "0.2", "--depth", "1"], ["--depth", "1", "--hidden", "0.25"], []):
        assert cli.main(["prune", "--checkpoint", out, *argv, "--out", str(tmp_path / "x")]) == 2
        assert capsys.readouterr().err.strip().endswith(
            "give one of --ratio (channels), --depth (whole blocks) and --hidden "
            "(residual-stream channels)")
