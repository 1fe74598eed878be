"""Command line interface: ``jaxprune {train,evaluate,prune,finetune} ...`` (also
``python -m jaxprune``).

::

    jaxprune train    --model lenet300 --dataset mnist --out runs/dense
    jaxprune evaluate --checkpoint runs/dense          # one JSON object on stdout
    jaxprune prune    --checkpoint runs/dense --ratio 0.9 --out runs/pruned
    jaxprune prune    --checkpoint runs/dense --ratio 0.9 --method sipp --out runs/sparse
    jaxprune finetune --checkpoint runs/pruned --epochs 10 --out runs/ft

Structured methods (``coreset``, ``pvc``, ``l1_norm``, ...) write a smaller model; unstructured
ones (``magnitude``, ``sipp``) write the same model with the pruned kernel entries exactly 0 and
record ``kind: "weights"`` in the checkpoint's ``meta["prune"]``, so ``finetune`` keeps those
zeros (``--keep-zeros`` is then on by default). Data-informed methods (``sipp``, ``pfp``) get
``--data-batch`` images of the training split. ``evaluate`` reports ``params`` and
``nonzero_params``.

Output directory of ``train`` / ``finetune`` (``--out``)::

    model.json, variables/     final model (jaxprune.checkpoint.save_model; load_model reads it)
    checkpoints/<epoch>/       orbax per-epoch training state (a re-run with the same --out resumes)
    metrics.jsonl              per-epoch / per-step training log
    config.json                command, model config, dataset, TrainConfig, devices
    results.json               test accuracy/loss, params, nonzero params, FLOPs, wall time

Errors the user can fix (bad flag, unknown model/dataset, missing data or checkpoint) print a
one-line message on stderr and exit with status 2 (set ``JAXPRUNE_DEBUG=1`` for tracebacks).

Adding a subcommand: write ``add_arguments(parser)`` and ``run(args) -> int`` and append
``Command(name, help, add_arguments, run)`` to :data:`COMMANDS` (or call
:func:`register_command`), e.g. ``register_command("prune", "prune a model", add_prune, run_prune)``.
Helpers for such commands: :func:`add_data_arguments`, :func:`add_training_arguments`,
:func:`load_datasets`, :func:`train_config_from_args`, :func:`run_training`.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from typing import Callable, NamedTuple

__all__ = ["main", "Command", "COMMANDS", "register_command", "CLIError", "build_parser"]


class CLIError(Exception):
    """A user error: reported as ``jaxprune: error: <message>`` with exit status 2."""


class Command(NamedTuple):
    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


COMMANDS: list[Command] = []


def register_command(name: str, help: str, add_arguments, run) -> Command:
    cmd = Command(name, help, add_arguments, run)
    COMMANDS[:] = [c for c in COMMANDS if c.name != name] + [cmd]
    return cmd


# ----------------------------------------------------------------------------- shared arguments

def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    if v <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return v


def add_data_arguments(p: argparse.ArgumentParser, *, dataset_required: bool) -> None:
    p.add_argument("--dataset", required=dataset_required, default=None,
                   help="dataset name (mnist, fashion_mnist, cifar10, cifar100, imagenet2012)"
                   + ("" if dataset_required else "; default: the one stored in the checkpoint"))
    p.add_argument("--data-dir", default=None,
                   help="root holding <dataset>/ IDX files (default $JAXPRUNE_DATA_DIR) / TFDS dir")
    # hidden, for tests and quick experiments: use only the first N examples
    p.add_argument("--limit-train", type=_positive_int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--limit-test", type=_positive_int, default=None, help=argparse.SUPPRESS)


def add_training_arguments(p: argparse.ArgumentParser) -> None:
    """Flags shared by ``train`` and ``finetune``; unset flags fall back to the model's recipe
    (:func:`jaxprune.train.default_config`)."""
    p.add_argument("--out", required=True, help="output directory (resumes if it has checkpoints)")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--batch-size", type=_positive_int, default=None,
                   help="GLOBAL batch size (divisible by the device count)")
    p.add_argument("--lr", "--learning-rate", dest="learning_rate", type=float, default=None)
    p.add_argument("--optimizer", choices=("adam", "sgd"), default=None)
    p.add_argument("--momentum", type=float, default=None)
    p.add_argument("--nesterov", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--schedule", choices=("constant", "cosine", "step"), default=None)
    p.add_argument("--step-decay", type=float, default=None)
    p.add_argument("--step-milestones", type=float, nargs="+", default=None,
                   help="epoch fractions at which the 'step' schedule decays")
    p.add_argument("--warmup-epochs", type=float, default=None)
    p.add_argument("--weight-decay", type=float, default=None,
                   help="L2 weight decay on kernels (coupled unless --decoupled-weight-decay)")
    p.add_argument("--decoupled-weight-decay", action=argparse.BooleanOptionalAction,
                   default=None)
    p.add_argument("--l1", type=float, default=None, help="L1 penalty on kernels")
    p.add_argument("--label-smoothing", type=float, default=None)
    p.add_argument("--augment", choices=("none", "crop_flip"), default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--devices", type=_positive_int, default=None,
                   help="use the first N local devices (default: all)")
    p.add_argument("--log-every", type=int, default=None)
    p.add_argument("--eval-batch-size", type=_positive_int, default=1000)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


_CONFIG_FLAGS = ("epochs", "batch_size", "learning_rate", "optimizer", "momentum", "nesterov",
                 "schedule", "step_decay", "step_milestones", "warmup_epochs", "weight_decay",
                 "decoupled_weight_decay", "l1", "label_smoothing", "seed", "log_every")


def train_config_from_args(args: argparse.Namespace, model_name: str, **extra):
    from jaxprune import train

    overrides = {k: getattr(args, k, None) for k in _CONFIG_FLAGS}
    if getattr(args, "step_milestones", None) is not None:
        overrides["step_milestones"] = tuple(args.step_milestones)
    aug = getattr(args, "augment", None)
    overrides = {k: v for k, v in overrides.items() if v is not None}
    base = train.default_config(model_name, **overrides, **extra)
    if aug is not None:
        base = dataclasses.replace(base, augment=None if aug == "none" else aug)
    return base


def load_datasets(name: str, data_dir=None, limit_train=None, limit_test=None,
                  need_train: bool = True):
    """(train_ds or None, test_ds), with user errors turned into :class:`CLIError`."""
    from jaxprune import data

    if name not in data.DATASETS:
        raise CLIError(f"unknown dataset {name!r}; known datasets: {', '.join(data.DATASETS)}")
    test_split = "validation" if name == "imagenet2012" else "test"
    try:
        tr = data.load(name, "train", data_dir) if need_train else None
        te = data.load(name, test_split, data_dir)
    except (FileNotFoundError, ValueError) as e:
        raise CLIError(f"dataset {name!r} not available: {e}") from None
    if tr is not None and limit_train is not None:
        tr = tr.subset(range(min(limit_train, len(tr))))
    if limit_test is not None:
        te = te.subset(range(min(limit_test, len(te))))
    return tr, te


def _check_model_name(name: str) -> None:
    from jaxprune import models

    if name not in models.model_names():
        raise CLIError(f"unknown model {name!r}; known models: {', '.join(models.model_names())}")


def _load_checkpoint(directory):
    from jaxprune import checkpoint

    if not os.path.isdir(directory):
        raise CLIError(f"checkpoint directory does not exist: {directory}")
    try:
        return checkpoint.load_model(directory)
    except FileNotFoundError as e:
        raise CLIError(str(e)) from None


def _size_report(model, variables, input_shape) -> dict:
    from jaxprune import metrics

    out = {"params": metrics.param_count(variables),
           "nonzero_params": metrics.nonzero_count(variables)}
    try:
        out["flops"] = int(metrics.flops(model, variables, tuple(input_shape)))
    except Exception as e:  # noqa: BLE001 — never lose a finished run over a metric
        out["flops"] = None
        out["flops_error"] = f"{type(e).__name__}: {e}"
    return out


def _write_json(path, obj) -> None:
    from jaxprune.checkpoint import to_jsonable

    tmp = str(path) + ".tmp"
    with open(tmp, "w") as f:
        json.dump(to_jsonable(obj), f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


def run_training(args, command: str, model, dataset: str, config, train_ds, test_ds, *,
                 variables=None, mask=None, teacher=None, extra_meta=None) -> int:
    """fit -> evaluate -> save_model(out) + config.json + results.json; prints results."""
    from jaxprune import checkpoint, models, train

    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    model_cfg = models.model_config(model)
    cfg_doc = {"command": command, "argv": sys.argv[1:], "model": model_cfg, "dataset": dataset,
               "train_config": config.to_dict(), "devices": args.devices,
               "limit_train": args.limit_train, "limit_test": args.limit_test,
               **(extra_meta or {})}
    _write_json(os.path.join(out, "config.json"), cfg_doc)
    t0 = time.time()
    try:
        res = train.fit(model, train_ds, config, variables=variables, out_dir=out,
                        eval_ds=test_ds, mask=mask, teacher=teacher, devices=args.devices,
                        progress=not args.no_progress, eval_batch_size=args.eval_batch_size)
    except ValueError as e:
        raise CLIError(str(e)) from None
    wall = time.time() - t0
    ev = train.evaluate(model, res.variables, test_ds, batch_size=args.eval_batch_size)
    size = _size_report(model, res.variables, test_ds.images.shape[1:])
    results = {"test_accuracy": ev["accuracy"], "test_loss": ev["loss"], "test_n": ev["n"],
               **size, "train_time_s": wall, "epochs": config.epochs, "dataset": dataset,
               "model": model_cfg["name"], "widths": model_cfg.get("widths")}
    meta = {"dataset": dataset, "command": command, "train_config": config.to_dict(),
            "test_accuracy": ev["accuracy"], **(extra_meta or {})}
    checkpoint.save_model(out, model, res.variables, meta=meta)
    _write_json(os.path.join(out, "results.json"), results)
    print(json.dumps(checkpoint.to_jsonable(results), sort_keys=True))
    return 0


# ----------------------------------------------------------------------------- train

def _add_train(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="lenet300, lenet5, vgg16, vgg19, resnet56, ...")
    add_data_arguments(p, dataset_required=True)
    add_training_arguments(p)


def _run_train(args) -> int:
    from jaxprune import models

    _check_model_name(args.model)
    train_ds, test_ds = load_datasets(args.dataset, args.data_dir, args.limit_train,
                                      args.limit_test)
    model = models.get_model(args.model, num_classes=train_ds.num_classes)
    config = train_config_from_args(args, args.model)
    return run_training(args, "train", model, args.dataset, config, train_ds, test_ds)


# ----------------------------------------------------------------------------- finetune

def _add_finetune(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="model directory (save_model / train --out)")
    add_data_arguments(p, dataset_required=False)
    add_training_arguments(p)
    p.add_argument("--keep-zeros", action=argparse.BooleanOptionalAction, default=None,
                   help="kernel weights that are exactly 0 in the checkpoint stay 0 (a fixed "
                        "mask: fine-tuning after unstructured pruning). Default: on when the "
                        "checkpoint records an unstructured prune (`prune --method magnitude` / "
                        "`sipp`, or a fine-tune of one), off otherwise")
    p.add_argument("--teacher", default=None,
                   help="model directory of a teacher for knowledge distillation")
    p.add_argument("--distill-alpha", type=float, default=None)
    p.add_argument("--distill-temperature", type=float, default=None)


def _is_unstructured(meta: dict) -> bool:
    """True when the checkpoint's metadata records an unstructured (weight) prune, directly
    (``prune`` wrote it) or through a fine-tune that kept its zeros."""
    prune = meta.get("prune")
    return bool((isinstance(prune, dict) and prune.get("kind") == "weights")
                or meta.get("keep_zeros") is True)


def _zeros_mask(params):
    """0/1 mask like ``params``: kernels -> (w != 0); every other leaf (biases, norms) -> 1."""
    import jax
    import numpy as np

    from jaxprune.structure import path_of

    def leaf(p, x):
        x = np.asarray(x)
        if path_of(p)[-1] == "kernel":
            return (x != 0).astype(np.float32)
        return np.ones(x.shape, np.float32)

    return jax.tree_util.tree_map_with_path(leaf, params)


def _run_finetune(args) -> int:
    model, variables, meta = _load_checkpoint(args.checkpoint)
    dataset = args.dataset or meta.get("dataset")
    if not dataset:
        raise CLIError(f"{args.checkpoint} does not record its dataset; pass --dataset")
    train_ds, test_ds = load_datasets(dataset, args.data_dir, args.limit_train, args.limit_test)
    from jaxprune import models
    name = models.model_config(model)["name"]
    extra = {}
    if args.distill_alpha is not None:
        extra["distill_alpha"] = args.distill_alpha
    if args.distill_temperature is not None:
        extra["distill_temperature"] = args.distill_temperature
    config = train_config_from_args(args, name, **extra)
    keep_zeros = args.keep_zeros
    if keep_zeros is None:  # automatic: the checkpoint comes from an unstructured prune
        keep_zeros = _is_unstructured(meta)
        if keep_zeros:
            print("jaxprune finetune: the checkpoint is unstructured-pruned; its zero kernel "
                  "weights stay 0 (--no-keep-zeros releases them)", file=sys.stderr)
    mask = None
    if keep_zeros:
        mask = _zeros_mask(variables["params"])
    teacher = None
    if args.teacher:
        t_model, t_vars, _ = _load_checkpoint(args.teacher)
        teacher = (t_model, t_vars)
    return run_training(args, "finetune", model, dataset, config, train_ds, test_ds,
                        variables=variables, mask=mask, teacher=teacher,
                        extra_meta={"parent_checkpoint": os.path.abspath(args.checkpoint),
                                    "teacher": args.teacher, "keep_zeros": bool(keep_zeros)})


# ----------------------------------------------------------------------------- evaluate

def _add_evaluate(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="model directory (save_model / train --out)")
    add_data_arguments(p, dataset_required=False)
    p.add_argument("--batch-size", type=_positive_int, default=1000)


def _run_evaluate(args) -> int:
    from jaxprune import checkpoint, models, train

    model, variables, meta = _load_checkpoint(args.checkpoint)
    dataset = args.dataset or meta.get("dataset")
    if not dataset:
        raise CLIError(f"{args.checkpoint} does not record its dataset; pass --dataset")
    _, test_ds = load_datasets(dataset, args.data_dir, None, args.limit_test, need_train=False)
    ev = train.evaluate(model, variables, test_ds, batch_size=args.batch_size)
    out = {"accuracy": ev["accuracy"], "loss": ev["loss"], "n": ev["n"],
           **_size_report(model, variables, test_ds.images.shape[1:]),
           "model": models.model_config(model)["name"], "dataset": dataset,
           "checkpoint": os.path.abspath(args.checkpoint)}
    print(json.dumps(checkpoint.to_jsonable(out), sort_keys=True))
    return 0


# ----------------------------------------------------------------------------- prune

def _ratio(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"ratio must be a number in [0, 1), got {text!r}")
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"ratio must be in [0, 1), got {value}")
    return value


def _add_prune(p: argparse.ArgumentParser) -> None:
    from jaxprune import methods, pruning

    p.add_argument("--checkpoint", required=True, help="model directory (save_model / train --out)")
    p.add_argument("--method", default="coreset", choices=methods.names())
    p.add_argument("--ratio", type=_ratio, required=True,
                   help="fraction to remove, counted in --unit (default: prunable parameters)")
    p.add_argument("--unit", default="params", choices=pruning.UNITS)
    p.add_argument("--sampling", default=None, choices=pruning.SAMPLINGS,
                   help="default: the method's own")
    p.add_argument("--projection", default=None, choices=("pca", "jl", "none"),
                   help="coreset: projection of the neuron points (default pca)")
    p.add_argument("--projection-dim", type=_positive_int, default=None)
    p.add_argument("--min-width", type=_positive_int, default=1)
    p.add_argument("--scope", default=None, choices=("layer", "global"),
                   help="magnitude: same sparsity per kernel (layer, default) or one global "
                        "threshold")
    p.add_argument("--leave", nargs="+", default=(), metavar="LAYER",
                   help="layers (module paths, e.g. dense_1) not to prune; the output layer is "
                        "never pruned")
    p.add_argument("--data-batch", type=_positive_int, default=128,
                   help="data-informed methods (sipp, pfp): size of the batch S, drawn with "
                        "--seed from the training split of the checkpoint's dataset")
    add_data_arguments(p, dataset_required=False)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="output directory for the pruned model")


def _data_batch(args, meta):
    """``--data-batch`` training images (seeded choice) of the checkpoint's dataset."""
    import numpy as np

    from jaxprune import data

    dataset = args.dataset or meta.get("dataset")
    if not dataset:
        raise CLIError(f"--method {args.method} needs data and {args.checkpoint} does not "
                       "record its dataset; pass --dataset")
    if dataset not in data.DATASETS:
        raise CLIError(f"unknown dataset {dataset!r}; known datasets: {', '.join(data.DATASETS)}")
    try:
        train_ds = data.load(dataset, "train", args.data_dir)
    except (FileNotFoundError, ValueError) as e:
        raise CLIError(f"dataset {dataset!r} not available: {e}") from None
    n = len(train_ds) if args.limit_train is None else min(args.limit_train, len(train_ds))
    rng = np.random.default_rng(args.seed)
    idx = np.sort(rng.choice(n, size=min(args.data_batch, n), replace=False))
    return np.asarray(train_ds.images[idx])


def _run_prune(args) -> int:
    import time

    import jax

    from jaxprune import checkpoint, methods, models, pruning

    model, variables, meta = _load_checkpoint(args.checkpoint)
    options = {k: v for k, v in (("projection", args.projection),
                                 ("projection_dim", args.projection_dim)) if v is not None}
    if options and args.method != "coreset":
        raise CLIError("--projection/--projection-dim only apply to --method coreset")
    if args.scope is not None:
        if args.method != "magnitude":
            raise CLIError("--scope only applies to --method magnitude")
        options["scope"] = args.scope
    meth = methods.get(args.method)
    batch = _data_batch(args, meta) if meth.needs_data else None
    t0 = time.time()
    try:
        res = pruning.prune(variables, jax.random.key(args.seed), args.ratio, method=args.method,
                            model=model, unit=args.unit, sampling=args.sampling,
                            min_width=args.min_width, leave=tuple(args.leave), data=batch,
                            **options)
    except ValueError as e:
        raise CLIError(str(e)) from None
    seconds = time.time() - t0
    # structured: the smaller model; unstructured: the same model, pruned weights exactly 0
    small = model if meth.kind == "weights" else res.model(model)
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    report = {**res.report, "seconds": seconds, "widths_before": list(model.widths),
              "widths_after": list(small.widths)}
    if batch is not None:
        report["data_batch"] = int(batch.shape[0])
    new_meta = {"dataset": args.dataset or meta.get("dataset"),
                "parent_checkpoint": os.path.abspath(args.checkpoint), "prune": report}
    checkpoint.save_model(out, small, res.params, meta=new_meta)
    _write_json(os.path.join(out, "config.json"),
                {"command": "prune", **{k: v for k, v in vars(args).items() if k != "_run"},
                 "model": models.model_config(model)})
    _write_json(os.path.join(out, "results.json"), report)
    print(json.dumps(checkpoint.to_jsonable(report), sort_keys=True))
    return 0


register_command("train", "train a model from scratch", _add_train, _run_train)
register_command("evaluate", "evaluate a saved model (prints one JSON object)", _add_evaluate,
                 _run_evaluate)
register_command("finetune", "fine-tune a saved (e.g. pruned) model", _add_finetune,
                 _run_finetune)
register_command("prune", "prune a saved model: neurons/filters (smaller model out) or, with "
                 "--method magnitude/sipp, individual weights (same shapes, pruned weights 0)",
                 _add_prune, _run_prune)


# ----------------------------------------------------------------------------- entry point

class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse's default, but never a traceback
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="jaxprune", description="Coreset pruning of neural networks in JAX.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for cmd in COMMANDS:
        p = sub.add_parser(cmd.name, help=cmd.help, description=cmd.help)
        cmd.add_arguments(p)
        p.set_defaults(_run=cmd.run)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse: --help (0) or a bad flag (2)
        return int(e.code or 0) if not isinstance(e.code, str) else 2
    try:
        return int(args._run(args) or 0)
    except CLIError as e:
        if os.environ.get("JAXPRUNE_DEBUG"):
            raise
        print(f"jaxprune {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("jaxprune: interrupted (re-run with the same --out to resume)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
