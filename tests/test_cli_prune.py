"""``jaxprune prune``: a saved model in, a smaller saved model out that evaluate/finetune accept."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxprune import checkpoint, cli, surgery
from jaxprune.models import LeNet300100


@pytest.fixture(scope="module")
def dense_dir(tmp_path_factory):
    model = LeNet300100(widths=(40, 20))
    v = model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))
    d = tmp_path_factory.mktemp("dense")
    checkpoint.save_model(d, model, v, meta={"dataset": "mnist"})
    return d, model, v


def test_prune_writes_a_smaller_model_that_matches_the_report(dense_dir, tmp_path, capsys):
    d, model, v = dense_dir
    out = tmp_path / "pruned"
    rc = cli.main(["prune", "--checkpoint", str(d), "--ratio", "0.5", "--seed", "3",
                   "--out", str(out)])
    printed = json.loads(capsys.readouterr().out)
    assert rc == 0
    small, sv, meta = checkpoint.load_model(out)
    assert small.widths == tuple(printed["widths_after"]) and small.widths != model.widths
    assert meta["dataset"] == "mnist" and meta["prune"]["method"] == "coreset"
    assert abs(printed["achieved_ratio"] - 0.5) <= 0.01
    assert json.loads((out / "results.json").read_text())["params_after"] == printed["params_after"]
    # the saved network computes what the pruned (masked, re-weighted) original computes
    res = __import__("jaxprune").prune(v, jax.random.key(3), 0.5, model=model)
    x = jax.random.normal(jax.random.key(1), (4, 28, 28, 1))
    masked = surgery.mask(v, res.groups, res.kept, res.scales)
    np.testing.assert_allclose(small.apply(sv, x), model.apply(masked, x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("argv, needle", [
    (["--ratio", "1.0"], "ratio must be in [0, 1)"),
    (["--ratio", "-0.2"], "ratio must be in [0, 1)"),
    (["--ratio", "abc"], "ratio must be a number"),
    (["--ratio", "0.5", "--method", "nope"], "invalid choice"),
    (["--ratio", "0.5", "--method", "random", "--projection", "jl"], "only apply to --method coreset"),
])
def test_prune_user_errors_exit_2(dense_dir, tmp_path, capsys, argv, needle):
    d, _, _ = dense_dir
    rc = cli.main(["prune", "--checkpoint", str(d), "--out", str(tmp_path / "o"), *argv])
    assert rc == 2 and needle in capsys.readouterr().err


def test_prune_missing_checkpoint_exit_2(tmp_path, capsys):
    rc = cli.main(["prune", "--checkpoint", str(tmp_path / "nope"), "--ratio", "0.5",
                   "--out", str(tmp_path / "o")])
    assert rc == 2 and "does not exist" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("method", ["frank_wolfe", "frank_wolfe_momentum"])
def test_frank_wolfe_methods_run_from_the_command_line(dense_dir, tmp_path, capsys, data_dir,
                                                       method):
    d, model, _ = dense_dir
    out = tmp_path / "fw"
    rc = cli.main(["prune", "--checkpoint", str(d), "--method", method, "--ratio", "0.5",
                   "--fw-epochs", "1", "--fw-sparsity", "0.8", "--data-dir", str(data_dir),
                   "--limit-train", "256", "--out", str(out)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    small, sv, _ = checkpoint.load_model(out)
    report = json.loads(captured.out)
    assert small.widths != model.widths and abs(report["achieved_ratio"] - 0.5) < 0.02
    assert small.apply(sv, jnp.zeros((2, 28, 28, 1))).shape == (2, 10)
    rc = cli.main(["prune", "--checkpoint", str(d), "--method", "coreset", "--ratio", "0.5",
                   "--fw-epochs", "1", "--out", str(tmp_path / "x")])
    assert rc == 2 and "only apply to --method frank_wolfe" in capsys.readouterr().err


def test_frank_wolfe_without_training_data_is_a_clear_api_error(dense_dir):
    _, model, v = dense_dir
    with pytest.raises(ValueError, match="train_ds"):
        __import__("jaxprune").prune(v, jax.random.key(0), 0.5, method="frank_wolfe",
                                     model=model)
