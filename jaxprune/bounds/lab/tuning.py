"""Masked fine-tuning of a pruned LeNet-300-100: cross-entropy (``jaxprune.train.fit``) and
logit-matching distillation.

Logit matching (bounds paper §5.2: fine-tune the pruned net to approximate the dense net's
pre-softmax outputs) minimises ``mean ‖f̂(x) − f(x)‖²``, a regression on the teacher's logits
that ``train.fit``'s loss (CE + Hinton KD) does not express; :func:`logit_matching_step` is one
pure step of it, built from ``train.make_optimizer`` (its schedule and mask handling).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import optax

from jaxprune import data, train
from jaxprune.bounds.lab._util import to_host
from jaxprune.bounds.lab.network import apply_mask, forward
from jaxprune.models import LeNet300100

__all__ = ["adam_cosine", "logit_matching_loss", "logit_matching_step", "distill_logits",
           "finetune"]


def adam_cosine(lr, epochs, batch_size, seed=0) -> train.TrainConfig:
    """Adam with a cosine decay to 0 over the run (the fine-tuning recipe of the lab)."""
    return train.TrainConfig(optimizer="adam", learning_rate=lr, schedule="cosine",
                             epochs=epochs, batch_size=batch_size, seed=seed, log_every=0)


def logit_matching_loss(params, teacher, x):
    """``mean ‖f̂(x) − f(x)‖²`` of the student ``params`` against the ``teacher``'s logits."""
    t = forward(teacher, x)["logits"]
    return jnp.mean((forward(params, x)["logits"] - t) ** 2)


@functools.partial(jax.jit, static_argnames=("config", "steps_per_epoch"))
def logit_matching_step(params, opt_state, mask, teacher, x, *, config, steps_per_epoch):
    """One masked optimizer step on :func:`logit_matching_loss`; masked entries stay 0."""
    tx = train.make_optimizer(config, steps_per_epoch, mask=mask)
    loss, g = jax.value_and_grad(logit_matching_loss)(params, teacher, x)
    upd, opt_state = tx.update(g, opt_state, params)
    params = jax.tree.map(lambda p, m: p * m, optax.apply_updates(params, upd), mask)
    return params, opt_state, loss


def distill_logits(params, mask, teacher, train_ds, cfg, epochs, seed):
    """Logit-matching KD of the pruned ``params`` (entries with ``mask`` 0 held at 0) towards
    ``teacher``: Adam, cosine decay, ``cfg.kd_lr``, batches of ``cfg.batch_size``."""
    config = adam_cosine(float(cfg.kd_lr), epochs, cfg.batch_size)
    spe = data.num_batches(len(train_ds), cfg.batch_size)
    params = jax.tree.map(jnp.asarray, apply_mask(params, mask))
    mask = jax.tree.map(jnp.asarray, mask)
    teacher = jax.tree.map(jnp.asarray, teacher)
    opt = train.make_optimizer(config, spe, mask=mask).init(params)
    for e in range(epochs):
        for x, _ in data.batches(train_ds, cfg.batch_size, seed=seed, epoch=e):
            params, opt, _ = logit_matching_step(params, opt, mask, teacher, jnp.asarray(x),
                                                 config=config, steps_per_epoch=spe)
    return to_host(params)


def finetune(params, mask, train_ds, cfg, epochs, seed):
    """Cross-entropy fine-tuning (Adam, cosine, ``cfg.ft_lr``) with masked entries held at 0."""
    config = adam_cosine(cfg.ft_lr, epochs, cfg.batch_size, seed)
    return to_host(train.fit(LeNet300100(), train_ds, config, variables={"params": params},
                             mask=mask, devices=cfg.devices, progress=False).variables["params"])
