"""When are pruning approximation bounds useful? — the bounds paper's LeNet-300-100 experiments
on real MNIST.

    python experiments/bounds_report.py --quick            # minutes: a slice of MNIST, 1 epoch
    python experiments/bounds_report.py --out DIR          # the full run (all of MNIST)

1. **Training cases** (paper §4.2, App. B.1): ``difficult``, ``moderate`` (L1), ``easy_weight``,
   ``easy_neuron`` (L0 gates) and optional ``dropout<p>`` (:mod:`bounds_lab.cases`).
2. **Pruning the final layer** of each case, guaranteeing ``--guarantee`` of the correct dev
   labels (Lemma 4.1 → ε), epsilon-first and sparsity-first, with ``sipp_rand`` (Thm A.1),
   ``sipp_det`` (Thm A.2), ``mussay`` (Thm A.4) and ``coreset`` (main paper, Thm 2.6)
   (:mod:`bounds_lab.samplers`).
3. **Fine-tuning gap** (Figure 3), 4. **hidden vs output error** (§5.2), 5. **α-scaling**
   (Lemma C.1, Corollary C.2) — :mod:`bounds_lab.analysis`, whose docstring lists
   the conventions (each a choice the paper leaves open; all in the JSON).

The dev set is MNIST's test split (10,000 images).  Every hyper-parameter is a flag.
Writes ``results.json``, ``report.md`` and four PNGs (``accuracy_vs_guarantee.png`` = Fig. 6,
``sparsity_first.png`` = Fig. 8, ``finetune_gap.png`` = Fig. 3, ``alpha_scaling.png`` =
Fig. 12) under ``--out``.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

import jax
import numpy as np

# run as a file (python experiments/<name>.py), not with -m: put the repository root on sys.path
if not __package__:
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import experiments.bounds_lab as lab  # noqa: E402
from experiments.bounds_lab import WEIGHT_METHODS, fmt_count, fmt_eps, log  # noqa: E402
from jaxprune import data  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    a = p.add_argument
    a("--quick", action="store_true",
      help="smoke-test mode: a slice of MNIST, 1 epoch everywhere, few fractions/sparsities")
    a("--out", default="experiments/results/bounds", help="output folder")
    a("--data-dir", default=None, help="folder holding mnist/ (default $JAXPRUNE_DATA_DIR)")
    a("--dataset", default="mnist")
    a("--cache-dir", default=None,
      help="save/restore the trained cases here (skips re-training on a re-run)")
    a("--seed", type=int, default=0)
    a("--devices", type=int, default=1, help="devices for jaxprune.train.fit")
    a("--limit-train", type=int, default=None, help="use the first N training images")
    a("--limit-dev", type=int, default=None, help="use the first N dev (test-split) images")
    # --- training cases
    a("--epochs", type=int, default=None, help="epochs of every from-scratch case (15; quick 1)")
    a("--lr", type=float, default=0.1)
    a("--momentum", type=float, default=0.5)
    a("--batch-size", type=int, default=100)
    a("--schedule", default="cosine", choices=("constant", "cosine", "step"))
    a("--l1", type=float, default=1e-4,
      help="moderate case: l1·Σ|kernel| (sum over all kernels) added to the batch-mean CE")
    a("--dropout", type=float, nargs="*", default=[], help="extra dropout cases, e.g. 0.2 0.5")
    a("--min-accuracy", type=float, default=0.98, help="warn when a case is below this")
    a("--easy-weight-sparsity", type=float, default=0.95)
    a("--easy-neuron-sparsity", type=float, default=0.90)
    a("--retrain-epochs", type=int, default=None, help="easy cases: masked re-training (10)")
    a("--l0-epochs", type=int, default=None, help="easy_neuron: gated training epochs (3)")
    a("--l0-lambda", type=float, default=5e-2, help="λ of mean CE + λ·Σ_j P(z_j ≠ 0)")
    a("--l0-lr", type=float, default=1e-3, help="Adam rate of the weights in gated training")
    a("--l0-gate-lr", type=float, default=2e-2, help="Adam rate of log α")
    a("--l0-init-drop", type=float, default=0.1, help="initial gate drop rate (log α init)")
    # --- bounds
    a("--guarantee", type=float, default=0.5, help="fraction of correct labels guaranteed")
    a("--fractions", type=float, nargs="+", default=None,
      help="guarantees of the accuracy-vs-guarantee curves (Figure 6)")
    a("--delta", type=float, default=0.5, help="failure probability δ of every theorem")
    a("--K", type=float, default=2.0, help="SiPP constant K (Assumption A.3)")
    a("--K-prime", type=float, default=3.0, help="SiPP K' (validation batch size)")
    a("--sipp-val-points", type=int, default=None,
      help="|S| for SiPP sensitivities (default ⌈K' log(2ρ/δ)⌉ of Theorem A.1)")
    a("--mussay-c", type=float, default=1.0, help="the constant c of Theorem A.4")
    a("--coreset-c", type=float, default=1.0, help="the hidden constant of Theorem 2.6")
    a("--beta", type=float, default=None,
      help="input-norm bound β of Theorem A.4 (default: max ‖(x, 1)‖ over the train set)")
    a("--projection-dim", type=int, default=10, help="coreset: PCA dimension")
    a("--mu-random", type=int, default=512, help="μ(P) estimate: random query directions")
    a("--mu-ascent-steps", type=int, default=100, help="μ(P) estimate: gradient-ascent steps")
    a("--sparsities", type=float, nargs="+", default=None,
      help="sparsity-first targets (fraction of the layer removed)")
    a("--max-draws", type=int, default=200_000, help="sparsity-first draw budget per part")
    # --- fine-tuning gap / KD / hidden vs output
    a("--ft-sparsities", type=float, nargs="+", default=None)
    a("--ft-epochs", type=int, default=None, help="fine-tuning epochs (CE, Adam) (5)")
    a("--ft-lr", type=float, default=1e-3)
    a("--kd-epochs", type=int, default=None, help="logit-matching KD epochs (5)")
    a("--kd-lr", type=float, default=1e-3)
    a("--hidden-neuron-sparsity", type=float, default=0.90)
    a("--hidden-weight-sparsity", type=float, default=0.95)
    # --- α-scaling
    a("--alphas", type=float, nargs="+", default=None)
    a("--replot", action="store_true",
      help="only re-write report.md and the PNGs from <out>/results.json (no computation)")
    args = p.parse_args(argv)
    q = args.quick
    dflt = dict(epochs=(1, 15), retrain_epochs=(1, 10), l0_epochs=(1, 3), ft_epochs=(1, 5),
                kd_epochs=(1, 5), limit_train=(3000, None), limit_dev=(1000, None),
                fractions=([0.5, 0.9], [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99]),
                sparsities=([0.5, 0.9], [0.3, 0.5, 0.7, 0.9, 0.95]),
                ft_sparsities=([0.9], [0.5, 0.7, 0.8, 0.9, 0.95, 0.98]),
                alphas=([0.1, 1.0, 10.0], [0.01, 0.1, 0.5, 1.0, 2.0, 10.0, 100.0]))
    for k, v in dflt.items():
        if getattr(args, k) is None:
            setattr(args, k, v[0] if q else v[1])
    if args.guarantee not in args.fractions:
        args.fractions = sorted(set(args.fractions) | {args.guarantee})
    if 1.0 not in args.alphas:
        args.alphas = sorted(set(args.alphas) | {1.0})
    return args


def replot(args):
    """Re-write report.md and the PNGs from ``<out>/results.json`` alone."""
    out = pathlib.Path(args.out)
    result = lab.unjson(json.loads((out / "results.json").read_text()))
    lab.write_report(result, out)
    return result


def _subset(ds, n):
    if not n or n >= len(ds):
        return ds
    return ds.subset(np.arange(n))


def _log_analysis(r, args, seconds):
    row = next(x for x in r["epsilon_first"] if x["fraction"] == args.guarantee)
    inf = r["info"]
    note = (f", S/max {inf['mean_S_over_max']:.3f}" if "mean_S_over_max" in inf else
            f", t {inf['total_sensitivity']:.4g}" + (f", μ(P) {inf['mu']:.4g}" if "mu" in inf
                                                      else ""))
    log(f"  {r['method']:9s} on {r['network']:11s}: ε {fmt_eps(row['epsilon'])}, samples "
        f"{fmt_count(row['samples'])}, sparsity {100 * row['sparsity']:.1f}%, "
        f"acc {row['accuracy']:.4f}{note}  ({seconds:.1f}s)")


def run(args) -> dict:
    t_start = time.time()
    cfg = lab.LabConfig.from_namespace(args)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    train_ds = _subset(data.load(args.dataset, "train", args.data_dir), args.limit_train)
    dev_ds = _subset(data.load(args.dataset, "test", args.data_dir), args.limit_dev)
    log(f"bounds report: {len(train_ds)} train / {len(dev_ds)} dev images, jax "
        f"{jax.__version__} on {jax.devices()[0].platform}; epochs {args.epochs}, re-train "
        f"{args.retrain_epochs}, L0 {args.l0_epochs}, fine-tune {args.ft_epochs}, "
        f"KD {args.kd_epochs}")
    log("[1/5] training cases")
    cases = lab.train_cases(cfg, train_ds, dev_ds)
    log(f"({time.time() - t_start:.0f}s) [2/5] bounds on the final layer (epsilon-first and "
        "sparsity-first)")
    nets = {n: lab.prepare(c, cfg, train_ds, dev_ds, train_ds.images) for n, c in cases.items()}
    extra = [n for n in nets if n.startswith("dropout")]
    plan = [(m, n) for m in lab.METHODS
            for n in (["easy_weight" if m in WEIGHT_METHODS else "easy_neuron", "moderate",
                       "difficult"] + extra)]
    analyses = []
    for m, n in lab.progress(plan, "bounds"):
        t0 = time.time()
        analyses.append(lab.analyse(nets[n], m, cfg))
        _log_analysis(analyses[-1], args, time.time() - t0)
    log(f"({time.time() - t_start:.0f}s) [3/5] fine-tuning gap (difficult case)")
    ft = lab.finetune_gap(nets["difficult"], cfg, train_ds, dev_ds)
    log(f"({time.time() - t_start:.0f}s) [4/5] hidden vs output error (difficult case, first "
        "layer)")
    hid = lab.hidden_vs_output(nets["difficult"], cfg, train_ds, dev_ds)
    log(f"({time.time() - t_start:.0f}s) [5/5] alpha-scaling (Lemma C.1)")
    alpha = lab.alpha_scaling(nets["difficult"], cfg)
    case_rows = []
    for n, c in cases.items():
        head = np.asarray(c.params["head"]["kernel"])
        case_rows.append({"name": n, "description": c.description, "accuracy": c.accuracy,
                          "seconds": c.seconds,
                          "head_zero_fraction": float(np.mean(head == 0)),
                          "dead_neurons": int(np.sum(~np.any(head != 0, axis=1)))})
    result = {"args": vars(args), "cases": case_rows, "analyses": analyses,
              "finetune_gap": ft, "hidden_vs_output": hid, "alpha_scaling": alpha,
              "seconds": time.time() - t_start}
    (out / "results.json").write_text(json.dumps(lab.jsonable(result), indent=1,
                                                 allow_nan=False))
    lab.write_report(result, out)
    log(f"wrote {out}/results.json, report.md and 4 PNGs in {time.time() - t_start:.0f}s")
    return json.loads((out / "results.json").read_text())


if __name__ == "__main__":
    _args = parse_args()
    replot(_args) if _args.replot else run(_args)
    sys.exit(0)
