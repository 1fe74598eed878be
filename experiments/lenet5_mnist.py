"""Filter + neuron pruning of LeNet-5 on real MNIST: coreset vs the baselines (pvc, sipp, pfp,
filter-norm L1, random) in the same harness (``experiments/harness.py``).

Runs on this CPU. Train (or restore) LeNet-5 (6-16 conv filters, 120-84 hidden neurons) on
MNIST-train minus a held-out validation split, then for three ratios, every method and three
seeds: prune the conv filters and the hidden dense neurons together (``unit=params``: fraction
of the parameters of the pruned layers = all but the 10 output biases; the unstructured ``sipp``
and ``magnitude`` mask that fraction of the kernels instead), fine-tune with the same budget for
every method, evaluate. Data-informed methods (``sipp``, ``pfp``) see ``--data-batch``
validation images. PR counts non-zero parameters of the whole model. Prints a table
(error before / after fine-tuning, best and mean ± std over seeds, achieved PR and FR) and
writes ``<out>/results.json``, ``<out>/table.md``, ``<out>/error_vs_ratio.png``.

    JAXPRUNE_DATA_DIR=../shared/data python experiments/lenet5_mnist.py            # 3 seeds
    JAXPRUNE_DATA_DIR=../shared/data python experiments/lenet5_mnist.py --quick    # minutes

``JAXPRUNE_DATA_DIR`` (or ``--data-dir``) is the folder that holds ``mnist/`` with the four IDX
files (``train-images-idx3-ubyte.gz`` ...); nothing is downloaded.
"""
from __future__ import annotations

import argparse
import pathlib
import sys
import time

import jax
import numpy as np

from common import harness, tables
from jaxprune import checkpoint, data, metrics, train
from jaxprune.models import LeNet5


RATIOS = (0.7, 0.85, 0.93)
METHODS = ("coreset", "pvc", "sipp", "pfp", "l1_norm", "random")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="1 seed, 2 dense epochs, 1 fine-tune epoch, 20k training images")
    p.add_argument("--ratios", type=float, nargs="+", default=list(RATIOS))
    p.add_argument("--val-size", type=int, default=5000,
                   help="training images held out as the validation split (not trained on)")
    p.add_argument("--data-batch", type=int, default=128,
                   help="validation images S given to data-informed methods (sipp, pfp)")
    p.add_argument("--methods", nargs="+", default=list(METHODS),
                   help="method[:sampling], sampling = sparsity_first | deterministic")
    p.add_argument("--unit", default="params", choices=("params", "neurons", "flops"))
    p.add_argument("--allocation", default="bound", choices=("bound", "uniform"))
    p.add_argument("--seeds", type=int, default=None)
    p.add_argument("--train-epochs", type=int, default=None)
    p.add_argument("--finetune-epochs", type=int, default=None)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--finetune-lr", type=float, default=5e-4)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--widths", type=int, nargs="+", default=[6, 16, 120, 84])
    p.add_argument("--subset", type=int, default=None, help="use the first N training images")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", default="results/lenet5_mnist")
    p.add_argument("--retrain", action="store_true", help="ignore a saved dense model")
    p.add_argument("--limit-train", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--limit-test", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.seeds = args.seeds or (1 if args.quick else 3)
    args.train_epochs = args.train_epochs or (2 if args.quick else 10)
    args.finetune_epochs = args.finetune_epochs or (1 if args.quick else 3)
    if args.subset is None and args.quick:
        args.subset = 20000
    if args.limit_train is not None:
        args.subset = args.limit_train
    for entry in args.methods:
        try:
            harness.parse_entry(entry)
        except ValueError as err:
            p.error(str(err))
    return args


def dense_model(args, train_ds, out: pathlib.Path):
    """Restore ``out/dense`` if it holds the same model, else train and save it."""
    model = LeNet5(widths=tuple(args.widths), num_classes=train_ds.num_classes)
    path = out / "dense"
    if path.exists() and not args.retrain:
        saved, variables, meta = checkpoint.load_model(path)
        if saved == model and meta.get("train_examples") == len(train_ds) and \
                meta.get("epochs") == args.train_epochs:
            print(f"restored dense model from {path}", flush=True)
            return model, variables
    cfg = train.default_config("lenet5", learning_rate=args.lr, epochs=args.train_epochs,
                               batch_size=args.batch_size, seed=0, log_every=0)
    t0 = time.time()
    res = train.fit(model, train_ds, cfg, progress=False)
    print(f"trained dense LeNet-5 ({args.train_epochs} epochs) in {time.time() - t0:.0f}s",
          flush=True)
    checkpoint.save_model(path, model, res.variables,
                          meta={"dataset": "mnist", "train_examples": len(train_ds),
                                "epochs": args.train_epochs})
    return model, jax.device_get(res.variables)


def run(args) -> dict:
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    full_train = data.head(data.load("mnist", "train", args.data_dir), args.subset)
    test_ds = data.head(data.load("mnist", "test", args.data_dir), args.limit_test)
    train_ds, val_ds = data.train_val_split(full_train, min(args.val_size, len(full_train) // 2))
    print(f"MNIST: {len(train_ds)} train / {len(val_ds)} validation / {len(test_ds)} test images",
          flush=True)
    model, dense = dense_model(args, train_ds, out)
    shape = (28, 28, 1)
    base_err = harness.error(model, dense, test_ds)
    dense_params = metrics.param_count(dense)
    dense_flops = metrics.flops(model, dense, shape)
    print(f"baseline error {base_err:.2f}%  params {dense_params:,}  FLOPs {dense_flops:,}",
          flush=True)
    batch = harness.validation_batch(val_ds, args.data_batch)

    rows = harness.grid(model, dense, args, train_ds, test_ds, batch, input_shape=shape,
                         unit=args.unit)
    result = {"baseline_err": base_err, "dense_params": dense_params,
              "dense_flops": dense_flops, "rows": rows, "args": vars(args)}
    tables.save_outputs(out, result, format_table(result, args),
                         lambda path: plot(result, args, path))
    return result


def format_table(result, args) -> str:
    def cells(ratio, method, rows):
        fr = "–" if rows[0]["fr"] is None else f"{100 * np.mean([r['fr'] for r in rows]):.2f}"
        shape = "masked" if rows[0]["widths"] is None else str(tuple(rows[0]["widths"]))
        return (f"{method} | {100 * ratio:g} | {100 * np.mean([r['pr'] for r in rows]):.2f} "
                f"| {fr} | {shape} | {tables.err_cells(rows)}")
    header = ("| Method | target (% " + args.unit + ") | PR (%) | FR (%) | widths "
              "| Err before FT mean ± std (%) | Pruned Err best (mean ± std) (%) |")
    title = (f"LeNet-5 on MNIST, baseline error {result['baseline_err']:.2f}%, "
             f"{args.seeds} seed(s), fine-tune {args.finetune_epochs} epoch(s)")
    return title + "\n" + tables.markdown_table(result, args.ratios, args.methods, header, cells)


def plot(result, args, path):
    tables.plot_error_vs_ratio(result, args.ratios, args.methods, path, lambda r: 100 * r["pr"],
                                "parameters removed (%)", "LeNet-5 / MNIST filter + neuron pruning")


if __name__ == "__main__":
    run(parse_args())
    sys.exit(0)
