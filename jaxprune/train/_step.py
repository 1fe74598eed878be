"""Losses and the pure, jitted train step.

Loss
    ``(1 - a) * CE(logits, labels; label_smoothing) + a * KD + l1 * sum_kernels |w|`` where the
    KD term (only with a teacher; ``a = distill_alpha``, else ``a = 0``) is the Hinton
    soft-target loss ``T^2 * KL(softmax(t / T) || softmax(s / T))`` (:func:`distillation_loss`,
    ``distill_loss="kl"``) or logit matching, the mean squared difference of the student's and
    the teacher's pre-softmax outputs (:func:`logit_mse`, ``distill_loss="logit_mse"``; with
    ``distill_alpha=1`` a pure regression on the teacher's logits).
    "Kernels" are all params leaves with ``ndim > 1`` (Dense/Conv weights; not biases or BN
    scales).

Train state
    A dict ``{'params', 'batch_stats', 'opt_state', 'step', 'rng'}``; ``batch_stats`` is ``{}``
    for models without BatchNorm. The dropout key of step ``s`` is ``fold_in(rng, s)``.

Inputs and labels
    Float inputs (images) stay float32 and integer inputs (token ids) keep an integer dtype
    (:func:`model_input`). Labels are ``(B,)`` class ids or ``(B, L)`` per-position ids
    (next-byte targets of a language model, logits ``(B, L, V)``): every loss and accuracy
    above is then the mean over all ``B * L`` positions, and the KD terms compare the
    distributions over the last axis at each position.

Mode
    Training and evaluation calls pass the module's own mode flag (``train``, ``training``,
    ``deterministic``, ... from its ``__call__`` signature, :func:`jaxprune._flax.mode_kwargs`).
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxprune._flax import mode_kwargs
from jaxprune.optim import is_kernel, masked
from jaxprune.train._config import TrainConfig, make_optimizer

__all__ = [
    "cross_entropy",
    "distillation_loss",
    "logit_mse",
    "total_loss",
    "init_variables",
    "init_opt_state",
    "train_step_fn",
    "make_train_step",
    "model_input",
]


def model_input(x) -> np.ndarray:
    """A host batch as the model takes it: integer (and bool) arrays keep their dtype as
    int32 (token ids), anything else becomes float32 (images).

    >>> model_input(np.zeros((2, 3), np.uint8)).dtype, model_input([[0.5]]).dtype
    (dtype('int32'), dtype('float32'))
    """
    x = np.asarray(x)
    if np.issubdtype(x.dtype, np.integer) or x.dtype == np.bool_:
        return x.astype(np.int32, copy=False)
    return x.astype(np.float32, copy=False)


def cross_entropy(logits, labels, label_smoothing: float = 0.0):
    """Per-example (per-position for ``(B, L)`` labels) softmax cross-entropy
    ``-log softmax(logits)[label]`` with integer labels and optional label smoothing."""
    num_classes = logits.shape[-1]
    onehot = jax.nn.one_hot(labels, num_classes, dtype=logits.dtype)
    if label_smoothing > 0:
        onehot = optax.smooth_labels(onehot, label_smoothing)
    return optax.softmax_cross_entropy(logits, onehot)


def distillation_loss(student_logits, teacher_logits, temperature: float):
    """Per-example Hinton KD loss ``T^2 * KL(softmax(t/T) || softmax(s/T))``.

    The ``T^2`` factor keeps gradient magnitudes comparable to the hard-label loss.
    """
    t = float(temperature)
    log_p_t = jax.nn.log_softmax(teacher_logits / t, axis=-1)
    log_p_s = jax.nn.log_softmax(student_logits / t, axis=-1)
    kl = jnp.sum(jnp.exp(log_p_t) * (log_p_t - log_p_s), axis=-1)
    return (t * t) * kl


def logit_mse(student_logits, teacher_logits):
    """Per-example logit-matching loss ``mean_k (s_k − t_k)²``."""
    return jnp.mean(jnp.square(student_logits - teacher_logits), axis=-1)


def _l1_penalty(params):
    leaves = [jnp.sum(jnp.abs(p)) for p in jax.tree.leaves(params) if is_kernel(p)]
    return sum(leaves) if leaves else jnp.zeros((), jnp.float32)


def total_loss(config: TrainConfig, logits, labels, params, teacher_logits=None):
    """Mean training loss of a batch (see the module docstring)."""
    ce = cross_entropy(logits, labels, config.label_smoothing).mean()
    loss = ce
    if teacher_logits is not None:
        a = float(config.distill_alpha)
        if config.distill_loss == "kl":
            kd = distillation_loss(logits, teacher_logits, config.distill_temperature).mean()
        else:
            kd = logit_mse(logits, teacher_logits).mean()
        loss = (1.0 - a) * ce + a * kd
    if config.l1 > 0:
        loss = loss + float(config.l1) * _l1_penalty(params)
    return loss


def variables_of(params, batch_stats) -> dict:
    """Flax variables ``{'params', ['batch_stats']}`` (no empty ``batch_stats``)."""
    v = {"params": params}
    if batch_stats:
        v["batch_stats"] = batch_stats
    return v


def apply_eval(model, variables, images):
    return model.apply(variables, images, **mode_kwargs(model, train=False))


@functools.partial(jax.jit, static_argnums=(0, 1, 4))
def init_variables(model, shape, params_key, dropout_key, dtype="float32"):
    """``model.init`` on zeros of ``shape`` (batch axis included) and ``dtype`` (``'int32'``
    for token ids) as one compiled program (op-by-op init is slow), cached per
    model/shape/dtype."""
    x = jnp.zeros(shape, dtype)
    return model.init(
        {"params": params_key, "dropout": dropout_key}, x, **mode_kwargs(model, train=False)
    )


@functools.partial(jax.jit, static_argnums=(0, 1))
def _init_config_opt_state(config, steps_per_epoch, params, mask):
    return make_optimizer(config, steps_per_epoch, mask=mask).init(params)


def init_opt_state(
    config: TrainConfig,
    steps_per_epoch: int,
    params,
    mask=None,
    optimizer: optax.GradientTransformation | None = None,
):
    """Initial optimizer state for ``params``: of ``make_optimizer(config, ...)`` (compiled,
    cached per config), or of ``optimizer`` when given (``masked`` when ``mask`` is)."""
    if optimizer is None:
        return _init_config_opt_state(config, steps_per_epoch, params, mask)
    return (optimizer if mask is None else masked(optimizer, mask)).init(params)


def train_step_fn(
    model,
    config: TrainConfig,
    optimizer: optax.GradientTransformation,
    *,
    has_mask: bool = False,
    teacher_model=None,
):
    """The pure train step ``step(state, images, labels, mask, teacher_vars) -> (state,
    {'loss', 'accuracy'})`` with ``optimizer`` (wrapped in ``optim.masked(·, mask)`` when
    ``has_mask``; ``mask`` and ``teacher_vars`` are ignored otherwise / without a teacher)."""

    train_kwargs = mode_kwargs(model, train=True)

    def step_fn(state, images, labels, mask, teacher_vars):
        dropout_key = jax.random.fold_in(state["rng"], state["step"])
        teacher_logits = None
        if teacher_model is not None:
            teacher_logits = jax.lax.stop_gradient(apply_eval(teacher_model, teacher_vars, images))

        def loss_fn(params):
            variables = variables_of(params, state["batch_stats"])
            logits, updates = model.apply(
                variables,
                images,
                **train_kwargs,
                rngs={"dropout": dropout_key},
                mutable=["batch_stats"],
            )
            loss = total_loss(config, logits, labels, params, teacher_logits)
            return loss, (logits, updates)

        (loss, (logits, updates)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state["params"]
        )
        tx = masked(optimizer, mask) if has_mask else optimizer
        upd, opt_state = tx.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], upd)
        new_bs = dict(updates.get("batch_stats", {})) if state["batch_stats"] else {}
        acc = jnp.mean(jnp.argmax(logits, -1) == labels)
        new_state = dict(
            state, params=params, batch_stats=new_bs, opt_state=opt_state, step=state["step"] + 1
        )
        return new_state, {"loss": loss, "accuracy": acc}

    return step_fn


@functools.lru_cache(maxsize=16)
def make_train_step(
    model,
    config: TrainConfig,
    steps_per_epoch: int,
    *,
    optimizer=None,
    has_mask: bool = False,
    teacher_model=None,
    sharding=None,
):
    """:func:`train_step_fn` compiled with ``jax.jit`` (state donated; outputs placed with
    ``sharding``, e.g. replicated over the data-parallel mesh). ``optimizer=None``:
    ``make_optimizer(config, steps_per_epoch)``. Cached per argument set."""
    tx = make_optimizer(config, steps_per_epoch) if optimizer is None else optimizer
    step_fn = train_step_fn(model, config, tx, has_mask=has_mask, teacher_model=teacher_model)
    placement: dict[str, Any] = {} if sharding is None else {"out_shardings": (sharding, sharding)}
    return jax.jit(step_fn, donate_argnums=(0,), **placement)
