"""Training hyper-parameters, the per-model recipes and the optax optimizer they describe.

Weight decay
    ``weight_decay`` is **coupled L2** by default (``wd * w`` added to the gradient before the
    optimizer; for SGD this equals the loss penalty ``wd/2 * |w|^2``). With
    ``decoupled_weight_decay=True`` it is AdamW/SGDW-style: ``wd * w`` is added to the
    optimizer's *output* direction and then scaled by the learning-rate schedule. Either way
    only kernels (``ndim > 1``) are decayed.
"""

from __future__ import annotations

import dataclasses

import jax
import optax

from jaxprune.models import training_recipe
from jaxprune.optim import is_kernel, masked

__all__ = ["TrainConfig", "default_config", "make_schedule", "make_optimizer", "total_steps"]


# ----------------------------------------------------------------------------- configuration


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one training / fine-tuning run (JSON-able via ``asdict``).

    ``learning_rate`` is the peak rate; ``warmup_epochs`` (float) ramps linearly from 0.
    ``schedule``: ``'constant'``, ``'cosine'`` (to 0 at the end) or ``'step'`` (multiply by
    ``step_decay`` at each of ``step_milestones``, given as fractions of the total steps).
    ``batch_size`` is the GLOBAL batch (all devices together). ``max_steps``: at most this
    many optimizer steps in all (the run stops mid-epoch when they are used up; the
    schedule's horizon is the steps actually run, :func:`total_steps`); ``None``: every
    step of ``epochs`` epochs.
    """

    optimizer: str = "adam"  # 'adam' | 'sgd'
    learning_rate: float = 1e-3
    momentum: float = 0.9  # sgd only (0 disables)
    nesterov: bool = False  # sgd only
    schedule: str = "constant"  # 'constant' | 'cosine' | 'step'
    step_decay: float = 0.1
    step_milestones: tuple[float, ...] = (0.5, 0.75)
    warmup_epochs: float = 0.0
    weight_decay: float = 0.0
    decoupled_weight_decay: bool = False  # False: coupled L2 in the gradient; True: AdamW/SGDW
    l1: float = 0.0  # l1 * sum |kernel| added to the loss
    label_smoothing: float = 0.0
    epochs: int = 10
    batch_size: int = 128
    seed: int = 0
    augment: str | None = None  # None | 'crop_flip'
    distill_alpha: float = 0.5  # weight of the KD term (used only with a teacher)
    distill_temperature: float = 4.0
    distill_loss: str = "kl"  # 'kl' (Hinton soft targets) | 'logit_mse' (logit matching)
    log_every: int = 100  # steps between 'step' log lines (0: none)
    max_steps: int | None = None  # bound on the optimizer steps of the whole run

    def __post_init__(self):
        if self.optimizer not in ("adam", "sgd"):
            raise ValueError(f"optimizer must be 'adam' or 'sgd', got {self.optimizer!r}")
        if self.schedule not in ("constant", "cosine", "step"):
            raise ValueError(
                f"schedule must be 'constant', 'cosine' or 'step', got {self.schedule!r}"
            )
        if self.augment not in (None, "crop_flip"):
            raise ValueError(f"augment must be None or 'crop_flip', got {self.augment!r}")
        if self.epochs < 0 or self.batch_size <= 0:
            raise ValueError("epochs must be >= 0 and batch_size > 0")
        if not 0.0 <= self.distill_alpha <= 1.0:
            raise ValueError("distill_alpha must be in [0, 1]")
        if self.distill_temperature <= 0:
            raise ValueError("distill_temperature must be > 0")
        if self.distill_loss not in ("kl", "logit_mse"):
            raise ValueError(f"distill_loss must be 'kl' or 'logit_mse', got {self.distill_loss!r}")
        if self.max_steps is not None and (
            isinstance(self.max_steps, bool)
            or not isinstance(self.max_steps, int)
            or self.max_steps < 1
        ):
            raise ValueError(
                f"max_steps must be None or a positive integer, got {self.max_steps!r}"
            )
        object.__setattr__(self, "step_milestones", tuple(float(m) for m in self.step_milestones))

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["step_milestones"] = list(d["step_milestones"])
        if d["max_steps"] is None:  # an unbounded run records no max_steps key
            del d["max_steps"]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in d.items() if k in names}
        if "step_milestones" in kwargs:
            kwargs["step_milestones"] = tuple(kwargs["step_milestones"])
        return cls(**kwargs)


def default_config(model_name: str, **overrides) -> TrainConfig:
    """The recipe ``jaxprune train --model NAME`` uses (registered with
    :func:`jaxprune.models.register_model`; an NNX model trains with its Linen twin's
    recipe), with ``overrides`` applied."""
    base = training_recipe(model_name)
    base.update({k: v for k, v in overrides.items() if v is not None})
    unknown = sorted(set(base) - {f.name for f in dataclasses.fields(TrainConfig)})
    if unknown:
        raise ValueError(
            f"no TrainConfig field {', '.join(map(repr, unknown))} (recipe of "
            f"model {model_name!r} or its overrides)"
        )
    return TrainConfig(**base)


def total_steps(config: TrainConfig, steps_per_epoch: int) -> int:
    """Optimizer steps of a whole run: ``min(epochs * steps_per_epoch, max_steps)``.

    >>> total_steps(TrainConfig(epochs=3, max_steps=50), 20)
    50
    """
    total = int(config.epochs * steps_per_epoch)
    return total if config.max_steps is None else min(total, int(config.max_steps))


def make_schedule(config: TrainConfig, steps_per_epoch: int) -> optax.Schedule:
    """Learning-rate schedule over the run's :func:`total_steps` steps. A run cut short by
    ``max_steps`` gets the whole schedule squeezed into its steps: the warmup keeps its share
    ``warmup_epochs / epochs`` of the run (milestones are fractions of the run anyway).

    >>> s = make_schedule(TrainConfig(epochs=10, warmup_epochs=1, max_steps=50), 100)
    >>> round(float(s(2)) / 1e-3, 6)  # 2 of the 5 warmup steps (a tenth of the 50-step run)
    0.4
    """
    lr = float(config.learning_rate)
    full = int(config.epochs * steps_per_epoch)
    total = max(total_steps(config, steps_per_epoch), 1)
    warmup = config.warmup_epochs * steps_per_epoch * (min(total / full, 1.0) if full else 1.0)
    warmup = min(int(round(warmup)), total)
    rest = max(total - warmup, 1)
    if config.schedule == "constant":
        base = optax.constant_schedule(lr)
    elif config.schedule == "cosine":
        base = optax.cosine_decay_schedule(lr, decay_steps=rest, alpha=0.0)
    else:  # step; milestones are fractions of ALL steps, base schedule counts from warmup end
        bounds = {}
        for m in config.step_milestones:
            b = int(round(m * total)) - warmup
            if b > 0:
                bounds[b] = bounds.get(b, 1.0) * float(config.step_decay)
        base = optax.piecewise_constant_schedule(lr, bounds)
    if warmup > 0:
        return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), base], [warmup])
    return base


def _kernel_mask(params):
    return jax.tree.map(is_kernel, params)


def make_optimizer(
    config: TrainConfig, steps_per_epoch: int, mask=None
) -> optax.GradientTransformation:
    """optax optimizer for ``config`` (schedule, weight decay, momentum, optional mask).

    With ``mask`` (pytree of 0/1 shaped like params) the optimizer is wrapped in
    :func:`jaxprune.optim.masked`: gradients are masked before and updates after it, so a
    weight that is 0 and masked stays exactly 0. ``mask`` may be a traced value.
    """
    sched = make_schedule(config, steps_per_epoch)
    parts = []
    wd = float(config.weight_decay)
    if wd > 0 and not config.decoupled_weight_decay:
        parts.append(optax.add_decayed_weights(wd, mask=_kernel_mask))
    if config.optimizer == "sgd":
        if config.momentum > 0:
            parts.append(optax.trace(decay=config.momentum, nesterov=config.nesterov))
    else:
        parts.append(optax.scale_by_adam())
    if wd > 0 and config.decoupled_weight_decay:
        parts.append(optax.add_decayed_weights(wd, mask=_kernel_mask))
    parts.append(optax.scale_by_learning_rate(sched))
    tx = optax.chain(*parts)
    return tx if mask is None else masked(tx, mask)
