"""Benchmark: a fresh process's ``jaxprune.prune`` with JAX's persistent compilation cache
cold (empty folder) vs warm (the folder the cold run filled), measured in one run.

Per model, two fresh Python processes run the same prune (random weights, the ratio of
``bench_prune.RATIOS``) with ``JAXPRUNE_CACHE_DIR`` pointing at one new folder; each prints
the wall time of the ``prune`` call and of the whole process. Target: warm ≤ 0.5 × cold.

    python experiments/bench_cache.py [--models lenet300 vgg16 resnet50] [--quick]
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
CHILD = """
import json, sys, time
t0 = time.perf_counter()
import jax, jaxprune
sys.path.insert(0, {here!r})
import bench_prune
from common.bench import random_variables
model, shape = bench_prune.build({name!r}, {quick!r})
variables = random_variables(model, shape, 0)
t1 = time.perf_counter()
res = jaxprune.prune(variables, jax.random.key(1), bench_prune.RATIOS[{name!r}],
                     method="coreset", model=model, input_shape=shape)
jax.block_until_ready(res.params)
t2 = time.perf_counter()
print(json.dumps({{"prune_s": t2 - t1, "process_s": t2 - t0}}))
"""


def fresh_process(name: str, quick: bool, cache_dir: str) -> dict:
    env = dict(os.environ, JAXPRUNE_CACHE_DIR=cache_dir, OPENBLAS_NUM_THREADS="1")
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", CHILD.format(here=str(HERE), name=name,
                                                             quick=quick)],
                         env=env, capture_output=True, text=True, check=True, timeout=1800)
    return {**json.loads(out.stdout.strip().splitlines()[-1]),
            "wall_s": time.perf_counter() - t0}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["lenet300", "vgg16", "resnet50"])
    ap.add_argument("--quick", action="store_true", help="tiny widths (smoke test)")
    args = ap.parse_args(argv)
    rows = []
    for name in args.models:
        with tempfile.TemporaryDirectory() as cache_dir:
            cold = fresh_process(name, args.quick, cache_dir)
            warm = fresh_process(name, args.quick, cache_dir)
        rows.append({"model": name, "cold": cold, "warm": warm})
    print("| model | prune cold [s] | prune warm [s] | warm / cold | process cold [s] | "
          "process warm [s] |\n|---|---:|---:|---:|---:|---:|")
    for r in rows:
        c, w = r["cold"], r["warm"]
        print(f"| {r['model']} | {c['prune_s']:.2f} | {w['prune_s']:.2f} | "
              f"**{w['prune_s'] / c['prune_s']:.2f}×** | {c['process_s']:.2f} | "
              f"{w['process_s']:.2f} |")
    for r in rows:
        ratio = r["warm"]["prune_s"] / r["cold"]["prune_s"]
        print(f"target warm ≤ 0.5 × cold, {r['model']}: {'MET' if ratio <= 0.5 else 'NOT MET'} "
              f"({ratio:.2f}×)")
    return {"rows": rows}


if __name__ == "__main__":
    main()
