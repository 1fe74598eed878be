"""Benchmark: LeNet-300-100 training throughput (1 and 2 devices, 2 processes, vs PyTorch).

Measured in ONE run (XLA_FLAGS forces 2 host devices before JAX is imported; the 1-device
rows use the first of them):

* compile time of the data-parallel train step, and steady-state step throughput: examples/s
  of the jitted train step alone on pre-sharded batches (no input pipeline), after warm-up;
* real MNIST epochs through ``jaxprune.train.fit`` (input pipeline, host->device transfer and
  bookkeeping included): epoch 1 includes compilation, the last epoch is the steady state;
* a plain PyTorch CPU loop of the same 784-300-100-10 ReLU MLP (Adam, same lr, batch and
  examples per epoch, ``torch.set_num_threads(cpu count)``, in-memory tensors shuffled per
  epoch): steady-epoch examples/s and the ratio jaxprune / PyTorch (``pip install -e
  ".[bench]"``; skipped when torch is missing);
* 2 processes x 1 device (``jax.distributed`` on 127.0.0.1, gloo collectives) vs 1 process
  x 2 devices: steady-epoch examples/s and the largest difference of the final params;
* optionally (``--vgg16-cifar-steps N``) the CIFAR VGG-16 train step on random 32x32x3
  batches: compile time, steps/s and examples/s on the default device.

Prints a markdown table and writes it to ``--out``. Usage::

    JAXPRUNE_DATA_DIR=../shared/data python experiments/bench_training.py [--skip-torch]
"""
from __future__ import annotations

import os
import sys

_WORKER = "--worker" in sys.argv
_BASE_XLA_FLAGS = os.environ.get("XLA_FLAGS", "")
_N_DEV = 1 if _WORKER else int(os.environ.get("BENCH_MAX_DEVICES", "2"))
os.environ["XLA_FLAGS"] = (f"{_BASE_XLA_FLAGS} "
                           f"--xla_force_host_platform_device_count={_N_DEV}").strip()

import argparse  # noqa: E402
import collections  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import pathlib  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P  # noqa: E402

from jaxprune import data, models, train  # noqa: E402

OUT = pathlib.Path(__file__).resolve().parent / "results" / "bench" / "training.md"


def cpu_name() -> str:
    """The first ``model name`` of /proc/cpuinfo (else the machine type)."""
    text = pathlib.Path("/proc/cpuinfo").read_text() if os.path.exists("/proc/cpuinfo") else ""
    names = [ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("model name")]
    return names[0] if names else os.uname().machine


def lenet_config(args) -> train.TrainConfig:
    return train.TrainConfig(optimizer="adam", learning_rate=1e-3, epochs=args.epochs,
                             batch_size=args.batch_size, log_every=0)


def load_mnist(args) -> data.ArrayDataset:
    return data.head(data.load("mnist", "train", args.data_dir), args.limit_train)


def step_throughput(model, ds, config, n_dev, steps):
    """(compile_s, examples/s) of the fit train step on pre-sharded batches."""
    devs = jax.local_devices()[:n_dev]
    mesh = Mesh(np.asarray(devs), ("batch",))
    repl, dsh = NamedSharding(mesh, P()), NamedSharding(mesh, P("batch"))
    spe = data.num_batches(len(ds), config.batch_size)
    k1, k2 = jax.random.split(jax.random.PRNGKey(config.seed))
    variables = train.init_variables(model, (1,) + ds.images.shape[1:], k1, k2)
    params = variables["params"]
    state = jax.device_put({"params": params,
                            "batch_stats": dict(variables.get("batch_stats", {})),
                            "opt_state": train.init_opt_state(config, spe, params),
                            "step": jnp.asarray(0, jnp.int32), "rng": k2}, repl)
    step = train.make_train_step(model, config, spe, sharding=repl)
    batches = [(jax.device_put(x, dsh), jax.device_put(y, dsh))
               for x, y in data.batches(ds, config.batch_size, seed=0, epoch=0)][:8]
    t0 = time.perf_counter()
    compiled = step.lower(state, *batches[0], None, None).compile()
    compile_s = time.perf_counter() - t0

    def run(n, state):
        in_flight = collections.deque()  # same bounded dispatch window as fit
        for i in range(n):
            state, m = compiled(state, *batches[i % len(batches)], None, None)
            in_flight.append(m["loss"])
            if len(in_flight) > train.MAX_IN_FLIGHT_STEPS:
                in_flight.popleft().block_until_ready()
        return jax.block_until_ready(state)

    state = run(5, state)  # warm-up
    t0 = time.perf_counter()
    state = run(steps, state)
    dt = time.perf_counter() - t0
    return compile_s, steps * config.batch_size / dt


def torch_epochs(ds, args) -> list[float] | None:
    """Examples/s of each epoch of a plain PyTorch loop; ``None`` without torch."""
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(os.cpu_count())
    torch.manual_seed(0)
    x = torch.from_numpy(np.ascontiguousarray(ds.images.reshape(len(ds), -1)))
    y = torch.from_numpy(ds.labels.astype(np.int64))
    nn = torch.nn
    net = nn.Sequential(nn.Linear(784, 300), nn.ReLU(), nn.Linear(300, 100), nn.ReLU(),
                        nn.Linear(100, 10))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    b, steps = args.batch_size, len(ds) // args.batch_size
    rates = []
    for _ in range(args.epochs):
        t0 = time.perf_counter()
        perm = torch.randperm(len(ds))
        loss_sum = torch.zeros(())
        for i in range(steps):
            idx = perm[i * b:(i + 1) * b]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(net(x[idx]), y[idx])
            loss.backward()
            opt.step()
            loss_sum += loss.detach()  # as fit sums the loss (CPU torch runs eagerly)
        rates.append(steps * b / (time.perf_counter() - t0))
    return rates


def worker(args) -> None:
    """One process of the 2-process run: a JSON line on stdout; process 0 saves the params."""
    jax.distributed.initialize(coordinator_address=args.coordinator, num_processes=2,
                               process_id=args.process_id)
    res = train.fit(models.get_model("lenet300"), load_mnist(args), lenet_config(args),
                    devices=None, progress=False)
    if jax.process_index() == 0:  # replicated: the local shard is the whole array
        leaves = [np.asarray(a.addressable_data(0)) for a in jax.tree.leaves(res.variables)]
        np.savez(args.params_out, *leaves)
    print(json.dumps({"process": jax.process_index(), "devices": len(jax.devices()),
                      "examples_per_sec": [e["examples_per_sec"] for e in res.history]}))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def two_processes(args) -> tuple[list[float], list[np.ndarray]]:
    """Epoch examples/s and final param leaves of the 2 x 1-device run; raises on failure."""
    flags = f"{_BASE_XLA_FLAGS} --xla_force_host_platform_device_count=1".strip()
    env = dict(os.environ, XLA_FLAGS=flags, JAXPRUNE_CACHE_DIR="off")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        argv = [sys.executable, __file__, "--worker", "--coordinator",
                f"127.0.0.1:{_free_port()}", "--params-out", str(tmp / "params.npz"),
                "--epochs", str(args.epochs), "--batch-size", str(args.batch_size)]
        argv += ["--data-dir", args.data_dir] if args.data_dir else []
        argv += ["--limit-train", str(args.limit_train)] if args.limit_train else []
        procs = []
        for i in range(2):
            with open(tmp / f"out{i}", "w") as o, open(tmp / f"err{i}", "w") as e:
                procs.append(subprocess.Popen(argv + ["--process-id", str(i)], env=env,
                                              stdout=o, stderr=e))
        deadline = time.monotonic() + args.worker_timeout
        try:
            for i, p in enumerate(procs):
                rc = p.wait(timeout=max(1.0, deadline - time.monotonic()))
                if rc != 0:
                    err = (tmp / f"err{i}").read_text()[-2000:]
                    raise RuntimeError(f"worker {i} exited with {rc}: {err}")
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"workers timed out after {args.worker_timeout:.0f} s") from None
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
        result = json.loads((tmp / "out0").read_text().strip().splitlines()[-1])
        with np.load(tmp / "params.npz") as z:
            leaves = [z[f"arr_{i}"] for i in range(len(z.files))]
    if result["devices"] != 2:
        raise RuntimeError(f"the workers saw {result['devices']} devices, not 2")
    return result["examples_per_sec"], leaves


def vgg16_cifar(args) -> tuple[float, float]:
    """(compile_s, examples/s) of the VGG-16 train step on random CIFAR-shaped batches."""
    b = args.vgg16_batch
    rng = np.random.default_rng(0)
    ds = data.ArrayDataset(rng.standard_normal((8 * b, 32, 32, 3)).astype(np.float32),
                           rng.integers(0, 10, 8 * b).astype(np.int32), 10, "cifar10")
    config = train.default_config("vgg16", batch_size=b, epochs=1, log_every=0)
    return step_throughput(models.get_model("vgg16"), ds, config, 1, args.vgg16_cifar_steps)


def max_abs_diff(a, b) -> float:  # a: pytree, b: its leaves
    return max(float(np.max(np.abs(np.asarray(x) - y))) for x, y in zip(jax.tree.leaves(a), b))


def lenet_rows(args, ds, rows: list, notes: list) -> None:
    """The LeNet-300-100 rows (fit on 1..n devices, PyTorch, 2 processes) and ratio notes."""
    model, config, fits = models.get_model("lenet300"), lenet_config(args), {}
    for n_dev in range(1, min(_N_DEV, len(jax.local_devices())) + 1):
        compile_s, tput = step_throughput(model, ds, config, n_dev, args.steps)
        train.make_train_step.cache_clear()  # so epoch 1 of fit includes its compile
        fits[n_dev] = res = train.fit(model, ds, config, devices=n_dev, progress=False)
        rows.append((f"1 process x {n_dev} device(s)", f"{compile_s:.2f}", f"{tput:,.0f}",
                     f"{res.history[0]['wall_time']:.2f}", res.history[-1]["examples_per_sec"]))
    jax_eps = fits[1].history[-1]["examples_per_sec"]
    rates = None if args.skip_torch else torch_epochs(ds, args)
    if rates is None:
        notes.append("PyTorch row skipped: " + ("--skip-torch" if args.skip_torch else
                                                'torch not installed, pip install -e ".[bench]"'))
    else:
        import torch
        rows.append((f"PyTorch {torch.__version__} loop, {torch.get_num_threads()} threads",
                     "", "", "", rates[-1]))
        notes.append(f"**jaxprune fit (1 device) / PyTorch, steady epoch: "
                     f"{jax_eps / rates[-1]:.2f}x** (target >= 1.0; {jax_eps:,.0f} vs "
                     f"{rates[-1]:,.0f} ex/s)")
    if args.skip_multiprocess or 2 not in fits:
        notes.append("2-process row skipped")
        return
    try:
        rates, leaves = two_processes(args)
    except RuntimeError as e:
        notes.append(f"2-process run FAILED: {e}")
        return
    one = fits[2].history[-1]["examples_per_sec"]
    d2, d1 = (max_abs_diff(fits[k].variables, leaves) for k in (2, 1))
    rows.append(("2 processes x 1 device (jax.distributed, gloo)", "", "", "", rates[-1]))
    notes.append(f"**2 processes x 1 device / 1 process x 2 devices, steady epoch: "
                 f"{rates[-1] / one:.2f}x** ({rates[-1]:,.0f} vs {one:,.0f} ex/s); max "
                 f"|difference| of the final params: {d2:.2e} (vs 1 process x 1 device: {d1:.2e})")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=2, help="the last one is the steady state")
    ap.add_argument("--steps", type=int, default=300, help="timed steps of the step rows")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--limit-train", type=int, default=None, help="first N MNIST examples")
    ap.add_argument("--skip-torch", action="store_true")
    ap.add_argument("--skip-multiprocess", action="store_true")
    ap.add_argument("--skip-lenet", action="store_true", help="only the VGG-16 row")
    ap.add_argument("--worker-timeout", type=float, default=600.0)
    ap.add_argument("--vgg16-cifar-steps", type=int, default=0, help="0: no VGG-16 row")
    ap.add_argument("--vgg16-batch", type=int, default=128)
    ap.add_argument("--out", default=None, help=f"markdown table file (default {OUT}; none "
                    "with --limit-train)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--coordinator", help=argparse.SUPPRESS)
    ap.add_argument("--process-id", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--params-out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args)
    if args.epochs < 2:
        ap.error("--epochs must be >= 2 (epoch 1 includes compilation)")

    lines = [f"# Training benchmark, {datetime.date.today().isoformat()}\n",
             f"jax {jax.__version__} on {jax.default_backend()}, CPU {cpu_name()}, "
             f"{os.cpu_count()} cores, load average at start {os.getloadavg()[0]:.2f}\n"]
    rows, notes = [], []
    if not args.skip_lenet:
        ds = load_mnist(args)
        lenet_rows(args, ds, rows, notes)
        lines += [f"LeNet-300-100, MNIST train ({len(ds)} examples, "
                  f"{data.num_batches(len(ds), args.batch_size)} steps/epoch), global batch "
                  f"{args.batch_size}, Adam lr 1e-3, {args.epochs} epochs; steady = epoch "
                  f"{args.epochs}\n",
                  "| run | step compile (s) | step throughput (ex/s) | fit epoch 1 wall (s, incl. "
                  "compile) | steady epoch ex/s |", "|---|---:|---:|---:|---:|"]
        lines += [f"| {r} | {c} | {t} | {w} | {eps:,.0f} |" for r, c, t, w, eps in rows] + [""]
    if args.vgg16_cifar_steps > 0:
        compile_s, tput = vgg16_cifar(args)
        notes.append(f"VGG-16 (CIFAR 32x32x3, random data, batch {args.vgg16_batch}, SGD recipe) "
                     f"train step on {jax.devices()[0].device_kind}: compile {compile_s:.2f} s, "
                     f"{tput / args.vgg16_batch:,.2f} steps/s, {tput:,.0f} examples/s "
                     f"({args.vgg16_cifar_steps} timed steps)")
    lines += [f"- {n}" for n in notes] + [f"\nload average at the end {os.getloadavg()[0]:.2f}"]
    text, out = "\n".join(lines), args.out
    print(text)
    if out or (out is None and not args.limit_train):
        pathlib.Path(out or OUT).parent.mkdir(parents=True, exist_ok=True)
        pathlib.Path(out or OUT).write_text(text + "\n")


if __name__ == "__main__":
    main()
