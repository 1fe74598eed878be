"""Issue 8 study: magnitude pruning vs Frank-Wolfe vs FW + momentum on LeNet-5 / real MNIST
while the dense pre-training budget varies (third paper, arXiv 2512.01147).

Protocol, per seed:
  1. Pre-train LeNet-5 densely with Adam(1e-3, constant) for max(budgets) epochs, snapshotting
     the weights after every budget epoch b (one run per seed; snapshot b = b epochs of training).
  2. From each snapshot, at the same unstructured target sparsity s of the kernels (biases are
     not pruned) and the same post-pruning budget P = fw_epochs + finetune_epochs epochs:
       magnitude       : per-layer top-K |θ| mask, then P epochs of masked fine-tuning;
       fw              : fw_epochs of SFW over the per-layer K-sparse polytope (ρ = none),
                         hard top-K mask of the iterate, finetune_epochs masked fine-tuning;
       fw_momentum     : the same with momentum ρ (default 0.9);
       fw_mom_struct   : structured: from the FW+momentum iterate keep a fraction of the
                         filters/neurons of every layer by group ℓ2 norm (of the iterate, or of
                         the momentum gradient with --structured-score momentum), shrink the
                         model (surgery.shrink), fine-tune finetune_epochs densely.
     Fine-tuning: train.fit, Adam(1e-3, constant), same seed. Every method sees the same snapshot.
  3. Record test accuracy/loss (after fine-tune and right after the mask), kernel sparsity,
     whole-model sparsity, for FW the iterate's own sparsity before the mask, and measured
     inference time (median of 20 jitted calls on a batch of test images, all networks of a
     (seed, budget) timed interleaved so machine load hits them alike) of the dense, masked
     and shrunk networks.

    JAXPRUNE_DATA_DIR=/work/shared/data python experiments/frank_wolfe_mnist.py --quick
    JAXPRUNE_DATA_DIR=/work/shared/data python experiments/frank_wolfe_mnist.py   # 1..10, 3 seeds

Writes ``<out>/results.json``, ``<out>/table.md``, ``<out>/accuracy_vs_pretraining.png`` and
``<out>/sparsity_vs_pretraining.png``.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxprune import data, metrics, surgery, train
from jaxprune import frank_wolfe as fw
from jaxprune.models import LeNet5

METHODS = ("magnitude", "fw", "fw_momentum", "fw_mom_struct")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="budgets 1,3; 1 seed; 10k train / 2k test examples (a few minutes)")
    p.add_argument("--budgets", type=str, default=None, help="comma list, default 1..10")
    p.add_argument("--seeds", type=int, default=None, help="default 3 (quick: 1)")
    p.add_argument("--sparsity", type=float, default=0.9)
    p.add_argument("--scope", default="layer", choices=("layer", "global"))
    p.add_argument("--fw-epochs", type=int, default=1)
    p.add_argument("--finetune-epochs", type=int, default=1)
    p.add_argument("--step-size", type=float, default=0.03,
                   help="FW η; with --rescale none it is the constant γ of θ←(1−γ)θ+γv")
    p.add_argument("--rescale", default="none", choices=("none", "diameter", "gradient"))
    p.add_argument("--radius-rule", default="feasible", choices=("feasible", "topk_mean"))
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--keep-fraction", type=float, default=0.5,
                   help="structured variant: fraction of filters/neurons kept per layer")
    p.add_argument("--structured-score", default="iterate", choices=("iterate", "momentum"))
    p.add_argument("--lr", type=float, default=1e-3, help="Adam lr, pre-training and fine-tune")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--train-subset", type=int, default=None, help="first N train examples")
    p.add_argument("--test-subset", type=int, default=None)
    p.add_argument("--latency-batch", type=int, default=1000)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", default="results/frank_wolfe_mnist")
    p.add_argument("--report-only", action="store_true",
                   help="re-print the tables and plots of <out>/results.json without training")
    p.add_argument("--resume", action="store_true",
                   help="keep the finished seeds of <out>/results.json (same arguments) and run "
                        "only the rest")
    args = p.parse_args(argv)
    if args.budgets is None:
        args.budgets = "1,3" if args.quick else ",".join(str(i) for i in range(1, 11))
    args.budgets = sorted({int(b) for b in args.budgets.split(",")})
    args.seeds = args.seeds or (1 if args.quick else 3)
    if args.quick:
        args.train_subset = args.train_subset or 10000
        args.test_subset = args.test_subset or 2000
    return args


def _np(tree):
    return jax.tree.map(lambda x: np.asarray(jax.device_get(x)), tree)


def _ft_config(args, epochs, seed):
    return train.TrainConfig(optimizer="adam", learning_rate=args.lr, schedule="constant",
                             epochs=epochs, batch_size=args.batch_size, seed=seed, log_every=0)


def _latencies(models_and_vars: dict, x, repeats: int = 20) -> dict[str, float]:
    """Median seconds of one jitted forward pass per entry, measured interleaved so a shared
    machine's load hits every network alike (``metrics.compare_latency``)."""
    calls = {name: (lambda v, inp, m=m: m.apply(v, inp), (v, x))
             for name, (m, v) in models_and_vars.items()}
    return metrics.compare_latency(calls, repeats=repeats)


def _iterate_sparsity(params, rel=1e-3):
    """Fraction of kernel entries of the FW iterate with |θ| ≤ rel·max|θ| of their layer."""
    ks = [np.abs(np.asarray(x)) for x in jax.tree.leaves(params) if np.ndim(x) > 1]
    return float(sum((k <= rel * k.max()).sum() for k in ks) / sum(k.size for k in ks))


def run_one(args, model, snap, train_ds, test_ds, x_lat, seed) -> dict:
    ev = lambda m, v: train.evaluate(m, v, test_ds)  # noqa: E731
    e = ev(model, snap)
    rows = {"dense": dict(acc=e["accuracy"], loss=e["loss"], kernel_sparsity=0.0,
                          model_sparsity=metrics.sparsity(snap))}
    nets = {"dense": (model, snap)}
    s = args.sparsity
    post = args.fw_epochs + args.finetune_epochs

    # magnitude: mask the snapshot, fine-tune the whole post-pruning budget under the mask
    t0 = time.time()
    mask = fw.magnitude_mask(snap["params"], s, args.scope)
    masked0 = dict(snap, params=jax.tree.map(lambda p, m: p * m, snap["params"], mask))
    at_mask = ev(model, masked0)
    res = train.fit(model, train_ds, _ft_config(args, post, seed), variables=masked0, mask=mask,
                    progress=False, devices=1)
    v = _np(res.variables)
    e = ev(model, v)
    rows["magnitude"] = dict(acc=e["accuracy"], loss=e["loss"], acc_at_mask=at_mask["accuracy"],
                             kernel_sparsity=fw.kernel_sparsity(v["params"]),
                             model_sparsity=metrics.sparsity(v), time=time.time() - t0)
    nets["magnitude"] = (model, v)

    fw_mom = None
    for name, rho in (("fw", None), ("fw_momentum", args.momentum)):
        t0 = time.time()
        c = fw.KSparsePolytope(s, args.scope, rule=args.radius_rule)
        r = fw.fw_prune(model, snap, train_ds, sparsity=s, scope=args.scope, constraint=c,
                        momentum=rho, epochs=args.fw_epochs, batch_size=args.batch_size,
                        step_size=args.step_size, rescale=args.rescale, seed=seed,
                        finetune=_ft_config(args, args.finetune_epochs, seed), eval_ds=test_ds)
        v = _np(r.variables)
        e = ev(model, v)
        it = ev(model, r.fw_variables)
        rows[name] = dict(acc=e["accuracy"], loss=e["loss"],
                          acc_at_mask=r.report["eval_after_mask"]["accuracy"],
                          acc_iterate=it["accuracy"],
                          kernel_sparsity=fw.kernel_sparsity(v["params"]),
                          model_sparsity=metrics.sparsity(v),
                          iterate_sparsity=_iterate_sparsity(r.fw_variables["params"]),
                          mass_removed=r.report["mass_removed"], time=time.time() - t0)
        nets[name] = (model, v)
        if name == "fw_momentum":
            fw_mom = r

    # structured: filters/neurons of the FW+momentum iterate by group norm -> surgery
    t0 = time.time()
    it_vars = _np(fw_mom.fw_variables)
    score = None if args.structured_score == "iterate" else fw_mom.momentum
    struct, keep = fw.structured_keep(model, it_vars, args.keep_fraction,
                                      input_shape=(28, 28, 1), score_tree=score)
    small_v = _np(surgery.shrink(it_vars, struct.groups, keep))
    widths = tuple(len(keep.get(n, range(w))) for n, w in
                   zip(model.prunable_layers(), model.widths))
    small = model.clone(widths=widths)
    at_mask = ev(small, small_v)
    res = train.fit(small, train_ds, _ft_config(args, args.finetune_epochs, seed),
                    variables=small_v, progress=False, devices=1)
    v = _np(res.variables)
    e = ev(small, v)
    rows["fw_mom_struct"] = dict(
        acc=e["accuracy"], loss=e["loss"], acc_at_mask=at_mask["accuracy"], widths=list(widths),
        kernel_sparsity=1.0 - sum(np.size(x) for x in jax.tree.leaves(v["params"]) if np.ndim(x) > 1)
        / sum(np.size(x) for x in jax.tree.leaves(snap["params"]) if np.ndim(x) > 1),
        model_sparsity=1.0 - metrics.param_count(v) / metrics.param_count(snap),
        time=time.time() - t0)
    nets["fw_mom_struct"] = (small, v)
    lat = _latencies(nets, x_lat)
    for name, r in rows.items():
        r["latency"], r["latency_dense"] = lat[name], lat["dense"]
    return rows


def _save(results, out: pathlib.Path) -> None:
    (out / "results.json").write_text(json.dumps(results, indent=1, default=float))


def _comparable(args) -> dict:
    """The arguments a resumed run must share with the saved one."""
    return {k: v for k, v in vars(args).items()
            if k not in ("seeds", "resume", "out", "report_only")}


def run(args, out: pathlib.Path) -> dict:
    """Every (seed, budget) row; ``results.json`` is rewritten after each one. With
    ``--resume`` the rows of an earlier run with the same arguments are kept and only the
    seeds with a missing budget are run again (pre-training is per seed)."""
    train_ds = data.load("mnist", "train", args.data_dir)
    test_ds = data.load("mnist", "test", args.data_dir)
    if args.train_subset:
        train_ds = train_ds.subset(np.arange(min(args.train_subset, len(train_ds))))
    if args.test_subset:
        test_ds = test_ds.subset(np.arange(min(args.test_subset, len(test_ds))))
    model = LeNet5()
    x_lat = jnp.asarray(test_ds.images[: args.latency_batch])
    results = {"args": {k: v for k, v in vars(args).items()}, "runs": [], "complete": False}
    saved = out / "results.json"
    if args.resume and saved.exists():
        old = json.loads(saved.read_text())
        mine = json.loads(json.dumps(_comparable(args), default=float))
        theirs = {k: v for k, v in old["args"].items() if k in mine}
        if theirs != mine:
            raise ValueError(f"--resume: {saved} was written with other arguments: "
                             f"{theirs} vs {mine}")
        done = {}
        for r in old["runs"]:
            done.setdefault(r["seed"], []).append(r)
        results["runs"] = [r for seed, rs in sorted(done.items())
                           if seed < args.seeds and {x["budget"] for x in rs} >= set(args.budgets)
                           for r in rs]
        print(f"--resume: kept {len(results['runs'])} rows from {saved}", flush=True)
    for seed in range(args.seeds):
        if any(r["seed"] == seed for r in results["runs"]):
            continue
        v0 = jax.jit(model.init)(jax.random.key(seed), jnp.zeros((1, 28, 28, 1)))
        snaps = {}

        def keep_snap(epoch, variables, _state):
            if epoch in args.budgets:
                snaps[epoch] = _np(variables)
        t0 = time.time()
        fw.train_with(model, v0, train_ds, optax.adam(args.lr), epochs=max(args.budgets),
                      batch_size=args.batch_size, seed=seed, on_epoch=keep_snap)
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
    out = []
    budgets = sorted({r["budget"] for r in results["runs"]})
    for b in budgets:
        runs = [r for r in results["runs"] if r["budget"] == b]
        for m in ("dense",) + METHODS:
            def stat(key):
                vals = [r["methods"][m].get(key) for r in runs]
                vals = [x for x in vals if x is not None]
                return (float(np.mean(vals)), float(np.std(vals))) if vals else (None, None)
            out.append({"budget": b, "method": m, "n": len(runs),
                        **{k: stat(k) for k in ("acc", "loss", "acc_at_mask", "kernel_sparsity",
                                                "model_sparsity", "iterate_sparsity",
                                                "mass_removed", "latency")}})
    return out


def table(summary) -> str:
    def f(x, scale=1.0, fmt="{:.2f}"):
        return "—" if x[0] is None else fmt.format(x[0] * scale) + (
            "" if x[1] is None or x[1] == 0 else "±" + fmt.format(x[1] * scale))
    lines = ["| pre-train ep | method | test acc % | test loss | acc right after mask % | "
             "kernel sparsity % | model sparsity % | FW iterate ≈0 % | mass removed by mask % | "
             "latency ms |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in summary:
        lines.append(f"| {r['budget']} | {r['method']} | {f(r['acc'], 100)} | "
                     f"{f(r['loss'], 1, '{:.3f}')} | {f(r['acc_at_mask'], 100)} | "
                     f"{f(r['kernel_sparsity'], 100, '{:.1f}')} | "
                     f"{f(r['model_sparsity'], 100, '{:.1f}')} | "
                     f"{f(r['iterate_sparsity'], 100, '{:.1f}')} | "
                     f"{f(r['mass_removed'], 100, '{:.1f}')} | "
                     f"{f(r['latency'], 1000, '{:.2f}')} |")
    return "\n".join(lines)


LABELS = {"dense": "dense", "magnitude": "magnitude", "fw": "FW", "fw_momentum": "FW + momentum",
          "fw_mom_struct": "FW + momentum, structured"}


def compact_table(summary) -> str:
    """Test accuracy (%) per method and pre-training budget, mean ± std over seeds, then the
    median latency of each method relative to the dense network timed beside it."""
    budgets = sorted({r["budget"] for r in summary})
    by = {(r["budget"], r["method"]): r for r in summary}
    names = ("dense",) + METHODS
    head = "| pre-train epochs | " + " | ".join(LABELS[m] for m in names) + " |"
    lines = [head, "|" + "---|" * (len(names) + 1)]
    for b in budgets:
        cells = []
        for m in names:
            mu, sd = by[b, m]["acc"]
            cells.append(f"{100 * mu:.2f}±{100 * sd:.2f}")
        lines.append(f"| {b} | " + " | ".join(cells) + " |")
    lat = {m: np.mean([by[b, m]["latency"][0] / by[b, "dense"]["latency"][0] for b in budgets])
           for m in names}
    lines.append("| latency / dense (mean over budgets) | " +
                 " | ".join(f"{lat[m]:.2f}×" for m in names) + " |")
    return "\n".join(lines)


def plots(summary, out: pathlib.Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    for key, fname, ylabel, methods in (
            ("acc", "accuracy_vs_pretraining.png", "test accuracy (%)", ("dense",) + METHODS),
            ("kernel_sparsity", "sparsity_vs_pretraining.png", "sparsity (%)", METHODS)):
        fig, ax = plt.subplots(figsize=(6, 4))
        for m in methods:
            rows = [r for r in summary if r["method"] == m and r[key][0] is not None]
            xs = [r["budget"] for r in rows]
            ys = np.array([r[key][0] for r in rows]) * 100
            es = np.array([r[key][1] for r in rows]) * 100
            label = m if key == "acc" else (f"{m} (params removed)" if m == "fw_mom_struct" else m)
            ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=label)
        if key == "kernel_sparsity":
            for m in ("fw", "fw_momentum"):
                rows = [r for r in summary if r["method"] == m]
                ax.plot([r["budget"] for r in rows],
                        [100 * r["iterate_sparsity"][0] for r in rows], "--", marker="x",
                        label=f"{m} iterate before mask (|θ|≤1e-3·max)")
        ax.set_xlabel("dense pre-training epochs")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / fname, dpi=120)
        plt.close(fig)


def report(results, out: pathlib.Path) -> None:
    """Print both tables, write ``table.md`` and the plots (from ``results["summary"]``)."""
    full, compact = table(results["summary"]), compact_table(results["summary"])
    (out / "table.md").write_text(compact + "\n\n" + full + "\n")
    plots(results["summary"], out)
    print(compact + "\n")
    print(full)


def main(argv=None):
    args = parse_args(argv)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.report_only:
        results = json.loads((out / "results.json").read_text())
        if not results.get("complete"):
            print(f"note: {out}/results.json is a partial run "
                  f"({len(results['runs'])} (seed, budget) rows)", flush=True)
        results["summary"] = summarize(results)
        report(results, out)
        return results
    t0 = time.time()
    results = run(args, out)
    results["summary"] = summarize(results)
    results["wall_time_s"] = time.time() - t0
    _save(results, out)
    report(results, out)
    print(f"wrote {out}/results.json, table.md, *.png in {results['wall_time_s']:.0f}s")
    return results


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
