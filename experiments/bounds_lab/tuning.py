"""Masked fine-tuning of a pruned LeNet-300-100 with ``jaxprune.train.fit``: cross-entropy
(:func:`finetune`) and logit-matching distillation (:func:`distill_logits`).

Logit matching (bounds paper §5.2: fine-tune the pruned net to approximate the dense net's
pre-softmax outputs) minimises ``mean ‖f̂(x) − f(x)‖²``, a regression on the teacher's logits:
``train.fit`` with a teacher, ``distill_loss="logit_mse"`` and ``distill_alpha=1`` (no
cross-entropy term).
"""
from __future__ import annotations

import dataclasses

from experiments.bounds_lab._util import to_host
from jaxprune import train
from jaxprune.models import LeNet300100

__all__ = ["adam_cosine", "distill_logits", "finetune"]


def adam_cosine(lr, epochs, batch_size, seed=0) -> train.TrainConfig:
    """Adam with a cosine decay to 0 over the run (the fine-tuning recipe of the lab)."""
    return train.TrainConfig(optimizer="adam", learning_rate=lr, schedule="cosine",
                             epochs=epochs, batch_size=batch_size, seed=seed, log_every=0)


def distill_logits(params, mask, teacher, train_ds, cfg, epochs, seed):
    """Logit-matching KD of the pruned ``params`` (entries with ``mask`` 0 held at 0) towards
    the ``teacher`` params: ``train.fit`` with Adam, cosine decay, ``cfg.kd_lr``, batches of
    ``cfg.batch_size`` in the ``(seed, epoch)`` order, loss ``logit_mse`` only
    (``distill_alpha=1``)."""
    config = dataclasses.replace(adam_cosine(float(cfg.kd_lr), epochs, cfg.batch_size, seed),
                                 distill_alpha=1.0, distill_loss="logit_mse")
    model = LeNet300100()
    return to_host(train.fit(model, train_ds, config, variables={"params": params}, mask=mask,
                             teacher=(model, {"params": teacher}), devices=cfg.devices,
                             progress=False).variables["params"])


def finetune(params, mask, train_ds, cfg, epochs, seed):
    """Cross-entropy fine-tuning (Adam, cosine, ``cfg.ft_lr``) with masked entries held at 0."""
    config = adam_cosine(cfg.ft_lr, epochs, cfg.batch_size, seed)
    return to_host(train.fit(LeNet300100(), train_ds, config, variables={"params": params},
                             mask=mask, devices=cfg.devices, progress=False).variables["params"])
