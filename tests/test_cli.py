"""Tests for the jaxprune CLI: user errors exit 2 cleanly; tiny train -> evaluate -> finetune."""
import json
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

from jaxprune import checkpoint, cli

REPO = pathlib.Path(__file__).resolve().parents[1]


def _run(argv, capsys):
    rc = cli.main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.mark.parametrize("argv, needle", [
    (["train", "--model", "nosuchnet", "--dataset", "mnist", "--out", "x"], "unknown model"),
    (["train", "--model", "lenet300", "--dataset", "nosuchdata", "--out", "x"],
     "unknown dataset"),
    (["evaluate", "--checkpoint", "/nonexistent/run"], "does not exist"),
    (["finetune", "--checkpoint", "/nonexistent/run", "--out", "x"], "does not exist"),
    (["train", "--model", "lenet300", "--dataset", "mnist", "--out", "x", "--epochs", "abc"],
     "invalid int value"),
    (["train", "--model", "lenet300", "--dataset", "mnist", "--out", "x", "--bogus"],
     "unrecognized arguments"),
    (["frobnicate"], "invalid choice"),
    (["train", "--dataset", "mnist", "--out", "x"], "--model"),
])
def test_user_errors_exit_2(argv, needle, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc, out, err = _run(argv, capsys)
    assert rc == 2
    assert needle in err
    assert "Traceback" not in err
    assert out == ""
    assert not (tmp_path / "x").exists() or needle != "unknown model"


def test_missing_dataset_files_exit_2(capsys, tmp_path):
    rc, out, err = _run(["train", "--model", "lenet300", "--dataset", "fashion_mnist",
                         "--data-dir", str(tmp_path), "--out", str(tmp_path / "o")], capsys)
    assert rc == 2 and "not available" in err and "Traceback" not in err


def test_checkpoint_dir_without_model_exit_2(capsys, tmp_path):
    rc, _, err = _run(["evaluate", "--checkpoint", str(tmp_path)], capsys)
    assert rc == 2 and "model.json" in err


@pytest.mark.slow
def test_console_entry_point_subprocess():
    p = subprocess.run([sys.executable, "-m", "jaxprune", "evaluate", "--checkpoint",
                        "/nonexistent/run"], cwd=REPO, capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 2
    assert "checkpoint directory does not exist" in p.stderr
    assert "Traceback" not in p.stderr and p.stdout == ""
    h = subprocess.run([sys.executable, "-m", "jaxprune", "--help"], cwd=REPO,
                       capture_output=True, text=True, timeout=120)
    assert h.returncode == 0 and "finetune" in h.stdout and "--limit-train" not in h.stdout


def test_register_command_adds_subcommand(capsys):
    called = {}

    def add(p):
        p.add_argument("--ratio", type=float, required=True)

    def run(args):
        called["ratio"] = args.ratio
        return 0

    try:
        cli.register_command("prune-test", "test-only", add, run)
        assert cli.main(["prune-test", "--ratio", "0.5"]) == 0
        assert called == {"ratio": 0.5}
    finally:
        cli.COMMANDS[:] = [c for c in cli.COMMANDS if c.name != "prune-test"]


def test_default_recipe_lenet300():
    from jaxprune.train import default_config
    cfg = default_config("lenet300")
    assert cfg.optimizer == "adam" and cfg.batch_size == 128 and cfg.epochs <= 20


@pytest.mark.slow
def test_train_evaluate_finetune_end_to_end(tmp_path, capsys, data_dir):
    out = tmp_path / "dense"
    common = ["--data-dir", str(data_dir), "--limit-train", "1024", "--limit-test", "300",
              "--batch-size", "64", "--no-progress"]
    rc, stdout, err = _run(["train", "--model", "lenet300", "--dataset", "mnist", "--epochs",
                            "2", "--out", str(out), "--devices", "2", *common], capsys)
    assert rc == 0, err
    results = json.loads((out / "results.json").read_text())
    assert json.loads(stdout.strip().splitlines()[-1]) == results
    assert results["params"] == 266610 and results["test_n"] == 300
    assert results["flops"] == 2 * (784 * 300 + 300 * 100 + 100 * 10)
    assert results["test_accuracy"] > 0.6          # 2 small epochs, well above chance
    config = json.loads((out / "config.json").read_text())
    assert config["dataset"] == "mnist" and config["train_config"]["epochs"] == 2
    assert (out / "metrics.jsonl").exists() and (out / "checkpoints" / "2").is_dir()

    rc, stdout, err = _run(["evaluate", "--checkpoint", str(out), "--data-dir", str(data_dir),
                            "--limit-test", "300"], capsys)
    assert rc == 0, err
    lines = stdout.strip().splitlines()
    assert len(lines) == 1
    ev = json.loads(lines[0])
    for key in ("accuracy", "loss", "params", "nonzero_params", "flops"):
        assert key in ev
    assert ev["accuracy"] == pytest.approx(results["test_accuracy"], abs=1e-9)
    assert ev["loss"] == pytest.approx(results["test_loss"], rel=1e-5)

    # a PRUNED model written by save_model (smaller widths, sparse) -> finetune --keep-zeros
    model, variables, meta = checkpoint.load_model(out)
    keep0, keep1 = np.arange(0, 300, 3), np.arange(0, 100, 2)
    p = jax.tree.map(np.asarray, variables["params"])
    small = {
        "dense_0": {"kernel": p["dense_0"]["kernel"][:, keep0], "bias": p["dense_0"]["bias"][keep0]},
        "dense_1": {"kernel": p["dense_1"]["kernel"][keep0][:, keep1],
                    "bias": p["dense_1"]["bias"][keep1]},
        "head": {"kernel": p["head"]["kernel"][keep1], "bias": p["head"]["bias"]},
    }
    small["dense_0"]["kernel"] = np.where(np.abs(small["dense_0"]["kernel"]) < 0.02, 0.0,
                                          small["dense_0"]["kernel"]).astype(np.float32)
    zeros = small["dense_0"]["kernel"] == 0
    assert zeros.sum() > 1000
    pruned_dir = tmp_path / "pruned"
    checkpoint.save_model(pruned_dir, model.clone(widths=(100, 50)), {"params": small},
                          meta={"dataset": "mnist"})
    ft = tmp_path / "ft"
    rc, stdout, err = _run(["finetune", "--checkpoint", str(pruned_dir), "--epochs", "1",
                            "--keep-zeros", "--out", str(ft), *common], capsys)
    assert rc == 0, err
    res = json.loads((ft / "results.json").read_text())
    assert res["widths"] == [100, 50]
    assert res["params"] == 784 * 100 + 100 + 100 * 50 + 50 + 50 * 10 + 10
    fm, fv, fmeta = checkpoint.load_model(ft)
    assert fm.widths == (100, 50) and fmeta["dataset"] == "mnist"
    k = np.asarray(fv["params"]["dense_0"]["kernel"])
    assert np.all(k[zeros] == 0) and np.any(k[~zeros] != small["dense_0"]["kernel"][~zeros])


def _tiny_checkpoint(directory, **meta):
    from jaxprune import models
    model = models.get_model("lenet300", widths=(12, 8))
    variables = model.init(jax.random.key(0), np.zeros((1, 28, 28, 1), np.float32))
    checkpoint.save_model(directory, model, variables,
                          meta={"dataset": "mnist", "input_shape": [28, 28, 1], **meta})
    return model, variables


def test_checkpoint_whose_model_json_disagrees_with_its_arrays_exit_2(tmp_path, capsys):
    _tiny_checkpoint(tmp_path / "m")
    doc = json.loads((tmp_path / "m" / "model.json").read_text())
    doc["model"]["widths"] = [13, 8]
    (tmp_path / "m" / "model.json").write_text(json.dumps(doc))
    rc, out, err = _run(["evaluate", "--checkpoint", str(tmp_path / "m")], capsys)
    assert rc == 2 and "do not match" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_evaluate_of_nan_weights_prints_strict_json(tmp_path, capsys, data_dir):
    model, variables = _tiny_checkpoint(tmp_path / "ok")
    bad = jax.tree.map(lambda a: np.full(np.shape(a), np.nan, np.float32), variables)
    checkpoint.save_model(tmp_path / "nan", model, bad,
                          meta={"dataset": "mnist", "input_shape": [28, 28, 1]})
    rc, out, err = _run(["evaluate", "--checkpoint", str(tmp_path / "nan"), "--data-dir",
                         str(data_dir), "--limit-test", "50"], capsys)
    assert rc == 0, err
    doc = json.loads(out, parse_constant=lambda c: pytest.fail(f"non-strict JSON: {c}"))
    assert doc["loss"] is None and "loss" in doc["non_finite"]


def test_prune_a_user_module_from_the_command_line(tmp_path, capsys):
    import flax.linen as nn
    model = nn.Sequential([nn.Dense(16), nn.relu, nn.Dense(12), nn.relu, nn.Dense(3)])
    variables = model.init(jax.random.key(0), np.zeros((1, 6), np.float32))
    checkpoint.save_model(tmp_path / "user", model, variables, meta={"input_shape": [6]})
    rc, out, err = _run(["prune", "--checkpoint", str(tmp_path / "user"), "--ratio", "0.5",
                         "--round-to", "2", "--out", str(tmp_path / "small")], capsys)
    assert rc == 0, err
    report = json.loads(out)
    small, small_vars, meta = checkpoint.load_model(tmp_path / "small")
    assert report["neurons"] and all(w % 2 == 0 for _, w in report["neurons"].values())
    x = np.ones((2, 6), np.float32)
    assert np.shape(small.apply(small_vars, x)) == (2, 3)
    assert meta["input_shape"] == [6]
    rc, _, err = _run(["prune", "--checkpoint", str(tmp_path / "user"), "--ratio", "0.5",
                       "--apply-kwargs", "[1]", "--out", str(tmp_path / "x")], capsys)
    assert rc == 2 and "JSON object" in err


@pytest.mark.slow
def test_finetune_killed_mid_run_resumes_to_the_uninterrupted_result(tmp_path, data_dir):
    """SIGKILL a `jaxprune finetune` once its first epoch is checkpointed (the second is under
    way), rerun the same command: the final weights equal an uninterrupted run's."""
    import signal
    import time
    _tiny_checkpoint(tmp_path / "m")
    env = {**__import__("os").environ, "JAXPRUNE_DATA_DIR": str(data_dir)}

    def command(out):
        return [sys.executable, "-m", "jaxprune", "finetune", "--checkpoint",
                str(tmp_path / "m"), "--epochs", "3", "--limit-train", "4096", "--limit-test",
                "100", "--batch-size", "32", "--no-progress", "--out", str(out), "--resume"]

    subprocess.run(command(tmp_path / "straight"), cwd=REPO, env=env, check=True,
                   capture_output=True, timeout=600)
    proc = subprocess.Popen(command(tmp_path / "killed"), cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first = tmp_path / "killed" / "checkpoints" / "1"
    deadline = time.time() + 300
    while not first.is_dir() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert not (tmp_path / "killed" / "model.json").exists()
    subprocess.run(command(tmp_path / "killed"), cwd=REPO, env=env, check=True,
                   capture_output=True, timeout=600)
    _, a, _ = checkpoint.load_model(tmp_path / "straight")
    _, b, _ = checkpoint.load_model(tmp_path / "killed")
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
