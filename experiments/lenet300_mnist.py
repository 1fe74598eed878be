"""Table 1 (main paper): coreset neuron pruning of LeNet-300-100 on real MNIST, with the
baselines in the same harness (``experiments/common/harness.py``).

Train (or restore) the dense network on MNIST-train minus a held-out validation split, prune it
at the paper's ratios of the fully connected parameters with every method of ``--methods``,
fine-tune each with the same budget and seeds, and print a table shaped like Table 1: baseline
error, error right after pruning, pruned error best and mean ± std over seeds, achieved PR.
Data-informed methods (``sipp``, ``pfp``) see ``--data-batch`` images of the validation split.
Unstructured methods (``magnitude``, ``sipp``) give masked networks fine-tuned under the mask.

    python experiments/lenet300_mnist.py            # quick: 1 seed, short fine-tune (minutes)
    python experiments/lenet300_mnist.py --full     # 5 seeds, fine-tune to convergence

Writes ``<out>/results.json``, ``<out>/table.md`` and ``<out>/error_vs_ratio.png``.
"""
from __future__ import annotations

import argparse
import pathlib
import sys
import time

import numpy as np

from common import harness, tables
from jaxprune import checkpoint, data, metrics, train
from jaxprune.models import LeNet300100


PAPER_RATIOS = (0.9, 0.926, 0.946)
PAPER_ERR = {0.9: 1.98, 0.926: 2.64, 0.946: 3.51}  # main paper, Table 1 (best of 5)
METHODS = ("coreset", "pvc", "sipp", "pfp", "l1_norm", "random")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--full", action="store_true", help="5 seeds and the long fine-tune budget")
    p.add_argument("--ratios", type=float, nargs="+", default=list(PAPER_RATIOS))
    p.add_argument("--methods", nargs="+", default=list(METHODS),
                   help="method[:sampling] entries (jaxprune.methods.names()), sampling = "
                        "sparsity_first | deterministic, e.g. coreset:sparsity_first magnitude")
    p.add_argument("--allocation", default="bound", choices=("bound", "uniform"))
    p.add_argument("--seeds", type=int, default=None, help="number of pruning seeds")
    p.add_argument("--train-epochs", type=int, default=None)
    p.add_argument("--finetune-epochs", type=int, default=None)
    p.add_argument("--finetune-lr", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--widths", type=int, nargs="+", default=[300, 100])
    p.add_argument("--val-size", type=int, default=5000,
                   help="training images held out as the validation split (not trained on)")
    p.add_argument("--data-batch", type=int, default=128,
                   help="validation images S given to data-informed methods (sipp, pfp)")
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", default="results/lenet300_mnist")
    p.add_argument("--retrain", action="store_true", help="ignore a saved dense model")
    p.add_argument("--limit-train", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.seeds = args.seeds or (5 if args.full else 1)
    args.train_epochs = args.train_epochs or 20
    args.finetune_epochs = args.finetune_epochs or (30 if args.full else 8)
    for entry in args.methods:
        try:
            harness.parse_entry(entry)
        except ValueError as err:
            p.error(str(err))
    return args


def dense_model(args, train_ds, test_ds, out: pathlib.Path):
    """Restore ``out/dense`` if it exists (same widths), else train and save it."""
    model = LeNet300100(widths=tuple(args.widths), num_classes=train_ds.num_classes)
    path = out / "dense"
    if path.exists() and not args.retrain:
        saved, variables, _ = checkpoint.load_model(path)
        if saved == model:
            print(f"restored dense model from {path}")
            return model, variables
    cfg = train.default_config("lenet300", epochs=args.train_epochs, batch_size=args.batch_size,
                               seed=0)
    t0 = time.time()
    res = train.fit(model, train_ds, cfg, out_dir=out / "dense_train", eval_ds=test_ds)
    print(f"trained dense model in {time.time() - t0:.0f}s")
    checkpoint.save_model(path, model, res.variables, meta={"dataset": args.dataset})
    return model, res.variables


def run(args) -> dict:
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    full_train = data.head(data.load(args.dataset, "train", args.data_dir), args.limit_train)
    test_ds = data.load(args.dataset, "test", args.data_dir)
    train_ds, val_ds = data.train_val_split(full_train, min(args.val_size, len(full_train) // 2))
    print(f"{args.dataset}: {len(train_ds)} train / {len(val_ds)} validation / {len(test_ds)} "
          "test images")
    model, dense = dense_model(args, train_ds, test_ds, out)
    base_err = harness.error(model, dense, test_ds)
    print(f"baseline error {base_err:.2f}%  params {metrics.param_count(dense['params']):,}")
    batch = harness.validation_batch(val_ds, args.data_batch)

    rows = harness.grid(model, dense, args, train_ds, test_ds, batch)
    for row in rows:
        row["achieved_pr"] = row["report"].get("ratios", {}).get("params_prunable", row["pr"])
    result = {"baseline_err": base_err, "rows": rows, "args": vars(args),
              "paper_targets": {str(k): v for k, v in PAPER_ERR.items()}}
    tables.save_outputs(out, result, format_table(result, args),
                         lambda path: plot(result, args, path))
    return result


def format_table(result, args) -> str:
    def cells(ratio, method, rows):
        shape = "masked" if rows[0]["widths"] is None else str(tuple(rows[0]["widths"]))
        return (f"{method} | {100 * ratio:.1f} | {100 * np.mean([r['pr'] for r in rows]):.2f} "
                f"| {result['baseline_err']:.2f} | {tables.err_cells(rows)} "
                f"| {shape} | {PAPER_ERR.get(ratio, '–')}")
    header = ("| Method | PR target (%) | PR achieved (%) | Baseline Err (%) | Err before FT (%) "
              "| Pruned Err best (mean ± std) (%) | widths | paper (coreset) Err (%) |")
    return tables.markdown_table(result, args.ratios, args.methods, header, cells)


def plot(result, args, path):
    tables.plot_error_vs_ratio(result, args.ratios, args.methods, path,
                                lambda r: 100 * r["pr"], "pruned FC parameters (%)",
                                "LeNet-300-100 / MNIST neuron pruning")


if __name__ == "__main__":
    run(parse_args())
    sys.exit(0)
