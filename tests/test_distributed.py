"""Multi-process data parallelism on JAX's own runtime: two local CPU processes (gloo
collectives) train, resume after SIGKILL and fine-tune to the result of one process with two
devices; each process reads only its rows of every batch."""
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from jaxprune import checkpoint, data, distributed

pytestmark = pytest.mark.slow   # trains nets, runs scripts or starts processes

REPO = pathlib.Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- in-process

@pytest.mark.parametrize("kwargs, needle", [
    ({"coordinator": "127.0.0.1:1234"}, "together"),
    ({"coordinator": "nohost", "num_processes": 2, "process_id": 0}, "HOST:PORT"),
    ({"coordinator": "h:1", "num_processes": 2, "process_id": 2}, "process_id"),
    ({"coordinator": "h:1", "num_processes": 2, "process_id": 0, "auto": True}, "not both"),
])
def test_initialize_rejects_bad_arguments(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        distributed.initialize(**kwargs)


def test_single_process_needs_no_initialization():
    assert distributed.initialize() == (0, 1)
    assert distributed.shard() == (0, 1) and distributed.is_main()


@pytest.mark.parametrize("count", [2, 4])
@pytest.mark.parametrize("augment", [None, "crop_flip"])
def test_shards_of_a_batch_make_up_the_global_batch(count, augment):
    rng = np.random.default_rng(0)
    ds = data.ArrayDataset(rng.normal(size=(40, 8, 8, 1)).astype(np.float32),
                           np.arange(40, dtype=np.int32), 10, "mnist")
    whole = list(data.batches(ds, 8, seed=3, epoch=1, augment=augment))
    parts = [list(data.batches(ds, 8, seed=3, epoch=1, augment=augment, shard=(i, count)))
             for i in range(count)]
    for k, (x, y) in enumerate(whole):
        np.testing.assert_array_equal(np.concatenate([p[k][0] for p in parts]), x)
        np.testing.assert_array_equal(np.concatenate([p[k][1] for p in parts]), y)


def test_shard_must_divide_the_batch():
    ds = data.ArrayDataset(np.zeros((8, 2, 2, 1), np.float32), np.zeros(8, np.int32), 10, "x")
    with pytest.raises(ValueError, match="divisible"):
        next(data.batches(ds, 6, shard=(0, 4)))


def test_lazy_images_read_only_the_rows_asked_for(data_dir):
    eager = data.load("mnist", "test", data_dir)
    lazy = data.load("mnist", "test", data_dir, lazy=True)
    assert isinstance(lazy.images, data.LazyImages)
    assert lazy.images.shape == eager.images.shape and lazy.images.dtype == np.float32
    rows = np.array([17, 3, 9999, 3])
    np.testing.assert_array_equal(lazy.images[rows], eager.images[rows])
    np.testing.assert_array_equal(lazy.images[5], eager.images[5])
    head = data.head(lazy, 300)
    assert isinstance(head.images, data.LazyImages)
    np.testing.assert_array_equal(np.asarray(head.images), eager.images[:300])
    seen = []
    lazy_counted = data.LazyImages(lambda r: seen.append(len(r)) or eager.images[r] * 0 + 1,
                                   eager.images.shape, "mnist")
    ds = data.ArrayDataset(lazy_counted, eager.labels, 10, "mnist")
    next(data.batches(ds, 100, shard=(1, 4)))
    assert seen == [25]


# ----------------------------------------------------------------------------- two processes

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(devices: int, data_dir) -> dict:
    return {**os.environ, "JAXPRUNE_DATA_DIR": str(data_dir), "JAXPRUNE_CACHE_DIR": "off",
            "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}


def _cli(*args) -> list[str]:
    return [sys.executable, "-m", "jaxprune", *map(str, args)]


def _start_pair(argv, data_dir) -> list[subprocess.Popen]:
    port = _free_port()
    return [subprocess.Popen(argv + ["--coordinator", f"127.0.0.1:{port}", "--num-processes",
                                     "2", "--process-id", str(i)],
                             cwd=REPO, env=_env(1, data_dir), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True) for i in range(2)]


def _finish(procs, timeout=600) -> list[str]:
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=timeout)
        assert p.returncode == 0, err[-3000:]
        outs.append(out)
    return outs


def _params(directory):
    _, variables, _ = checkpoint.load_model(directory)
    return jax.tree.leaves(variables)


def _assert_close(a_dir, b_dir):
    a, b = _params(a_dir), _params(b_dir)
    assert len(a) == len(b)
    for x, y in zip(a, b):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-4, atol=2e-5)


_TRAIN = ("--limit-train", 8192, "--limit-test", 500, "--batch-size", 64, "--epochs", 3,
          "--no-progress")


@pytest.mark.slow
def test_two_processes_train_resume_and_finetune_like_one(tmp_path, data_dir):
    """2 processes x 1 device == 1 process x 2 devices, for ``train`` (killed after its first
    checkpoint and resumed) and for ``finetune`` of a pruned model."""
    one = tmp_path / "one"
    subprocess.run(_cli("train", "--model", "lenet300", "--dataset", "mnist", "--out", one,
                        "--devices", 2, *_TRAIN), cwd=REPO, env=_env(2, data_dir), check=True,
                   capture_output=True, timeout=600)

    two = tmp_path / "two"
    argv = _cli("train", "--model", "lenet300", "--dataset", "mnist", "--out", two, *_TRAIN,
                "--resume")
    procs = _start_pair(argv, data_dir)
    first = two / "checkpoints" / "1"
    deadline = time.time() + 300
    while not first.is_dir() and all(p.poll() is None for p in procs) and time.time() < deadline:
        time.sleep(0.02)
    assert all(p.poll() is None for p in procs), "the run ended before it could be killed"
    for p in procs:
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=60)
    assert not (two / "model.json").exists()
    outs = _finish(_start_pair(argv, data_dir))
    assert outs[0].strip() and not outs[1].strip()  # one JSON result, from process 0
    _assert_close(one, two)

    pruned = tmp_path / "pruned"
    subprocess.run(_cli("prune", "--checkpoint", one, "--ratio", 0.5, "--out", pruned),
                   cwd=REPO, env=_env(1, data_dir), check=True, capture_output=True,
                   timeout=600)
    ft = ("--limit-train", 4096, "--limit-test", 500, "--batch-size", 64, "--epochs", 1,
          "--no-progress")
    subprocess.run(_cli("finetune", "--checkpoint", pruned, "--out", tmp_path / "ft1",
                        "--devices", 2, *ft), cwd=REPO, env=_env(2, data_dir), check=True,
                   capture_output=True, timeout=600)
    _finish(_start_pair(_cli("finetune", "--checkpoint", pruned, "--out", tmp_path / "ft2",
                             *ft), data_dir))
    _assert_close(tmp_path / "ft1", tmp_path / "ft2")
    log = (tmp_path / "ft2" / "metrics.jsonl").read_text().splitlines()
    assert sum('"kind": "epoch"' in line for line in log) == 1  # written by process 0 only


def test_cli_rejects_an_incomplete_process_group(tmp_path, data_dir):
    r = subprocess.run(_cli("train", "--model", "lenet300", "--dataset", "mnist", "--out",
                            tmp_path / "x", "--num-processes", 2), cwd=REPO,
                       env=_env(1, data_dir), capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "together" in r.stderr and "Traceback" not in r.stderr
