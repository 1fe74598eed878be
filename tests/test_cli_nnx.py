"""NNX models by name on the command line: the registered twins (``lenet300_nnx``,
``lenet5_nnx``, ``vit_nnx``) train, prune, fine-tune and evaluate through the CLI exactly as
their Linen twins do, and their checkpoints come back as smaller ``nnx.Module`` objects in a
fresh process."""
import json
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest
from flax import nnx

import jaxprune
from jaxprune import _nnx, checkpoint, cli, models

pytestmark = pytest.mark.slow   # trains nets through the CLI, starts processes

COMMON = ["--limit-train", "1024", "--limit-test", "500", "--batch-size", "64",
          "--no-progress"]


def _cli(argv, capsys):
    rc = cli.main([*argv])
    out, err = capsys.readouterr()
    assert rc == 0, err
    return json.loads(out.strip().splitlines()[-1])


def _twin_outputs(nnx_module, linen_model, x):
    """(NNX output, Linen twin's output on the NNX module's arrays)."""
    nnx_module.eval()
    return (np.asarray(nnx_module(x)),
            np.asarray(linen_model.apply(_nnx.variables_of(nnx_module), x)))


@pytest.mark.parametrize("name, linen", [("lenet300_nnx", models.LeNet300100()),
                                         ("lenet5_nnx", models.LeNet5())])
def test_nnx_twins_compute_what_the_linen_models_compute(name, linen):
    module = models.get_model(name, rngs=nnx.Rngs(3))
    x = np.asarray(jax.random.normal(jax.random.key(0), (4, 28, 28, 1)))
    a, b = _twin_outputs(module, linen, x)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    cfg = models.model_config(module)
    assert cfg["name"] == name and models.linen_twin(name) in models.MODELS
    assert models.model_config(models.model_from_config(cfg)) == cfg


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_dir):
    """``lenet300_nnx`` trained for one epoch by ``jaxprune train``, and the same arrays
    saved as the Linen ``lenet300``."""
    root = tmp_path_factory.mktemp("nnx_cli")
    rc = cli.main(["train", "--model", "lenet300_nnx", "--dataset", "mnist", "--epochs", "1",
                   "--out", str(root / "nnx"), "--data-dir", str(data_dir), *COMMON])
    assert rc == 0
    module, variables, meta = checkpoint.load_model(root / "nnx")
    checkpoint.save_model(root / "linen", models.LeNet300100(), variables, meta=meta)
    return root


def test_train_writes_an_nnx_checkpoint(trained, capsys, data_dir):
    module, variables, meta = checkpoint.load_model(trained / "nnx")
    assert isinstance(module, models.NnxLeNet300100)
    results = json.loads((trained / "nnx" / "results.json").read_text())
    assert results["model"] == "lenet300_nnx" and results["params"] == 266610
    assert results["test_accuracy"] > 0.6
    ev = _cli(["evaluate", "--checkpoint", str(trained / "nnx"), "--limit-test", "500"], capsys)
    assert ev["accuracy"] == pytest.approx(results["test_accuracy"], abs=1e-9)
    twin = _cli(["evaluate", "--checkpoint", str(trained / "linen"), "--limit-test", "500"],
                capsys)
    assert twin["accuracy"] == ev["accuracy"] and twin["flops"] == ev["flops"]


_RESTORE = """
import sys, numpy as np
from jaxprune import checkpoint
m, _, _ = checkpoint.load_model(sys.argv[1])
m.eval()
np.save(sys.argv[1] + "/y.npy", np.asarray(m(np.load(sys.argv[1] + "/x.npy"))))
print(type(m).__name__, m.dense_0.out_features, m.dense_1.in_features)
"""


@pytest.mark.parametrize("method", ["coreset", "l1_norm"])
def test_prune_gives_the_linen_twins_channels_and_a_smaller_module(trained, tmp_path, capsys,
                                                                   method):
    argv = ["--ratio", "0.6", "--method", method, "--seed", "2"]
    a = _cli(["prune", "--checkpoint", str(trained / "nnx"), "--out", str(tmp_path / "n"),
              *argv], capsys)
    b = _cli(["prune", "--checkpoint", str(trained / "linen"), "--out", str(tmp_path / "l"),
              *argv], capsys)
    assert a["neurons"] == b["neurons"] and a["params_after"] == b["params_after"]
    small, small_vars, _ = checkpoint.load_model(tmp_path / "n")
    linen, linen_vars, _ = checkpoint.load_model(tmp_path / "l")
    assert small.dense_0.out_features == a["neurons"]["dense_0"][1] < 300
    x = np.asarray(jax.random.normal(jax.random.key(1), (3, 28, 28, 1)))
    small.eval()
    np.testing.assert_allclose(small(x), linen.apply(linen_vars, x), rtol=1e-5, atol=1e-5)

    # the same prune from Python, and the checkpoint read back in a fresh process
    dense, _, _ = checkpoint.load_model(trained / "nnx")
    res = jaxprune.prune(dense, jax.random.key(2), 0.6, method=method,
                         input_shape=(28, 28, 1))
    res.module.eval()
    np.save(tmp_path / "n" / "x.npy", x)
    p = subprocess.run([sys.executable, "-c", _RESTORE, str(tmp_path / "n")],
                       capture_output=True, text=True, timeout=300, env=dict(os.environ))
    assert p.returncode == 0, p.stderr[-3000:]
    width = str(a["neurons"]["dense_0"][1])
    assert p.stdout.split() == ["NnxLeNet300100", width, width]
    np.testing.assert_allclose(np.load(tmp_path / "n" / "y.npy"), res.module(x), rtol=1e-6,
                               atol=1e-6)


def test_finetune_of_a_pruned_nnx_checkpoint_equals_its_linen_twin(trained, tmp_path, capsys):
    for kind in ("nnx", "linen"):
        _cli(["prune", "--checkpoint", str(trained / kind), "--out", str(tmp_path / kind),
              "--ratio", "0.5"], capsys)
        _cli(["finetune", "--checkpoint", str(tmp_path / kind), "--out",
              str(tmp_path / f"{kind}_ft"), "--epochs", "1", "--teacher", str(trained / kind),
              *COMMON], capsys)
    a = json.loads((tmp_path / "nnx_ft" / "results.json").read_text())
    b = json.loads((tmp_path / "linen_ft" / "results.json").read_text())
    assert a["params"] == b["params"] < 266610
    assert a["test_accuracy"] == pytest.approx(b["test_accuracy"], abs=2e-3)
    va = checkpoint.load_model(tmp_path / "nnx_ft")[1]["params"]
    vb = checkpoint.load_model(tmp_path / "linen_ft")[1]["params"]
    for x, y in zip(jax.tree.leaves(va), jax.tree.leaves(vb)):
        np.testing.assert_allclose(x, y, rtol=1e-4, atol=2e-5)


def test_unstructured_prune_keeps_its_zeros_through_finetune(trained, tmp_path, capsys):
    rep = _cli(["prune", "--checkpoint", str(trained / "nnx"), "--out", str(tmp_path / "m"),
                "--ratio", "0.7", "--method", "magnitude"], capsys)
    assert rep["kind"] == "weights"
    _cli(["finetune", "--checkpoint", str(tmp_path / "m"), "--out", str(tmp_path / "f"),
          "--epochs", "1", *COMMON], capsys)
    before = checkpoint.load_model(tmp_path / "m")[1]["params"]["dense_0"]["kernel"]
    after, _, _ = checkpoint.load_model(tmp_path / "f")
    kernel = np.asarray(after.dense_0.kernel[...])
    zeros = np.asarray(before) == 0
    assert zeros.mean() > 0.5 and np.all(kernel[zeros] == 0)
    assert np.any(kernel[~zeros] != np.asarray(before)[~zeros])


def test_vit_nnx_loses_whole_heads_on_the_command_line(tmp_path, capsys, data_dir):
    _cli(["train", "--model", "vit_nnx", "--dataset", "mnist", "--epochs", "1", "--out",
          str(tmp_path / "v"), "--data-dir", str(data_dir), "--limit-train", "256",
          "--limit-test", "100", "--no-progress"], capsys)
    rep = _cli(["prune", "--checkpoint", str(tmp_path / "v"), "--out", str(tmp_path / "p"),
                "--ratio", "0.5", "--method", "l1_norm"], capsys)
    small, _, _ = checkpoint.load_model(tmp_path / "p")
    heads = [small.block_0.attn.num_heads, small.block_1.attn.num_heads]
    assert min(heads) < 4 and rep["params_after"] < rep["params_before"]
    assert small.block_0.attn.head_dim == 8   # whole heads removed, each head's width kept
    ev = _cli(["evaluate", "--checkpoint", str(tmp_path / "p"), "--limit-test", "100"], capsys)
    assert ev["params"] == rep["params_after"] and ev["model"] == "vit_nnx"


def test_unregistered_nnx_modules_are_refused_by_save_model(tmp_path):
    class Mine(nnx.Module):
        def __init__(self):
            self.fc = nnx.Linear(3, 2, rngs=nnx.Rngs(0))

    with pytest.raises(ValueError, match="save_nnx"):
        checkpoint.save_model(tmp_path, Mine())
    assert not pathlib.Path(tmp_path / "model.json").exists()
