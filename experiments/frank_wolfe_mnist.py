"""Study: magnitude pruning vs Frank-Wolfe vs FW + momentum on LeNet-5 / real MNIST
while the dense pre-training budget varies (third paper, arXiv 2512.01147).

Per seed: pre-train LeNet-5 (Adam, constant lr) for max(budgets) epochs, snapshotting after
every budget epoch b. From each snapshot, at the same kernel sparsity s and post-pruning budget
P = fw_epochs + finetune_epochs: ``magnitude`` (top-K |θ| mask, P epochs masked fine-tune),
``fw`` (fw_epochs of SFW over the per-layer K-sparse polytope, top-K mask of the iterate,
finetune_epochs masked fine-tune), ``fw_momentum`` (the same with momentum ρ) and
``fw_mom_struct`` (keep a fraction of the filters/neurons of the FW+momentum iterate by group
ℓ2 norm, shrink, fine-tune). All training is train.fit with the seed. Recorded: test
accuracy/loss (also right after the mask), kernel and model sparsity, the FW iterate's own
sparsity, inference time (median of 20 jitted calls, networks interleaved).

``fw_mom_struct`` is ``jaxprune.prune`` with the ``frank_wolfe_momentum`` method, whose
``prepare`` runs the FW+momentum phase again with ``fw_momentum``'s options and seed (the same
iterate, bit for bit on one device; its ``time`` includes that phase). ``prune``'s float
ratio counts parameters (or neurons, or FLOPs) of the whole model, while ``--keep-fraction``
keeps ``max(1, round(f·C))`` of the C channels of every group, so :func:`keep_ratio` passes
the per-group ratio dict ``{group: (C − k)/C}``, which ``prune`` turns back into exactly ``k``
channels per group.

    JAXPRUNE_DATA_DIR=/work/shared/data python experiments/frank_wolfe_mnist.py --quick

Writes ``<out>/results.json``, ``table.md``, ``accuracy_vs_pretraining.png`` and
``sparsity_vs_pretraining.png``.
"""
from __future__ import annotations

import argparse
import importlib
import json
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

import jaxprune
from jaxprune import data, metrics, optim, train
from jaxprune.checkpoint import to_jsonable
from jaxprune.models import LeNet5

fw = importlib.import_module("jaxprune.methods.frank_wolfe")  # methods.frank_wolfe: the class

METHODS = ("magnitude", "fw", "fw_momentum", "fw_mom_struct")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for flag, kind, default, text in (
            ("--budgets", str, None, "comma list, default 1..10"),
            ("--seeds", int, None, "default 3 (quick: 1)"),
            ("--sparsity", float, 0.9, None), ("--fw-epochs", int, 1, None),
            ("--finetune-epochs", int, 1, None), ("--momentum", float, 0.9, None),
            ("--step-size", float, 0.03, "FW η; with --rescale none the constant γ of "
                                         "θ←(1−γ)θ+γv"),
            ("--keep-fraction", float, 0.5, "structured: fraction of filters/neurons kept"),
            ("--lr", float, 1e-3, "Adam lr, pre-training and fine-tune"),
            ("--batch-size", int, 128, None), ("--latency-batch", int, 1000, None),
            ("--train-subset", int, None, "first N train examples"),
            ("--test-subset", int, None, None), ("--data-dir", str, None, None),
            ("--out", str, "results/frank_wolfe_mnist", None)):
        p.add_argument(flag, type=kind, default=default, help=text)
    for flag, choices in (("--scope", ("layer", "global")),
                          ("--rescale", ("none", "diameter", "gradient")),
                          ("--radius-rule", ("feasible", "topk_mean")),
                          ("--structured-score", ("iterate", "momentum"))):
        p.add_argument(flag, default=choices[0], choices=choices)
    p.add_argument("--quick", action="store_true",
                   help="budgets 1,3; 1 seed; 10k train / 2k test examples (a few minutes)")
    p.add_argument("--report-only", action="store_true",
                   help="re-print the tables and plots of <out>/results.json without training")
    p.add_argument("--resume", action="store_true",
                   help="keep the finished seeds of <out>/results.json (same arguments)")
    args = p.parse_args(argv)
    if args.budgets is None:
        args.budgets = "1,3" if args.quick else ",".join(str(i) for i in range(1, 11))
    args.budgets = sorted({int(b) for b in args.budgets.split(",")})
    args.seeds = args.seeds or (1 if args.quick else 3)
    if args.quick:
        args.train_subset = args.train_subset or 10000
        args.test_subset = args.test_subset or 2000
    return args


def _adam(args, epochs, seed):
    return train.TrainConfig(optimizer="adam", learning_rate=args.lr, schedule="constant",
                             epochs=epochs, batch_size=args.batch_size, seed=seed, log_every=0)


def pretrain(args, model, train_ds, seed) -> dict:
    """Dense training for ``max(budgets)`` epochs: ``{budget: host variables after it}``."""
    v0 = jax.jit(model.init)(jax.random.key(seed), jnp.zeros((1, 28, 28, 1)))
    snaps = {}

    def keep_snap(epoch, result):
        if epoch in args.budgets:
            snaps[epoch] = jax.device_get(result.variables)
    train.fit(model, train_ds, _adam(args, max(args.budgets), seed), variables=v0, devices=1,
              progress=False, callbacks=[keep_snap])
    return snaps


def _row(ev, model, v, **extra) -> dict:
    e = ev(model, v)
    return {"acc": e["accuracy"], "loss": e["loss"], "model_sparsity": metrics.sparsity(v), **extra}


def run_one(args, model, snap, train_ds, test_ds, x_lat, seed) -> dict:
    ev = lambda m, v: train.evaluate(m, v, test_ds)  # noqa: E731
    rows = {"dense": _row(ev, model, snap, kernel_sparsity=0.0)}
    nets = {"dense": (model, snap)}
    s = args.sparsity  # the target kernel sparsity of every unstructured method

    # magnitude: mask the snapshot, fine-tune the whole post-pruning budget under the mask
    t0 = time.time()
    v, rep = fw.mask_and_finetune(model, snap, optim.magnitude_mask(snap["params"], s, args.scope),
                                  train_ds, eval_ds=test_ds,
                                  finetune=_adam(args, args.fw_epochs + args.finetune_epochs, seed))
    rows["magnitude"] = _row(ev, model, v, acc_at_mask=rep["eval_after_mask"]["accuracy"],
                             kernel_sparsity=rep["kernel_sparsity"], time=time.time() - t0)
    nets["magnitude"] = (model, v)

    for name, rho in (("fw", None), ("fw_momentum", args.momentum)):
        t0 = time.time()
        c = optim.KSparsePolytope(s, args.scope, rule=args.radius_rule)
        r = fw.fw_prune(model, snap, train_ds, sparsity=s, scope=args.scope, constraint=c,
                        momentum=rho, epochs=args.fw_epochs, batch_size=args.batch_size,
                        step_size=args.step_size, rescale=args.rescale, seed=seed,
                        finetune=_adam(args, args.finetune_epochs, seed), eval_ds=test_ds)
        rows[name] = _row(ev, model, r.variables,
                          acc_at_mask=r.report["eval_after_mask"]["accuracy"],
                          acc_iterate=ev(model, r.fw_variables)["accuracy"],
                          kernel_sparsity=r.report["kernel_sparsity"],
                          iterate_sparsity=optim.kernel_sparsity(r.fw_variables["params"], 1e-3),
                          mass_removed=r.report["mass_removed"], time=time.time() - t0)
        nets[name] = (model, r.variables)

    small, v, extra = structured(args, model, snap, train_ds, seed, ev)
    rows["fw_mom_struct"] = _row(ev, small, v, **extra)
    nets["fw_mom_struct"] = (small, v)
    lat = metrics.compare_latency({n: (lambda v, inp, m=m: m.apply(v, inp), (v, x_lat))
                                   for n, (m, v) in nets.items()}, repeats=20)
    for name, r in rows.items():
        r["latency"], r["latency_dense"] = lat[name], lat["dense"]
    return rows


def keep_ratio(model, keep_fraction: float) -> dict:
    """``prune``'s ratio for the protocol's keep fraction: ``{group: (C − k)/C}`` with
    ``k = max(1, round(keep_fraction·C))`` channels kept in every prunable group (``prune``
    turns the fraction back into exactly ``k``; its float ratio counts the whole model)."""
    ratio = {}
    for name, c in zip(model.prunable_layers(), model.widths):
        k = min(c, max(1, round(keep_fraction * c)))
        ratio[name] = (c - k) / c
    return ratio


def _kernel_entries(variables) -> int:
    return sum(np.size(x) for x in jax.tree.leaves(variables["params"]) if optim.is_kernel(x))


def structured(args, model, snap, train_ds, seed, ev):
    """``fw_mom_struct``: ``jaxprune.prune`` with ``frank_wolfe_momentum`` (its ``prepare`` is
    the FW+momentum phase of ``fw_momentum``, same options and seed, so the same iterate),
    :func:`keep_ratio` of the channel groups kept by group ℓ2 norm, then a dense fine-tune of
    the smaller network. ``(small model, its variables, row entries)``."""
    t0 = time.time()
    method = jaxprune.methods.frank_wolfe_momentum(
        train_ds=train_ds, momentum=args.momentum, score_by=args.structured_score,
        sparsity=args.sparsity, scope=args.scope, radius_rule=args.radius_rule,
        epochs=args.fw_epochs, batch_size=args.batch_size, step_size=args.step_size,
        rescale=args.rescale, seed=seed)
    res = jaxprune.prune(snap, jax.random.key(seed), keep_ratio(model, args.keep_fraction),
                         method=method, model=model, input_shape=(28, 28, 1))
    small, v, iterate = res.model(model), jax.device_get(res.params), res.dense_variables
    acc_at_shrink = ev(small, v)["accuracy"]
    if args.finetune_epochs > 0:
        v = jax.device_get(train.fit(small, train_ds, _adam(args, args.finetune_epochs, seed),
                                     variables=v, progress=False, devices=1).variables)
    return small, v, {
        "acc_at_mask": acc_at_shrink, "widths": list(small.widths),
        "kernel_sparsity": 1.0 - _kernel_entries(v) / _kernel_entries(iterate),
        "model_sparsity": 1.0 - metrics.param_count(v) / metrics.param_count(iterate),
        "time": time.time() - t0}


def _save(results, out: pathlib.Path) -> None:
    (out / "results.json").write_text(json.dumps(to_jsonable(results), indent=1))


def _kept_runs(args, saved: pathlib.Path) -> list:
    """``--resume``: the rows of the seeds ``saved`` finished with the same arguments."""
    old = json.loads(saved.read_text())
    skip = ("seeds", "resume", "out", "report_only")
    mine = json.loads(json.dumps({k: v for k, v in vars(args).items() if k not in skip},
                                 default=float))
    theirs = {k: v for k, v in old["args"].items() if k in mine}
    if theirs != mine:
        raise ValueError(f"--resume: {saved} was written with other arguments: "
                         f"{theirs} vs {mine}")
    full = {seed for seed in {r["seed"] for r in old["runs"]} if seed < args.seeds and
            {r["budget"] for r in old["runs"] if r["seed"] == seed} >= set(args.budgets)}
    return [r for r in sorted(old["runs"], key=lambda r: r["seed"]) if r["seed"] in full]


def run(args, out: pathlib.Path) -> dict:
    """Every (seed, budget) row, ``results.json`` rewritten after each one; ``--resume`` keeps
    the seeds an earlier run with the same arguments finished (pre-training is per seed)."""
    train_ds, test_ds = (data.load("mnist", split, args.data_dir) for split in ("train", "test"))
    train_ds, test_ds = (ds.subset(np.arange(min(n, len(ds)))) if n else ds for ds, n in
                         ((train_ds, args.train_subset), (test_ds, args.test_subset)))
    model, x_lat = LeNet5(), jnp.asarray(test_ds.images[: args.latency_batch])
    results = {"args": dict(vars(args)), "runs": [], "complete": False}
    if args.resume and (out / "results.json").exists():
        results["runs"] = _kept_runs(args, out / "results.json")
        print(f"--resume: kept {len(results['runs'])} rows from {out / 'results.json'}",
              flush=True)
    for seed in range(args.seeds):
        if any(r["seed"] == seed for r in results["runs"]):
            continue
        t0 = time.time()
        snaps = pretrain(args, model, train_ds, seed)
        print(f"[seed {seed}] pre-trained {max(args.budgets)} epochs in {time.time() - t0:.0f}s",
              flush=True)
        for b in args.budgets:
            rows = run_one(args, model, snaps[b], train_ds, test_ds, x_lat, seed)
            results["runs"].append({"seed": seed, "budget": b, "methods": rows})
            _save(results, out)
            print(f"[seed {seed}] budget {b}: " + "  ".join(
                f"{m}={rows[m]['acc']:.4f}" for m in ("dense",) + METHODS), flush=True)
    results["complete"] = True
    return results


def summarize(results) -> list[dict]:
    """Mean and sample standard deviation (n − 1) over seeds of every measure, per (budget,
    method); one seed gives sd 0."""
    out = []
    for b in sorted({r["budget"] for r in results["runs"]}):
        runs = [r for r in results["runs"] if r["budget"] == b]
        for m in ("dense",) + METHODS:
            row = {"budget": b, "method": m, "n": len(runs)}
            for key in ("acc", "loss", "acc_at_mask", "kernel_sparsity", "model_sparsity",
                        "iterate_sparsity", "mass_removed", "latency"):
                vals = [x for x in (r["methods"][m].get(key) for r in runs) if x is not None]
                sd = float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0
                row[key] = (float(np.mean(vals)), sd) if vals else (None, None)
            out.append(row)
    return out


COLUMNS = (("test acc %", "acc", 100, "{:.2f}"), ("test loss", "loss", 1, "{:.3f}"),
           ("acc right after mask %", "acc_at_mask", 100, "{:.2f}"),
           ("kernel sparsity %", "kernel_sparsity", 100, "{:.1f}"),
           ("model sparsity %", "model_sparsity", 100, "{:.1f}"),
           ("FW iterate ≈0 %", "iterate_sparsity", 100, "{:.1f}"),
           ("mass removed by mask %", "mass_removed", 100, "{:.1f}"),
           ("latency ms", "latency", 1000, "{:.2f}"))


LABELS = {"dense": "dense", "magnitude": "magnitude", "fw": "FW", "fw_momentum": "FW + momentum",
          "fw_mom_struct": "FW + momentum, structured"}


def tables(summary) -> str:
    """The compact table (test accuracy % per method and pre-training budget, mean ± sample sd over
    seeds, and each method's latency relative to the dense network timed beside it), then the
    full table of every measure."""
    def f(x, scale, fmt):
        return "—" if x[0] is None else fmt.format(x[0] * scale) + (
            "" if x[1] is None or x[1] == 0 else "±" + fmt.format(x[1] * scale))
    budgets = sorted({r["budget"] for r in summary})
    by = {(r["budget"], r["method"]): r for r in summary}
    names = ("dense",) + METHODS
    compact = ["| pre-train epochs | " + " | ".join(LABELS[m] for m in names) + " |",
               "|" + "---|" * (len(names) + 1)]
    for b in budgets:
        compact.append(f"| {b} | " + " | ".join(
            "{:.2f}±{:.2f}".format(*(100 * x for x in by[b, m]["acc"])) for m in names) + " |")
    lat = {m: np.mean([by[b, m]["latency"][0] / by[b, "dense"]["latency"][0] for b in budgets])
           for m in names}
    compact.append("| latency / dense (mean over budgets) | " +
                   " | ".join(f"{lat[m]:.2f}×" for m in names) + " |")
    full = ["| pre-train ep | method | " + " | ".join(c[0] for c in COLUMNS) + " |",
            "|---|---|" + "---|" * len(COLUMNS)]
    full += [f"| {r['budget']} | {r['method']} | " + " | ".join(
        f(r[key], scale, fmt) for _, key, scale, fmt in COLUMNS) + " |" for r in summary]
    return "\n".join(compact) + "\n\n" + "\n".join(full)


def plots(summary, out: pathlib.Path) -> None:
    import matplotlib  # lazy: optional heavy dependency
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    for key, fname, ylabel, methods in (
            ("acc", "accuracy_vs_pretraining.png", "test accuracy (%)", ("dense",) + METHODS),
            ("kernel_sparsity", "sparsity_vs_pretraining.png", "sparsity (%)", METHODS)):
        fig, ax = plt.subplots(figsize=(6, 4))
        for m in methods:
            rows = [r for r in summary if r["method"] == m and r[key][0] is not None]
            mean, std = (100 * np.array([r[key][i] for r in rows]) for i in (0, 1))
            label = f"{m} (params removed)" if key != "acc" and m == "fw_mom_struct" else m
            ax.errorbar([r["budget"] for r in rows], mean, yerr=std, marker="o", capsize=3,
                        label=label)
        if key == "kernel_sparsity":
            for m in ("fw", "fw_momentum"):
                rows = [r for r in summary if r["method"] == m]
                ax.plot([r["budget"] for r in rows],
                        [100 * r["iterate_sparsity"][0] for r in rows], "--", marker="x",
                        label=f"{m} iterate before mask (|θ|≤1e-3·max)")
        ax.set(xlabel="dense pre-training epochs", ylabel=ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / fname, dpi=120)
        plt.close(fig)


def main(argv=None):
    args = parse_args(argv)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    if args.report_only:
        results = json.loads((out / "results.json").read_text())
        if not results.get("complete"):
            print(f"note: {out}/results.json is a partial run "
                  f"({len(results['runs'])} (seed, budget) rows)", flush=True)
    else:
        results = run(args, out)
    results["summary"] = summarize(results)
    if not args.report_only:
        results["wall_time_s"] = time.time() - t0
        _save(results, out)
    text = tables(results["summary"])
    (out / "table.md").write_text(text + "\n")
    plots(results["summary"], out)
    print(text)
    return results


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
