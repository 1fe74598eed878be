"""Multi-process runs (loopback only): the coordinator listens on the address given, processes
started with different flags fail fast, and SIGTERM to one process stops the whole run after
the same step, with every whole epoch checkpointed."""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_pair(out, data_dir, extra=((), ())) -> tuple[list[subprocess.Popen], int]:
    port = _free_port()
    env = {**os.environ, "JAXPRUNE_DATA_DIR": str(data_dir), "JAXPRUNE_CACHE_DIR": "off",
           "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
    argv = [sys.executable, "-m", "jaxprune", "train", "--model", "lenet300", "--dataset",
            "mnist", "--limit-train", "1024", "--limit-test", "100", "--batch-size", "64",
            "--epochs", "50", "--no-progress", "--out", str(out),
            "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2"]
    procs = [subprocess.Popen([*argv, "--process-id", str(i), *extra[i]], cwd=REPO, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    return procs, port


def _listening(port: int) -> list[str]:
    """Local addresses (hex, as /proc/net/tcp* writes them) listening on ``port``."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.read().splitlines()[1:]:
                local, state = line.split()[1], line.split()[3]
                if local.endswith(f":{port:04X}") and state == "0A":
                    found.append(local.rsplit(":", 1)[0])
    return found


@pytest.mark.slow
def test_processes_with_different_flags_fail_fast(tmp_path, data_dir):
    procs, _ = _start_pair(tmp_path / "run", data_dir, extra=((), ("--seed", "3")))
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 2
        assert "started with different settings" in err.strip().splitlines()[-1]


@pytest.mark.slow
def test_the_coordinator_listens_on_loopback_and_sigterm_stops_the_run(tmp_path, data_dir):
    procs, port = _start_pair(tmp_path / "run", data_dir)
    try:
        deadline = time.time() + 300
        while not _listening(port) and time.time() < deadline:
            time.sleep(0.05)
        addresses = _listening(port)
        loopback = ("0100007F", "0000000000000000FFFF00000100007F",
                    "00000000000000000000000001000000")
        assert addresses and all(a in loopback for a in addresses), addresses
        first = tmp_path / "run" / "checkpoints" / "1"
        while not first.is_dir() and time.time() < deadline:
            time.sleep(0.05)
        assert all(p.poll() is None for p in procs), "the run ended before the signal"
        procs[0].send_signal(signal.SIGTERM)
        errs = [p.communicate(timeout=120)[1] for p in procs]      # every process stops
        for p, err in zip(procs, errs):
            assert p.returncode == 130, err[-2000:]
            assert "interrupted" in err.strip().splitlines()[-1] and "Traceback" not in err
        assert "SIGTERM received" in errs[0]
        out = tmp_path / "run"
        saved = max(int(p.name) for p in (out / "checkpoints").iterdir() if p.name.isdigit())
        with open(out / "metrics.jsonl") as f:
            epochs = sum(json.loads(line)["kind"] == "epoch" for line in f)
        assert saved == epochs < 50                                 # no whole epoch lost
        assert json.loads((out / "run.json").read_text())["complete"] is False
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.communicate()
