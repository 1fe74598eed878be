"""Language-model pruning on real text: byte-level decoder LMs trained on the Python standard
library (``pystdlib``), pruned by width (KV-groups of heads and MLP units) and by depth (whole
blocks), scored in test bits per byte right after pruning and after a fixed distillation
budget from the dense LM.

Protocol (every number in the table comes from ``results.json``):

* ``--nets`` independently trained LMs (:class:`jaxprune.models.LM`, seeds 0, 1, …), each
  ``--train-steps`` Adam steps on the train split's byte windows.
* Width: at each ``--ratios`` fraction of the prunable blocks' parameters (``unit="params"``:
  the attention and MLP arrays the head and unit groups live in), every ``--methods`` entry,
  without and with the least-squares refit (``reconstruct="lstsq"`` on the calibration
  windows). Depth: ``--depth`` K blocks removed whole, scored by block influence
  (1 − cos between a block's input and output on the calibration windows) and by the
  data-free score.
* Calibration: the first ``--calib-windows`` windows of the validation split (never the test
  split). Test bits per byte: the first ``--eval-windows`` test windows (0: all).
* Distillation: ``--distill-steps`` Adam steps of ``(1 − α)·CE + α·T²·KL`` from the dense LM
  (the same budget for every row).
* Statistics: per row, mean ± sample sd over nets; the paired difference ``method − coreset``
  (in bits per byte; negative: the method is better) at the same ratio and refit, with its 95 %
  t-interval over nets and Holm's correction over every comparison of the table.

``--resume`` continues an interrupted run (same config only), ``--report-only`` rewrites the
table, plot and README/docs block from ``results.json``.

Example (the committed run; a few minutes per LM on 2 cores)::

    JAXPRUNE_DATA_DIR=../shared/data python experiments/lm_pystdlib.py \\
        --out experiments/results/lm_pystdlib
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

from experiments.common import protocol, report  # noqa: E402

import jaxprune  # noqa: E402
from jaxprune import checkpoint, data, train  # noqa: E402
from jaxprune.models.lm import LM  # noqa: E402

REFERENCE = "coreset"
METHODS = ("coreset", "l1_norm", "random", "wanda_sp", "flap")
DEPTH_SCORES = ("block_influence", "norm")
# the arguments that define a run: a --resume must match them
DEFINING = ("nets", "train_steps", "batch_size", "seq_len", "dim", "layers", "heads",
            "kv_heads", "mlp_dim", "lr", "ratios", "methods", "refit", "depth", "depth_scores",
            "calib_windows", "eval_windows", "distill_steps", "distill_lr", "distill_alpha",
            "dataset")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="pystdlib",
                   help="a text-corpus folder under JAXPRUNE_DATA_DIR")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--nets", type=int, default=3, help="independently trained LMs")
    p.add_argument("--train-steps", type=int, default=600)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--kv-heads", type=int, default=2)
    p.add_argument("--mlp-dim", type=int, default=192)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--ratios", type=float, nargs="+", default=[0.25, 0.5])
    p.add_argument("--methods", nargs="+", default=list(METHODS))
    p.add_argument("--refit", choices=("off", "on", "both"), default="both")
    p.add_argument("--depth", type=int, nargs="*", default=[1, 2],
                   help="blocks removed whole (none: no depth rows)")
    p.add_argument("--depth-scores", nargs="+", default=list(DEPTH_SCORES),
                   choices=DEPTH_SCORES)
    p.add_argument("--calib-windows", type=int, default=32,
                   help="validation windows the data-informed criteria and the refit read")
    p.add_argument("--eval-windows", type=int, default=256, help="test windows scored (0: all)")
    p.add_argument("--distill-steps", type=int, default=100)
    p.add_argument("--distill-lr", type=float, default=1e-3)
    p.add_argument("--distill-alpha", type=float, default=0.5)
    p.add_argument("--out", default="experiments/results/lm_pystdlib")
    p.add_argument("--resume", action="store_true", help="keep the rows already in results.json")
    p.add_argument("--report-only", action="store_true",
                   help="no training: table, plot (and --readme) from results.json")
    p.add_argument("--readme", default=None, help="file to write the table block into")
    p.add_argument("--readme-block", default="lm_pystdlib")
    args = p.parse_args(argv)
    positive = ("nets", "train_steps", "batch_size", "seq_len", "dim", "layers", "heads",
                "kv_heads", "mlp_dim", "calib_windows")
    for name in positive:
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if not all(0.0 < r < 1.0 for r in args.ratios):
        p.error("--ratios must lie in (0, 1)")
    if any(k < 1 or k >= args.layers for k in args.depth):
        p.error(f"--depth values must lie in [1, --layers - 1 = {args.layers - 1}]")
    if REFERENCE not in args.methods:
        p.error(f"--methods must include the reference method {REFERENCE!r}")
    for m in args.methods:
        try:
            jaxprune.methods.get(m)
        except ValueError as err:
            p.error(str(err))
    return args


def make_model(args) -> LM:
    return LM(vocab_size=256, dim=args.dim, num_layers=args.layers,
                        num_heads=args.heads, num_kv_heads=args.kv_heads, mlp_dim=args.mlp_dim,
                        max_len=args.seq_len)


def splits(args):
    """(train, calibration windows, test) of the corpus."""
    load = lambda split: data.load(args.dataset, split, args.data_dir,  # noqa: E731
                                   seq_len=args.seq_len)
    train_ds, valid_ds, test_ds = load("train"), load("valid"), load("test")
    if args.eval_windows:
        test_ds = test_ds.subset(np.arange(min(args.eval_windows, len(test_ds))))
    calib = np.asarray(valid_ds.images[:args.calib_windows], np.int32)
    return train_ds, calib, test_ds


def bits_per_byte(model, variables, test_ds) -> float:
    return float(train.evaluate(model, variables, test_ds, batch_size=64)["bits_per_byte"])


def dense_lms(args, model, train_ds, test_ds, out: pathlib.Path) -> dict[int, dict]:
    """``{seed: variables}``: one LM per seed, saved at ``out/dense_<seed>`` and reused only
    under ``--resume`` with the same recorded training config."""
    nets = {}
    for seed in range(args.nets):
        path = out / f"dense_{seed}"
        identity = {k: getattr(args, k) for k in ("train_steps", "batch_size", "seq_len", "lr",
                                                  "dataset")} | {"seed": seed}
        if path.exists():
            saved, variables, meta = checkpoint.load_model(path)
            if saved != model or (meta or {}).get("dense_identity") != identity:
                raise SystemExit(f"{path} holds an LM trained otherwise; use another --out")
            if not args.resume:
                raise SystemExit(f"{path} holds an LM of an earlier run; pass --resume to "
                                 "reuse it, or use another --out")
            nets[seed] = variables
            print(f"LM {seed}: reused from {path}", flush=True)
            continue
        cfg = train.TrainConfig(optimizer="adam", learning_rate=args.lr, schedule="cosine",
                                epochs=1, max_steps=args.train_steps, batch_size=args.batch_size,
                                seed=seed, log_every=0)
        t0 = time.time()
        res = train.fit(model, train_ds, cfg, progress=False)
        print(f"LM {seed}: {args.train_steps} steps in {time.time() - t0:.0f}s, test "
              f"{bits_per_byte(model, res.variables, test_ds):.3f} bits/byte", flush=True)
        checkpoint.save_model(path, model, res.variables, meta={"dense_identity": identity})
        nets[seed] = res.variables
    return nets


def distill(args, small, params, train_ds, teacher, seed: int):
    """``--distill-steps`` steps of CE + KL distillation from the dense LM."""
    cfg = train.TrainConfig(optimizer="adam", learning_rate=args.distill_lr, schedule="cosine",
                            epochs=1, max_steps=args.distill_steps, batch_size=args.batch_size,
                            seed=seed, log_every=0, distill_alpha=args.distill_alpha,
                            distill_loss="kl")
    return train.fit(small, train_ds, cfg, variables=params, teacher=teacher,
                     progress=False).variables


def count_params(tree) -> int:
    return int(sum(np.size(x) for x in jax.tree.leaves(tree)))


def width_trial(args, model, dense, method: str, ratio: float, refit: bool, calib, seed: int):
    """``(smaller model, its params, report)`` of one width prune."""
    meth = jaxprune.methods.get(method)
    res = jaxprune.prune(dense, jax.random.key(seed), ratio, method=method, model=model,
                         example_inputs=calib[:1], unit="params",
                         data=calib if (refit or meth.needs_data or meth.uses_data) else None,
                         reconstruct="lstsq" if refit else None)
    return res.model(model), res.params, res.report


def depth_trial(args, model, dense, k: int, score: str, calib, seed: int):
    """``(smaller model, its params, report)`` of removing ``k`` blocks whole
    (``prune(..., depth=k)``)."""
    res = jaxprune.prune(dense, seed, 0, model=model, example_inputs=calib[:1], depth=k,
                         depth_score=score, data=calib if score == "block_influence" else None)
    return res.model(model), res.params, {**res.report, "depth_form": res.form,
                                          "removed": list(res.removed)}


def trial_keys(args):
    """Every (kind, setting, method, refit) of one net, in run order."""
    refits = {"off": (False,), "on": (True,), "both": (False, True)}[args.refit]
    keys = [("width", r, m, f) for r in args.ratios for m in args.methods for f in refits]
    keys += [("depth", k, s, False) for k in args.depth for s in args.depth_scores]
    return keys


def run(args, out: pathlib.Path) -> dict:
    train_ds, calib, test_ds = splits(args)
    print(f"{args.dataset}: {len(train_ds)} train windows of {args.seq_len} bytes, "
          f"{len(calib)} calibration windows, {len(test_ds)} test windows; CPU: "
          f"{protocol.cpu_name()}", flush=True)
    model = make_model(args)
    rows = protocol.Rows(out, {k: getattr(args, k) for k in DEFINING}, args.resume,
                         key=("kind", "setting", "method", "refit", "net"))
    nets = dense_lms(args, model, train_ds, test_ds, out)
    for seed, dense in nets.items():
        dense_bpb = bits_per_byte(model, dense, test_ds)
        for kind, setting, method, refit in trial_keys(args):
            key = dict(kind=kind, setting=setting, method=method, refit=refit, net=seed)
            if rows.has(**key):
                continue
            t0 = time.time()
            if kind == "width":
                small, params, rep = width_trial(args, model, dense, method, setting, refit,
                                                 calib, seed)
            else:
                small, params, rep = depth_trial(args, model, dense, setting, method, calib,
                                                 seed)
            prune_s = time.time() - t0
            before = bits_per_byte(small, params, test_ds)
            tuned = distill(args, small, params, train_ds, (model, dense), seed)
            after = bits_per_byte(small, tuned, test_ds)
            row = {**key, "dense_bpb": dense_bpb, "bpb_pruned": before, "bpb_distilled": after,
                   "params_dense": count_params(dense["params"]),
                   "params_pruned": count_params(params["params"] if "params" in params
                                                 else params),
                   "prune_seconds": prune_s, "seconds": time.time() - t0,
                   "depth_form": rep.get("depth_form"), "removed": rep.get("removed")}
            rows.add(row)
            print(f"  LM {seed} {kind} {setting} {method:15s} refit={refit!s:5s}: "
                  f"{dense_bpb:.3f} -> {before:.3f} -> {after:.3f} bits/byte "
                  f"({row['params_pruned']}/{row['params_dense']} params)", flush=True)
    return rows.save()


def _label(r) -> str:
    return f"{r['method']}{' + refit' if r['refit'] else ''}"


def summarize(rows: list[dict]) -> list[dict]:
    """One summary per (kind, setting, method, refit): mean ± sd over nets and the paired
    difference to the reference (width: coreset at the same ratio and refit; depth:
    block influence at the same K), Holm-corrected over the whole table."""
    groups = list(dict.fromkeys((r["kind"], r["setting"], r["method"], r["refit"])
                                for r in rows))
    out = []
    for kind, setting, method, refit in groups:
        mine = {r["net"]: r for r in rows
                if (r["kind"], r["setting"], r["method"], r["refit"]) == (kind, setting, method,
                                                                           refit)}
        ref_method = REFERENCE if kind == "width" else DEPTH_SCORES[0]
        ref = {r["net"]: r for r in rows
               if (r["kind"], r["setting"], r["method"], r["refit"]) == (kind, setting,
                                                                          ref_method, refit)}
        common = sorted(set(mine) & set(ref))
        diffs = {}
        if method != ref_method:
            for key in ("bpb_pruned", "bpb_distilled"):
                diffs[key] = report.paired([mine[n][key] for n in common],
                                           [ref[n][key] for n in common])
        out.append({"kind": kind, "setting": setting, "method": method, "refit": refit,
                    "nets": len(mine),
                    "removed": float(np.mean([1 - r["params_pruned"] / r["params_dense"]
                                              for r in mine.values()])),
                    "dense": [r["dense_bpb"] for r in mine.values()],
                    "pruned": [r["bpb_pruned"] for r in mine.values()],
                    "distilled": [r["bpb_distilled"] for r in mine.values()],
                    "form": next(iter(mine.values())).get("depth_form"),
                    "diffs": diffs})
    for key in ("bpb_pruned", "bpb_distilled"):
        report.mark_holm([s["diffs"].get(key) for s in out], "holm_table")
    return out


def _diff(d) -> str:
    return report.diff_cell(d, "{:+.3f}")


def table(summary: list[dict]) -> str:
    lines = ["| prune | method | nets | params removed | dense bits/byte | pruned | "
             "vs reference, pruned | distilled | vs reference, distilled |",
             "|---|---|---:|---:|---:|---:|---|---:|---|"]
    for s in summary:
        what = (f"width {100 * s['setting']:.0f} %" if s["kind"] == "width"
                else f"depth −{s['setting']} ({s['form'] or '?'})")
        label = _label(s) if s["kind"] == "width" else s["method"]
        lines.append(
            f"| {what} | {label} | {s['nets']} | {100 * s['removed']:.1f} % | "
            f"{report.pm(s['dense'], '{:.3f}')} | {report.pm(s['pruned'], '{:.3f}')} | "
            f"{_diff(s['diffs'].get('bpb_pruned'))} | {report.pm(s['distilled'], '{:.3f}')} | "
            f"{_diff(s['diffs'].get('bpb_distilled'))} |")
    return "\n".join(lines)


def sentences(summary: list[dict]) -> str:
    """What the table says about the reference, from the Holm-corrected comparisons only."""
    out = []
    for key, when in (("bpb_pruned", "right after pruning"),
                      ("bpb_distilled", "after distillation")):
        better, worse, tied = [], [], []
        for s in summary:
            d = s["diffs"].get(key)
            if s["kind"] != "width" or d is None or d["p"] is None:
                continue
            name = f"{_label(s)} at {100 * s['setting']:.0f} %"
            (worse if d.get("holm_table") and d["mean"] > 0 else
             better if d.get("holm_table") else tied).append(name)
        out.append(f"{when.capitalize()}, coreset (same ratio and refit) beats "
                   f"{len(worse)} comparison(s) and loses {len(better)} after Holm's "
                   f"correction over the table"
                   + (f" (loses to: {', '.join(better)})" if better else "")
                   + f"; {len(tied)} are not distinguishable.")
    for s in summary:
        d = s["diffs"].get("bpb_distilled")
        if s["kind"] != "depth" or d is None or d["p"] is None:
            continue
        verdict = ("worse than" if d["mean"] > 0 else "better than") if d.get("holm_table") \
            else "not distinguishable from"
        out.append(f"Depth −{s['setting']}: the {s['method']} score is {verdict} block "
                   f"influence after distillation ({_diff(d)} bits per byte).")
    return " ".join(out)


def plot(summary: list[dict], path: pathlib.Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=False)
    for ax, key, title in ((axes[0], "pruned", "right after pruning"),
                           (axes[1], "distilled", "after distillation")):
        labels = list(dict.fromkeys(_label(s) if s["kind"] == "width" else
                                    f"depth: {s['method']}" for s in summary))
        for label in labels:
            pts = [s for s in summary if (_label(s) if s["kind"] == "width" else
                                          f"depth: {s['method']}") == label]
            x = [100 * s["removed"] for s in pts]
            y = [float(np.mean(s[key])) for s in pts]
            err = [report.sd(s[key]) if len(s[key]) > 1 else 0.0 for s in pts]
            ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=label)
        ax.set(xlabel="parameters removed (%)", ylabel="test bits per byte", title=title)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def report_text(doc: dict) -> str:
    """The table, the sentences and the run's description, from ``results.json`` alone."""
    summary = summarize(doc["rows"])
    cfg = doc["config"]
    return (f"{table(summary)}\n\n{sentences(summary)}\n\n"
            f"({cfg['nets']} LMs of dim {cfg['dim']}, {cfg['layers']} blocks, {cfg['heads']} "
            f"heads / {cfg['kv_heads']} KV heads, MLP {cfg['mlp_dim']}, trained "
            f"{cfg['train_steps']} steps of {cfg['batch_size']}×{cfg['seq_len']} bytes; "
            f"distillation {cfg['distill_steps']} steps; mean ± sample sd over nets; "
            f"differences are method − reference in bits per byte (negative: better than "
            f"the reference), 95 % t-interval over nets, * interval excludes 0, ‡ survives "
            f"Holm's correction over every comparison of the table; CPU: {doc.get('cpu')}.)")


def write_report(doc: dict, args, out: pathlib.Path) -> str:
    text = report_text(doc)
    (out / "table.md").write_text(text + "\n")
    plot(summarize(doc["rows"]), out / "bits_per_byte.png")
    if args.readme:
        report.write_block(pathlib.Path(args.readme), args.readme_block, text)
    return text


def main(argv=None) -> dict:
    args = parse_args(argv)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.report_only:
        doc = json.loads((out / "results.json").read_text())
    else:
        doc = run(args, out)
    print(write_report(doc, args, out))
    return doc


if __name__ == "__main__":
    main()
