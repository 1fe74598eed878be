"""Benchmark: LeNet-300-100 training throughput on 1 and 2 (simulated CPU) devices.

Measures, for each device count, in ONE process (XLA_FLAGS forces 2 host devices before JAX
is imported; the 1-device run uses the first of them):

* compile time of the data-parallel train step (reported separately, excluded elsewhere);
* steady-state step throughput: examples/s of the jitted train step alone on pre-sharded
  batches (no input pipeline), after warm-up;
* one real MNIST epoch through ``jaxprune.train.fit`` (input pipeline, host->device
  transfer, per-epoch bookkeeping included): the wall time of epoch 2 (epoch 1 includes
  compilation) and its examples/s.

Prints a markdown table. Usage::

    JAXPRUNE_DATA_DIR=../shared/data python experiments/bench_training.py [--batch-size 128]
"""
from __future__ import annotations

import os

_N_DEV = int(os.environ.get("BENCH_MAX_DEVICES", "2"))
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           f" --xla_force_host_platform_device_count={_N_DEV}").strip()

import argparse  # noqa: E402
import collections  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P  # noqa: E402

from jaxprune import data, models, train  # noqa: E402


def step_throughput(model, ds, config, n_dev, steps):
    """(compile_s, examples/s) of the fit train step on pre-sharded batches."""
    devs = jax.local_devices()[:n_dev]
    mesh = Mesh(np.asarray(devs), ("batch",))
    repl, dsh = NamedSharding(mesh, P()), NamedSharding(mesh, P("batch"))
    spe = data.num_batches(ds, config.batch_size)
    k1, k2 = jax.random.split(jax.random.PRNGKey(config.seed))
    variables = train.init_variables(model, (1,) + ds.images.shape[1:], k1, k2)
    params = variables["params"]
    state = jax.device_put({"params": params, "batch_stats": {},
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


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--data-dir", default=None)
    args = ap.parse_args()

    ds = data.load("mnist", "train", args.data_dir)
    model = models.get_model("lenet300")
    config = train.TrainConfig(optimizer="adam", learning_rate=1e-3, epochs=2,
                               batch_size=args.batch_size, log_every=0)
    rows = []
    for n_dev in range(1, _N_DEV + 1):
        compile_s, tput = step_throughput(model, ds, config, n_dev, args.steps)
        train.make_train_step.cache_clear()  # so epoch 1 of fit includes its compile
        res = train.fit(model, ds, config, devices=n_dev, progress=False)
        e1, e2 = res.history[0], res.history[1]
        rows.append((n_dev, compile_s, tput, e1["wall_time"], e2["wall_time"],
                     e2["examples_per_sec"]))

    print(f"LeNet-300-100, MNIST train ({len(ds)} examples, {len(ds) // args.batch_size} "
          f"steps/epoch), global batch {args.batch_size}, Adam; jax {jax.__version__}, "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, "
          f"simulated host devices (XLA_FLAGS={os.environ['XLA_FLAGS']})\n")
    print("| devices | step compile (s) | step throughput (ex/s, steady state) | "
          "epoch 1 wall (s, incl. compile) | epoch 2 wall (s) | epoch 2 ex/s | "
          "speed-up vs 1 dev (step / epoch) |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    base_t, base_e = rows[0][2], rows[0][4]
    for n, c, t, w1, w2, eps in rows:
        print(f"| {n} | {c:.2f} | {t:,.0f} | {w1:.2f} | {w2:.2f} | {eps:,.0f} | "
              f"{t / base_t:.2f}x / {base_e / w2:.2f}x |")


if __name__ == "__main__":
    main()
