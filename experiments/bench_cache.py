"""Benchmark: a fresh process's ``jaxprune.prune`` with JAX's persistent compilation cache
cold (empty folder) vs warm (the folder the cold run filled), measured in one run.

Per model, two fresh Python processes run the same prune (random weights, the ratio of
``bench_prune.RATIOS``) with ``JAXPRUNE_CACHE_DIR`` pointing at one new folder; each prints
the wall time of the ``prune`` call and of the whole process. Target: warm ≤ 0.5 × cold.
ResNet-50 is of ImageNet shape (224×224×3, 1000 classes; its two processes take ~20 s on a
2-core CPU): ``--models lenet300 vgg16`` leaves it out. The table also goes to ``--out``.

    python experiments/bench_cache.py [--models lenet300 vgg16 resnet50] [--quick]
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
OUT = HERE / "results" / "bench" / "cache.md"
CHILD = """
import json, sys, time
t0 = time.perf_counter()
import jax, jaxprune
sys.path.insert(0, {root!r})
from experiments import bench_prune
from experiments.common.bench import random_variables
model, shape = bench_prune.build({name!r}, {quick!r})
variables = random_variables(model, shape, 0)
t1 = time.perf_counter()
res = jaxprune.prune(variables, jax.random.key(1), bench_prune.RATIOS[{name!r}],
                     method="coreset", model=model, input_shape=shape)
jax.block_until_ready(res.params)
t2 = time.perf_counter()
print(json.dumps({{"prune_s": t2 - t1, "process_s": t2 - t0,
                  "platform": jax.default_backend()}}))
"""


def fresh_process(name: str, quick: bool, cache_dir: str) -> dict:
    env = dict(os.environ, JAXPRUNE_CACHE_DIR=cache_dir, OPENBLAS_NUM_THREADS="1")
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", CHILD.format(root=str(HERE.parent), name=name,
                                                             quick=quick)],
                         env=env, capture_output=True, text=True, timeout=1800)
    if out.returncode != 0:
        raise RuntimeError(f"{name}: the prune process exited with {out.returncode}:\n"
                           f"{out.stderr[-3000:]}")
    return {**json.loads(out.stdout.strip().splitlines()[-1]),
            "wall_s": time.perf_counter() - t0}


def cpu_name() -> str:
    """The first ``model name`` of /proc/cpuinfo (else the machine type)."""
    text = pathlib.Path("/proc/cpuinfo").read_text() if os.path.exists("/proc/cpuinfo") else ""
    names = [ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("model name")]
    return names[0] if names else os.uname().machine


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["lenet300", "vgg16", "resnet50"])
    ap.add_argument("--quick", action="store_true", help="tiny widths (smoke test)")
    ap.add_argument("--out", default=None, help=f"markdown file for the table (default {OUT}; "
                    "none with --quick)")
    args = ap.parse_args(argv)
    out_path = args.out if args.out is not None else ("" if args.quick else str(OUT))
    lines = [f"# Persistent compilation cache, fresh-process prune, "
             f"{datetime.date.today().isoformat()}\n",
             f"CPU {cpu_name()}, {os.cpu_count()} cores, quick={args.quick}, load average at "
             f"start {os.getloadavg()[0]:.2f}\n"]
    rows = []
    for name in args.models:
        with tempfile.TemporaryDirectory() as cache_dir:
            cold = fresh_process(name, args.quick, cache_dir)
            warm = fresh_process(name, args.quick, cache_dir)
        rows.append({"model": name, "cold": cold, "warm": warm})
    lines.append("| model | platform | prune cold [s] | prune warm [s] | warm / cold | "
                 "process cold [s] | process warm [s] |\n|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        c, w = r["cold"], r["warm"]
        lines.append(f"| {r['model']} | {c['platform']} | {c['prune_s']:.2f} | "
                     f"{w['prune_s']:.2f} | **{w['prune_s'] / c['prune_s']:.2f}×** | "
                     f"{c['process_s']:.2f} | {w['process_s']:.2f} |")
    lines.append("")
    for r in rows:
        ratio = r["warm"]["prune_s"] / r["cold"]["prune_s"]
        lines.append(f"- target warm ≤ 0.5 × cold, {r['model']}: "
                     f"{'MET' if ratio <= 0.5 else 'NOT MET'} ({ratio:.2f}×)")
    lines.append(f"\nload average at the end {os.getloadavg()[0]:.2f}")
    text = "\n".join(lines)
    print(text)
    if out_path:
        pathlib.Path(out_path).parent.mkdir(parents=True, exist_ok=True)
        pathlib.Path(out_path).write_text(text + "\n")
    return {"rows": rows}


if __name__ == "__main__":
    main()
