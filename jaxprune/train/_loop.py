"""``fit``: the training loop (data-parallel, checkpointed, resumable, with callbacks).

Data parallelism / determinism
    One ``jax.jit`` train step over a 1-D ``jax.sharding.Mesh`` (axis ``"batch"``) of the first
    ``devices`` local devices: the global batch is sharded along its leading axis, params /
    optimizer state / BatchNorm statistics are replicated. XLA inserts the cross-device
    reductions, so BatchNorm batch statistics and gradients are over the GLOBAL batch and the
    result equals the 1-device result up to float reassociation. The dropout key of step ``s``
    is ``fold_in(rng, s)`` and is consumed on the global batch (partitionable threefry), so it
    does not depend on the device count either. ``batch_size`` is the global batch and must be
    divisible by the device count.

Checkpoints / resume
    With ``out_dir``: an orbax ``CheckpointManager`` in ``out_dir/checkpoints`` saves after every
    epoch (step number = completed epochs, last ``keep_checkpoints`` kept) the params,
    batch_stats, optimizer state, global step and RNG key, plus JSON metadata (model config via
    ``models.model_config``, the ``TrainConfig``, epoch, step, history). Saves are
    asynchronous: the arrays are copied off the devices, then written while the next epoch
    trains; an epoch's checkpoint appears only once complete. A later ``fit`` with the same
    ``out_dir`` restores the latest one and continues; because the data order of epoch ``e``
    is a function of ``(config.seed, e)`` (``data.batches``) and the dropout key a function
    of the global step, the resumed run ends with exactly the uninterrupted result.
    ``config.max_steps`` ends the run after that many steps, mid-epoch if need be: that last,
    partial epoch is checkpointed like a whole one, and a resumed run that already took its
    steps trains no more.
    A JSON-lines log ``out_dir/metrics.jsonl`` gets one ``{"kind": "epoch", ...}`` line per epoch
    (epoch, step, loss, accuracy, eval_accuracy/eval_loss, wall time, examples/s) and one
    ``{"kind": "step", ...}`` line every ``log_every`` steps.

Multi-process (``jax.distributed``, :mod:`jaxprune.distributed`)
    Every process calls :func:`jaxprune.distributed.initialize` before any other JAX work and
    runs the same ``fit(..., devices=None)``: the mesh spans ``jax.devices()`` (every
    process's devices, process-major), and each process reads and feeds only its rows of
    every global batch (``data.batches(..., shard=distributed.shard())``, then
    ``jax.make_array_from_process_local_data``). The global batches are those of one process,
    so the run equals a one-process run over the same number of devices up to float
    reassociation in the all-reduce. ``batch_size`` must be divisible by the global device
    count. Orbax writes checkpoints collectively (``out_dir`` on a filesystem every process
    sees); progress, ``metrics.jsonl`` and JSON files come from process 0 only.
"""

from __future__ import annotations

import collections
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxprune import _signals, checkpoint, data, distributed, models
from jaxprune._flax import hashable
from jaxprune._tree import split_variables, to_host
from jaxprune.optim import apply_mask
from jaxprune.train._config import TrainConfig, make_schedule, total_steps
from jaxprune.train._eval import evaluate
from jaxprune.train._step import (
    init_opt_state,
    init_variables,
    make_train_step,
    model_input,
    variables_of,
)

__all__ = ["FitResult", "Callback", "MAX_IN_FLIGHT_STEPS", "default_devices", "fit"]

# At most this many train steps are dispatched ahead of the host. An unbounded asynchronous
# queue of multi-device steps can deadlock XLA:CPU's all-reduce rendezvous when there are few
# cores (observed with 2 simulated devices on a 2-core host: "Expected 2 threads to join the
# rendezvous"); a window of 2 keeps the device busy and avoids it.
MAX_IN_FLIGHT_STEPS = 2


class FitResult(NamedTuple):
    variables: dict  # {'params': ..., ['batch_stats': ...]}
    history: list  # one dict per epoch (same as metrics.jsonl 'epoch' lines)
    state: dict  # full train state: params, batch_stats, opt_state, step, rng


# ``callback(epoch, result)`` after epoch ``epoch`` (1-based) has been logged and its
# checkpoint started (orbax writes it in the background);
# ``result`` is the run so far. The state's arrays are donated to the next train step: copy
# (``jax.device_get``) whatever the callback keeps. A callback that returns ``True`` ends the
# run after this epoch (early stopping); ``fit`` then returns the run so far.
Callback = Callable[[int, FitResult], Any]


class _Placement(NamedTuple):
    devices: list
    replicated: NamedSharding
    batch: NamedSharding


def default_devices() -> int | None:
    """``$JAXPRUNE_DEVICES`` as a device count (``None`` when unset: all devices).

    Lets a shell or a test session cap what ``fit(devices=None)`` and the CLI use without
    editing calls, the way ``CUDA_VISIBLE_DEVICES`` caps what a process sees; an explicit
    ``devices=`` always wins. Ignored by multi-process runs, which train on every device.
    """
    value = os.environ.get("JAXPRUNE_DEVICES", "").strip()
    if not value:
        return None
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"JAXPRUNE_DEVICES must be a positive integer, got {value!r}")
    return int(value)


def _placement(devices) -> _Placement:
    """The devices ``fit`` runs on (``None``: ``$JAXPRUNE_DEVICES`` or all; an int: the first
    ones; or a list)."""
    all_devs = jax.devices() if jax.process_count() > 1 else jax.local_devices()
    if devices is None and jax.process_count() == 1:
        cap = default_devices()
        devices = None if cap is None else min(cap, len(all_devs))
    if jax.process_count() > 1 and devices not in (None, len(all_devs)):
        raise ValueError(
            f"a multi-process run trains on all {len(all_devs)} devices of its "
            f"{jax.process_count()} processes; got devices={devices!r}"
        )
    if devices is None:
        devs = list(all_devs)
    elif isinstance(devices, int):
        if not 1 <= devices <= len(all_devs):
            raise ValueError(f"devices={devices} but only {len(all_devs)} device(s) available")
        devs = list(all_devs[:devices])
    else:
        devs = list(devices)
        if not devs:
            raise ValueError("devices must not be empty")
    mesh = Mesh(np.asarray(devs), ("batch",))
    return _Placement(devs, NamedSharding(mesh, P()), NamedSharding(mesh, P("batch")))


def _steps_per_epoch(train_ds, config: TrainConfig, n_dev: int) -> int:
    if config.batch_size % n_dev != 0:
        raise ValueError(
            f"batch_size={config.batch_size} is not divisible by the number of "
            f"devices ({n_dev}); pick a multiple of {n_dev} or pass devices="
        )
    steps = data.num_batches(len(train_ds.labels), config.batch_size, drop_remainder=True)
    if steps == 0 and config.epochs > 0:
        raise ValueError(
            f"training set has {len(train_ds.labels)} examples < batch_size={config.batch_size}"
        )
    return steps


def _global_array(x: np.ndarray, sharding: NamedSharding, batch_size: int) -> jax.Array:
    """This process's rows of a global batch -> the global array sharded over the mesh."""
    if jax.process_count() == 1:
        return jax.device_put(x, sharding)
    return jax.make_array_from_process_local_data(sharding, x, (batch_size,) + x.shape[1:])


def _host_copy(tree):
    """Fresh NumPy copies: the train step donates its state, which must never free the
    caller's arrays (``device_put`` of an on-device array may alias its buffer)."""
    return jax.tree.map(np.array, to_host(tree))


def _initial_state(
    model, train_ds, config: TrainConfig, variables, mask, optimizer, steps_per_epoch: int
) -> tuple[dict, Any]:
    """Host train state (from ``variables`` or initialised from ``config.seed``) and the mask
    cast to the params' dtypes; masked params are zeroed."""
    init_key, dropout_key = jax.random.split(jax.random.PRNGKey(config.seed))
    if variables is None:
        dtype = model_input(np.zeros((), train_ds.images.dtype)).dtype.name
        variables = init_variables(
            model, (1,) + tuple(train_ds.images.shape[1:]), init_key, dropout_key, dtype
        )
    params, others = split_variables(variables)
    params = _host_copy(params)
    batch_stats = _host_copy(dict(others.get("batch_stats", {})))
    if mask is not None:
        mask = jax.tree.map(lambda m, p: np.asarray(jax.device_get(m), p.dtype), mask, params)
        params = apply_mask(params, mask)
    state = {
        "params": params,
        "batch_stats": batch_stats,
        "opt_state": init_opt_state(config, steps_per_epoch, params, mask, optimizer),
        "step": jnp.asarray(0, jnp.int32),
        "rng": dropout_key,
    }
    return state, mask


def _model_config_or_none(model):
    try:
        return models.model_config(model)
    except Exception:  # a model outside the registry (tests, user code) is still trainable
        return None


class _Checkpoints:
    """Per-epoch orbax training checkpoints of one ``out_dir`` (see the module docstring)."""

    def __init__(self, out_dir: str, keep: int):
        self.dir = os.path.join(out_dir, "checkpoints")
        self.manager = checkpoint.training_manager(self.dir, max_to_keep=keep)

    def resume(self, config: TrainConfig, state: dict, sharding) -> tuple[dict, int, list]:
        """``(state, completed epochs, history)`` of the latest checkpoint, or the inputs."""
        latest = checkpoint.latest_training_step(self.manager)
        if latest is None:
            return state, 0, []
        meta = checkpoint.read_training_meta(self.manager, latest)
        saved_cfg = meta.get("train_config")
        if saved_cfg is not None and saved_cfg != checkpoint.to_jsonable(config.to_dict()):
            raise ValueError(
                f"{self.dir} holds a run with a different TrainConfig "
                f"({saved_cfg}); use a fresh out_dir or the same config to resume"
            )
        state, meta = checkpoint.restore_training_state(self.manager, latest, state)
        return jax.device_put(state, sharding), int(meta["epoch"]), list(meta.get("history", []))

    def save(self, epoch: int, state: dict, meta: dict) -> None:
        checkpoint.save_training_state(self.manager, epoch, state, meta)

    def close(self) -> None:
        self.manager.close()


class _Reporter:
    """Progress (a tqdm bar on a terminal, else one stderr line) and ``metrics.jsonl``;
    only process 0 writes."""

    def __init__(self, log_path, progress: bool, total_steps: int, done_steps: int, note: str):
        is_main = jax.process_index() == 0
        self.bar = None
        if progress and is_main and done_steps < total_steps:
            if sys.stderr.isatty():
                from tqdm.auto import tqdm  # lazy: optional heavy dependency

                self.bar = tqdm(
                    total=total_steps,
                    initial=done_steps,
                    unit="step",
                    dynamic_ncols=True,
                    leave=True,
                )
            else:
                print(note, file=sys.stderr)
        self.log = open(log_path, "a") if (log_path and is_main) else None

    def _write(self, record: dict) -> None:
        if self.log is not None:
            self.log.write(json.dumps(checkpoint.to_jsonable(record)) + "\n")
            self.log.flush()

    def step(self, record: dict) -> None:
        if self.bar is not None:
            self.bar.set_postfix(epoch=record["epoch"], loss=f"{record['loss']:.4f}")
        self._write(record)

    def tick(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def epoch(self, record: dict) -> None:
        self._write(record)
        if self.bar is not None:
            post = {"epoch": record["epoch"], "loss": f"{record['loss']:.4f}"}
            if "eval_accuracy" in record:
                post["eval_acc"] = f"{record['eval_accuracy']:.4f}"
            self.bar.set_postfix(**post)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.log is not None:
            self.log.close()


def _no_sums():
    """``(loss sum, accuracy sum, steps, first non-finite step or -1)`` of an epoch so far."""
    zero = jnp.zeros((), jnp.float32)
    return zero, zero, jnp.zeros((), jnp.int32), jnp.full((), -1, jnp.int32)


@jax.jit
def _add_step(sums, loss, accuracy):
    """``sums`` after one more step, on the device (no host sync): a non-finite loss is
    remembered by its index in the epoch, read once when the epoch ends."""
    loss_sum, acc_sum, count, first_bad = sums
    bad = jnp.logical_and(~jnp.isfinite(loss), first_bad < 0)
    return loss_sum + loss, acc_sum + accuracy, count + 1, jnp.where(bad, count, first_bad)


def _stop_if_non_finite(first_bad: int, epoch: int, steps_per_epoch: int) -> None:
    """``ValueError`` naming the global step when ``first_bad`` (the index in epoch ``epoch``
    of the first step whose loss was NaN/inf, -1 for none) says the loss went bad."""
    if first_bad >= 0:
        step = epoch * steps_per_epoch + first_bad + 1
        raise ValueError(
            f"the training loss became non-finite (nan or inf) at step {step} "
            f"(epoch {epoch + 1}); check the data for NaN/inf values, the "
            "learning rate and the other hyperparameters"
        )


def _run_epoch(
    train_step,
    state,
    train_ds,
    config: TrainConfig,
    epoch: int,
    place: _Placement,
    extra: tuple,
    reporter: _Reporter,
    lr_schedule,
    stop: _signals.StopRequest,
    max_batches: int,
) -> tuple[dict, dict | None]:
    """The first ``max_batches`` train steps of an epoch -> ``(state, epoch record)``
    (fewer than the epoch's batches: the last epoch of a ``max_steps`` run).
    ``lr_schedule=None``: the step log lines carry no ``lr`` (a caller-supplied
    optimizer). The record is ``None`` when a
    signal stopped the epoch after a step (``stop``)."""
    t0 = time.perf_counter()
    spe = data.num_batches(len(train_ds.labels), config.batch_size, drop_remainder=True)
    sums = _no_sums()
    n_steps = 0
    in_flight: collections.deque = collections.deque()
    b = config.batch_size
    for images, labels in data.batches(
        train_ds,
        b,
        seed=config.seed,
        epoch=epoch,
        shuffle=True,
        augment=config.augment,
        drop_remainder=True,
        shard=distributed.shard(),
    ):
        if n_steps == max_batches:  # before the step: no state of it is touched
            break
        images = _global_array(model_input(images), place.batch, b)
        labels = _global_array(np.asarray(labels, np.int32), place.batch, b)
        state, m = train_step(state, images, labels, *extra)
        in_flight.append(m["loss"])
        if len(in_flight) > MAX_IN_FLIGHT_STEPS:
            in_flight.popleft().block_until_ready()
        sums = _add_step(sums, m["loss"], m["accuracy"])
        n_steps += 1
        if config.log_every and n_steps % config.log_every == 0:
            step = epoch * spe + n_steps
            record = {
                "kind": "step",
                "epoch": epoch + 1,
                "step": step,
                "loss": float(m["loss"]),
                "accuracy": float(m["accuracy"]),
            }
            _stop_if_non_finite(int(sums[3]), epoch, spe)
            if lr_schedule is not None:
                record["lr"] = float(lr_schedule(step - 1))
            reporter.step(record)
        reporter.tick()
        if stop.after_step():
            return state, None
    jax.block_until_ready(state["params"])
    wall = time.perf_counter() - t0
    loss_sum, acc_sum, _, first_bad = (float(x) for x in jax.device_get(sums))
    _stop_if_non_finite(int(first_bad), epoch, spe)
    return state, {
        "kind": "epoch",
        "epoch": epoch + 1,
        "step": int(state["step"]),
        "loss": loss_sum / max(n_steps, 1),
        "accuracy": acc_sum / max(n_steps, 1),
        "wall_time": wall,
        "examples_per_sec": n_steps * config.batch_size / max(wall, 1e-9),
        "devices": len(place.devices),
    }


def fit(
    model,
    train_ds,
    config: TrainConfig,
    *,
    variables=None,
    out_dir=None,
    eval_ds=None,
    mask=None,
    teacher=None,
    optimizer: optax.GradientTransformation | None = None,
    callbacks: Sequence[Callback] = (),
    devices=None,
    progress: bool = True,
    keep_checkpoints: int = 3,
    eval_batch_size: int = 1000,
) -> FitResult:
    """Train ``model`` on ``train_ds`` (an ``ArrayDataset``) with ``config``.

    Inputs are float images or integer token ids (kept integer); labels are class ids
    ``(N,)`` or next-token ids ``(N, L)`` (a language model: the loss is the cross-entropy
    averaged over all ``B * L`` positions of a batch). ``config.max_steps`` bounds the steps.
    ``variables=None`` initialises from ``config.seed``; otherwise fine-tunes the given
    ``{'params': ..., ['batch_stats': ...]}``. ``mask``: pytree of 0/1 arrays like params; the
    masked weights are zeroed and stay 0 (:func:`jaxprune.optim.masked`).
    ``teacher=(teacher_model, teacher_variables)`` adds the knowledge-distillation term
    (``config.distill_alpha``, ``config.distill_temperature``). ``optimizer``: an optax
    transformation used instead of ``make_optimizer(config, ...)`` (its ``update`` gets the
    params, so e.g. :func:`jaxprune.optim.stochastic_frank_wolfe` works); the config's
    optimizer, learning-rate and weight-decay fields are then unused. ``callbacks``: see
    :data:`Callback`. ``devices``: use the first ``devices`` devices (int) or an explicit device
    list; default all. With ``out_dir`` checkpoints every epoch and resumes from the latest
    one (see the module docstring). NaN/inf in the (in-memory) training images is a
    ``ValueError`` before training; a NaN/inf training loss is one naming the first such
    step, raised at the next logged step or at the end of its epoch (before that epoch is
    checkpointed). SIGTERM/SIGINT stop it after the current step with the checkpoints of the
    whole epochs written: :class:`jaxprune._signals.Stopped` (a ``KeyboardInterrupt``).
    """
    model = hashable(model)  # a static argument of the compiled steps
    data.check_finite(train_ds, "the training data")
    place = _placement(devices)
    spe = _steps_per_epoch(train_ds, config, len(place.devices))
    state, mask = _initial_state(model, train_ds, config, variables, mask, optimizer, spe)
    state = jax.device_put(state, place.replicated)
    if mask is not None:
        mask = jax.device_put(mask, place.replicated)
    teacher_model, teacher_vars = (None, None) if teacher is None else teacher
    teacher_model = None if teacher_model is None else hashable(teacher_model)
    if teacher_vars is not None:
        teacher_vars = jax.device_put(
            jax.tree.map(jnp.asarray, dict(teacher_vars)), place.replicated
        )
    log_path = ckpts = None
    if out_dir is not None:
        out_dir = os.path.abspath(os.fspath(out_dir))
        os.makedirs(out_dir, exist_ok=True)
        log_path = os.path.join(out_dir, "metrics.jsonl")
        ckpts = _Checkpoints(out_dir, keep_checkpoints)
    reporter = None
    stop = _signals.StopRequest(place.batch).install()  # SIGTERM/SIGINT: see jaxprune._signals
    try:
        history: list = []
        start_epoch = 0
        if ckpts is not None:
            state, start_epoch, history = ckpts.resume(config, state, place.replicated)
        train_step = make_train_step(
            model,
            config,
            spe,
            optimizer=optimizer,
            has_mask=mask is not None,
            teacher_model=teacher_model,
            sharding=place.replicated,
        )
        lr_schedule = make_schedule(config, max(spe, 1)) if optimizer is None else None
        total = total_steps(config, spe)
        bound = "" if config.max_steps is None else f" (at most {total} steps in all)"
        reporter = _Reporter(
            log_path,
            progress,
            total,
            min(start_epoch * spe, total),
            f"training {config.epochs - start_epoch} epoch(s) x {spe} steps"
            f"{bound} on {len(place.devices)} device(s)",
        )
        model_cfg = _model_config_or_none(model)
        for epoch in range(start_epoch, config.epochs):
            if total <= epoch * spe:
                break  # max_steps used up (a resumed run may already have reached it)
            state, record = _run_epoch(
                train_step,
                state,
                train_ds,
                config,
                epoch,
                place,
                (mask, teacher_vars),
                reporter,
                lr_schedule,
                stop,
                min(spe, total - epoch * spe),
            )
            if record is None:
                break  # a signal: the partial epoch is dropped
            if eval_ds is not None:
                ev = evaluate(
                    model,
                    variables_of(state["params"], state["batch_stats"]),
                    eval_ds,
                    batch_size=eval_batch_size,
                )
                record.update(eval_accuracy=ev["accuracy"], eval_loss=ev["loss"])
                if "bits_per_byte" in ev:
                    record["eval_bits_per_byte"] = ev["bits_per_byte"]
            history.append(record)
            reporter.epoch(record)
            if ckpts is not None:
                ckpts.save(
                    epoch + 1,
                    state,
                    {
                        "model": model_cfg,
                        "train_config": config.to_dict(),
                        "epoch": epoch + 1,
                        "step": int(state["step"]),
                        "history": history,
                    },
                )
            so_far = FitResult(
                variables_of(state["params"], state["batch_stats"]), list(history), state
            )
            if any([callback(epoch + 1, so_far) is True for callback in callbacks]):
                break  # a callback asked to stop (early stopping): the run so far is the result
            if stop.at_epoch_end():
                break
    finally:
        stop.uninstall()
        if reporter is not None:
            reporter.close()
        if ckpts is not None:
            ckpts.close()
    stop.raise_if_stopped(len(history))
    return FitResult(variables_of(state["params"], state["batch_stats"]), history, state)
