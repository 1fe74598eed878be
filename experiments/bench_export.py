"""Benchmark: latency of dense vs pruned LeNet-300-100, each as exported (``jaxprune.export``).

The dense model has random weights (He-normal); the pruned one is ``jaxprune.prune(...,
ratio, method="coreset")`` of it. Both are exported as StableHLO with a symbolic batch,
deserialized with ``jax.export`` alone and run jitted on the CPU at batch 1 and batch 256
(medians of interleaved calls, :func:`jaxprune.metrics.compare_latency`); where ``jax2onnx``
and ``onnxruntime`` import, the ONNX exports are timed with ONNX Runtime too (interleaved
the same way). The table goes to ``--out`` (default ``results/bench/export.md``).

    python experiments/bench_export.py [--ratio 0.9] [--repeats 200]
"""
from __future__ import annotations

import argparse
import datetime
import os
import pathlib
import statistics
import sys
import tempfile
import time

import jax
import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
# run as a file (python experiments/<name>.py), not with -m: put the repository root on sys.path
if not __package__:
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import jaxprune  # noqa: E402
from experiments.common.bench import random_variables  # noqa: E402
from jaxprune import export, metrics, models  # noqa: E402

OUT = HERE / "results" / "bench" / "export.md"
BATCHES = (1, 256)
SHAPE = (28, 28, 1)


def cpu_name() -> str:
    """The first ``model name`` of /proc/cpuinfo (else the machine type)."""
    text = pathlib.Path("/proc/cpuinfo").read_text() if os.path.exists("/proc/cpuinfo") else ""
    names = [ln.split(":", 1)[1].strip() for ln in text.splitlines()
             if ln.startswith("model name")]
    return names[0] if names else os.uname().machine


def onnx_runtime():
    """``onnxruntime`` when both it and ``jax2onnx`` import, else ``None``."""
    try:
        import jax2onnx  # noqa: F401
        import onnxruntime
    except ImportError:
        return None
    return onnxruntime


def time_onnx(sessions: dict, x, repeats: int) -> dict[str, float]:
    """Median seconds of ``session.run`` per name, interleaved like ``compare_latency``."""
    feeds = {k: {s.get_inputs()[0].name: x} for k, s in sessions.items()}
    for k, s in sessions.items():
        for _ in range(3):
            s.run(None, feeds[k])
    times = {k: [] for k in sessions}
    for _ in range(repeats):
        for k, s in sessions.items():
            t0 = time.perf_counter()
            s.run(None, feeds[k])
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ratio", type=float, default=0.9, help="fraction of parameters removed")
    ap.add_argument("--repeats", type=int, default=200, help="timed calls per model and batch")
    ap.add_argument("--out", default=str(OUT), help="markdown file for the table ('' for none)")
    args = ap.parse_args(argv)
    dense = models.get_model("lenet300")
    variables = random_variables(dense, SHAPE, 0)
    res = jaxprune.prune(variables, jax.random.key(1), args.ratio, method="coreset",
                         model=dense, input_shape=SHAPE)
    nets = {"dense": (dense, variables), "pruned": (res.model(dense), res.params)}
    ort = onnx_runtime()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        records, calls, sessions = {}, {}, {}
        for name, (model, v) in nets.items():
            path = os.path.join(tmp, f"{name}.stablehlo")
            records[name] = export.export_model(model, v, path)
            calls[name] = export.load_stablehlo(path).call
            if ort is not None:
                onnx_path = os.path.join(tmp, f"{name}.onnx")
                export.export_model(model, v, onnx_path, format="onnx")
                sessions[name] = ort.InferenceSession(onnx_path)
        rng = np.random.default_rng(0)
        for batch in BATCHES:
            x = rng.standard_normal((batch,) + SHAPE).astype(np.float32)
            hlo = metrics.compare_latency({k: (f, (x,)) for k, f in calls.items()},
                                          repeats=args.repeats, warmup=5)
            onnx = time_onnx(sessions, x, args.repeats) if sessions else {}
            for name in nets:
                rows.append({"model": name, "batch": batch, "hlo_s": hlo[name],
                             "onnx_s": onnx.get(name), "params": records[name]["params"],
                             "flops": records[name]["flops_per_example"],
                             "widths": records[name]["widths"]})
    lines = [f"# Exported LeNet-300-100, dense vs pruned, {datetime.date.today().isoformat()}\n",
             f"CPU {cpu_name()}, {os.cpu_count()} cores, jax {jax.__version__} "
             f"({jax.default_backend()}), pruned: coreset, ratio {args.ratio} of the params, "
             f"random weights; medians of {args.repeats} interleaved calls; load average "
             f"{os.getloadavg()[0]:.2f}\n",
             "| model | widths | params | FLOPs / example | batch | StableHLO (jitted) [ms] "
             "| speed-up | ONNX Runtime [ms] |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    by = {(r["model"], r["batch"]): r for r in rows}
    for r in rows:
        base = by[("dense", r["batch"])]
        onnx = f"{r['onnx_s'] * 1e3:.3f}" if r["onnx_s"] is not None else "not installed"
        lines.append(f"| {r['model']} | {', '.join(map(str, r['widths']))} | {r['params']:,} | "
                     f"{r['flops']:,} | {r['batch']} | {r['hlo_s'] * 1e3:.3f} | "
                     f"{base['hlo_s'] / r['hlo_s']:.2f}× | {onnx} |")
    if ort is not None:
        from importlib.metadata import version
        lines.append(f"\nONNX: jax2onnx {version('jax2onnx')}, onnxruntime "
                     f"{ort.__version__} (CPUExecutionProvider, default threads).")
    lines.append("\nMade by `python experiments/bench_export.py` (one run on a shared machine: "
                 "see the load average).")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        pathlib.Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        pathlib.Path(args.out).write_text(text)
    return rows


if __name__ == "__main__":
    main()
