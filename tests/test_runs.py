"""An output directory holds one whole run; no silent no-ops or NaN.

``--out`` is refused when it is a file or holds another run (unless ``--overwrite``), a run
killed while writing never loads, a second writer is refused by the lock, ``--resume``
refuses a different run in one line, hyperparameters are checked at parse time, a prune that
removes nothing warns, and ``fit`` stops on a non-finite loss naming the step. SIGTERM or
SIGINT stops ``train`` after a step with the whole epochs checkpointed, and ``--resume`` then
ends with the uninterrupted run's weights.
"""
import fcntl
import json
import os
import signal
import subprocess
import sys
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxprune import _signals, checkpoint, cli, data, runs, train, workflows
from jaxprune.models import LeNet300100


@pytest.fixture(scope="module")
def dense(tmp_path_factory):
    model = LeNet300100(widths=(12, 8))
    d = tmp_path_factory.mktemp("dense")
    checkpoint.save_model(d, model, model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1))),
                          meta={"dataset": "mnist", "input_shape": [28, 28, 1]})
    return str(d)


def _prune(capsys, dense, out, *extra):
    rc = cli.main(["prune", "--checkpoint", dense, "--ratio", "0.5", "--out", str(out), *extra])
    out_text, err = capsys.readouterr()
    return rc, err.strip()


def _one_error(err: str, needle: str) -> None:
    lines = err.splitlines()
    assert len(lines) == 1 and "error:" in lines[0] and needle in lines[0], err


def test_out_is_one_whole_run(dense, tmp_path, capsys):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    rc, err = _prune(capsys, dense, a_file)
    assert rc == 2
    _one_error(err, "is an existing file")
    out = tmp_path / "run"
    assert _prune(capsys, dense, out)[0] == 0
    assert json.loads((out / "run.json").read_text())["complete"] is True
    rc, err = _prune(capsys, dense, out, "--seed", "1")
    assert rc == 2
    _one_error(err, "already holds another run; pass --overwrite")
    (out / "stale.txt").write_text("from an older run")
    assert _prune(capsys, dense, out, "--seed", "1", "--overwrite")[0] == 0
    assert not (out / "stale.txt").exists()
    assert checkpoint.load_model(out)[2]["prune"]["method"] == "coreset"
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    rc, err = _prune(capsys, dense, foreign, "--overwrite")
    assert rc == 2 and (foreign / "notes.txt").exists()
    _one_error(err, "not a jaxprune run")


def _kill_after(monkeypatch, step: str) -> None:
    """Interrupt the process (``KeyboardInterrupt``) right after it writes ``step``: a JSON
    file of that name, the saved model (``save_model``) or a training checkpoint."""
    def killing(owner, name, when):
        original = getattr(owner, name)

        def write(*args, **kwargs):
            original(*args, **kwargs)
            if when(args):
                raise KeyboardInterrupt

        monkeypatch.setattr(owner, name, write)

    killing(checkpoint, "save_model", lambda args: step == "save_model")
    killing(checkpoint, "save_training_state", lambda args: step == "training checkpoint")
    killing(workflows, "write_json", lambda args: str(args[0]).endswith(step))


@pytest.mark.parametrize("step", ["save_model", "config.json", "results.json"])
def test_a_prune_killed_while_writing_never_loads(dense, tmp_path, capsys, monkeypatch, step):
    out = tmp_path / "run"
    assert _prune(capsys, dense, out)[0] == 0            # a previous complete run
    _kill_after(monkeypatch, step)
    rc, err = _prune(capsys, dense, out, "--seed", "2", "--overwrite")
    assert rc == 130 and "interrupted" in err
    monkeypatch.undo()
    with pytest.raises(ValueError, match="unfinished run"):
        checkpoint.load_model(out)
    rc, err = _prune(capsys, dense, out, "--seed", "2")
    assert rc == 2
    _one_error(err, "holds an unfinished run; pass --overwrite")
    rc, err = _prune(capsys, dense, tmp_path / "next", "--checkpoint", str(out))
    assert rc == 2
    _one_error(err, "unfinished run")
    assert _prune(capsys, dense, out, "--seed", "2", "--overwrite")[0] == 0
    assert checkpoint.load_model(out)[2]["prune"]["method"] == "coreset"


def test_a_second_writer_is_refused_while_the_first_runs(dense, tmp_path, capsys):
    out = tmp_path / "run"
    lock = os.open(tmp_path / ".run.lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)          # "the first writer"
        rc, err = _prune(capsys, dense, out)
        assert rc == 2 and not out.exists()
        _one_error(err, "another process is writing")
    finally:
        os.close(lock)
    assert _prune(capsys, dense, out)[0] == 0


def test_resume_is_the_same_run_or_refused_in_one_line(tmp_path):
    out = tmp_path / "run"
    ident = {"command": "train", "dataset": "mnist", "limit_train": 256,
             "parent_fingerprint": None}
    with runs.output_run(out, ident):
        (out / "checkpoints").mkdir()
    for key, value in (("dataset", "fashion_mnist"), ("limit_train", 512),
                       ("parent_fingerprint", "ab12")):
        with pytest.raises(runs.RunError, match=f"its {key} \\(recorded") as err:
            with runs.output_run(out, {**ident, key: value}, resume=True):
                pass
        assert "\n" not in str(err.value)
    with runs.output_run(out, ident, resume=True):
        assert (out / "checkpoints").is_dir()                     # continued, not cleared
    with pytest.raises(RuntimeError):                             # a failed fresh run leaves
        with runs.output_run(tmp_path / "failed", ident):          # nothing behind
            raise RuntimeError("boom")
    assert not (tmp_path / "failed").exists()


@pytest.mark.parametrize("argv, needle", [
    (["train", "--lr", "nan"], "--lr"),
    (["train", "--lr", "-1"], "> 0"),
    (["train", "--label-smoothing", "2"], "--label-smoothing"),
    (["train", "--momentum", "inf"], "--momentum"),
    (["train", "--weight-decay", "-0.1"], "--weight-decay"),
    (["train", "--log-every", "-1"], "--log-every"),
    (["finetune", "--distill-temperature", "nan"], "--distill-temperature"),
    (["prune", "--ratio", "0.5", "--fw-step-size", "nan"], "--fw-step-size"),
    (["train", "--overwrite", "--resume"], "not allowed with"),
])
def test_hyperparameters_are_checked_at_parse_time(argv, needle, capsys, tmp_path):
    need = {"train": ["--model", "lenet300", "--dataset", "mnist", "--out", str(tmp_path / "o")],
            "finetune": ["--checkpoint", "x", "--out", str(tmp_path / "o")],
            "prune": ["--checkpoint", "x", "--out", str(tmp_path / "o")]}[argv[0]]
    assert cli.main([argv[0], *need, *argv[1:]]) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err and not (tmp_path / "o").exists()


def test_a_cache_dir_that_is_a_file_is_one_line(tmp_path, monkeypatch, capsys):
    (tmp_path / "f").write_text("x")
    monkeypatch.setenv("JAXPRUNE_CACHE_DIR", str(tmp_path / "f"))
    assert cli.main(["evaluate", "--checkpoint", str(tmp_path)]) == 2
    _one_error(capsys.readouterr().err.strip(), "JAXPRUNE_CACHE_DIR")


@pytest.mark.parametrize("flags, reason", [
    (["--ratio", "1e-6"], "less than one channel"),
    (["--ratio", "0.5", "--min-width", "50"], "--min-width 50 is at least every group's width"),
    (["--ratio", "0.5", "--round-to", "64"], "--round-to 64"),
])
def test_a_prune_that_removes_nothing_says_so(dense, tmp_path, capsys, flags, reason):
    rc = cli.main(["prune", "--checkpoint", dense, "--out", str(tmp_path / "o"), *flags])
    err = capsys.readouterr().err
    assert rc == 0
    assert "jaxprune prune: warning: the prune removed nothing" in err and reason in err


def _nan_dataset():
    rng = np.random.default_rng(0)
    images = rng.standard_normal((64, 4, 4, 1)).astype(np.float32)
    images[37, 1, 2, 0] = np.nan                                  # one NaN pixel
    return data.ArrayDataset(images, rng.integers(0, 3, 64).astype(np.int32), 3, "nan")


class _Tiny(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        return nn.Dense(3)(x.reshape((x.shape[0], -1)))


def test_fit_refuses_training_data_that_holds_nan():
    config = train.TrainConfig(epochs=1, batch_size=8)
    with pytest.raises(ValueError, match="training data .* NaN/inf values, first in example 37"):
        train.fit(_Tiny(), _nan_dataset(), config, progress=False)


@pytest.mark.parametrize("log_every", [0, 3])
def test_fit_stops_on_a_non_finite_loss_naming_the_step(tmp_path, log_every):
    ds = _nan_dataset()
    ds = data.ArrayDataset(np.nan_to_num(ds.images), ds.labels, 3, "clean")
    variables = _Tiny().init(jax.random.key(0), jnp.zeros((1, 4, 4, 1)))
    variables = jax.tree.map(lambda a: np.asarray(a).copy(), variables)
    variables["params"]["Dense_0"]["kernel"][5, 1] = np.inf       # a weight gone bad
    config = train.TrainConfig(epochs=2, batch_size=8, log_every=log_every)
    with pytest.raises(ValueError, match=r"non-finite \(nan or inf\) at step 1 \(epoch 1\)"):
        train.fit(_Tiny(), ds, config, variables=variables, out_dir=tmp_path / "o",
                  progress=False)
    assert not (tmp_path / "o" / "checkpoints" / "1").exists()    # the NaN epoch is not saved


@pytest.mark.slow
def test_train_killed_resumes_only_as_the_same_run(tmp_path, capsys, monkeypatch, data_dir):
    out = tmp_path / "run"
    argv = ["train", "--model", "lenet300", "--dataset", "mnist", "--epochs", "1",
            "--batch-size", "64", "--limit-train", "256", "--limit-test", "100",
            "--no-progress", "--out", str(out)]
    save_model = checkpoint.save_model

    def killed(*args, **kwargs):
        save_model(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint, "save_model", killed)
    assert cli.main(argv) == 130
    monkeypatch.undo()
    capsys.readouterr()
    with pytest.raises(ValueError, match="unfinished"):
        checkpoint.load_model(out)
    assert cli.main(argv) == 2
    _one_error(capsys.readouterr().err.strip(), "--resume")
    assert cli.main([*argv, "--resume", "--limit-train", "128"]) == 2
    _one_error(capsys.readouterr().err.strip(), "limit_train")
    assert cli.main([*argv, "--resume"]) == 0
    capsys.readouterr()
    assert checkpoint.load_model(out)[2]["dataset"] == "mnist"


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _same_weights(a, b) -> None:
    """The saved models in ``a`` and ``b`` hold equal arrays."""
    va, vb = checkpoint.load_model(a)[1], checkpoint.load_model(b)[1]
    assert jax.tree.structure(va) == jax.tree.structure(vb)
    for x, y in zip(jax.tree.leaves(va), jax.tree.leaves(vb)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _finetune_argv(dense, out):
    return ["finetune", "--checkpoint", dense, "--epochs", "2", "--batch-size", "64",
            "--limit-train", "256", "--limit-test", "100", "--no-progress", "--out", str(out)]


@pytest.fixture(scope="module")
def finetuned(dense, tmp_path_factory):
    """An uninterrupted fine-tune of ``dense``."""
    out = tmp_path_factory.mktemp("finetuned") / "run"
    assert cli.main(_finetune_argv(dense, out)) == 0
    return out


@pytest.mark.slow
@pytest.mark.parametrize("step", ["config.json", "training checkpoint", "save_model",
                                  "results.json"])
def test_a_finetune_killed_while_writing_never_loads_and_resumes_to_the_same_run(
        dense, finetuned, tmp_path, capsys, monkeypatch, step):
    out = tmp_path / "run"
    argv = _finetune_argv(dense, out)
    assert cli.main([*argv, "--lr", "0.5"]) == 0                # a previous complete run
    _kill_after(monkeypatch, step)
    assert cli.main([*argv, "--overwrite"]) == 130
    monkeypatch.undo()
    assert "interrupted" in capsys.readouterr().err
    with pytest.raises(ValueError, match="unfinished run"):     # neither run loads
        checkpoint.load_model(out)
    assert cli.main(argv) == 2
    assert "holds an unfinished run" in capsys.readouterr().err
    assert cli.main([*argv, "--resume"]) == 0                   # the new run, whole
    capsys.readouterr()
    _same_weights(out, finetuned)


def _train_argv(out, epochs):
    return ["train", "--model", "lenet300", "--dataset", "mnist", "--epochs", str(epochs),
            "--batch-size", "64", "--limit-train", "512", "--limit-test", "100",
            "--no-progress", "--out", str(out)]


_EPOCHS = 40


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_dir):
    """An uninterrupted ``train`` run of ``_EPOCHS`` epochs."""
    out = tmp_path_factory.mktemp("trained") / "run"
    assert cli.main(_train_argv(out, _EPOCHS)) == 0
    return out


def _epoch_lines(out) -> int:
    with open(out / "metrics.jsonl") as f:
        return sum(json.loads(line)["kind"] == "epoch" for line in f)


@pytest.mark.slow  # starts a training process
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_train_after_a_checkpoint_and_resume_ends_as_one_run(
        trained, tmp_path, capsys, sig):
    out = tmp_path / "run"
    argv = _train_argv(out, _EPOCHS)
    proc = subprocess.Popen([sys.executable, "-m", "jaxprune", *argv], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 300
        while not (out / "checkpoints" / "1").is_dir() and time.time() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, "the run ended before the signal"
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err
    lines = err.strip().splitlines()
    assert f"{sig.name} received" in err and "interrupted" in lines[-1] and "--resume" in lines[-1]
    assert "Traceback" not in err
    saved = max(int(p.name) for p in (out / "checkpoints").iterdir() if p.name.isdigit())
    assert saved == _epoch_lines(out) < _EPOCHS        # every whole epoch is checkpointed
    assert checkpoint.read_run_json(out)["complete"] is False
    with pytest.raises(ValueError, match="unfinished run"):
        checkpoint.load_model(out)
    assert cli.main([*argv, "--resume"]) == 0
    capsys.readouterr()
    assert _epoch_lines(out) == _EPOCHS
    _same_weights(out, trained)


@pytest.mark.slow  # three fits
def test_a_sigterm_in_fit_stops_after_the_epoch_checkpoint_and_a_rerun_continues(tmp_path):
    """The signal arrives between steps (from a callback): ``fit`` raises ``Stopped`` with the
    epoch checkpointed, restores the signal handlers, and a second ``fit`` into the same
    ``out_dir`` ends with the uninterrupted run's weights."""
    ds = _nan_dataset()
    ds = data.ArrayDataset(np.nan_to_num(ds.images), ds.labels, 3, "clean")
    config = train.TrainConfig(epochs=3, batch_size=8)
    before = signal.getsignal(signal.SIGTERM)

    def terminate(epoch, _result):
        if epoch == 1:
            os.kill(os.getpid(), signal.SIGTERM)

    with pytest.raises(_signals.Stopped, match="SIGTERM after 1 whole epoch") as stopped:
        train.fit(_Tiny(), ds, config, out_dir=tmp_path / "o", callbacks=[terminate],
                  progress=False)
    assert isinstance(stopped.value, KeyboardInterrupt)
    assert signal.getsignal(signal.SIGTERM) is before
    assert sorted(p.name for p in (tmp_path / "o" / "checkpoints").iterdir()
                  if p.name.isdigit()) == ["1"]
    resumed = train.fit(_Tiny(), ds, config, out_dir=tmp_path / "o", progress=False)
    whole = train.fit(_Tiny(), ds, config, progress=False)
    assert len(resumed.history) == 3
    for a, b in zip(jax.tree.leaves(resumed.variables), jax.tree.leaves(whole.variables)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
