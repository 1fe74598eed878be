"""End-to-end jobs on saved models: train, evaluate, prune and fine-tune a checkpoint.

Each job reads its inputs (a dataset, a model directory written by
:func:`jaxprune.checkpoint.save_model`), runs the library and writes its output directory;
:mod:`jaxprune.cli` maps command-line flags onto these functions. Problems the user can fix
(unknown model or dataset, missing files, a checkpoint that does not record its dataset)
raise :class:`UsageError` with a one-line message.

The output directories are described in :mod:`jaxprune.cli`.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from flax import nnx

import jaxprune
from jaxprune import bounds, checkpoint, data, distributed, methods, metrics, models, runs, train
from jaxprune import hidden as hidden_lib
from jaxprune._nnx import as_linen, is_module, variables_of
from jaxprune._tree import map_with_paths

__all__ = [
    "UsageError",
    "load_datasets",
    "check_model_name",
    "load_checkpoint",
    "checkpoint_dataset",
    "size_report",
    "write_json",
    "is_unstructured",
    "zeros_mask",
    "train_and_save",
    "train_new",
    "finetune_checkpoint",
    "evaluate_checkpoint",
    "prune_checkpoint",
]

#: ``make_config(model_name) -> TrainConfig`` (the CLI builds it from its flags).
ConfigFactory = Callable[[str], train.TrainConfig]


class UsageError(Exception):
    """A problem the user can fix; the message is one line, fit for ``jaxprune: error:``."""


# ----------------------------------------------------------------------------- inputs


@contextlib.contextmanager
def _dataset_errors(name: str):
    """Unknown dataset names, unreadable/missing files and a missing ``[data]`` extra ->
    :class:`UsageError` (a name outside ``data.DATASETS`` may be a text corpus folder)."""
    try:
        yield
    except (FileNotFoundError, ValueError, ModuleNotFoundError) as e:
        raise UsageError(f"dataset {name!r} not available: {e}") from None


def load_datasets(
    name: str,
    data_dir=None,
    limit_train=None,
    limit_test=None,
    need_train: bool = True,
    seq_len: int | None = None,
):
    """(train split or None, evaluation split) of ``name``, cut to the first ``limit_*``;
    ``seq_len``: the window length of a text corpus (for a model of token inputs)."""
    with _dataset_errors(name):
        return data.load_splits(
            name,
            data_dir,
            limit_train=limit_train,
            limit_test=limit_test,
            need_train=need_train,
            lazy_train=distributed.process_count() > 1,
            **_seq_len_option(seq_len),
        )


def _seq_len_option(seq_len: int | None) -> dict:
    """The ``seq_len=`` keyword of :func:`jaxprune.data.load` (none for image datasets)."""
    return {} if seq_len is None else {"seq_len": seq_len}


def token_length(shape, dtype) -> int | None:
    """The sequence length of a model whose input (one example's ``shape`` and ``dtype``) is
    token ids, the window length its text corpus is read in; ``None`` for other inputs."""
    return int(shape[0]) if np.issubdtype(np.dtype(dtype), np.integer) else None


def _example_input(meta: dict) -> np.ndarray | None:
    """One zero example of a checkpoint's recorded input when that is not float images
    (token ids: what ``prune`` traces the model on), else ``None``."""
    dtype = np.dtype(meta.get("input_dtype", "float32"))
    if "input_shape" not in meta or np.issubdtype(dtype, np.floating):
        return None
    return np.zeros((1, *meta["input_shape"]), dtype)


def _checkpoint_seq_len(meta: dict) -> int | None:
    """:func:`token_length` of a checkpoint's recorded input."""
    return token_length(meta.get("input_shape") or (0,), meta.get("input_dtype", "float32"))


def check_model_name(name: str) -> None:
    if name not in models.model_names():
        raise UsageError(f"unknown model {name!r}; known models: {', '.join(models.model_names())}")


def load_checkpoint(directory, trust=()):
    """``(model, variables, meta)`` of a model directory; ``trust``: packages besides
    jaxprune/Flax/JAX/NumPy whose names its ``model.json`` may use (``--trust``)."""
    if not os.path.isdir(directory):
        raise UsageError(f"checkpoint directory does not exist: {directory}")
    try:
        return checkpoint.load_model(directory, trust=tuple(trust or ()))
    except (FileNotFoundError, ValueError, KeyError, json.JSONDecodeError) as e:
        raise UsageError(f"cannot load the model in {directory}: {e}") from None


def runnable(model):
    """The Linen module that trains, evaluates and counts FLOPs of ``model``: an NNX model
    through :func:`jaxprune._nnx.as_linen`, a Linen one as it is."""
    return as_linen(model) if is_module(model) else model


def model_name(model) -> str:
    """The registry name of a jaxprune model, else the class name of the (wrapped) module."""
    try:
        return models.model_config(model)["name"]
    except TypeError:
        return type(getattr(model, "wrapped_module", None) or model).__name__


def checkpoint_dataset(directory, meta: dict, dataset: str | None) -> str:
    """``dataset`` if given, else the dataset the checkpoint's metadata records."""
    dataset = dataset or meta.get("dataset")
    if not dataset:
        raise UsageError(f"{directory} does not record its dataset; pass --dataset")
    return dataset


# ----------------------------------------------------------------------------- outputs


def size_report(model, variables, input_shape) -> dict:
    """``params``, ``nonzero_params`` and ``flops`` (``None`` plus ``flops_error`` when the
    FLOP count fails: a finished run is never lost over a metric)."""
    out: dict[str, Any] = {
        "params": metrics.param_count(variables),
        "nonzero_params": metrics.nonzero_count(variables),
    }
    try:
        out["flops"] = int(metrics.flops(model, variables, tuple(input_shape)))
    except Exception as e:  # noqa: BLE001 — any failure of the FLOP count is reported, not raised
        out["flops"] = None
        out["flops_error"] = f"{type(e).__name__}: {e}"
    return out


def write_json(path, obj) -> None:
    """``obj`` as indented, key-sorted JSON, written atomically (temporary file + rename);
    in a multi-process run only by the main process."""
    if not distributed.is_main():
        return
    tmp = str(path) + ".tmp"
    with open(tmp, "w") as f:
        json.dump(checkpoint.to_jsonable(obj), f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


# ----------------------------------------------------------------------------- training


def is_unstructured(meta: dict) -> bool:
    """True when the checkpoint's metadata records an unstructured (weight) prune, directly
    (:func:`prune_checkpoint` wrote it) or through a fine-tune that kept its zeros."""
    prune = meta.get("prune")
    return bool(
        (isinstance(prune, dict) and prune.get("kind") == "weights")
        or meta.get("keep_zeros") is True
    )


def zeros_mask(params):
    """0/1 mask like ``params``: kernels -> (w != 0); every other leaf (biases, norms) -> 1."""

    def leaf(path, x):
        x = np.asarray(x)
        if path[-1] == "kernel":
            return (x != 0).astype(np.float32)
        return np.ones(x.shape, np.float32)

    return map_with_paths(leaf, params)


@contextlib.contextmanager
def _run_errors():
    """:class:`jaxprune.runs.RunError` -> :class:`UsageError`."""
    try:
        yield
    except runs.RunError as e:
        raise UsageError(str(e)) from None


def train_and_save(
    out,
    command: str,
    model,
    dataset: str,
    config: train.TrainConfig,
    train_ds,
    test_ds,
    *,
    variables=None,
    mask=None,
    teacher=None,
    extra_meta: dict | None = None,
    run_info: dict | None = None,
    identity: dict | None = None,
    overwrite: bool = False,
    resume: bool = False,
    devices=None,
    progress: bool = True,
    eval_batch_size: int = 1000,
) -> dict:
    """fit -> evaluate -> ``save_model(out)`` + ``config.json`` + ``results.json``, as one
    run in ``out`` (:func:`jaxprune.runs.output_run`: an existing ``out`` needs
    ``overwrite``, or ``resume`` for the same run, which then continues from its last epoch).

    ``run_info`` (e.g. the command line) goes into ``config.json``, ``extra_meta`` into both
    ``config.json`` and the saved model's metadata; the run's identity is the command, model,
    dataset (name and checksums), training config, ``extra_meta`` and ``identity`` (e.g. data
    limits). Returns the results.
    """
    model_cfg = checkpoint.model_record(model)
    ident = {
        "command": command,
        "model": model_cfg,
        "dataset": dataset,
        "train_data": data.fingerprint(train_ds),
        "test_data": data.fingerprint(test_ds),
        "train_config": config.to_dict(),
        **(extra_meta or {}),
        **(identity or {}),
    }
    with _run_errors(), runs.output_run(out, ident, overwrite=overwrite, resume=resume) as out:
        saved, model = model, runnable(model)  # an NNX model trains from its own arrays
        if variables is None and is_module(saved):
            variables = variables_of(saved)
        cfg_doc = {
            "command": command,
            "model": model_cfg,
            "dataset": dataset,
            "train_config": config.to_dict(),
            "devices": devices,
            **(run_info or {}),
            **(extra_meta or {}),
        }
        write_json(os.path.join(out, "config.json"), cfg_doc)
        t0 = time.time()
        try:
            res = train.fit(
                model,
                train_ds,
                config,
                variables=variables,
                out_dir=out,
                eval_ds=test_ds,
                mask=mask,
                teacher=teacher,
                devices=devices,
                progress=progress,
                eval_batch_size=eval_batch_size,
            )
        except ValueError as e:
            raise UsageError(str(e)) from None
        wall = time.time() - t0
        ev = train.evaluate(model, res.variables, test_ds, batch_size=eval_batch_size)
        size = size_report(model, res.variables, test_ds.images.shape[1:])
        results = {
            "test_accuracy": ev["accuracy"],
            "test_loss": ev["loss"],
            "test_n": ev["n"],
            **({"test_bits_per_byte": ev["bits_per_byte"]} if "bits_per_byte" in ev else {}),
            **size,
            "train_time_s": wall,
            "epochs": config.epochs,
            "dataset": dataset,
            "model": model_name(saved),
            # an NNX model's config holds the dense constructor's widths
            "widths": None if is_module(saved) else model_cfg.get("widths"),
        }
        meta = {
            "dataset": dataset,
            "command": command,
            "train_config": config.to_dict(),
            "test_accuracy": ev["accuracy"],
            "input_shape": list(test_ds.images.shape[1:]),
            "input_dtype": train.model_input(test_ds.images[:1]).dtype.name,
            **(extra_meta or {}),
        }
        checkpoint.save_model(out, saved, res.variables, meta=meta)
        write_json(os.path.join(out, "results.json"), results)
        return results


def train_new(
    model_name: str,
    dataset: str,
    out,
    make_config: ConfigFactory,
    *,
    data_dir=None,
    limit_train=None,
    limit_test=None,
    **options,
) -> dict:
    """Train a registered model from scratch (``options``: those of :func:`train_and_save`);
    an NNX model is initialised with the recipe's seed, sized to the dataset's images."""
    check_model_name(model_name)
    seq_len = token_length(
        models.default_input_shape(model_name), models.default_input_dtype(model_name)
    )
    train_ds, test_ds = load_datasets(dataset, data_dir, limit_train, limit_test, seq_len=seq_len)
    assert train_ds is not None  # need_train defaults to True
    config = make_config(model_name)
    extra = (
        {"image": tuple(train_ds.images.shape[1:]), "rngs": nnx.Rngs(config.seed)}
        if models.is_nnx_name(model_name)
        else {}
    )
    model = models.get_model(model_name, num_classes=train_ds.num_classes, **extra)
    return train_and_save(
        out,
        "train",
        model,
        dataset,
        config,
        train_ds,
        test_ds,
        identity=_limits(limit_train, limit_test),
        **options,
    )


def _limits(limit_train, limit_test) -> dict:
    """The data limits, part of a run's identity."""
    return {"limit_train": limit_train, "limit_test": limit_test}


def finetune_checkpoint(
    directory,
    out,
    make_config: ConfigFactory,
    *,
    dataset=None,
    data_dir=None,
    limit_train=None,
    limit_test=None,
    keep_zeros: bool | None = None,
    teacher=None,
    trust=(),
    **options,
) -> dict:
    """Fine-tune a saved model. ``keep_zeros``: kernel weights that are exactly 0 stay 0
    (``None``: on when the checkpoint records an unstructured prune, see
    :func:`is_unstructured`). ``teacher``: a model directory to distil from. ``trust``: see
    :func:`load_checkpoint`."""
    model, variables, meta = load_checkpoint(directory, trust)
    dataset = checkpoint_dataset(directory, meta, dataset)
    train_ds, test_ds = load_datasets(
        dataset, data_dir, limit_train, limit_test, seq_len=_checkpoint_seq_len(meta)
    )
    config = make_config(model_name(model))
    if keep_zeros is None:
        keep_zeros = is_unstructured(meta)
        if keep_zeros:
            print(
                "jaxprune finetune: the checkpoint is unstructured-pruned; its zero kernel "
                "weights stay 0 (--no-keep-zeros releases them)",
                file=sys.stderr,
            )
    mask = zeros_mask(variables["params"]) if keep_zeros else None
    teacher_pair = None
    if teacher:
        t_model, t_vars, _ = load_checkpoint(teacher, trust)
        teacher_pair = (runnable(t_model), t_vars)
    extra = {
        "parent_checkpoint": os.path.abspath(directory),
        "parent_fingerprint": runs.fingerprint(directory),
        "teacher": teacher,
        "teacher_fingerprint": runs.fingerprint(teacher) if teacher else None,
        "keep_zeros": bool(keep_zeros),
    }
    return train_and_save(
        out,
        "finetune",
        model,
        dataset,
        config,
        train_ds,
        test_ds,
        variables=variables,
        mask=mask,
        teacher=teacher_pair,
        extra_meta=extra,
        identity=_limits(limit_train, limit_test),
        **options,
    )


# ----------------------------------------------------------------------------- evaluate, prune


def evaluate_checkpoint(
    directory, *, dataset=None, data_dir=None, limit_test=None, batch_size: int = 1000, trust=()
) -> dict:
    """Accuracy, loss and size of a saved model on its dataset's evaluation split
    (``trust``: see :func:`load_checkpoint`)."""
    model, variables, meta = load_checkpoint(directory, trust)
    dataset = checkpoint_dataset(directory, meta, dataset)
    _, test_ds = load_datasets(
        dataset, data_dir, None, limit_test, need_train=False, seq_len=_checkpoint_seq_len(meta)
    )
    model_id, model = model_name(model), runnable(model)
    ev = train.evaluate(model, variables, test_ds, batch_size=batch_size)
    return {
        **ev,
        **size_report(model, variables, test_ds.images.shape[1:]),
        "model": model_id,
        "dataset": dataset,
        "checkpoint": os.path.abspath(directory),
    }


def _data_batch(
    asker: str,
    directory,
    dataset,
    data_dir,
    size: int,
    seed: int,
    limit_train=None,
    seq_len: int | None = None,
) -> np.ndarray:
    """``size`` training images (seeded choice) of the checkpoint's dataset (token windows
    of ``seq_len`` for a text corpus)."""
    if not dataset:
        raise UsageError(
            f"{asker} needs data and {directory} does not record its dataset; pass --dataset"
        )
    with _dataset_errors(dataset):
        train_ds = data.load(dataset, "train", data_dir, **_seq_len_option(seq_len))
    return data.sample_images(train_ds, size, seed, limit_train)


def prune_checkpoint(
    directory,
    out,
    ratio: float,
    *,
    method: str = "coreset",
    unit: str = "params",
    sampling=None,
    min_width: int = 1,
    leave=(),
    seed: int = 0,
    dataset=None,
    data_dir=None,
    limit_train=None,
    data_batch: int = 128,
    options: dict[str, Any] | None = None,
    round_to: int = 1,
    apply_kwargs: dict | None = None,
    reconstruct: str | None = None,
    ridge: float = 1e-3,
    recalibrate_bn: bool = False,
    certificate: bool = False,
    record: dict | None = None,
    trust=(),
    overwrite: bool = False,
    depth: int | None = None,
    depth_score: str = "block_influence",
    hidden: float | None = None,
) -> dict:
    """Prune a saved model and save the result under ``out``.

    ``depth``: remove that many residual blocks whole instead (``ratio`` 0;
    :func:`jaxprune.depth.prune_depth`), scored by ``depth_score`` (``"block_influence"``
    reads ``data_batch`` training examples). ``hidden``: remove that fraction of a token
    model's residual-stream channels instead (``ratio`` 0; opt-in and approximate,
    :func:`jaxprune.hidden.prune_hidden` on ``data_batch`` training windows, its error in
    the report).

    Structured methods save the smaller model; unstructured ones (``kind == "weights"``) the
    same model with the pruned kernel entries exactly 0. Data-informed methods get
    ``data_batch`` training images, and so does ``reconstruct="lstsq"`` (every consumer of
    a pruned group refit on them by ridge least squares). ``options`` go to
    :func:`jaxprune.prune`; ``record`` (e.g. the parsed flags) goes into ``config.json``.
    ``apply_kwargs``: the model's inference call (default: from its signature, or the
    checkpoint's ``meta["apply_kwargs"]``); the input shape of a model jaxprune did not
    define comes from ``meta["input_shape"]``.
    ``trust``: see :func:`load_checkpoint`; ``overwrite``: replace an existing run in ``out``
    (:func:`jaxprune.runs.output_run`). Returns the report (also ``results.json`` and
    ``meta["prune"]`` of the saved model).
    """
    model, variables, meta = load_checkpoint(directory, trust)
    ident = {
        "command": "prune",
        "parent_checkpoint": os.path.abspath(directory),
        "parent_fingerprint": runs.fingerprint(directory),
        **{k: v for k, v in (record or {}).items() if k not in _NOT_IDENTITY},
    }
    with _run_errors(), runs.output_run(out, ident, overwrite=overwrite, resumable=False) as out:
        dataset = dataset or meta.get("dataset")
        meth = methods.get(method)
        seq_len = _checkpoint_seq_len(meta)
        if depth is not None:
            needs_data = depth_score == "block_influence"
        else:
            needs_data = hidden is not None or meth.needs_data or reconstruct
        batch = (
            _data_batch(
                "--hidden" if hidden is not None else f"--method {method}",
                directory,
                dataset,
                data_dir,
                data_batch,
                seed,
                limit_train,
                seq_len,
            )
            if needs_data
            else None
        )
        options = dict(options or {})
        if hidden is None and "train_ds" in meth.options():  # Frank-Wolfe: trains first
            if not dataset:
                raise UsageError(
                    f"--method {method} trains before it prunes and {directory} does "
                    "not record its dataset; pass --dataset"
                )
            train_ds, _ = load_datasets(dataset, data_dir, limit_train, 1, seq_len=seq_len)
            options.setdefault("train_ds", train_ds)
        t0 = time.time()
        nnx_model = is_module(model)
        try:
            apply_kwargs = apply_kwargs if apply_kwargs is not None else meta.get("apply_kwargs")
            # an NNX module is pruned as its own model and comes back as result.module
            source, linen = (model, None) if nnx_model else (variables, model)
            if hidden is not None:
                res = hidden_lib.prune_hidden(
                    source,
                    hidden,
                    model=linen,
                    data=batch,
                    round_to=round_to,
                    apply_kwargs=apply_kwargs,
                )
            else:
                res = jaxprune.prune(
                    source,
                    jax.random.key(seed),
                    ratio,
                    method=method,
                    model=linen,
                    input_shape=meta.get("input_shape"),
                    unit=unit,
                    sampling=sampling,
                    min_width=min_width,
                    round_to=round_to,
                    leave=tuple(leave),
                    data=batch,
                    apply_kwargs=apply_kwargs,
                    reconstruct=reconstruct,
                    ridge=ridge,
                    recalibrate_bn=recalibrate_bn,
                    example_inputs=_example_input(meta),
                    depth=depth,
                    depth_score=depth_score,
                    **options,
                )
            # NNX: result.module; weight methods: the same shapes (every result type has model)
            small: Any = res.model(model)  # pyright: ignore[reportAttributeAccessIssue]
        except ValueError as e:
            raise UsageError(str(e)) from None
        seconds = time.time() - t0
        _warn_if_nothing_removed(res.report, ratio, min_width, round_to)
        report = {**res.report, "seconds": seconds}
        if hasattr(model, "widths"):  # a zoo model, whose smaller copy has widths too
            report.update(widths_before=list(model.widths), widths_after=list(small.widths))  # pyright: ignore[reportAttributeAccessIssue]
        if batch is not None:
            report["data_batch"] = int(batch.shape[0])
        if certificate and meth.kind == "channels" and depth is None and hidden is None:
            report["certificate"] = bounds.certify(res, model=runnable(model), data=batch)
        new_meta = {
            **{k: meta[k] for k in ("input_shape", "input_dtype", "apply_kwargs") if k in meta},
            "dataset": dataset,
            "parent_checkpoint": os.path.abspath(directory),
            "prune": report,
        }
        checkpoint.save_model(out, small, res.params, meta=new_meta)
        write_json(
            os.path.join(out, "config.json"),
            {"command": "prune", **(record or {}), "model": checkpoint.model_record(model)},
        )
        write_json(os.path.join(out, "results.json"), report)
        return report


#: Parsed flags that do not change what a command computes.
_NOT_IDENTITY = ("out", "overwrite", "resume", "debug", "trust", "command", "no_progress")


def _warn_if_nothing_removed(report: dict, ratio, min_width: int, round_to: int) -> None:
    """A :class:`jaxprune.PruneWarning` with the reason when a prune asked to remove
    something removed nothing (the pipeline itself warns only about misses over 1 %)."""
    achieved = report.get("achieved_ratio")
    if isinstance(ratio, dict) or not ratio or achieved is None or achieved > 0:
        return
    sizes = [size for size, _ in (report.get("neurons") or {}).values()]
    frozen = report.get("frozen") or {}
    if report.get("kind") == "channels" and not sizes:
        reason = (
            "every group is frozen ("
            + "; ".join(f"{k}: {v}" for k, v in list(frozen.items())[:3])
            + ")"
        )
    elif sizes and min_width >= max(sizes):
        reason = f"--min-width {min_width} is at least every group's width (at most {max(sizes)})"
    elif sizes and round_to >= max(sizes):
        reason = f"--round-to {round_to} is at least every group's width (at most {max(sizes)})"
    else:
        reason = "the ratio is less than one channel or weight of any layer"
    warnings.warn(
        f"the prune removed nothing (target {report.get('unit', 'params')} ratio "
        f"{ratio}): {reason}",
        jaxprune.PruneWarning,
        stacklevel=2,
    )
