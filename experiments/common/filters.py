"""The filter-pruning pipeline of the Table 2 (CIFAR-10) and Table 3 (ImageNet) scripts.

:func:`run_model` trains (or restores) the dense network, prunes it once per seed at every ratio,
fine-tunes data-parallel on every local device and evaluates; :func:`add_common_flags` /
:func:`train_config` map the shared flags onto ``jaxprune.train`` configs;
:func:`calibrate_ratio` turns a whole-model PR into ``prune``'s ratio over the pruned layers;
:func:`table` / :func:`write_results` report.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import time

import jax
import numpy as np

import jaxprune
from jaxprune import metrics, models, selection, structure, train
from jaxprune.checkpoint import to_jsonable

DATA_HOWTO = (
    "Data: this script reads {name} through TFDS (ArrayRecord, no TensorFlow needed) and never "
    "downloads. Prepare it once on a machine with network access, e.g.\n"
    "    tfds build {name} --file_format=array_record --data_dir=$HOME/tensorflow_datasets\n"
    "{extra}and point --data-dir (or JAXPRUNE_DATA_DIR) at that folder.")


def scaled_overrides(name: str, divisor: int, num_blocks=None) -> dict:
    """Model fields with every width divided by ``divisor`` (>= 1 channel); for quick runs."""
    base = models.get_model(name)
    out = {}
    for field in ("widths", "stage_widths", "stem_width"):
        if hasattr(base, field):
            v = getattr(base, field)
            out[field] = (max(1, v // divisor) if isinstance(v, int)
                          else tuple(max(1, w // divisor) for w in v))
    if num_blocks is not None and hasattr(base, "num_blocks"):
        nb = tuple(num_blocks)
        per = len(base.widths) // sum(base.num_blocks)  # widths entries per block
        inner = []
        for s, n in enumerate(nb):
            first = sum(base.num_blocks[:s]) * per
            inner += list(out["widths"][first:first + n * per])
        out["widths"], out["num_blocks"] = tuple(inner), nb
    return out


def add_common_flags(p: argparse.ArgumentParser, model_name: str, finetune_epochs: int):
    """Training / fine-tuning / pruning flags; defaults = the model's recipe."""
    cfg = train.default_config(model_name)
    g = p.add_argument_group("dense training (defaults: jaxprune.train.default_config)")
    g.add_argument("--optimizer", default=cfg.optimizer, choices=("sgd", "adam"))
    g.add_argument("--lr", type=float, default=cfg.learning_rate)
    g.add_argument("--momentum", type=float, default=cfg.momentum)
    g.add_argument("--nesterov", type=int, default=int(cfg.nesterov), choices=(0, 1))
    g.add_argument("--schedule", default=cfg.schedule, choices=("constant", "cosine", "step"))
    g.add_argument("--warmup-epochs", type=float, default=cfg.warmup_epochs)
    g.add_argument("--weight-decay", type=float, default=cfg.weight_decay)
    g.add_argument("--label-smoothing", type=float, default=cfg.label_smoothing)
    g.add_argument("--epochs", type=int, default=None,
                   help="dense training epochs (default: the model's recipe)")
    g.add_argument("--batch-size", type=int, default=cfg.batch_size, help="global batch")
    g.add_argument("--augment", default=cfg.augment or "none", choices=("none", "crop_flip"))
    g.add_argument("--train-seed", type=int, default=0)
    f = p.add_argument_group("fine-tuning after pruning")
    f.add_argument("--ft-epochs", type=int, default=finetune_epochs)
    f.add_argument("--ft-lr", type=float, default=None, help="default: --lr / 10")
    f.add_argument("--ft-schedule", default="cosine", choices=("constant", "cosine", "step"))
    f.add_argument("--ft-warmup-epochs", type=float, default=0.0)
    q = p.add_argument_group("pruning")
    q.add_argument("--method", default="coreset")
    q.add_argument("--sampling", default=None, choices=(None, "sparsity_first", "deterministic"))
    q.add_argument("--allocation", default="bound", choices=("bound", "uniform"))
    q.add_argument("--unit", default="params", choices=("params", "neurons", "flops"))
    q.add_argument("--ratio-of", default="model", choices=("model", "pruned-layers"),
                   help="what a ratio counts: the whole model's parameters (the paper's PR; "
                        "calibrated to a --unit ratio over the pruned layers) or --unit over "
                        "the pruned layers, as jaxprune.prune counts it")
    q.add_argument("--prune-residual", action="store_true",
                   help="also prune channels tied by residual adds (ResNets)")
    q.add_argument("--seeds", type=int, default=5, help="pruning + fine-tuning seeds")
    p.add_argument("--data-dir", default=None, help="TFDS data dir (default $JAXPRUNE_DATA_DIR)")
    p.add_argument("--out", default=None)
    p.add_argument("--devices", type=int, default=None, help="default: all local devices")
    p.add_argument("--eval-batch-size", type=int, default=500)
    # hidden knobs for tests / smoke runs
    p.add_argument("--width-divisor", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--num-blocks", type=int, nargs="+", default=None, help=argparse.SUPPRESS)
    p.add_argument("--limit-train", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--limit-test", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--image-size", type=int, default=None, help=argparse.SUPPRESS)


def train_config(args, model_name: str, finetune: bool, seed: int) -> train.TrainConfig:
    """The dense-training (or, ``finetune=True``, the fine-tuning) config of the flags."""
    epochs = args.ft_epochs if finetune else args.epochs
    lr = (args.ft_lr if args.ft_lr is not None else args.lr / 10) if finetune else args.lr
    cfg = train.default_config(
        model_name, optimizer=args.optimizer, learning_rate=lr, momentum=args.momentum,
        nesterov=bool(args.nesterov),
        schedule=args.ft_schedule if finetune else args.schedule,
        warmup_epochs=args.ft_warmup_epochs if finetune else args.warmup_epochs,
        weight_decay=args.weight_decay, label_smoothing=args.label_smoothing,
        epochs=epochs, batch_size=args.batch_size, seed=seed, log_every=0)
    # default_config drops None overrides, so "no augmentation" is set afterwards
    return dataclasses.replace(cfg, augment=None if args.augment == "none" else args.augment)


def calibrate_ratio(model, variables, input_shape, target: float, args, leave=()) -> float:
    """The ``unit`` ratio that removes ``target`` of ALL parameters (the paper's PR).

    ``unit='params'`` already counts the whole model, so the ratio is ``target`` itself.
    Other units: bisection on cheap structure counts with a uniform allocation (no scores
    needed). ``prune`` is then called with the returned ratio and the table reports the PR
    achieved.
    """
    if args.unit == "params":
        return float(target)
    st = structure.from_model(model, variables, input_shape)
    groups = [g for g in st.groups if g.prunable and g.name not in set(leave)
              and (args.prune_residual or not g.residual)]
    total = st.count_params()
    lo, hi = 0.0, 0.995

    def whole(r):
        w = selection.allocate_widths(st, groups, r, args.unit, 1, None, "uniform")
        return 1.0 - st.count_params(w) / total
    if whole(hi) < target:
        print(f"  note: a whole-model PR of {target:g} is out of reach for the pruned layers "
              f"(at most {whole(hi):.4f}); pruning as far as they allow", flush=True)
        return hi
    for _ in range(25):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if whole(mid) < target else (lo, mid)
    return hi


def run_model(name, model, input_shape, train_ds, test_ds, ratios, args, out: pathlib.Path,
              leave=()):
    """Dense train/restore -> (prune -> fine-tune -> evaluate) per ratio and seed."""
    out.mkdir(parents=True, exist_ok=True)
    cfg = train_config(args, name, finetune=False, seed=args.train_seed)
    t0 = time.perf_counter()
    dense = train.fit(model, train_ds, cfg, out_dir=out / "dense", devices=args.devices,
                      progress=False)
    train_time = time.perf_counter() - t0
    walls = [h["wall_time"] for h in dense.history if "wall_time" in h]
    variables = jax.device_get(dense.variables)
    base = train.evaluate(model, variables, test_ds, batch_size=args.eval_batch_size)
    rows = []
    for ratio in ratios:
        runs = []
        unit_ratio = ratio
        if args.ratio_of == "model":
            unit_ratio = calibrate_ratio(model, variables, input_shape, ratio, args, leave)
            print(f"  {name}: whole-model PR {ratio:g} -> {args.unit} ratio {unit_ratio:.4f} of "
                  "the pruned layers", flush=True)
        for seed in range(args.seeds):
            res = jaxprune.prune(variables, jax.random.key(seed), unit_ratio, method=args.method,
                                 model=model, input_shape=input_shape, unit=args.unit,
                                 sampling=args.sampling, allocation=args.allocation,
                                 prune_residual=args.prune_residual, leave=leave)
            small = res.model(model)  # also follows tied_width_layers()
            after_prune = train.evaluate(small, res.params, test_ds,
                                         batch_size=args.eval_batch_size)
            ft_cfg = train_config(args, name, finetune=True, seed=seed)
            ft = train.fit(small, train_ds, ft_cfg, variables=res.params,
                           out_dir=out / f"pruned_{ratio:g}" / f"seed{seed}",
                           devices=args.devices, progress=False)
            ev = train.evaluate(small, jax.device_get(ft.variables), test_ds,
                                batch_size=args.eval_batch_size)
            dense_flops = metrics.flops(model, variables, input_shape)
            small_flops = metrics.flops(small, res.params, input_shape)
            runs.append({
                "seed": seed, "err": 100 * (1 - ev["accuracy"]),
                "err_before_finetune": 100 * (1 - after_prune["accuracy"]),
                "pr": 100 * (1 - metrics.param_count(res.params) / metrics.param_count(variables)),
                "fr": 100 * (1 - small_flops / dense_flops),
                "achieved_unit_ratio": res.report["achieved_ratio"],
                "widths": {k: int(v) for k, v in res.widths.items()},
                "report": {k: res.report[k] for k in ("ratios", "params_before", "params_after",
                                                      "flops_before", "flops_after")},
            })
            print(f"  {name} ratio {ratio:g} seed {seed}: err {runs[-1]['err']:.2f}% (before "
                  f"fine-tune {runs[-1]['err_before_finetune']:.2f}%), PR {runs[-1]['pr']:.2f}% "
                  f"FR {runs[-1]['fr']:.2f}%", flush=True)
        errs = np.array([r["err"] for r in runs])
        rows.append({"model": name, "target_ratio": ratio, "unit": args.unit,
                     "ratio_of": args.ratio_of, "unit_ratio": unit_ratio,
                     "baseline_err": 100 * (1 - base["accuracy"]),
                     "err_best": float(errs.min()), "err_mean": float(errs.mean()),
                     "err_std": float(errs.std()), "pr": float(np.mean([r["pr"] for r in runs])),
                     "fr": float(np.mean([r["fr"] for r in runs])), "runs": runs})
    return {"model": name, "method": args.method, "config": models.model_config(model),
            "train_config": cfg.to_dict(), "baseline_err": 100 * (1 - base["accuracy"]), "params": metrics.param_count(variables),
            "train_seconds": train_time,
            "seconds_per_epoch": float(np.mean(walls)) if walls else None, "rows": rows}


def table(results, paper=None) -> str:
    """Markdown table shaped like the paper's Tables 2/3 (one row per model and ratio)."""
    head = ("| Model | Method | Baseline Err. (%) | Pruned Err. (%) best (mean ± std) | PR (%) "
            "| FR (%) | paper: Pruned Err. (%) @ PR |")
    lines = [head, "|" + "---|" * 7]
    for r in results:
        for row in r["rows"]:
            ref = ""
            if paper and r["model"] in paper and row["target_ratio"] in paper[r["model"]]["err"]:
                ref = (f"{paper[r['model']]['err'][row['target_ratio']]} @ "
                       f"{100 * row['target_ratio']:g}")
            lines.append(
                f"| {r['model']} | {r.get('method', 'coreset')} ({100 * row['target_ratio']:g}%"
                f" {'PR' if row.get('ratio_of') == 'model' else row['unit']}) "
                f"| {row['baseline_err']:.2f} | {row['err_best']:.2f} ({row['err_mean']:.2f} ± "
                f"{row['err_std']:.2f}) | {row['pr']:.2f} | {row['fr']:.2f} | {ref} |")
    return "\n".join(lines)


def write_results(out: pathlib.Path, results, args, text: str):
    """``<out>/results.json`` (flags, the device count ``fit`` used, results) and ``<out>/table.md``."""
    out.mkdir(parents=True, exist_ok=True)
    devices = args.devices or train.default_devices() or jax.local_device_count()
    payload = {"args": {k: v for k, v in vars(args).items()}, "devices": devices,
               "results": results}
    (out / "results.json").write_text(json.dumps(to_jsonable(payload), indent=2))
    (out / "table.md").write_text(text + "\n")
