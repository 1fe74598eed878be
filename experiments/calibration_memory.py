"""Peak memory of the calibration statistics that ``wanda_sp`` and ``flap`` read: every kernel
layer's input captured at once and reduced (``_flax.kernel_inputs`` then
``calibration.from_inputs``) against the streamed statistics of
``calibration.input_statistics`` (one jitted forward per batch that returns only sums).

Each way runs in a fresh process (``ru_maxrss`` only grows), on a byte-level decoder
(:class:`jaxprune.models.LM`, random weights: memory does not depend on their values) and
``--windows`` token windows of ``--seq-len`` bytes. The target of issue 31 is the dense
parameters plus about one block's activations.

    python experiments/calibration_memory.py --out experiments/results/bench/calibration_memory.md

Prints (and writes) one Markdown table: way, peak growth, parameters, one batch's block
activations (a rough scale: ``batch · seq_len · (4·dim + 3·mlp_dim)`` float32 values).
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
    p.add_argument("--out", default=None, help="Markdown file to write the table to")
    return p.parse_args(argv)


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def one_way(args) -> dict:
    """The peak-memory growth of one way of gathering the statistics, in this process."""
    model = LM(dim=args.dim, num_layers=args.layers, num_heads=args.heads,
               num_kv_heads=args.heads // 2, mlp_dim=args.mlp_dim, max_len=args.seq_len)
    tokens = np.random.default_rng(0).integers(0, 256, (args.windows, args.seq_len))
    tokens = tokens.astype(np.int32)
    variables = model.init(jax.random.key(0), tokens[:1])
    data = _flax.Example((tokens,))
    paths = list(_flax.kernel_modules(model, variables, data.take(0, 1)))
    before = _peak_mib()
    if args.way == "all_at_once":
        inputs = _flax.kernel_inputs(model, variables, data, batch_size=args.windows)
        stats = {p: calibration.from_inputs(x.reshape(-1, x.shape[-1])) for p, x in
                 inputs.items()}
    else:
        stats = calibration.input_statistics(model, variables, data, paths,
                                             batch_size=args.batch_size)
    params = sum(np.size(x) for x in jax.tree.leaves(variables))
    return {"way": args.way, "peak_growth_mib": _peak_mib() - before, "layers": len(stats),
            "params_mib": params * 4 / 2**20}


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
    block = args.batch_size * args.seq_len * (4 * args.dim + 3 * args.mlp_dim) * 4 / 2**20
    lines = [f"LM dim {args.dim}, {args.layers} blocks, {args.heads} heads, MLP {args.mlp_dim}; "
             f"{args.windows} windows of {args.seq_len} bytes; streaming batch "
             f"{args.batch_size}.", "",
             "| way | peak growth (MiB) | layers | dense params (MiB) | one batch's block "
             "activations (MiB, rough) |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {r['way']} | {r['peak_growth_mib']:.0f} | {r['layers']} | "
              f"{r['params_mib']:.1f} | {block:.0f} |" for r in runs]
    text = "\n".join(lines)
    if args.out:
        pathlib.Path(args.out).write_text(text + "\n")
    print(text)
    return text


if __name__ == "__main__":
    main()
