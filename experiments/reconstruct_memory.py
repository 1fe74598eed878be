"""Memory of the least-squares refit: the process's peak resident memory before and after
``prune(..., data=S, reconstruct="lstsq")`` with ``|S|`` = ``--size`` inputs, in a fresh
process (``ru_maxrss``; the weights are a random initialisation: the refit's memory does not
depend on their values).

    python experiments/reconstruct_memory.py --model lenet5 --size 10000
    python experiments/reconstruct_memory.py --model vgg16 --size 1000 --ratio 0.5

Prints one Markdown row: model, |S|, S's own size, peak before, peak after, the increment.
"""
from __future__ import annotations

import argparse
import pathlib
import resource
import sys

import jax
import numpy as np

# run as a file (python experiments/<name>.py), not with -m: put the repository root on sys.path
if not __package__:
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import jaxprune  # noqa: E402
from experiments.common import harness  # noqa: E402
from jaxprune import models  # noqa: E402


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="lenet5", choices=models.model_names())
    p.add_argument("--size", type=int, default=10000, help="|S|")
    p.add_argument("--ratio", type=float, default=0.85)
    return p.parse_args(argv)


def run(args) -> dict:
    model = models.get_model(args.model)
    shape = models.default_input_shape(args.model)
    variables = model.init(jax.random.key(0), np.zeros((1, *shape), np.float32))
    S = np.random.default_rng(0).normal(size=(args.size, *shape)).astype(np.float32)
    plain = jaxprune.prune(variables, jax.random.key(0), args.ratio, model=model,
                           input_shape=shape)
    jax.block_until_ready(plain.params)
    before = _peak_mib()
    res = jaxprune.prune(variables, jax.random.key(0), args.ratio, model=model,
                         input_shape=shape, data=S, reconstruct="lstsq")
    jax.block_until_ready(res.params)
    after = _peak_mib()
    row = {"model": args.model, "size": args.size, "s_mib": S.nbytes / 2**20,
           "before_mib": before, "after_mib": after, "increment_mib": after - before,
           "layers": len(res.report["reconstruct"]["layers"])}
    print(f"| {args.model} | {args.size} | {row['s_mib']:.0f} | {before:.0f} | {after:.0f} | "
          f"{row['increment_mib']:.0f} | {row['layers']} |")
    return row


if __name__ == "__main__":
    harness.main(run, parse_args())
