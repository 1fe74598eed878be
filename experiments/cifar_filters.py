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
import os
import pathlib
import sys
import time

import jax
import numpy as np

# run as a file (python experiments/<name>.py), not with -m: put the repository root on sys.path
if not __package__:
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from experiments.common import filters  # noqa: E402
from jaxprune import data, metrics, models, train  # noqa: E402

CIFAR10_TRAIN = 50_000  # training images of CIFAR-10 (for --time-epoch's extrapolation)

PAPER = {  # main paper, Table 2: target PR (%) -> pruned err best (%); baseline err
    "vgg19": {"ratios": (0.88, 0.9128), "baseline": 6.33, "err": {0.88: 5.85, 0.9128: 6.23}},
    "vgg16": {"ratios": (0.7953, 0.87, 0.9532), "baseline": 7.11,
              "err": {0.7953: 6.3, 0.87: 6.63, 0.9532: 7.31}},
    "resnet56": {"ratios": (0.64,), "baseline": 6.61, "err": {0.64: 7.26}},
}


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
    filters.add_common_flags(p, "vgg16", finetune_epochs=40)
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
    overrides = filters.scaled_overrides(name, args.width_divisor,
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
        cfg = dataclasses.replace(filters.train_config(margs, name, finetune=False, seed=0), epochs=2)
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
    print(filters.DATA_HOWTO.format(name=args.dataset, extra=""), flush=True)
    root = args.data_dir
    train_ds = data.head(data.load(args.dataset, "train", data_dir=root), args.limit_train)
    test_ds = data.head(data.load(args.dataset, "test", data_dir=root), args.limit_test)
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
        results.append(filters.run_model(name, model, (32, 32, 3), train_ds, test_ds, ratios,
                                         margs, out / name))
    text = filters.table(results, PAPER)
    print(text)
    filters.write_results(out, results, args, text)
    return results


if __name__ == "__main__":
    main()
