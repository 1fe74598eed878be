"""Filter + neuron pruning of LeNet-5 on real MNIST: coreset vs the baselines, at the same
protocol as Table 1 (``experiments/lenet300_mnist.py``, ``common/protocol.py``).

For each of ``--dense-seeds`` independently trained LeNet-5s (6-16 conv filters, 120-84 hidden
neurons), each ratio (of the whole model's parameters, ``--unit``), each method and prune seed:
prune the conv filters and the hidden neurons together, measure the error right after pruning
and its percentile among ``--random-subsets`` random channel subsets at the same widths,
fine-tune to convergence on the validation split (``--finetune plain|kd|both``), and report
mean ± std over nets and the paired difference ``coreset − method`` with its 95% interval.
The unstructured ``sipp``/``magnitude`` mask that fraction of the kernels instead.

    JAXPRUNE_DATA_DIR=../shared/data python experiments/lenet5_mnist.py            # 1 net
    JAXPRUNE_DATA_DIR=../shared/data python experiments/lenet5_mnist.py --dense-seeds 3 \
        --finetune both --resume

Writes ``<out>/results.json``, ``<out>/table.md``, ``<out>/error_vs_ratio.png``.
"""
from __future__ import annotations

import argparse
import pathlib
import sys

# run as a file (python experiments/<name>.py), not with -m: put the repository root on sys.path
if not __package__:
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from experiments.common import harness, protocol  # noqa: E402
from jaxprune.models import LeNet5  # noqa: E402

RATIOS = (0.7, 0.85, 0.93)
METHODS = ("coreset", "pvc", "sipp", "pfp", "l1_norm", "random")
FULL_METHODS = ("coreset", "pvc", "pfp", "l1_norm", "l2_norm", "random", "sipp")
REFERENCE = "coreset"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    protocol.add_arguments(p, ratios=RATIOS, out="results/lenet5_mnist")
    p.add_argument("--widths", type=int, nargs="+", default=[6, 16, 120, 84])
    p.add_argument("--unit", default="params", choices=("params", "neurons", "flops"))
    args = protocol.finish_arguments(p, p.parse_args(argv), METHODS, FULL_METHODS, REFERENCE)
    args.defining = ("unit",)
    return args


def run(args) -> dict:
    return protocol.run(args, lambda ds: LeNet5(widths=tuple(args.widths),
                                                num_classes=ds.num_classes),
                        "lenet5", REFERENCE, {}, "LeNet-5 / MNIST filter + neuron pruning",
                        block="lenet5")


if __name__ == "__main__":
    harness.main(run, parse_args())
