"""Peak memory of the calibration statistics that ``wanda_sp`` and ``flap`` read: every kernel
layer's input captured at once and reduced (``_flax.kernel_inputs`` then
``calibration.from_inputs``) against the streamed statistics of
``calibration.input_statistics`` (one jitted forward per batch that returns only sums).

Each way runs in a fresh process (``ru_maxrss`` only grows), on a byte-level decoder
(:class:`jaxprune.models.LM`, random weights: memory does not depend on their values) and
``--windows`` token windows of ``--seq-len`` bytes. The target of issue 31 is the dense
parameters plus about one block's activations. Two peaks per way: the growth of the whole
process's peak (compilation included) and, on Linux, the peak of the gathering itself once its
programs are compiled (``VmHWM`` reset through ``/proc/self/clear_refs`` after a warm-up).

A second table gives, for ``--depths`` blocks, the bytes XLA's buffer assignment plans for
one streaming forward (``calibration.planned_memory``: the largest set of activations live at
once) against the activations the all-at-once capture returns.

    python experiments/calibration_memory.py --out experiments/results/bench/calibration_memory.md

Prints (and writes) two Markdown tables: per way, the peaks, parameters and one batch's block
activations (a rough scale: ``batch · seq_len · (4·dim + 3·mlp_dim + 2·heads·seq_len)``
float32 values: the block's projections, its MLP and its attention scores and weights).
"""
from __future__ import annotations

import argparse
import json
import pathlib
import resource
import subprocess
import sys

import jax
import numpy as np

from jaxprune import _flax, calibration
from jaxprune.models.lm import LM


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--mlp-dim", type=int, default=1024)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--windows", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=8, help="streaming: windows per forward")
    p.add_argument("--way", choices=("all_at_once", "streaming"), default=None,
                   help="run one way in this process and print its JSON (the driver's job)")
    p.add_argument("--depths", type=int, nargs="+", default=[2, 4, 8],
                   help="block counts of the planned-memory table")
    p.add_argument("--out", default=None, help="Markdown file to write the table to")
    return p.parse_args(argv)


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _status_mib(field: str) -> float | None:
    """A ``VmRSS``/``VmHWM`` line of ``/proc/self/status`` in MiB (None off Linux)."""
    try:
        for line in pathlib.Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _reset_peak() -> bool:
    """Reset the process's ``VmHWM`` to its current resident set (Linux)."""
    try:
        pathlib.Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _model(args, layers):
    model = LM(dim=args.dim, num_layers=layers, num_heads=args.heads,
               num_kv_heads=args.heads // 2, mlp_dim=args.mlp_dim, max_len=args.seq_len)
    tokens = np.random.default_rng(0).integers(0, 256, (args.windows, args.seq_len))
    tokens = tokens.astype(np.int32)
    variables = model.init(jax.random.key(0), tokens[:1])
    data = _flax.Example((tokens,))
    return model, variables, data, list(_flax.kernel_modules(model, variables, data.take(0, 1)))


def _gather(args, model, variables, data, paths):
    """The statistics of every layer's input on all of ``data``, the way ``args.way`` says."""
    if args.way == "all_at_once":
        inputs = _flax.kernel_inputs(model, variables, data, batch_size=args.windows)
        return {p: calibration.from_inputs(x.reshape(-1, x.shape[-1])) for p, x in
                inputs.items()}
    return calibration.input_statistics(model, variables, data, paths,
                                        batch_size=args.batch_size)


def one_way(args) -> dict:
    """The peak-memory growth of one way of gathering the statistics, in this process."""
    model, variables, data, paths = _model(args, args.layers)
    before = _peak_mib()
    stats = _gather(args, model, variables, data, paths)
    growth = _peak_mib() - before
    # again, its programs compiled: the peak of the gathering alone
    run_peak = None
    if _reset_peak():
        rss = _status_mib("VmRSS")
        _gather(args, model, variables, data, paths)
        hwm = _status_mib("VmHWM")
        run_peak = None if rss is None or hwm is None else hwm - rss
    params = sum(np.size(x) for x in jax.tree.leaves(variables))
    return {"way": args.way, "peak_growth_mib": growth, "run_peak_mib": run_peak,
            "layers": len(stats), "params_mib": params * 4 / 2**20}


def planned(args) -> list[dict]:
    """Per depth: XLA's planned bytes of one streaming forward, and what capturing every
    layer's input at once returns for one batch of the same size."""
    rows = []
    for layers in args.depths:
        model, variables, data, paths = _model(args, layers)
        mem = calibration.planned_memory(model, variables, data, paths,
                                         batch_size=args.batch_size)
        part = jax.tree.map(np.asarray, data.take(0, args.batch_size))
        held = _flax._capture.lower(_flax.hashable(model), (), variables, part).compile()
        rows.append({"blocks": layers, "params_mib": mem.arguments / 2**20,
                     "temp_mib": mem.temp / 2**20,
                     "held_mib": held.memory_analysis().output_size_in_bytes / 2**20})
    return rows


def main(argv=None) -> str:
    args = parse_args(argv)
    if args.way:
        print(json.dumps(one_way(args)))
        return ""
    flags = [a for a in (argv if argv is not None else sys.argv[1:])]
    if "--out" in flags:
        i = flags.index("--out")
        flags = flags[:i] + flags[i + 2:]
    runs = []
    for way in ("all_at_once", "streaming"):
        out = subprocess.run([sys.executable, __file__, *flags, "--way", way],
                             capture_output=True, text=True, check=True)
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    block = args.batch_size * args.seq_len * (
        4 * args.dim + 3 * args.mlp_dim + 2 * args.heads * args.seq_len) * 4 / 2**20

    def mib(value):
        return "n/a" if value is None else f"{value:.0f}"

    lines = [f"LM dim {args.dim}, {args.layers} blocks, {args.heads} heads, MLP {args.mlp_dim}; "
             f"{args.windows} windows of {args.seq_len} bytes; streaming batch "
             f"{args.batch_size}.", "",
             "| way | peak growth, compile included (MiB) | peak of the compiled run (MiB) | "
             "layers | dense params (MiB) | one batch's block activations (MiB, rough) |",
             "|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['way']} | {mib(r['peak_growth_mib'])} | {mib(r['run_peak_mib'])} | "
              f"{r['layers']} | {r['params_mib']:.1f} | {block:.0f} |" for r in runs]
    lines += ["", f"XLA's plan for one streaming forward of {args.batch_size} windows "
              "(`calibration.planned_memory`) against the inputs the all-at-once capture "
              "holds for the same windows, by depth:", "",
              "| blocks | variables + batch (MiB) | live activations, streaming (MiB) | "
              "layer inputs held, all at once (MiB) |", "|---:|---:|---:|---:|"]
    lines += [f"| {r['blocks']} | {r['params_mib']:.1f} | {r['temp_mib']:.1f} | "
              f"{r['held_mib']:.1f} |" for r in planned(args)]
    text = "\n".join(lines)
    if args.out:
        pathlib.Path(args.out).write_text(text + "\n")
    print(text)
    return text


if __name__ == "__main__":
    main()
