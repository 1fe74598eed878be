"""Table 1 (main paper): neuron pruning of LeNet-300-100 on real MNIST, at the paper's
protocol, with the statistics to tell methods apart.

For each of ``--dense-seeds`` independently trained dense nets (MNIST-train minus a held-out
validation split), each ratio, each method and each of ``--seeds`` prune seeds: prune, measure
the test error right after pruning and its percentile among ``--random-subsets`` random channel
subsets at the same widths, then fine-tune until the validation error stops improving
(``--patience``, at most ``--max-epochs``) with plain cross-entropy and/or logit distillation
from the dense net (``--finetune plain|kd|both``), keeping the best epoch. Data-informed methods
(``sipp``, ``pfp``) see ``--data-batch`` validation images; ``--reweight off`` drops the sampled
methods' count/(m q) re-weights. Statistics are over nets: mean ± std, and the paired
difference ``coreset − method`` with its 95% t-interval.

    python experiments/lenet300_mnist.py               # quick: 1 net, 1 seed, 8 epochs max
    python experiments/lenet300_mnist.py --full --resume   # 5 nets, both recipes, 30 epochs max
    python experiments/lenet300_mnist.py --report-only --out R --readme README.md

Writes ``<out>/results.json`` (``{"config", "rows"}``, one row per trial, rewritten after
each so ``--resume`` continues an interrupted run), ``<out>/table.md`` and
``<out>/error_vs_ratio.png``; ``--readme`` rewrites the README's Table 1 block from them.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import sys

from common import harness, protocol, report
from jaxprune import data
from jaxprune.models import LeNet300100

PAPER_RATIOS = (0.9, 0.926, 0.946)
PAPER_ERR = {"0.9": 1.98, "0.926": 2.64, "0.946": 3.51}  # main paper, Table 1 (best of 5)
METHODS = ("coreset", "pvc", "sipp", "pfp", "l1_norm", "random")
FULL_METHODS = ("coreset", "pvc", "pfp", "l1_norm", "l2_norm", "random", "sipp")
REFERENCE = "coreset"
# the arguments that define an experiment (a --resume must match them)
DEFINING = ("ratios", "methods", "allocation", "dense_seeds", "seeds", "finetune", "max_epochs",
            "patience", "finetune_lr", "kd_alpha", "random_subsets", "reweight", "train_epochs",
            "batch_size", "widths", "val_size", "data_batch", "dataset", "limit_train")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--full", action="store_true",
                   help="the paper's protocol: 5 dense nets, every structured method and sipp, "
                        "both recipes, 30 epochs max, 100 random subsets")
    p.add_argument("--ratios", type=float, nargs="+", default=list(PAPER_RATIOS))
    p.add_argument("--methods", nargs="+", default=None,
                   help="method[:sampling] entries, e.g. coreset:sparsity_first magnitude")
    p.add_argument("--allocation", default="bound", choices=("bound", "uniform"))
    p.add_argument("--dense-seeds", type=int, default=None, help="independently trained nets")
    p.add_argument("--seeds", type=int, default=1, help="prune seeds per net")
    p.add_argument("--finetune", default=None, choices=("plain", "kd", "both"))
    p.add_argument("--max-epochs", type=int, default=None, help="fine-tune epochs at most")
    p.add_argument("--patience", type=int, default=3,
                   help="stop when the validation error has not improved for this many epochs")
    p.add_argument("--finetune-lr", type=float, default=1e-3)
    p.add_argument("--kd-alpha", type=float, default=0.5, help="weight of the logit-MSE term")
    p.add_argument("--random-subsets", type=int, default=None)
    p.add_argument("--reweight", default="on", choices=("on", "off"))
    p.add_argument("--train-epochs", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--widths", type=int, nargs="+", default=[300, 100])
    p.add_argument("--val-size", type=int, default=5000,
                   help="training images held out as the validation split (not trained on)")
    p.add_argument("--data-batch", type=int, default=128,
                   help="validation images S given to data-informed methods (sipp, pfp)")
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", default="results/lenet300_mnist")
    p.add_argument("--resume", action="store_true", help="keep the rows already in results.json")
    p.add_argument("--report-only", action="store_true",
                   help="no training: table, plot (and --readme) from results.json")
    p.add_argument("--readme", default=None, help="README to write the Table 1 block into")
    p.add_argument("--limit-train", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.methods = args.methods or list(FULL_METHODS if args.full else METHODS)
    args.dense_seeds = args.dense_seeds or (5 if args.full else 1)
    args.finetune = args.finetune or ("both" if args.full else "plain")
    args.max_epochs = args.max_epochs or (30 if args.full else 8)
    if args.random_subsets is None:
        args.random_subsets = 100 if args.full else 20
    for entry in args.methods:
        try:
            harness.parse_entry(entry)
        except ValueError as err:
            p.error(str(err))
    if REFERENCE not in args.methods:
        p.error(f"--methods must include the reference method {REFERENCE!r}")
    return args


def run(args) -> dict:
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.report_only:
        return write_report(json.loads((out / "results.json").read_text()), args, out)
    full_train = data.head(data.load(args.dataset, "train", args.data_dir), args.limit_train)
    test_ds = data.load(args.dataset, "test", args.data_dir)
    train_ds, val_ds = data.train_val_split(full_train, min(args.val_size, len(full_train) // 2))
    print(f"{args.dataset}: {len(train_ds)} train / {len(val_ds)} validation / {len(test_ds)} "
          f"test images; CPU: {protocol.cpu_name()}", flush=True)
    model = LeNet300100(widths=tuple(args.widths), num_classes=train_ds.num_classes)
    rows = protocol.Rows(out, {k: getattr(args, k) for k in DEFINING}, args.resume)
    nets = protocol.dense_nets(model, "lenet300", train_ds, test_ds, out,
                               range(args.dense_seeds), args.train_epochs, args.batch_size)
    batch = harness.validation_batch(val_ds, args.data_batch)
    protocol.trials(args, model, nets, (train_ds, val_ds, test_ds), rows,
                    train_ds.images.shape[1:], batch)
    doc = {"config": rows.config, "rows": rows.rows, "cpu": protocol.cpu_name()}
    rows.save({"cpu": doc["cpu"]})
    return write_report(doc, args, out)


def write_report(doc: dict, args, out: pathlib.Path) -> dict:
    """``table.md``, the plot and (``--readme``) the README block, from the rows alone."""
    rows = doc["rows"]
    methods = list(dict.fromkeys(r["method"] for r in rows))
    summary = report.summarize(rows, REFERENCE)
    table = report.markdown(summary, REFERENCE, PAPER_ERR)
    cfg = doc["config"]
    text = (f"{table}\n\nErrors in % on the MNIST test set; mean ± std over "
            f"{cfg['dense_seeds']} dense net(s) (× {cfg['seeds']} prune seed(s)); "
            f"`{REFERENCE} − method`: paired over nets, 95 % t-interval, * = excludes 0 "
            f"(negative = {REFERENCE} lower). Fine-tuning: Adam {cfg['finetune_lr']} cosine, "
            f"early stopping on the validation split (patience {cfg['patience']}, at most "
            f"{cfg['max_epochs']} epochs); kd = logit MSE to the dense net, α = "
            f"{cfg['kd_alpha']}. Random pct: percentile of the error right after pruning among "
            f"{cfg['random_subsets']} random channel subsets at the same widths (lower = "
            f"better than random). Measured on: {doc.get('cpu', 'unknown CPU')}.\n\n"
            f"{report.sentences(summary, REFERENCE)}\n")
    (out / "table.md").write_text(text)
    print(text)
    report.plot(rows, summary, methods, out / "error_vs_ratio.png",
                "LeNet-300-100 / MNIST neuron pruning")
    if args.readme:
        report.write_block(pathlib.Path(args.readme), "table1", text)
    return {"rows": rows, "summary": summary, "config": cfg}


if __name__ == "__main__":
    run(parse_args())
    sys.exit(0)
