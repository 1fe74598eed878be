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

    run.json                   the run's identity; "complete": true once everything is written
    model.json, variables/     final model (jaxprune.checkpoint.save_model; load_model reads it)
    checkpoints/<epoch>/       orbax per-epoch training state (``--resume`` continues from it)
    metrics.jsonl              per-epoch / per-step training log
    config.json                command, model config, dataset, TrainConfig, devices
    results.json               test accuracy/loss, params, nonzero params, FLOPs, wall time

An output directory holds one whole run (:mod:`jaxprune.runs`): ``run.json`` is written first
and marked complete last, and a checkpoint whose run is unfinished does not load; an existing
``--out`` is refused unless ``--overwrite`` (replace it) or ``--resume`` (continue the same
run: a different command, model, dataset, data limits, config or parent checkpoint is
refused); a second process writing the same ``--out`` is refused while the first runs.

Loading a checkpoint (``evaluate``/``prune``/``finetune``) imports only jaxprune, Flax, JAX
and NumPy names from its ``model.json``; ``--trust PKG`` allows a package of your own.

Errors the user can fix (bad flag or value, unknown model/dataset, missing data or checkpoint)
print one line ``jaxprune <command>: error: <message>`` on stderr and exit with status 2
(``jaxprune --debug ...`` or ``JAXPRUNE_DEBUG=1`` for tracebacks).

Adding a subcommand: write ``add_arguments(parser)`` and ``run(args) -> int`` and append
``Command(name, help, add_arguments, run)`` to :data:`COMMANDS` (or call
:func:`register_command`), e.g.
``register_command("prune", "prune a model", add_prune, run_prune)``.
Helpers for such commands: :func:`add_data_arguments`, :func:`add_training_arguments`,
:func:`train_config_from_args`; the jobs themselves live in :mod:`jaxprune.workflows`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import warnings
from collections.abc import Callable
from typing import NamedTuple

from jaxprune import checkpoint, distributed, export, methods, selection, train, workflows
from jaxprune.cache import enable_compilation_cache
from jaxprune.pipeline import PruneWarning

__all__ = [
    "main",
    "Command",
    "COMMANDS",
    "register_command",
    "CLIError",
    "build_parser",
    "add_data_arguments",
    "add_trust_argument",
    "add_out_arguments",
    "add_training_arguments",
    "train_config_from_args",
    "join_processes",
]

#: A user error: reported as ``jaxprune <command>: error: <message>`` with exit status 2.
CLIError = workflows.UsageError


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
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return v


def _non_negative_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        v = -1
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return v


def _number(
    low: float | None = None, high: float | None = None, *, above: bool = False, below: bool = False
):
    """An argparse ``type``: a finite float in ``[low, high]`` (``above``/``below``: the
    bound itself excluded)."""
    parts = []
    if low is not None:
        parts.append(f"{'>' if above else '>='} {low:g}")
    if high is not None:
        parts.append(f"{'<' if below else '<='} {high:g}")
    wanted = "a finite number" + (" " + " and ".join(parts) if parts else "")

    def convert(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            v = math.nan
        ok = (
            math.isfinite(v)
            and (low is None or (v > low if above else v >= low))
            and (high is None or (v < high if below else v <= high))
        )
        if not ok:
            raise argparse.ArgumentTypeError(f"expected {wanted}, got {text!r}")
        return v

    return convert


_POSITIVE = _number(0.0, above=True)
_NON_NEGATIVE = _number(0.0)
_FRACTION = _number(0.0, 1.0)


def add_data_arguments(p: argparse.ArgumentParser, *, dataset_required: bool) -> None:
    p.add_argument(
        "--dataset",
        required=dataset_required,
        default=None,
        help="dataset name (mnist, fashion_mnist, cifar10, cifar100, imagenet2012)"
        + ("" if dataset_required else "; default: the one stored in the checkpoint"),
    )
    p.add_argument(
        "--data-dir",
        default=None,
        help="root holding <dataset>/ IDX files (default $JAXPRUNE_DATA_DIR) / TFDS dir",
    )
    # hidden, for tests and quick experiments: use only the first N examples
    p.add_argument("--limit-train", type=_positive_int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--limit-test", type=_positive_int, default=None, help=argparse.SUPPRESS)


def add_trust_argument(p: argparse.ArgumentParser) -> None:
    """``--trust PKG`` (repeatable) for commands that load a checkpoint."""
    p.add_argument(
        "--trust",
        action="append",
        default=[],
        metavar="PKG",
        help="a package (besides jaxprune, flax, jax, numpy) whose classes and "
        "functions the checkpoint's model.json may name; only for checkpoints "
        "you trust: loading imports them (repeatable)",
    )


def add_out_arguments(p: argparse.ArgumentParser, *, resume: bool) -> None:
    """``--overwrite`` (and ``--resume`` for commands that can continue a run)."""
    g = p.add_mutually_exclusive_group()
    g.add_argument(
        "--overwrite", action="store_true", help="replace the run already in --out, whole"
    )
    if resume:
        g.add_argument(
            "--resume",
            action="store_true",
            help="continue the run in --out (refused unless it is the same run: "
            "command, model, dataset, data limits, config, parent checkpoint)",
        )


def add_training_arguments(p: argparse.ArgumentParser) -> None:
    """Flags shared by ``train`` and ``finetune``; unset flags fall back to the model's recipe
    (:func:`jaxprune.train.default_config`)."""
    p.add_argument(
        "--out",
        required=True,
        help="output directory; one whole run (an existing one needs --overwrite or --resume)",
    )
    add_out_arguments(p, resume=True)
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument(
        "--max-steps",
        type=_positive_int,
        default=None,
        help="stop after this many optimizer steps in all, mid-epoch if need be "
        "(the schedule then spans these steps)",
    )
    p.add_argument(
        "--batch-size",
        type=_positive_int,
        default=None,
        help="GLOBAL batch size (divisible by the device count)",
    )
    p.add_argument("--lr", "--learning-rate", dest="learning_rate", type=_POSITIVE, default=None)
    p.add_argument("--optimizer", choices=("adam", "sgd"), default=None)
    p.add_argument("--momentum", type=_number(0.0, 1.0, below=True), default=None)
    p.add_argument("--nesterov", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--schedule", choices=("constant", "cosine", "step"), default=None)
    p.add_argument("--step-decay", type=_POSITIVE, default=None)
    p.add_argument(
        "--step-milestones",
        type=_FRACTION,
        nargs="+",
        default=None,
        help="epoch fractions at which the 'step' schedule decays",
    )
    p.add_argument("--warmup-epochs", type=_NON_NEGATIVE, default=None)
    p.add_argument(
        "--weight-decay",
        type=_NON_NEGATIVE,
        default=None,
        help="L2 weight decay on kernels (coupled unless --decoupled-weight-decay)",
    )
    p.add_argument("--decoupled-weight-decay", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--l1", type=_NON_NEGATIVE, default=None, help="L1 penalty on kernels")
    p.add_argument("--label-smoothing", type=_number(0.0, 1.0, below=True), default=None)
    p.add_argument("--augment", choices=("none", "crop_flip"), default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument(
        "--devices",
        type=_positive_int,
        default=None,
        help="use the first N local devices (default: $JAXPRUNE_DEVICES, else all)",
    )
    p.add_argument("--log-every", type=_non_negative_int, default=None)
    p.add_argument("--eval-batch-size", type=_positive_int, default=1000)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    g = p.add_argument_group(
        "multi-process (jax.distributed; run the same command in every "
        "process, --out on a filesystem they share)"
    )
    g.add_argument(
        "--coordinator",
        default=None,
        metavar="HOST:PORT",
        help="address of process 0's coordinator",
    )
    g.add_argument("--num-processes", type=_positive_int, default=None)
    g.add_argument("--process-id", type=int, default=None)
    g.add_argument(
        "--distributed",
        action="store_true",
        help="detect the processes from the cluster environment (SLURM, Open MPI, "
        "Kubernetes, ...) instead",
    )


def join_processes(args: argparse.Namespace) -> tuple[int, int]:
    """Join the multi-process run the flags of :func:`add_training_arguments` describe (call
    before anything else uses JAX); ``(0, 1)`` for a single process."""
    joined = distributed.initialize(
        args.coordinator, args.num_processes, args.process_id, auto=args.distributed
    )
    distributed.check_same_config(_run_config(args))
    return joined


def _run_config(args: argparse.Namespace) -> str:
    """The flags every process of a run must share, as text (not its own process id)."""
    own = ("process_id", "_run", "no_progress", "debug")
    return json.dumps({k: repr(v) for k, v in sorted(vars(args).items()) if k not in own})


_CONFIG_FLAGS = (
    "epochs",
    "max_steps",
    "batch_size",
    "learning_rate",
    "optimizer",
    "momentum",
    "nesterov",
    "schedule",
    "step_decay",
    "step_milestones",
    "warmup_epochs",
    "weight_decay",
    "decoupled_weight_decay",
    "l1",
    "label_smoothing",
    "seed",
    "log_every",
)


def train_config_from_args(args: argparse.Namespace, model_name: str, **extra):
    """The model's recipe with every set training flag applied."""
    overrides = {k: getattr(args, k, None) for k in _CONFIG_FLAGS}
    if getattr(args, "step_milestones", None) is not None:
        overrides["step_milestones"] = tuple(args.step_milestones)
    aug = getattr(args, "augment", None)
    overrides = {k: v for k, v in overrides.items() if v is not None}
    base = train.default_config(model_name, **overrides, **extra)
    if aug is not None:
        base = dataclasses.replace(base, augment=None if aug == "none" else aug)
    return base


def _print_json(obj) -> None:
    if distributed.is_main():
        print(json.dumps(checkpoint.to_jsonable(obj), sort_keys=True))


def _run_options(args) -> dict:
    """What ``train`` and ``finetune`` hand to :func:`jaxprune.workflows.train_and_save`."""
    return {
        "devices": args.devices,
        "progress": not args.no_progress,
        "eval_batch_size": args.eval_batch_size,
        "overwrite": args.overwrite,
        "resume": args.resume,
        "run_info": {
            "argv": sys.argv[1:],
            "limit_train": args.limit_train,
            "limit_test": args.limit_test,
        },
    }


# ----------------------------------------------------------------------------- train


def _add_train(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="lenet300, lenet5, vgg16, vgg19, resnet56, ...")
    add_data_arguments(p, dataset_required=True)
    add_training_arguments(p)


def _run_train(args) -> int:
    join_processes(args)
    _print_json(
        workflows.train_new(
            args.model,
            args.dataset,
            args.out,
            lambda name: train_config_from_args(args, name),
            data_dir=args.data_dir,
            limit_train=args.limit_train,
            limit_test=args.limit_test,
            **_run_options(args),
        )
    )
    return 0


# ----------------------------------------------------------------------------- finetune


def _add_finetune(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="model directory (save_model / train --out)")
    add_data_arguments(p, dataset_required=False)
    add_training_arguments(p)
    p.add_argument(
        "--keep-zeros",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="kernel weights that are exactly 0 in the checkpoint stay 0 (a fixed "
        "mask: fine-tuning after unstructured pruning). Default: on when the "
        "checkpoint records an unstructured prune (`prune --method magnitude` / "
        "`sipp`, or a fine-tune of one), off otherwise",
    )
    add_trust_argument(p)
    p.add_argument(
        "--teacher", default=None, help="model directory of a teacher for knowledge distillation"
    )
    p.add_argument("--distill-alpha", type=_FRACTION, default=None)
    p.add_argument("--distill-temperature", type=_POSITIVE, default=None)


def _run_finetune(args) -> int:
    extra = {
        k: v
        for k, v in (
            ("distill_alpha", args.distill_alpha),
            ("distill_temperature", args.distill_temperature),
        )
        if v is not None
    }
    join_processes(args)
    _print_json(
        workflows.finetune_checkpoint(
            args.checkpoint,
            args.out,
            lambda name: train_config_from_args(args, name, **extra),
            dataset=args.dataset,
            data_dir=args.data_dir,
            limit_train=args.limit_train,
            limit_test=args.limit_test,
            keep_zeros=args.keep_zeros,
            teacher=args.teacher,
            trust=args.trust,
            **_run_options(args),
        )
    )
    return 0


# ----------------------------------------------------------------------------- evaluate


def _add_evaluate(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="model directory (save_model / train --out)")
    add_data_arguments(p, dataset_required=False)
    p.add_argument("--batch-size", type=_positive_int, default=1000)
    add_trust_argument(p)


def _run_evaluate(args) -> int:
    _print_json(
        workflows.evaluate_checkpoint(
            args.checkpoint,
            dataset=args.dataset,
            data_dir=args.data_dir,
            limit_test=args.limit_test,
            batch_size=args.batch_size,
            trust=args.trust,
        )
    )
    return 0


# ----------------------------------------------------------------------------- prune


def _ratio(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"ratio must be a number in [0, 1), got {text!r}"
        ) from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"ratio must be in [0, 1), got {value}")
    return value


def _json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"not valid JSON ({err.msg}): {text!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object ({{...}}), got {text!r}")
    return value


def _add_prune(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="model directory (save_model / train --out)")
    p.add_argument("--method", default="coreset", choices=methods.names())
    p.add_argument(
        "--ratio",
        type=_ratio,
        default=None,
        help="fraction to remove, counted in --unit (default: the whole model's "
        "parameters); required unless --depth or --hidden",
    )
    p.add_argument(
        "--depth",
        type=_positive_int,
        default=None,
        metavar="K",
        help="remove the K least important residual blocks whole instead of "
        "channels (decoder or ResNet blocks; the smaller model is rebuilt with "
        "fewer blocks where the module allows it)",
    )
    p.add_argument(
        "--hidden",
        type=_ratio,
        default=None,
        metavar="FRACTION",
        help="opt-in, approximate: remove this fraction of a token model's "
        "residual-stream (hidden-size) channels instead, scored on --data-batch "
        "training windows; the norms' statistics change, so the report gives the "
        "error it caused (fine-tune with --teacher to recover)",
    )
    p.add_argument(
        "--depth-score",
        default="block_influence",
        choices=("block_influence", "norm"),
        help="--depth: block influence (1 - cos between a block's input and output "
        "on --data-batch training examples) or the data-free norm score",
    )
    p.add_argument("--unit", default="params", choices=selection.UNITS)
    p.add_argument(
        "--sampling", default=None, choices=selection.SAMPLINGS, help="default: the method's own"
    )
    p.add_argument(
        "--projection",
        default=None,
        choices=("pca", "jl", "none"),
        help="coreset: projection of the neuron points (default pca)",
    )
    p.add_argument("--projection-dim", type=_positive_int, default=None)
    p.add_argument("--min-width", type=_positive_int, default=1)
    p.add_argument(
        "--round-to",
        type=_positive_int,
        default=1,
        help="layer widths are multiples of this (e.g. 8 for tensor cores)",
    )
    p.add_argument(
        "--apply-kwargs",
        type=_json_object,
        default=None,
        metavar="JSON",
        help="keyword arguments of the model's inference call, e.g. "
        "'{\"deterministic\": true}' (default: from its signature)",
    )
    p.add_argument(
        "--fw-epochs",
        type=_positive_int,
        default=None,
        help="frank_wolfe[_momentum]: epochs of the Frank-Wolfe phase on the "
        "checkpoint's training split (default 1)",
    )
    p.add_argument(
        "--fw-sparsity",
        type=_ratio,
        default=None,
        help="frank_wolfe[_momentum]: sparsity of the K-sparse polytope (default 0.9)",
    )
    p.add_argument(
        "--fw-step-size",
        type=_number(0.0, 1.0, above=True),
        default=None,
        help="frank_wolfe[_momentum]: constant step size γ (default 0.03)",
    )
    p.add_argument(
        "--scope",
        default=None,
        choices=("layer", "global"),
        help="magnitude: same sparsity per kernel (layer, default) or one global threshold",
    )
    p.add_argument(
        "--leave",
        nargs="+",
        default=(),
        metavar="LAYER",
        help="layers (module paths, e.g. dense_1) not to prune; the output layer is never pruned",
    )
    p.add_argument(
        "--data-batch",
        type=_positive_int,
        default=128,
        help="data-informed methods (sipp, pfp) and --reconstruct: size of the batch "
        "S, drawn with --seed from the training split of the checkpoint's "
        "dataset",
    )
    p.add_argument(
        "--reconstruct",
        default=None,
        choices=("lstsq",),
        help="refit every consumer of a pruned group on S by ridge least squares",
    )
    p.add_argument(
        "--ridge",
        type=_NON_NEGATIVE,
        default=1e-3,
        help="--reconstruct: ridge relative to the Gram matrix's mean eigenvalue",
    )
    p.add_argument(
        "--certificate",
        action="store_true",
        help="add Theorem 2.6's certificate per pruned group to the report (rank, "
        "mu(P), epsilon for the draws; observed errors on S with --data-batch "
        "data)",
    )
    p.add_argument(
        "--recalibrate-bn",
        action="store_true",
        help="--reconstruct: re-estimate BatchNorm statistics on S afterwards",
    )
    add_data_arguments(p, dataset_required=False)
    add_trust_argument(p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="output directory for the pruned model")
    add_out_arguments(p, resume=False)


def _prune_options(args) -> dict:
    """The method-specific flags as :func:`jaxprune.prune` options (checked against --method)."""
    options = {
        k: v
        for k, v in (("projection", args.projection), ("projection_dim", args.projection_dim))
        if v is not None
    }
    if options and args.method != "coreset":
        raise CLIError("--projection/--projection-dim only apply to --method coreset")
    fw = {
        k: v
        for k, v in (
            ("epochs", args.fw_epochs),
            ("sparsity", args.fw_sparsity),
            ("step_size", args.fw_step_size),
        )
        if v is not None
    }
    if fw and not args.method.startswith("frank_wolfe"):
        raise CLIError(
            "--fw-epochs/--fw-sparsity/--fw-step-size only apply to --method "
            "frank_wolfe and frank_wolfe_momentum"
        )
    options.update(fw)
    if args.scope is not None:
        if args.method != "magnitude":
            raise CLIError("--scope only applies to --method magnitude")
        options["scope"] = args.scope
    return options


def _run_prune(args) -> int:
    given = [v is not None for v in (args.ratio, args.depth, args.hidden)]
    if sum(given) != 1:
        raise CLIError(
            "give one of --ratio (channels), --depth (whole blocks) and --hidden "
            "(residual-stream channels)"
        )
    _print_json(
        workflows.prune_checkpoint(
            args.checkpoint,
            args.out,
            0.0 if args.ratio is None else args.ratio,
            depth=args.depth,
            depth_score=args.depth_score,
            hidden=args.hidden,
            method=args.method,
            unit=args.unit,
            sampling=args.sampling,
            min_width=args.min_width,
            leave=args.leave,
            seed=args.seed,
            dataset=args.dataset,
            data_dir=args.data_dir,
            limit_train=args.limit_train,
            data_batch=args.data_batch,
            options=_prune_options(args),
            round_to=args.round_to,
            apply_kwargs=args.apply_kwargs,
            reconstruct=args.reconstruct,
            ridge=args.ridge,
            recalibrate_bn=args.recalibrate_bn,
            certificate=args.certificate,
            trust=args.trust,
            overwrite=args.overwrite,
            record={k: v for k, v in vars(args).items() if k != "_run"},
        )
    )
    return 0


# ----------------------------------------------------------------------------- export


def _add_export(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="model directory (save_model / prune --out)")
    p.add_argument("--out", required=True, help="the file to write; its record goes to OUT.json")
    p.add_argument(
        "--format",
        default="stablehlo",
        choices=("stablehlo", "safetensors", "onnx"),
        help="stablehlo: the inference function with its weights (jax.export; "
        "loads with jax alone); safetensors: the weights; onnx: via jax2onnx "
        "(the 'onnx' extra)",
    )
    p.add_argument(
        "--batch",
        type=_positive_int,
        default=None,
        help="batch size of the exported function (default: any batch where the "
        "model allows it, else 1)",
    )
    p.add_argument(
        "--platform",
        nargs="+",
        default=None,
        choices=("cpu", "cuda", "rocm", "tpu"),
        help="stablehlo: the platforms it runs on (default: this machine's), e.g. "
        "--platform cpu cuda to export here and serve on a GPU",
    )
    add_trust_argument(p)


def _run_export(args) -> int:

    if args.platform and args.format != "stablehlo":
        raise CLIError("--platform only applies to --format stablehlo")
    record = export.export(
        args.checkpoint,
        args.out,
        format=args.format,
        batch=args.batch,
        trust=args.trust,
        platforms=args.platform,
    )
    _print_json({k: v for k, v in record.items() if k not in ("tensors", "model")})
    return 0


register_command("train", "train a model from scratch", _add_train, _run_train)
register_command(
    "evaluate", "evaluate a saved model (prints one JSON object)", _add_evaluate, _run_evaluate
)
register_command("finetune", "fine-tune a saved (e.g. pruned) model", _add_finetune, _run_finetune)
register_command(
    "prune",
    "prune a saved model: neurons/filters (smaller model out) or, with "
    "--method magnitude/sipp, individual weights (same shapes, pruned weights 0)",
    _add_prune,
    _run_prune,
)
register_command(
    "export",
    "export a saved model for serving without jaxprune (StableHLO, "
    "safetensors weights or ONNX) plus a JSON record of it",
    _add_export,
    _run_export,
)


# ----------------------------------------------------------------------------- entry point


class _Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line ``<prog>: error: <message>`` (exit
    status 2) with no usage block; ``--help`` prints the usage as usual."""

    commands: dict[str, argparse.ArgumentParser]  # the subcommand parsers (build_parser)

    def error(self, message):
        message = " ".join(str(message).split())
        hint = f" (see {self.prog} --help)" if "required" in message else ""
        self.exit(2, f"{self.prog}: error: {message}{hint}\n")

    def parse_args(self, args=None, namespace=None):
        """As argparse's, but unknown flags are reported by the subcommand they follow."""
        parsed, extra = self.parse_known_args(args, namespace)
        if extra:
            commands = getattr(self, "commands", {})
            commands.get(getattr(parsed, "command", None), self).error(
                f"unrecognized arguments: {' '.join(extra)}"
            )
        return parsed


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="jaxprune", description="Coreset pruning of neural networks in JAX.")
    parser.add_argument(
        "--debug", action="store_true", help="show tracebacks for errors (also JAXPRUNE_DEBUG=1)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    parser.commands = {}
    for cmd in COMMANDS:
        p = parser.commands[cmd.name] = sub.add_parser(
            cmd.name, help=cmd.help, description=cmd.help
        )
        cmd.add_arguments(p)
        p.set_defaults(_run=cmd.run)
    return parser


def _warning_printer(command: str):
    """``warnings.showwarning`` that prints a :class:`jaxprune.PruneWarning` as one line
    ``jaxprune <command>: warning: ...`` (other warnings as Python prints them)."""
    default = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, PruneWarning):
            if distributed.is_main():
                print(
                    f"jaxprune {command}: warning: {' '.join(str(message).split())}",
                    file=sys.stderr,
                )
            return
        default(message, category, filename, lineno, file, line)

    return show


def main(argv=None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse: --help (0) or a bad flag (2)
        return int(e.code or 0) if not isinstance(e.code, str) else 2
    try:
        enable_compilation_cache()  # $JAXPRUNE_CACHE_DIR, "off" disables
        with warnings.catch_warnings():
            warnings.simplefilter("always", PruneWarning)
            warnings.showwarning = _warning_printer(args.command)
            return int(args._run(args) or 0)
    except (CLIError, ValueError, FileNotFoundError) as e:  # the library's user errors
        if args.debug or os.environ.get("JAXPRUNE_DEBUG"):
            raise
        message = " ".join(str(e).split())  # one line
        print(f"jaxprune {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        hint = " (re-run with --resume to continue)" if hasattr(args, "resume") else ""
        print(f"jaxprune {args.command}: interrupted{hint}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
