"""Table 2 (main paper): coreset filter pruning of VGG-19, VGG-16 and ResNet-56 on CIFAR-10.

GPU run (every local device, data-parallel; CIFAR-10 prepared for TFDS under ~/tensorflow_datasets):

    JAXPRUNE_DATA_DIR=$HOME/tensorflow_datasets python experiments/cifar_filters.py --out runs/cifar_filters

For each model: train the dense network with the project's CIFAR recipe
(``jaxprune.train.default_config``: SGD + Nesterov 0.9, lr 0.05 (VGG) / 0.1 (ResNet), cosine, 1
warm-up epoch, L2 5e-4 / 1e-4, batch 128, crop+flip, 160 / 182 epochs; every value is a flag) or
restore it from ``--out`` (``fit`` resumes from its orbax checkpoints), prune filters with the
coreset method once per seed at the paper's ratios (VGG-19 88 % and 91.28 %, VGG-16 79.53 %,
87 %, 95.32 %, ResNet-56 64 %; by default a ratio is the paper's PR, the fraction of ALL
parameters removed: ``--ratio-of model`` calibrates it to ``prune``'s ``unit=params`` ratio over
the pruned layers, which for VGG is the same number), fine-tune, evaluate, and print a table
shaped like Table 2: baseline error, pruned error best and mean ± std over the seeds, achieved
whole-model PR and FR (FLOP reduction). Results go to
``<out>/results.json`` and ``<out>/table.md``.

ResNet-56: only the channels *inside* each basic block are pruned (``prune_residual=False``, the
convention of the coreset papers). With the option-A (zero-pad) shortcut of the 0.85M-parameter
ResNet-56 the residual channels cannot be pruned at all (see ``tests/test_residual.py``), but
99.6 % of the parameters live in arrays the inner channels index (conv1 and conv2 of every
block), so 64 % PR is reachable; with one keep fraction for all blocks the FLOP reduction is
about the same 64 % (the paper reports 50 % FR, i.e. it pruned the late, parameter-heavy stage
more). The table reports the achieved PR and FR, not the target.

Data (nothing here downloads; ``jaxprune.data.load`` calls ``tfds.data_source(name, split,
data_dir, download=False)``, which reads ArrayRecord files only): prepare CIFAR-10 once, on a
machine with network access and TensorFlow (``tfds build`` encodes the images with it; reading
needs only ``tensorflow-datasets``, ``array_record`` and Pillow)::

    pip install tensorflow tensorflow-datasets
    tfds build cifar10 --file_format=array_record --data_dir=$HOME/tensorflow_datasets

which leaves ``$HOME/tensorflow_datasets/cifar10/3.0.2/`` holding ``dataset_info.json``,
``features.json``, ``label.labels.txt`` and ``cifar10-{train,test}.array_record-00000-of-0000N``
(a TFRecord build of the same version can be converted with ``tfds convert_format``). Point
``--data-dir`` or ``JAXPRUNE_DATA_DIR`` at the folder that holds ``cifar10/``.

Time per epoch: ``python experiments/cifar_filters.py --time-epoch 5`` times 5 steady-state
training steps of every model (the same model, recipe and ``fit`` as the real run, random
CIFAR-shaped data, no dataset needed) and extrapolates to one CIFAR-10 epoch (390 steps of 128);
a real run writes the measured ``seconds_per_epoch`` to ``results.json``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import sys
import time

import jax
import numpy as np

import jaxprune
from jaxprune import data, metrics, models, pruning, structure, train

DATA_HOWTO = (
    "Data: this script reads {name} through TFDS (ArrayRecord, no TensorFlow needed) and never "
    "downloads. Prepare it once on a machine with network access, e.g.\n"
    "    tfds build {name} --file_format=array_record --data_dir=$HOME/tensorflow_datasets\n"
    "{extra}and point --data-dir (or JAXPRUNE_DATA_DIR) at that folder.")

CIFAR10_TRAIN = 50_000  # training images of CIFAR-10 (for --time-epoch's extrapolation)

PAPER = {  # main paper, Table 2: target PR (%) -> pruned err best (%); baseline err
    "vgg19": {"ratios": (0.88, 0.9128), "baseline": 6.33, "err": {0.88: 5.85, 0.9128: 6.23}},
    "vgg16": {"ratios": (0.7953, 0.87, 0.9532), "baseline": 7.11,
              "err": {0.7953: 6.3, 0.87: 6.63, 0.9532: 7.31}},
    "resnet56": {"ratios": (0.64,), "baseline": 6.61, "err": {0.64: 7.26}},
}


# --------------------------------------------------------------------------- shared helpers

def pruned_module(model, res):
    """The smaller module (``res.model`` also follows ``tied_width_layers()``)."""
    return res.model(model)


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
    """The ``unit`` ratio (over the pruned layers) that removes ``target`` of ALL parameters.

    The paper's PR counts the whole model; ``prune``'s ratio counts ``unit`` over the pruned
    layers only, which for a ResNet (inner channels only, or a frozen stem/head) is less than
    the whole model. ``unit='params'``: every removed parameter lies in an array a pruned group
    lives in, so removing ``r`` of those arrays removes ``r · touched / total`` of the model
    whatever the per-layer allocation, and ``r = target · total / touched`` exactly. Other
    units: bisection on cheap structure counts with a uniform allocation (no scores needed).
    ``prune`` is then called with the returned ratio and the table reports the PR achieved.
    """
    st = structure.from_model(model, variables, input_shape)
    groups = [g for g in st.groups if g.prunable and g.name not in set(leave)
              and (args.prune_residual or not g.residual)]
    total = st.count_params()
    lo, hi = 0.0, 0.995
    if args.unit == "params":
        touched = {s.path for g in groups for s in (*g.producers, *g.members, *g.consumers)}
        ratio = target * total / st.count_params({}, touched)
        if ratio < hi:
            return ratio

    def whole(r):
        w = pruning.allocate_widths(st, groups, r, args.unit, 1, None, "uniform")
        return 1.0 - st.count_params(w) / total
    if args.unit == "params" or whole(hi) < target:
        print(f"  note: a whole-model PR of {target:g} is out of reach for the pruned layers "
              f"(at most {whole(hi):.4f}); pruning as far as they allow", flush=True)
        return hi
    for _ in range(25):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if whole(mid) < target else (lo, mid)
    return hi


def limit(ds, n):
    return ds if n is None or n >= len(ds) else ds.subset(np.arange(n))


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
            small = pruned_module(model, res)
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
    return {"model": name, "method": args.method, "config": models.model_config(model), "train_config": cfg.to_dict(),
            "baseline_err": 100 * (1 - base["accuracy"]), "params": metrics.param_count(variables),
            "train_seconds": train_time,
            "seconds_per_epoch": float(np.mean(walls)) if walls else None, "rows": rows}


def table(results, paper=None) -> str:
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
    out.mkdir(parents=True, exist_ok=True)
    payload = {"args": {k: v for k, v in vars(args).items()}, "devices": jax.device_count(),
               "results": results}
    (out / "results.json").write_text(json.dumps(payload, indent=2, default=str))
    (out / "table.md").write_text(text + "\n")


# ------------------------------------------------------------------------------------ main

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=["vgg19", "vgg16", "resnet56"],
                   choices=("vgg19", "vgg16", "resnet56"))
    p.add_argument("--ratios", type=float, nargs="+", default=None,
                   help="override the paper's ratios (applied to every model)")
    p.add_argument("--dataset", default="cifar10", choices=("cifar10", "cifar100"))
    p.add_argument("--time-epoch", type=int, default=None, metavar="STEPS",
                   help="only time training: STEPS steady-state steps per model on random "
                        "CIFAR-shaped data, extrapolated to one CIFAR-10 epoch (no data needed)")
    add_common_flags(p, "vgg16", finetune_epochs=40)
    args = p.parse_args(argv)
    args.out = args.out or "results/cifar_filters"
    return args


def model_args(args, name: str, argv=None) -> argparse.Namespace:
    """``args`` with the per-model recipe (lr, weight decay, epochs) unless given explicitly."""
    defaults = train.default_config(name)
    explicit = set(a.split("=")[0] for a in (argv if argv is not None else sys.argv[1:]))
    margs = argparse.Namespace(**vars(args))
    if "--lr" not in explicit:
        margs.lr = defaults.learning_rate
    if "--weight-decay" not in explicit:
        margs.weight_decay = defaults.weight_decay
    margs.epochs = args.epochs if args.epochs is not None else defaults.epochs
    return margs


def build_model(name: str, args, num_classes: int):
    overrides = scaled_overrides(name, args.width_divisor,
                                 args.num_blocks if name.startswith("resnet") else None)
    return models.get_model(name, num_classes=num_classes, **overrides)


def time_epoch(args, argv=None) -> list[dict]:
    """``--time-epoch STEPS``: seconds per CIFAR-10 training epoch here, extrapolated.

    For every ``--models`` entry: the model and ``TrainConfig`` the real run trains with (same
    flags and per-model recipe: batch, optimizer, crop+flip), random CIFAR-shaped data
    (``STEPS × batch`` images; nothing is read from disk) and ``train.fit`` for 2 epochs of
    ``STEPS`` steps each: epoch 1 = compilation + ``STEPS`` steps, epoch 2 = ``STEPS`` steps in
    steady state (input pipeline, augmentation and host->device transfer included, as in a real
    epoch). One CIFAR-10 epoch is ``data.num_batches(50000, batch)`` steps (``fit`` drops the
    last partial batch: 390 at batch 128); its time is EXTRAPOLATED as that many × the
    steady-state seconds per step.
    """
    steps, n_train = args.time_epoch, CIFAR10_TRAIN
    rng = np.random.default_rng(0)
    rows = []
    print(f"Timing {steps} steady-state training steps per model (after one epoch of {steps} "
          f"steps that includes compilation) on random CIFAR-shaped data; jax "
          f"{jax.__version__}, {jax.device_count()} {jax.devices()[0].platform} device(s), "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}", flush=True)
    for name in args.models:
        margs = model_args(args, name, argv)
        model = build_model(name, margs, num_classes=10)
        cfg = dataclasses.replace(train_config(margs, name, finetune=False, seed=0), epochs=2)
        n = steps * cfg.batch_size
        ds = data.ArrayDataset(rng.standard_normal((n, 32, 32, 3), dtype=np.float32),
                               rng.integers(0, 10, n).astype(np.int32), 10, "cifar10")
        t0 = time.perf_counter()
        res = train.fit(model, ds, cfg, devices=args.devices, progress=False)
        total = time.perf_counter() - t0
        first, second = res.history
        per_step = second["wall_time"] / steps
        epoch_steps = data.num_batches(n_train, cfg.batch_size)
        rows.append({"model": name, "params": metrics.param_count(res.variables),
                     "batch_size": cfg.batch_size, "devices": first["devices"],
                     "steps_timed": steps, "first_epoch_s": first["wall_time"],
                     "seconds_per_step": per_step, "examples_per_sec": cfg.batch_size / per_step,
                     "epoch_steps": epoch_steps,
                     "seconds_per_epoch_extrapolated": per_step * epoch_steps,
                     "fit_total_s": total})
        print(f"  {name}: {per_step:.3f} s/step -> {per_step * epoch_steps:.0f} s per epoch "
              "(extrapolated)", flush=True)
    print(f"\n| model | params | batch | devices | epoch 1: step compile + {steps} steps [s] | "
          f"s/step (mean of {steps}, steady state) | examples/s | CIFAR-10 epoch "
          f"({rows[0]['epoch_steps'] if rows else '?'} steps) [s], EXTRAPOLATED |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['model']} | {r['params']:,} | {r['batch_size']} | {r['devices']} | "
              f"{r['first_epoch_s']:.1f} | {r['seconds_per_step']:.3f} | "
              f"{r['examples_per_sec']:.1f} | {r['seconds_per_epoch_extrapolated']:.0f} "
              f"(≈ {r['seconds_per_epoch_extrapolated'] / 60:.1f} min) |")
    print(f"\nload average now {os.getloadavg()[0]:.1f} (shared CPU: timings are noisy)")
    return rows


def main(argv=None):
    args = parse_args(argv)
    if args.time_epoch:
        return time_epoch(args, argv)
    print(DATA_HOWTO.format(name=args.dataset, extra=""), flush=True)
    root = args.data_dir
    train_ds = limit(data.load(args.dataset, "train", data_dir=root), args.limit_train)
    test_ds = limit(data.load(args.dataset, "test", data_dir=root), args.limit_test)
    print(f"{len(train_ds)} train / {len(test_ds)} test examples, {jax.device_count()} "
          f"device(s): {jax.devices()[0].platform}", flush=True)
    out = pathlib.Path(args.out)
    results = []
    for name in args.models:
        margs = model_args(args, name, argv)
        model = build_model(name, margs, train_ds.num_classes)
        ratios = args.ratios or PAPER[name]["ratios"]
        n_params = metrics.param_count(jax.eval_shape(
            model.init, jax.random.key(0), np.zeros((1, 32, 32, 3), np.float32)))
        print(f"== {name}: {n_params} params, ratios {ratios}", flush=True)
        results.append(run_model(name, model, (32, 32, 3), train_ds, test_ds, ratios, margs,
                                 out / name))
    text = table(results, PAPER)
    print(text)
    write_results(out, results, args, text)
    return results


if __name__ == "__main__":
    main()
