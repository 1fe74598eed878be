"""Table 1 (main paper): neuron pruning of LeNet-300-100 on real MNIST, at the paper's
protocol, with the statistics to tell methods apart.

For each of ``--dense-seeds`` independently trained dense nets (MNIST-train minus a held-out
validation split), each ratio, each method and each of ``--seeds`` prune seeds: prune, measure
the test error right after pruning and its percentile among ``--random-subsets`` random channel
subsets at the same widths, then fine-tune with plain cross-entropy and/or logit distillation
from the dense net (``--finetune plain|kd|both``), keeping the best validation epoch: by default
(``--ft-schedule anneal``) a fixed ``--ft-epochs`` budget with the cosine horizon equal to it;
``--ft-schedule early_stop`` is the recipe of the committed results before issue 33 (cosine
over ``--max-epochs``, stopped after ``--patience`` epochs without improvement). Method
entries ending in ``+norw`` drop the re-weights; ``--full`` adds the like-for-like rows
``pvc+norw``, ``coreset:sparsity_first`` and ``coreset:sparsity_first+norw``. Data-informed methods
(``sipp``, ``pfp``) see ``--data-batch`` validation images; ``--reweight off`` drops the sampled
methods' count/(m q) re-weights. Statistics are over nets: mean ± std, and the paired
difference ``coreset − method`` with its 95% t-interval.

    python experiments/lenet300_mnist.py               # quick: 1 net, 1 seed, 8 epochs max
    python experiments/lenet300_mnist.py --full --resume   # 5 nets, both recipes, 30 epochs max
    python experiments/lenet300_mnist.py --report-only --out R   # table and plot again
    python experiments/readme_report.py --write   # the README/docs blocks from the results

Writes ``<out>/results.json`` (``{"config", "rows"}``, one row per trial, rewritten after
each so ``--resume`` continues an interrupted run), ``<out>/table.md`` and
``<out>/error_vs_ratio.png``; ``--readme FILE`` rewrites the ``table1`` block of FILE from them.
"""
from __future__ import annotations

import argparse
import pathlib
import sys

# run as a file (python experiments/<name>.py), not with -m: put the repository root on sys.path
if not __package__:
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from experiments.common import harness, protocol  # noqa: E402
from jaxprune.models import LeNet300100  # noqa: E402

PAPER_RATIOS = (0.9, 0.926, 0.946)
PAPER_ERR = {"0.9": 1.98, "0.926": 2.64, "0.946": 3.51}  # main paper, Table 1 (best of 5)
METHODS = ("coreset", "pvc", "sipp", "pfp", "l1_norm", "random")
# the like-for-like rows (protocol.LIKE_FOR_LIKE: pvc without its re-weights, coreset
# sampled sparsity-first with and without them) go with --full from issue 33 on
FULL_METHODS = ("coreset", "pvc", "pfp", "l1_norm", "l2_norm", "random", "sipp",
                *protocol.LIKE_FOR_LIKE)
REFERENCE = "coreset"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    protocol.add_arguments(p, ratios=PAPER_RATIOS, out="results/lenet300_mnist")
    p.add_argument("--widths", type=int, nargs="+", default=[300, 100])
    return protocol.finish_arguments(p, p.parse_args(argv), METHODS, FULL_METHODS, REFERENCE)


def run(args) -> dict:
    return protocol.run(args, lambda ds: LeNet300100(widths=tuple(args.widths),
                                                     num_classes=ds.num_classes),
                        "lenet300", REFERENCE, PAPER_ERR, "LeNet-300-100 / MNIST neuron pruning")


if __name__ == "__main__":
    harness.main(run, parse_args())
