"""Benchmark: end-to-end ``jaxprune.prune(method="coreset")`` time, and pruned-model latency.

Measured in ONE process run:

1. ``prune`` of LeNet-300-100 (ratio 0.9), LeNet-5 (0.8), VGG-16 (0.8) and ResNet-50 (ImageNet
   shape 224×224×3, 1000 classes; 62 % of ALL parameters removed, the paper's Table 3 PR, by
   pruning the inner channels of the bottlenecks and the stem, ``prune``'s default), unit
   ``params`` (the whole model's parameters), random-init weights (``jax.eval_shape`` + NumPy
   fill).  First call (tracing + compilation included) vs a second call with another key, each
   broken down by phase (``prune``'s ``on_phase`` hook, ``jaxprune.pipeline.PHASES``) and, by
   JAX's monitoring events, into tracing, lowering, XLA compilation and the rest (execution,
   Python; "other" = validation, report, PRNG splits). Process CPU seconds beside wall times.
2. Inference latency of the dense vs pruned LeNet-300-100 (batch 1 and 1024) and ResNet-50
   (batch 1 and 64): jitted ``apply`` (inference mode), ``metrics.measure_latency`` (compile and
   warm-up calls excluded, median of the timed calls), with params and FLOPs.
3. Peak host memory (``ru_maxrss``, the resident-set high-water mark) after each model's prunes;
   "+Δ": how much its two prune calls raised it (a lower bound on their own peak).
4. VGG-16 latency, widths rounded to multiples of 8 (``round_to=8``) vs not, interleaved.
5. ``--peel-kernels``: per model, cold first call and second call of ``prune`` with each
   peeling kernel — point sets peeled one after the other (``peel_batch="map"``, the CPU
   default) or as one batched loop (``"vmap"``, the default elsewhere), compiled at XLA's
   backend optimisation level 0 (``peel_compile="fast"``, the CPU default) or at its default
   (``"optimised"``), alternating in two rounds.
6. ``--cache``: ``bench_cache``'s fresh-process prunes, persistent compilation cache cold vs
   warm (two new processes per model on one new cache folder), table in its results file.

OpenBLAS threads: as a script this sets ``OPENBLAS_NUM_THREADS=1`` unless set: the projection's
float64 ``eigh`` runs in SciPy's OpenBLAS, whose threads fought XLA's pool on 2 cores (one
512×512 ``eigh`` took 0.1–3.5 s instead of ~40 ms; ResNet-50's projection 12–30 s, not ~2 s).

    JAXPRUNE_CACHE_DIR=off python experiments/bench_prune.py [--models lenet300 lenet5 vgg16
                                                   resnet50] [--quick] [--peel-kernels] [--cache]
(``JAXPRUNE_CACHE_DIR=off``: the main table's first calls are cold, not from the disk cache.)
"""
from __future__ import annotations

import os

if __name__ == "__main__":  # before NumPy/SciPy load OpenBLAS (see the module doc)
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

import bench_cache
import jaxprune
from common.bench import PHASES, PhaseClock, listening, max_rss_mib, random_variables
from jaxprune import metrics, models

RATIOS = {"lenet300": 0.9, "lenet5": 0.8, "vgg16": 0.8, "resnet50": 0.62}  # of ALL params
# targets, end to end with compilation: VGG-16 < 10 s, ResNet-50 < 30 s (2-core CPU)
TARGET_S = {"vgg16": 10.0, "resnet50": 30.0}
QUICK_FIELDS = {"lenet300": dict(widths=(32, 16)), "lenet5": dict(widths=(4, 8, 24, 16)),
                "vgg16": dict(widths=(8,) * 4 + (16,) * 9 + (16, 16)),
                # every ResNet-50 width / 16, the 4 stages of 3, 4, 6, 3 bottlenecks kept
                "resnet50": dict(widths=tuple(max(1, w // 16) for w in
                                              models.ResNet50().widths),
                                 stage_widths=(16, 32, 64, 128), stem_width=4,
                                 num_classes=10)}  # (a 1000-class head would hold most params)
QUICK_SHAPE = {"resnet50": (64, 64, 3)}  # the 224×224 input makes even a tiny net slow
LATENCY = {  # model -> ((batch size, timed calls, untimed warm-up calls after compile), ...)
    "lenet300": ((1, 50, 5), (1024, 50, 5)),
    "resnet50": ((1, 10, 2), (64, 5, 1)),  # a dense batch-64 call: 10-20 s on 2 cores
}


# Models with random weights
def build(name: str, quick: bool):
    model = models.get_model(name, **(QUICK_FIELDS[name] if quick else {}))
    shape = QUICK_SHAPE.get(name) if quick else None
    return model, tuple(shape or models.default_input_shape(name))


# 1 + 3: prune timings
def time_prune(name: str, quick: bool, seed: int) -> dict:
    model, shape = build(name, quick)
    t0 = time.perf_counter()
    variables = random_variables(model, shape, seed)
    init_s = time.perf_counter() - t0
    ratio = RATIOS[name]
    rss_before = max_rss_mib()
    clock, calls = PhaseClock(), []
    with listening(clock):
        for key in (seed + 1, seed + 2):
            clock.reset()
            t0, c0 = time.perf_counter(), time.process_time()
            res = jaxprune.prune(variables, jax.random.key(key), ratio, method="coreset",
                                 model=model, input_shape=shape, unit="params",
                                 on_phase=clock.phase)
            jax.block_until_ready(res.params)
            total, cpu = time.perf_counter() - t0, time.process_time() - c0
            clock.wall["other"] = total - sum(clock.wall[p] for p in PHASES)
            clock.cpu["other"] = cpu - sum(clock.cpu[p] for p in PHASES)
            calls.append(dict(total=total, cpu=cpu, wall=dict(clock.wall),
                              cpu_phase=dict(clock.cpu),
                              jax={p: dict(v) for p, v in clock.jax.items()}, result=res))
    return dict(name=name, model=model, shape=shape, variables=variables, init_s=init_s,
                ratio=ratio, calls=calls, rss_before=rss_before,
                rss_after=max_rss_mib())


def print_prune_tables(runs):
    print("## Prune time, `jaxprune.prune(method='coreset', unit='params')`, random init\n")
    print("| model | input | ratio | params before → "
          "after | achieved (of the pruned layers' arrays) | groups | init [s] | "
          "1st call [s] (CPU s) | of which trace+lower+XLA compile [s] | 2nd call [s] (CPU s) | "
          "peak RSS after [MiB] (+Δ) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in runs:
        first, second = r["calls"]
        rep = first["result"].report
        comp = sum(sum(v.values()) for v in first["jax"].values())
        shape = "×".join(map(str, r["shape"]))
        print(f"| {r['name']} | {shape} | {r['ratio']:.4g} | {rep['params_before']:,} → "
              f"{rep['params_after']:,} | {rep['achieved_ratio']:.3f} "
              f"({rep['ratios']['params_prunable']:.3f}) | {len(rep['neurons'])} | "
              f"{r['init_s']:.2f} | {first['total']:.2f} ({first['cpu']:.1f}) | {comp:.2f} | "
              f"{second['total']:.2f} ({second['cpu']:.1f}) | "
              f"{r['rss_after']:.0f} (+{r['rss_after'] - r['rss_before']:.0f}) |")
    for r in runs:
        print(f"\n### {r['name']}: per-phase breakdown [s] (1st call: wall = trace + lower + "
              "XLA compile + run/Python; 2nd call: steady state; CPU = process CPU seconds, all "
              "threads)\n")
        print("| phase | 1st wall | 1st CPU | 1st trace | 1st lower | 1st XLA compile | "
              "1st run+py | 2nd wall | 2nd CPU | 2nd trace+lower+compile |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        first, second = r["calls"]
        for p in PHASES + ("other",):
            j = first["jax"][p]
            c = sum(j.values())
            c2 = sum(second["jax"][p].values())
            print(f"| {p} | {first['wall'][p]:.3f} | {first['cpu_phase'][p]:.2f} | "
                  f"{j['trace']:.3f} | {j['lower']:.3f} | {j['compile']:.3f} | "
                  f"{first['wall'][p] - c:.3f} | {second['wall'][p]:.3f} | "
                  f"{second['cpu_phase'][p]:.2f} | {c2:.3f} |")
        print(f"| **total** | {first['total']:.3f} | {first['cpu']:.2f} | | | | | "
              f"{second['total']:.3f} | {second['cpu']:.2f} | |")
    for r in runs:
        if r["name"] in TARGET_S:
            t = r["calls"][0]["total"]
            ok = t < TARGET_S[r["name"]]
            print(f"\nTarget: {r['name']} pruned end to end in < {TARGET_S[r['name']]:.0f} s "
                  f"including compilation: {'MET' if ok else 'NOT MET'} "
                  f"(first call {t:.2f} s, steady state {r['calls'][1]['total']:.2f} s)")


# 2: latency, dense vs pruned
def _fmt_time(seconds: float) -> str:
    return f"{seconds * 1e6:.1f} µs" if seconds < 1e-2 else f"{seconds * 1e3:.1f} ms"


def latency_table(run, plan):
    """Median latency of the jitted inference forward pass, dense and pruned, per batch size;
    ``plan`` = ((batch, timed calls, warm-up calls), ...)."""
    dense_model, shape, dense_vars = run["model"], run["shape"], run["variables"]
    res = run["calls"][0]["result"]
    small_model, small_vars = res.model(dense_model), res.params
    rng = np.random.default_rng(0)
    print(f"\n## Inference latency, {run['name']} ({'×'.join(map(str, shape))}) dense vs pruned "
          f"({RATIOS[run['name']]:.0%} of all parameters), jitted apply "
          "(train=False), compile and warm-up calls excluded, median of the timed calls\n")
    print("| model | params | FLOPs/example | " +
          " | ".join(f"batch {b} (median of {n})" for b, n, _ in plan) + " |")
    print("|---|---:|---:|" + "---:|" * len(plan))
    lat = {}
    for label, m, v in (("dense", dense_model, dense_vars), ("pruned", small_model, small_vars)):
        row = []
        for b, repeats, warmup in plan:
            x = jnp.asarray(rng.standard_normal((b, *shape)), jnp.float32)
            lat[label, b] = metrics.measure_latency(lambda vv, xx, m=m: m.apply(vv, xx), v, x,
                                                    repeats=repeats, warmup=warmup)
            row.append(_fmt_time(lat[label, b]))
        print(f"| {label} | {metrics.param_count(v):,} | {metrics.flops(m, v, shape):,} | "
              + " | ".join(row) + " |")
    print("| **speed-up (dense / pruned)** | | | " +
          " | ".join(f"**{lat['dense', b] / lat['pruned', b]:.2f}×**" for b, _, _ in plan) + " |")
    fields = [f for f in ("widths", "stem_width") if hasattr(small_model, f)]
    print("\npruned model: " + ", ".join(f"{f}={getattr(small_model, f)}" for f in fields)
          + " (dense: " + ", ".join(f"{f}={getattr(dense_model, f)}" for f in fields) + ")")
    return lat


def round_to_latency(run, batch: int = 64, repeats: int = 10, rounds: int = 3) -> dict:
    """Pruned-model latency at ``round_to=1`` vs ``8`` (same ratio and key), interleaved."""
    model, shape, variables = run["model"], run["shape"], run["variables"]
    nets = {}
    for n in (1, 8):
        res = jaxprune.prune(variables, jax.random.key(1), run["ratio"], method="coreset",
                             model=model, input_shape=shape, round_to=n)
        nets[n] = (res.model(model), res.params, res.report["achieved_ratio"])
    x = jnp.asarray(np.random.default_rng(0).standard_normal((batch, *shape)), jnp.float32)
    times = {1: [], 8: []}
    for _ in range(rounds):
        for n, (m, v, _) in nets.items():
            times[n].append(metrics.measure_latency(lambda vv, xx, m=m: m.apply(vv, xx), v, x,
                                                    repeats=repeats, warmup=2))
    print(f"\n## {run['name']}: widths rounded to multiples of 8 vs not (batch {batch}, median "
          f"of {repeats} calls, best of {rounds} interleaved rounds)\n")
    print("| round_to | achieved ratio | widths | latency |\n|---:|---:|---|---:|")
    for n, (m, _, achieved) in nets.items():
        print(f"| {n} | {achieved:.3f} | {m.widths} | {_fmt_time(min(times[n]))} |")
    print(f"\nround_to=8 / round_to=1 latency: {min(times[8]) / min(times[1]):.2f}×")
    return {n: min(t) for n, t in times.items()}


PEEL_KERNELS = (("map", "fast"), ("vmap", "fast"), ("map", "optimised"), ("vmap", "optimised"))


def peel_kernel_ab(name: str, quick: bool, seed: int, rounds: int = 2) -> list[dict]:
    """``prune`` first (cold: ``jax.clear_caches()`` before it, the persistent compilation cache
    off) and second call with each peeling kernel: sets peeled one after the other
    (``peel_batch="map"``) or as one batched loop (``"vmap"``), compiled at XLA's backend
    optimisation level 0 (``peel_compile="fast"``) or at its default (``"optimised"``); the
    kernels alternate, ``rounds`` times, so drift in the machine's load hits all alike."""
    model, shape = build(name, quick)
    variables = random_variables(model, shape, seed)
    ratio = RATIOS[name]
    rows, cache_on = [], jax.config.jax_enable_compilation_cache
    jax.config.update("jax_enable_compilation_cache", False)  # cold means cold: no disk cache
    try:
        for rnd in range(rounds):
            for batch, compile_ in PEEL_KERNELS:
                jax.clear_caches()
                times = []
                for key in (seed + 1, seed + 2):
                    t0 = time.perf_counter()
                    res = jaxprune.prune(variables, jax.random.key(key), ratio, method="coreset",
                                         model=model, input_shape=shape, unit="params",
                                         peel_compile=compile_, peel_batch=batch)
                    jax.block_until_ready(res.params)
                    times.append(time.perf_counter() - t0)
                rows.append(dict(name=name, round=rnd, kernel=f"{batch} + {compile_}",
                                 first=times[0], second=times[1]))
    finally:
        jax.config.update("jax_enable_compilation_cache", cache_on)
    print(f"\n## {name}: peeling kernel, `prune(..., peel_batch=..., peel_compile=...)` (cold "
          "first call, then a second call; rounds alternate the kernels)\n")
    print("| round | kernel: batch + compile | 1st call [s] | 2nd call [s] |\n|---:|---|---:|---:|")
    for r in rows:
        print(f"| {r['round'] + 1} | {r['kernel']} | {r['first']:.2f} | {r['second']:.2f} |")
    means = {k: [np.mean([r[c] for r in rows if r["kernel"] == k]) for c in ("first", "second")]
             for k in dict.fromkeys(r["kernel"] for r in rows)}
    print("\nmean over rounds, 1st / 2nd call: " + "; ".join(
        f"{k} {a:.2f} / {b:.2f} s" for k, (a, b) in means.items()))
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=list(RATIOS), choices=list(RATIOS))
    ap.add_argument("--quick", action="store_true", help="tiny widths (smoke test)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batches", type=int, nargs="+", default=None,
                    help="latency batch sizes (default: lenet300 1 1024, resnet50 1 64)")
    ap.add_argument("--no-latency", action="store_true", help="prune timings only")
    ap.add_argument("--repeats", type=int, default=None,
                    help="latency: median of N timed calls (default: lenet300 50, resnet50 "
                         "10 at batch 1 and 5 at batch 64)")
    ap.add_argument("--cache", action="store_true", help="also run bench_cache for --models")
    ap.add_argument("--peel-kernels", action="store_true",
                    help="also time each peeling kernel (map/vmap x fast/optimised compile)")
    args = ap.parse_args(argv)

    t_start = time.perf_counter()
    print(f"jax {jax.__version__} on {jax.devices()[0].platform} "
          f"({platform.processor() or platform.machine()}), {len(jax.devices())} device(s), "
          f"quick={args.quick}, {os.cpu_count()} CPUs, OPENBLAS_NUM_THREADS="
          f"{os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}, load average "
          f"{os.getloadavg()[0]:.1f} (CPU is shared: compare wall with process CPU seconds)\n")
    runs = [time_prune(name, args.quick, args.seed) for name in args.models]
    print_prune_tables(runs)
    out = {"runs": runs, "latency": {}}
    for r in runs:
        if r["name"] in LATENCY and not args.no_latency:
            plan = LATENCY[r["name"]]
            if args.batches:
                plan = tuple((b, plan[0][1], plan[0][2]) for b in args.batches)
            if args.repeats:
                plan = tuple((b, args.repeats, w) for b, _, w in plan)
            out["latency"][r["name"]] = latency_table(r, plan)
        if r["name"] == "vgg16" and not args.no_latency:
            out["round_to"] = round_to_latency(r, batch=8 if args.quick else 64)
    if args.cache:
        out["cache"] = bench_cache.main(["--models", *args.models] + ["--quick"] * args.quick)
    if args.peel_kernels:
        out["peel_kernels"] = [row for name in args.models
                               for row in peel_kernel_ab(name, args.quick, args.seed)]
    out["wall_s"] = time.perf_counter() - t_start
    print(f"\nTotal benchmark wall time: {out['wall_s']:.1f} s "
          f"(process CPU {time.process_time():.1f} s; load average now {os.getloadavg()[0]:.1f})")
    return out


if __name__ == "__main__":
    main()
