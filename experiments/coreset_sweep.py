"""Validation sweep of the coreset method's defaults over independently trained nets:
``projection_dim`` (the PCA dimension ``k`` of the points) × ``allocation`` (``bound`` or
``uniform`` split of the ratio over layers), LeNet-300-100 on real MNIST.

For each of ``--dense-seeds`` dense nets (the Table 1 nets of ``--dense-dir``, trained there if
missing), each ratio and each setting: prune with coreset, then measure the error on the
held-out *validation* split (never the test set: this chooses a default) right after pruning
and after ``--finetune-epochs`` of Adam. The table gives mean ± std over nets and the paired
difference ``setting − default`` with its 95% t-interval; the setting with the lowest mean
validation error after fine-tuning, pooled over ratios, is reported as the sweep's choice.

    JAXPRUNE_DATA_DIR=../shared/data python experiments/coreset_sweep.py \\
        --dense-dir experiments/results/lenet300_mnist --dense-seeds 5 \\
        --out experiments/results/coreset_sweep --resume

Writes ``<out>/results.json`` (rewritten after every row) and ``<out>/table.md``.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import sys

import jax
import numpy as np

# run as a file (python experiments/<name>.py), not with -m: put the repository root on sys.path
if not __package__:
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import jaxprune  # noqa: E402
from experiments.common import harness, protocol, report  # noqa: E402
from jaxprune import data, train  # noqa: E402
from jaxprune.models import LeNet300100  # noqa: E402

DEFAULT = (10, "bound")  # jaxprune's coreset default: projection_dim, allocation


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dims", type=int, nargs="+", default=[2, 3, 5, 10, 20])
    p.add_argument("--allocations", nargs="+", default=["bound", "uniform"],
                   choices=("bound", "uniform"))
    p.add_argument("--ratios", type=float, nargs="+", default=[0.9, 0.926, 0.946])
    p.add_argument("--dense-seeds", type=int, default=5)
    p.add_argument("--dense-dir", default=None, help="where the dense nets are (or go)")
    p.add_argument("--finetune-epochs", type=int, default=1)
    p.add_argument("--train-epochs", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--widths", type=int, nargs="+", default=[300, 100])
    p.add_argument("--val-size", type=int, default=5000)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", default="results/coreset_sweep")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--report-only", action="store_true",
                   help="no training: the table (and --readme block) from results.json")
    p.add_argument("--readme", default=None, help="README to write the table block into")
    p.add_argument("--readme-block", default="sweep")
    p.add_argument("--limit-train", type=int, default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


_NOT_DEFINING = ("resume", "data_dir", "out", "dense_dir", "report_only", "readme",
                 "readme_block")


def run(args) -> dict:
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.json"
    if args.report_only:
        return _report(json.loads(path.read_text()), args, out)
    rows = protocol.Rows(out, {k: v for k, v in vars(args).items() if k not in _NOT_DEFINING},
                         args.resume, key=("dense_seed", "ratio", "projection_dim",
                                           "allocation"), config_name="args")
    full = data.head(data.load("mnist", "train", args.data_dir), args.limit_train)
    train_ds, val_ds = data.train_val_split(full, min(args.val_size, len(full) // 2))
    model = LeNet300100(widths=tuple(args.widths), num_classes=full.num_classes)
    nets = protocol.dense_nets(model, "lenet300", train_ds,
                               data.load("mnist", "test", args.data_dir),
                               pathlib.Path(args.dense_dir or out), range(args.dense_seeds),
                               args.train_epochs, args.batch_size,
                               reuse=args.resume or args.dense_dir is not None)
    ft = train.TrainConfig(optimizer="adam", learning_rate=1e-3, schedule="cosine",
                           epochs=args.finetune_epochs, batch_size=args.batch_size, seed=0,
                           log_every=0)
    for seed, dense in nets.items():
        for ratio in args.ratios:
            for dim in args.dims:
                for allocation in args.allocations:
                    if rows.has(dense_seed=seed, ratio=ratio, projection_dim=dim,
                                allocation=allocation):
                        continue
                    res = jaxprune.prune(dense, jax.random.key(seed), ratio, method="coreset",
                                         model=model, input_shape=train_ds.images.shape[1:],
                                         projection_dim=dim, allocation=allocation)
                    small = res.model(model)
                    tuned = train.fit(small, train_ds, ft, variables=res.params,
                                      progress=False)
                    r = {"dense_seed": seed, "ratio": ratio, "projection_dim": dim,
                         "allocation": allocation, "widths": dict(res.widths),
                         "val_err_before": harness.error(small, res.params, val_ds),
                         "val_err_ft": harness.error(small, tuned.variables, val_ds)}
                    rows.add(r)
                    print(f"  net {seed} ratio {ratio:.3f} k={dim:2d} {allocation:7s}: "
                          f"{r['val_err_before']:.2f}% -> {r['val_err_ft']:.2f}%", flush=True)
    return _report(rows.save(), args, out)


def _report(result: dict, args, out: pathlib.Path) -> dict:
    text = format_table(result)
    (out / "table.md").write_text(text + "\n")
    print(text)
    if args.readme:
        report.write_block(pathlib.Path(args.readme), args.readme_block, text)
    return result


def _per_net(rows, dim, allocation, key, ratio=None) -> dict:
    """{net: mean of ``key`` over the ratios (or at ``ratio``)} for one setting."""
    nets: dict = {}
    for r in rows:
        if (r["projection_dim"], r["allocation"]) == (dim, allocation) and (
                ratio is None or r["ratio"] == ratio):
            nets.setdefault(r["dense_seed"], []).append(r[key])
    return {n: float(np.mean(v)) for n, v in nets.items()}


def _cell(values: dict) -> str:
    return report.pm(values.values())


def _paired_vs_default(rows, dim, allocation, key="val_err_ft") -> dict:
    """``setting − default`` paired over nets (each net's mean over the ratios)."""
    ref = _per_net(rows, *DEFAULT, key)
    mine = _per_net(rows, dim, allocation, key)
    nets = sorted(set(ref) & set(mine))
    return report.paired([mine[n] for n in nets], [ref[n] for n in nets])


def _vs_default(rows, dim, allocation, key) -> str:
    if (dim, allocation) == DEFAULT:
        return "—"
    d = _paired_vs_default(rows, dim, allocation, key)
    if d["lo"] is None:
        return f"{d['mean']:+.2f}"
    return (f"{d['mean']:+.2f} [{d['lo']:+.2f}, {d['hi']:+.2f}]"
            f"{' *' if d['significant'] else ''}")


def format_table(result) -> str:
    rows, args = result["rows"], result["args"]
    settings = [(k, a) for k in args["dims"] for a in args["allocations"]]
    head = " | ".join(f"PR {100 * r:.1f}: before / after FT" for r in args["ratios"])
    lines = [f"| k | allocation | nets | {head} | after FT, mean over PRs | − default, "
             "95% CI |", "|---:|---|---:|" + "---|" * len(args["ratios"]) + "---:|---|"]
    pooled = {}
    for dim, allocation in settings:
        cells = [f"{_cell(_per_net(rows, dim, allocation, 'val_err_before', r))} / "
                 f"{_cell(_per_net(rows, dim, allocation, 'val_err_ft', r))}"
                 for r in args["ratios"]]
        after = _per_net(rows, dim, allocation, "val_err_ft")
        if after:
            pooled[dim, allocation] = float(np.mean(list(after.values())))
        lines.append(f"| {dim} | {allocation} | {len(after)} | " + " | ".join(cells)
                     + f" | {_cell(after)} | {_vs_default(rows, dim, allocation, 'val_err_ft')} |")
    best = min(pooled, key=pooled.get)
    better, worse, tests = [], [], {}
    for dim, allocation in pooled:
        if (dim, allocation) != DEFAULT:
            d = tests[f"k = {dim} {allocation}"] = _paired_vs_default(rows, dim, allocation)
            if d["significant"]:
                (better if d["mean"] < 0 else worse).append(f"k = {dim} {allocation}")
    tested = {k: d for k, d in tests.items() if d["p"] is not None}
    held = [f"{k} ({'better' if d['mean'] < 0 else 'worse'})" for (k, d), r in
            zip(tested.items(), report.holm([d["p"] for d in tested.values()])) if r]
    verdict = (f"Significantly better than the default: {', '.join(better)}." if better else
               "No setting is significantly better than the default, so it stands.")
    return "\n".join(lines) + (
        f"\n\nCoreset on LeNet-300-100, validation error in % (held-out training images, not "
        f"the test set), mean ± sample sd (n − 1) over nets, after {args['finetune_epochs']} "
        f"Adam epoch(s); "
        f"`− default`: paired over nets against k = {DEFAULT[0]}, {DEFAULT[1]} (after FT, mean "
        f"over PRs), * = the 95 % interval excludes 0; {result['cpu']}.\n\n"
        f"Lowest mean validation error after fine-tuning: k = {best[0]}, {best[1]} "
        f"({pooled[best]:.2f} %; default {pooled.get(DEFAULT, float('nan')):.2f} %). "
        f"{verdict} Significantly worse (95 % interval, uncorrected): "
        f"{'; '.join(worse) or 'none'}. After Holm's correction over all {len(tested)} "
        f"comparisons with the default: {'; '.join(held) or 'none'}." + _widths_line(rows))


def _widths_line(rows) -> str:
    """The kept widths per allocation and ratio (range over nets and k where they differ)."""
    allocations = list(dict.fromkeys(r["allocation"] for r in rows))
    ratios = list(dict.fromkeys(r["ratio"] for r in rows))
    if not rows or not rows[0].get("widths"):
        return ""
    cells = "; ".join(f"{a}: " + ", ".join(
        report.widths_cell([r for r in rows if r["allocation"] == a and r["ratio"] == q])
        for q in ratios) for a in allocations)
    return (f"\n\nWidths kept ({'/'.join(rows[0]['widths'])}) at PR "
            + ", ".join(f"{100 * q:.1f}" for q in ratios) + f" %: {cells}.")


if __name__ == "__main__":
    harness.main(run, parse_args())
