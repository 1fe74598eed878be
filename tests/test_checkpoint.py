"""Tests for jaxprune.checkpoint: pruned models round-trip through a fresh process."""
import json
import os
import pathlib
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from jaxprune import checkpoint, models

REPO = pathlib.Path(__file__).resolve().parents[1]

_RESTORE = textwrap.dedent("""
    import json, sys
    import jax, numpy as np
    from jaxprune import checkpoint, models
    out = {}
    for name in sys.argv[2:]:
        d = sys.argv[1] + "/" + name
        model, variables, meta = checkpoint.load_model(d)
        x = np.load(d + "/x.npy")
        logits = np.asarray(jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, x))
        np.save(d + "/restored_logits.npy", logits)
        out[name] = {"config": models.model_config(model), "meta": meta,
                     "collections": sorted(variables), "devices": jax.device_count()}
    print(json.dumps(out))
""")


def _jit_init(model, key, x):
    """Random variables of the right shapes without compiling ``init`` (eval_shape only)."""
    shapes = jax.eval_shape(lambda k, x: model.init(k, x), key, x)
    rng = np.random.default_rng(int(jax.random.randint(key, (), 0, 1000)))
    return jax.tree.map(lambda s: (0.3 * rng.standard_normal(s.shape)).astype(s.dtype), shapes)


def _jit_apply(model, variables, x):
    return np.asarray(jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, x))


def _tiny_resnet():
    # a "pruned" CIFAR ResNet: 1 block per stage, small inner widths; has BatchNorm stats
    return models.get_model("resnet56", num_blocks=(1, 1, 1), widths=(3, 5, 2),
                            stage_widths=(4, 8, 8))


def _perturbed_batch_stats(bs, seed):
    rng = np.random.default_rng(seed)
    return jax.tree.map(
        lambda a: np.abs(np.asarray(a)) + rng.uniform(0.1, 0.5, a.shape).astype(a.dtype), bs)


@pytest.mark.slow
def test_pruned_models_round_trip_in_fresh_process(tmp_path):
    cases = {
        "lenet300_pruned": (models.get_model("lenet300", widths=(37, 11)), (28, 28, 1)),
        "resnet_pruned": (_tiny_resnet(), (8, 8, 3)),
    }
    expected = {}
    for name, (model, shape) in cases.items():
        x = np.random.default_rng(1).normal(size=(5,) + shape).astype(np.float32)
        variables = dict(_jit_init(model, jax.random.PRNGKey(2), x))
        if "batch_stats" in variables:
            variables["batch_stats"] = _perturbed_batch_stats(variables["batch_stats"], 3)
        d = tmp_path / name
        checkpoint.save_model(d, model, variables, meta={"dataset": "mnist", "note": name})
        np.save(d / "x.npy", x)
        expected[name] = (model, _jit_apply(model, variables, x),
                          sorted(variables))
    # fresh interpreter, ONE device (the saver had 4): restore needs no template
    env = dict(os.environ, XLA_FLAGS="")
    p = subprocess.run([sys.executable, "-c", _RESTORE, str(tmp_path), *cases], env=env,
                       cwd=REPO, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    info = json.loads(p.stdout.strip().splitlines()[-1])
    for name, (model, logits, collections) in expected.items():
        assert info[name]["devices"] == 1
        assert info[name]["config"] == models.model_config(model)
        assert models.model_from_config(info[name]["config"]) == model
        assert info[name]["meta"] == {"dataset": "mnist", "note": name}
        assert info[name]["collections"] == collections
        restored = np.load(tmp_path / name / "restored_logits.npy")
        assert np.all(np.isfinite(logits)) and np.std(logits) > 1e-3
        np.testing.assert_allclose(restored, logits, rtol=1e-5, atol=1e-6)
    assert info["resnet_pruned"]["collections"] == ["batch_stats", "params"]


def test_load_model_in_process_and_overwrite(tmp_path):
    model = models.get_model("lenet5", widths=(3, 5, 20, 7))
    v1 = _jit_init(model, jax.random.PRNGKey(0), np.zeros((1, 28, 28, 1), np.float32))
    v2 = _jit_init(model, jax.random.PRNGKey(1), np.zeros((1, 28, 28, 1), np.float32))
    checkpoint.save_model(tmp_path, model, v1)
    checkpoint.save_model(tmp_path, model, v2["params"], meta={"k": 1})  # bare params accepted
    m, v, meta = checkpoint.load_model(tmp_path)
    assert m == model and meta == {"k": 1}
    assert m.widths == (3, 5, 20, 7)
    for a, b in zip(jax.tree.leaves(v["params"]), jax.tree.leaves(v2["params"])):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert v["params"]["conv_0"]["kernel"].shape == (5, 5, 1, 3)


def test_missing_checkpoint_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        checkpoint.load_model(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="model.json"):
        checkpoint.load_model(tmp_path / "empty")


def test_an_interrupted_save_over_a_model_leaves_no_model(tmp_path, monkeypatch):
    """Saving over an existing model and dying while the arrays are written leaves a
    directory that load_model / evaluate refuse, never old metadata over new arrays."""
    model = models.get_model("lenet300", widths=(8, 4))
    v = model.init(jax.random.key(0), np.zeros((1, 28, 28, 1), np.float32))
    checkpoint.save_model(tmp_path / "m", model, v)
    assert checkpoint.is_model_dir(tmp_path / "m")

    def dies(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint.ocp.StandardCheckpointer, "save", dies)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save_model(tmp_path / "m", model.clone(widths=(6, 4)), v)
    assert not checkpoint.is_model_dir(tmp_path / "m")
    with pytest.raises(FileNotFoundError, match="model.json"):
        checkpoint.load_model(tmp_path / "m")
