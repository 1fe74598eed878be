"""Data-light reconstruction on real MNIST: prune LeNet-300-100 (or LeNet-5, ``--model``),
refit the consumers on a batch ``S`` of validation images (``prune(..., data=S,
reconstruct="lstsq")``), and measure the test error before any fine-tuning and after one
fine-tune epoch, for |S| in ``--sizes``.

The dense nets are those of the Table 1 protocol (``--dense-dir``, trained there if missing:
``dense_<seed>`` per net). Per net, method and |S|: error of the plain prune, of the refit
prune, and of the refit prune after one Adam epoch; statistics are over nets (mean ± std and
the paired difference ``coreset − method`` with its 95 % t-interval).

    JAXPRUNE_DATA_DIR=../shared/data python experiments/reconstruct_mnist.py \\
        --dense-dir experiments/results/lenet300_mnist --dense-seeds 5 \\
        --out experiments/results/reconstruct_mnist

Writes ``<out>/results.json``, ``<out>/table.md`` and ``<out>/error_vs_data.png``.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import resource
import sys

import jax
import numpy as np

# run as a file (python experiments/<name>.py), not with -m: put the repository root on sys.path
if not __package__:
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import jaxprune  # noqa: E402
from experiments.common import harness, protocol, report  # noqa: E402
from jaxprune import data, train  # noqa: E402
from jaxprune import methods as jaxprune_methods  # noqa: E402
from jaxprune.models import LeNet5, LeNet300100  # noqa: E402

METHODS = ("coreset", "l1_norm", "random")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="lenet300", choices=("lenet300", "lenet5"))
    p.add_argument("--methods", nargs="+", default=list(METHODS))
    p.add_argument("--ratio", type=float, default=0.9)
    p.add_argument("--sizes", type=int, nargs="+", default=[128, 512, 2000, 5000])
    p.add_argument("--dense-seeds", type=int, default=1)
    p.add_argument("--dense-dir", default=None, help="where the dense nets are (or go)")
    p.add_argument("--ridge", type=float, default=1e-3)
    p.add_argument("--train-epochs", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--widths", type=int, nargs="+", default=None,
                   help="default: 300 100 (lenet300), 6 16 120 84 (lenet5)")
    p.add_argument("--val-size", type=int, default=5000)
    p.add_argument("--s-from", default="validation", choices=("validation", "train"),
                   help="draw S from the held-out validation split, or from the training "
                        "split (a random subset; allows |S| above --val-size)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", default="results/reconstruct_mnist")
    p.add_argument("--readme", default=None, help="README to write the table block into")
    p.add_argument("--readme-block", default=None,
                   help="name of the README block (default: reconstruct_<model>)")
    p.add_argument("--report-only", action="store_true",
                   help="no training: table, plot (and --readme) from results.json")
    p.add_argument("--resume", action="store_true",
                   help="keep the rows already in <out>/results.json (same settings)")
    p.add_argument("--limit-train", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.widths = args.widths or ([300, 100] if args.model == "lenet300" else [6, 16, 120, 84])
    if "coreset" not in args.methods:
        p.error("--methods must include coreset (the reference)")
    if args.s_from == "validation" and max(args.sizes) > args.val_size:
        p.error(f"|S| = {max(args.sizes)} > --val-size {args.val_size}: raise --val-size or "
                "use --s-from train")
    return args


def run(args) -> dict:
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.json"
    if args.report_only:
        return _report(json.loads(path.read_text()), args, out)
    full = data.head(data.load("mnist", "train", args.data_dir), args.limit_train)
    test_ds = data.load("mnist", "test", args.data_dir)
    train_ds, val_ds = data.train_val_split(full, min(args.val_size, len(full) // 2))
    model = (LeNet300100 if args.model == "lenet300" else LeNet5)(widths=tuple(args.widths),
                                                                  num_classes=10)
    nets = protocol.dense_nets(model, args.model, train_ds, test_ds,
                               pathlib.Path(args.dense_dir or out), range(args.dense_seeds),
                               args.train_epochs, args.batch_size,
                               reuse=args.resume or args.dense_dir is not None)
    shape = train_ds.images.shape[1:]
    ft = train.TrainConfig(optimizer="adam", learning_rate=1e-3, schedule="cosine", epochs=1,
                           batch_size=args.batch_size, seed=0, log_every=0)
    rows = protocol.Rows(out, {k: v for k, v in vars(args).items() if k not in _NOT_DEFINING},
                         args.resume, key=("method", "dense_seed", "size"), config_name="args")

    def done(method, seed, size):
        return rows.has(method=method, dense_seed=seed, size=size)

    def batch(size, seed):
        return (harness.validation_batch(val_ds, size) if args.s_from == "validation"
                else data.sample_images(train_ds, size, seed=seed))

    for seed, dense in nets.items():
        for method in args.methods:
            if all(done(method, seed, size) for size in args.sizes):
                continue
            # the plain prune: data-informed methods select on the smallest S, the others see
            # no data; with the refit they select on S itself (so their widths can differ)
            informed = jaxprune_methods.get(method).needs_data
            plain = jaxprune.prune(dense, jax.random.key(seed), args.ratio, method=method,
                                   model=model, input_shape=shape,
                                   data=batch(min(args.sizes), seed) if informed else None)
            err_plain = harness.error(plain.model(model), plain.params, test_ds)
            for size in args.sizes:
                if done(method, seed, size):
                    continue
                S = batch(size, seed)
                res = jaxprune.prune(dense, jax.random.key(seed), args.ratio, method=method,
                                     model=model, input_shape=shape, data=S,
                                     reconstruct="lstsq", ridge=args.ridge)
                small = res.model(model)
                tuned = train.fit(small, train_ds, ft, variables=res.params, progress=False)
                row = {"method": method, "dense_seed": seed, "size": size,
                       "err_pruned": err_plain,
                       "err_refit": harness.error(small, res.params, test_ds),
                       "err_refit_ft1": harness.error(small, tuned.variables, test_ds),
                       "refit": res.report["reconstruct"]["layers"]}
                rows.add(row, _peak_memory())
                print(f"  net {seed} {method:8s} |S|={size:5d}: {err_plain:.2f}% -> refit "
                      f"{row['err_refit']:.2f}% -> 1 epoch {row['err_refit_ft1']:.2f}%",
                      flush=True)
    return _report(rows.save(_peak_memory()), args, out)


# where the run reads and writes, and how it reports: not what it measures
_NOT_DEFINING = ("resume", "data_dir", "out", "dense_dir", "readme", "readme_block",
                 "report_only")


def _report(result: dict, args, out: pathlib.Path) -> dict:
    """``table.md``, the plot and (``--readme``) the README block, from the rows alone."""
    text = format_table(result)
    (out / "table.md").write_text(text + "\n")
    print(text)
    plot(result, out / "error_vs_data.png")
    if args.readme:
        report.write_block(pathlib.Path(args.readme),
                           args.readme_block or f"reconstruct_{result['args']['model']}", text)
    return result


def _peak_memory() -> dict:
    """The process's peak resident memory so far (``ru_maxrss``: data, both nets, the
    refits), saved with every row."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"peak_rss_mib": round(peak, 1)}


def _per_net(rows, key):
    return {r["dense_seed"]: r[key] for r in rows}


def format_table(result) -> str:
    rows, args = result["rows"], result["args"]
    lines = ["| method | size of S | nets | err pruned | err refit | err refit + 1 epoch | "
             "coreset − method (refit), 95% CI |", "|---|---:|---:|---:|---:|---:|---|"]
    for method in args["methods"]:
        for size in args["sizes"]:
            mine = [r for r in rows if r["method"] == method and r["size"] == size]
            ref = [r for r in rows if r["method"] == "coreset" and r["size"] == size]
            cells = [np.asarray([r[k] for r in mine])
                     for k in ("err_pruned", "err_refit", "err_refit_ft1")]
            diff = "—"
            if method != "coreset":
                a, b = _per_net(ref, "err_refit"), _per_net(mine, "err_refit")
                d = report.paired([a[n] for n in sorted(a)], [b[n] for n in sorted(a)])
                diff = (f"{d['mean']:+.2f}" if d["lo"] is None else
                        f"{d['mean']:+.2f} [{d['lo']:+.2f}, {d['hi']:+.2f}]"
                        f"{' *' if d['significant'] else ''}")
            lines.append(f"| {method} | {size} | {len(mine)} | " + " | ".join(
                report.pm(c) for c in cells) + f" | {diff} |")
    name = "LeNet-300-100" if args["model"] == "lenet300" else "LeNet-5"
    return "\n".join(lines) + (f"\n\n{name} at PR {args['ratio']:.0%} of all parameters"
                               f", test error in %, mean ± sample sd (n − 1) over nets; "
                               f"S from the {args.get('s_from', 'validation')} split; ridge "
                               f"{args['ridge']}; {result['cpu']}"
                               + (f"; peak process memory {result['peak_rss_mib']:.0f} MiB"
                                  if result.get("peak_rss_mib") else "") + ".\n\n"
                               + _sentences(rows, args))


def _sentences(rows, args) -> str:
    """Per |S|: the refit errors coreset is significantly below / above (paired 95 %
    interval over nets), written from the rows."""
    out, family = [], []
    for size in args["sizes"]:
        ref = _per_net([r for r in rows if r["method"] == "coreset" and r["size"] == size],
                       "err_refit")
        lower, higher, tied, tests = [], [], [], {}
        for method in [m for m in args["methods"] if m != "coreset"]:
            mine = _per_net([r for r in rows if r["method"] == method and r["size"] == size],
                            "err_refit")
            nets = sorted(set(ref) & set(mine))
            d = tests[method] = report.paired([ref[n] for n in nets], [mine[n] for n in nets])
            (tied if not d["significant"] else lower if d["mean"] < 0 else higher).append(method)
        parts = [f"lower than {', '.join(lower)}" if lower else "",
                 f"higher than {', '.join(higher)}" if higher else "",
                 f"not distinguishable from {', '.join(tied)}" if tied else ""]
        family += [(size, m, d) for m, d in tests.items() if d["p"] is not None]
        ok = [d["p"] is not None for d in tests.values()]
        kept = ([m for m, r in zip(tests, report.holm([d["p"] for d in tests.values()])) if r]
                if all(ok) else [])
        out.append(f"- |S| = {size}: with the refit, coreset's error is "
                   + "; ".join(p for p in parts if p) + " (paired 95 % intervals); after "
                   f"Holm's correction for the {len(tests)} comparisons at this |S|: "
                   + (f"significant against {', '.join(kept)}." if kept else "none."))
    if family:
        kept = [f"{m} (|S| = {size}, {'lower' if d['mean'] < 0 else 'higher'})"
                for (size, m, d), r in zip(family, report.holm([d["p"] for *_, d in family]))
                if r]
        out.append(f"- Whole table, Holm's correction over all {len(family)} comparisons: "
                   + (f"coreset's refit error differs from {', '.join(kept)}." if kept else
                      "no difference remains."))
    return "\n".join(out)


def plot(result, path) -> None:
    import matplotlib  # lazy: optional heavy dependency
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # lazy: optional heavy dependency

    rows, args = result["rows"], result["args"]
    fig, ax = plt.subplots(figsize=(5, 3.6))
    for method in args["methods"]:
        for key, style in (("err_refit", "-o"), ("err_refit_ft1", "--s")):
            ys = [[r[key] for r in rows if r["method"] == method and r["size"] == s]
                  for s in args["sizes"]]
            ax.errorbar(args["sizes"], [np.mean(y) for y in ys], yerr=[report.sd(y) for y in ys],
                        fmt=style, capsize=3,
                        label=f"{method} {'refit' if key == 'err_refit' else '+1 epoch'}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(f"|S| ({args.get('s_from', 'validation')} images the refit sees)")
    ax.set_ylabel("test error (%)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    harness.main(run, parse_args())
