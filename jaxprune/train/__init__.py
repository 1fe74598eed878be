"""Training, fine-tuning, evaluation and knowledge distillation (optax, data-parallel, orbax).

Main entry points::

    cfg = TrainConfig(optimizer="adam", learning_rate=1e-3, epochs=20, batch_size=128)
    res = fit(model, train_ds, cfg, out_dir="runs/dense", eval_ds=test_ds)
    res.variables                  # {'params': ..., 'batch_stats': ...} (replicated jax arrays)
    evaluate(model, res.variables, test_ds)   # {'accuracy', 'loss', 'n'} (+ bits_per_byte)

Labels are class ids ``(N,)`` or, for a language model, next-token ids ``(N, L)`` (losses
and accuracies are then means over all positions); integer inputs (token ids) stay integer.
``TrainConfig(max_steps=N)`` bounds the optimizer steps of a run.

* :mod:`._config`: :class:`TrainConfig`, the per-model recipes (:func:`default_config`),
  :func:`make_schedule`, :func:`make_optimizer`.
* :mod:`._step`: losses (:func:`cross_entropy`, :func:`distillation_loss`, :func:`logit_mse`,
  :func:`total_loss`), :func:`init_variables`, :func:`init_opt_state` and the pure train step
  (:func:`train_step_fn`, compiled by :func:`make_train_step`).
* :mod:`._loop`: :func:`fit` (data-parallel loop, orbax checkpoint/resume, ``metrics.jsonl``,
  progress, ``callbacks``; ``mask=`` for masked fine-tunes, ``teacher=`` for distillation
  (Hinton KD or logit matching), ``optimizer=`` for any optax transformation such as
  stochastic Frank-Wolfe); :func:`default_devices` reads ``$JAXPRUNE_DEVICES``, the cap on
  what ``fit(devices=None)`` uses.
* :mod:`._eval`: :func:`evaluate`, :func:`predict_logits`.
"""

from jaxprune.train._config import (
    TrainConfig,
    default_config,
    make_optimizer,
    make_schedule,
    total_steps,
)
from jaxprune.train._eval import evaluate, predict_logits
from jaxprune.train._loop import MAX_IN_FLIGHT_STEPS, Callback, FitResult, default_devices, fit
from jaxprune.train._step import (
    cross_entropy,
    distillation_loss,
    init_opt_state,
    init_variables,
    logit_mse,
    make_train_step,
    model_input,
    total_loss,
    train_step_fn,
    variables_of,
)

__all__ = [
    "MAX_IN_FLIGHT_STEPS",
    "Callback",
    "FitResult",
    "TrainConfig",
    "cross_entropy",
    "default_config",
    "default_devices",
    "distillation_loss",
    "evaluate",
    "fit",
    "init_opt_state",
    "init_variables",
    "logit_mse",
    "make_optimizer",
    "make_schedule",
    "make_train_step",
    "model_input",
    "predict_logits",
    "total_loss",
    "total_steps",
    "train_step_fn",
    "variables_of",
]
