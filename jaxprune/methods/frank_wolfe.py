"""Frank-Wolfe pruning: stochastic Frank-Wolfe (SFW), with and without momentum, over a
K-sparse polytope, trained with :func:`jaxprune.train.fit`, then either a hard K-sparse mask
(unstructured, :func:`fw_prune`) or the filters/neurons of largest group norm (structured,
the registered methods through :func:`jaxprune.prune`).

Registered methods (``kind="channels"``): ``frank_wolfe`` (plain SFW) and
``frank_wolfe_momentum`` (ρ = 0.9). Their ``prepare`` runs the SFW phase on ``train_ds`` and
hands :func:`jaxprune.prune` the iterate to shrink; the channels are scored by the ℓ2 norm of
their kernel entries in the iterate (``score_by="iterate"``) or in the momentum buffer
(``score_by="momentum"``) and the top-k are kept. ``prune``'s budget arguments set how many
(a float ``ratio`` counts ``unit`` over the whole model; a ratio dict
``{group: (C − k)/C}`` keeps exactly ``k`` channels of each group).

The defaults (constant γ = 0.03, no rescaling, one epoch) were tuned on LeNet-5 / MNIST:
``rescale="gradient"`` with η = 1 made plain SFW collapse to a dead network.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import numpy as np
import optax

from jaxprune import optim, train
from jaxprune._tree import to_host
from jaxprune.methods._base import Method, each_view, register
from jaxprune.methods.norms import l2_score

__all__ = [
    "fw_phase",
    "FWPruneResult",
    "mask_and_finetune",
    "fw_prune",
    "prepare",
    "FrankWolfe",
    "FrankWolfeMomentum",
]


def fw_phase(
    model,
    variables,
    train_ds,
    *,
    constraint=None,
    sparsity: float = 0.9,
    scope: str = "layer",
    momentum: float | None = None,
    epochs: int = 1,
    batch_size: int = 128,
    step_size: float | optax.Schedule = 0.03,
    rescale: str = "none",
    free_learning_rate: float = 0.0,
    seed: int = 0,
):
    """The SFW(+momentum) phase alone: ``(iterate variables, SFWState, history)``, trained by
    ``train.fit`` (cross-entropy, data order ``(seed, epoch)``, one device). The state's
    ``momentum`` is the last LMO direction buffer (zeros for plain SFW)."""
    constraint = constraint or optim.KSparsePolytope(sparsity=sparsity, scope=scope)
    tx = optim.stochastic_frank_wolfe(
        constraint,
        step_size,
        rescale=rescale,
        momentum=momentum,
        free_learning_rate=free_learning_rate,
    )
    config = train.TrainConfig(epochs=epochs, batch_size=batch_size, seed=seed, log_every=0)
    res = train.fit(
        model, train_ds, config, variables=variables, optimizer=tx, devices=1, progress=False
    )
    return to_host(res.variables), to_host(res.state["opt_state"]), res.history


@dataclasses.dataclass(frozen=True)
class FWPruneResult:
    """``variables``: masked (and fine-tuned) variables; ``mask``: 0/1 like params;
    ``fw_variables``: the FW iterate before the hard mask; ``momentum``: the last LMO direction
    buffer (momentum ``m``; zeros for plain SFW); ``report``: sparsities, radii, histories."""

    variables: dict
    mask: Any
    fw_variables: dict
    momentum: Any
    report: dict


def _mass_removed(params, mask) -> float:
    """Share of the kernels' ℓ1 mass the mask throws away (small: the iterate is sparse)."""
    removed = sum(
        np.abs(np.asarray(p) * (1 - m)).sum()
        for p, m in zip(jax.tree.leaves(params), jax.tree.leaves(mask))
    )
    total = sum(np.abs(np.asarray(p)).sum() for p in jax.tree.leaves(params) if np.ndim(p) > 1)
    return float(removed / max(total, 1e-30))


def mask_and_finetune(
    model,
    variables,
    mask,
    train_ds,
    *,
    finetune=None,
    eval_ds=None,
) -> tuple[dict, dict]:
    """Zero the masked weights, evaluate on ``eval_ds`` (``'eval_after_mask'``), fine-tune
    under the mask with ``finetune`` (a ``TrainConfig``; ``'finetune_history'``) and measure the
    kernel sparsity: ``(host variables, report)``."""
    pruned = dict(variables, params=optim.apply_mask(variables["params"], mask))
    report = {}
    if eval_ds is not None:
        report["eval_after_mask"] = train.evaluate(model, pruned, eval_ds)
    if finetune is not None and finetune.epochs > 0:
        res = train.fit(
            model, train_ds, finetune, variables=pruned, mask=mask, progress=False, devices=1
        )
        pruned = to_host(res.variables)
        report["finetune_history"] = res.history
    report["kernel_sparsity"] = optim.kernel_sparsity(pruned["params"])
    return pruned, report


def fw_prune(
    model,
    variables,
    train_ds,
    *,
    sparsity: float = 0.9,
    scope: str = "layer",
    constraint=None,
    momentum: float | None = None,
    epochs: int = 1,
    batch_size: int = 128,
    step_size: float | optax.Schedule = 0.03,
    rescale: str = "none",
    free_learning_rate: float = 0.0,
    seed: int = 0,
    finetune: train.TrainConfig | None = None,
    eval_ds=None,
) -> FWPruneResult:
    """SFW(+momentum) over ``KSparsePolytope(sparsity, scope)`` for ``epochs`` epochs, then the
    hard magnitude top-K mask of the iterate (same K per block as the polytope), then an
    optional masked fine-tune with ``finetune`` (:func:`mask_and_finetune`). The sparsity is
    unstructured (kernel entries)."""
    constraint = constraint or optim.KSparsePolytope(sparsity=sparsity, scope=scope)
    fw_vars, opt_state, hist = fw_phase(
        model,
        variables,
        train_ds,
        constraint=constraint,
        momentum=momentum,
        epochs=epochs,
        batch_size=batch_size,
        step_size=step_size,
        rescale=rescale,
        free_learning_rate=free_learning_rate,
        seed=seed,
    )
    mask = optim.magnitude_mask(fw_vars["params"], sparsity, getattr(constraint, "scope", scope))
    pruned, after = mask_and_finetune(
        model, fw_vars, mask, train_ds, finetune=finetune, eval_ds=eval_ds
    )
    report = {
        "sparsity_target": sparsity,
        "scope": scope,
        "momentum": momentum,
        "rescale": rescale,
        "fw_epochs": epochs,
        "radii": [float(r) for r in opt_state.radii],
        "fw_history": hist,
        "mass_removed": _mass_removed(fw_vars["params"], mask),
        **after,
    }
    return FWPruneResult(
        variables=pruned,
        mask=mask,
        fw_variables=fw_vars,
        momentum=opt_state.momentum,
        report=report,
    )


# ----------------------------------------------------------------------------- registry

SCORE_BY = ("iterate", "momentum")
RADIUS_RULES = ("feasible", "topk_mean")


def _check_options(score_by: str, radius_rule: str) -> None:
    if score_by not in SCORE_BY:
        raise ValueError(f"score_by must be 'iterate' or 'momentum', got {score_by!r}")
    if radius_rule not in RADIUS_RULES:
        raise ValueError(f"radius_rule must be 'feasible' or 'topk_mean', got {radius_rule!r}")


def prepare(
    model,
    variables,
    train_ds,
    *,
    momentum: float | None = None,
    score_by: str = "iterate",
    sparsity: float = 0.9,
    scope: str = "layer",
    radius_rule: str = "feasible",
    epochs: int = 1,
    batch_size: int = 128,
    step_size: float = 0.03,
    rescale: str = "none",
    free_learning_rate: float = 0.0,
    seed: int = 0,
):
    """The training phase of the Frank-Wolfe methods: run :func:`fw_phase` over
    ``KSparsePolytope(sparsity, scope, rule=radius_rule)`` on ``train_ds`` and return
    ``(variables to shrink = the FW iterate, variables to score = the iterate, or the momentum
    buffer with ``score_by="momentum"``)``."""
    _check_options(score_by, radius_rule)
    it, state, _ = fw_phase(
        model,
        variables,
        train_ds,
        constraint=optim.KSparsePolytope(sparsity=sparsity, scope=scope, rule=radius_rule),
        momentum=momentum,
        epochs=epochs,
        batch_size=batch_size,
        step_size=step_size,
        rescale=rescale,
        free_learning_rate=free_learning_rate,
        seed=seed,
    )
    if score_by == "iterate":
        return it, it
    return it, dict(it, params=state.momentum)


@register
@dataclasses.dataclass(frozen=True, kw_only=True)
class FrankWolfe(Method):
    """Stochastic Frank-Wolfe over the K-sparse polytope on ``train_ds`` (the ``prepare``
    phase, :func:`fw_phase` with these options; ``radius_rule`` is the polytope's radius
    rule), then the top-k filters/neurons by the ℓ2 norm of their kernel entries in the
    iterate (``score_by="iterate"``) or in the momentum buffer (``"momentum"``).

    >>> FrankWolfe(train_ds=None, epochs=2).epochs
    2
    """

    train_ds: Any = dataclasses.field(repr=False, compare=False)
    momentum: float | None = None
    score_by: str = "iterate"
    sparsity: float = 0.9
    scope: str = "layer"
    radius_rule: str = "feasible"
    epochs: int = 1
    batch_size: int = 128
    step_size: float = 0.03
    rescale: str = "none"
    free_learning_rate: float = 0.0
    seed: int = 0
    name = "frank_wolfe"
    description = (
        "stochastic Frank-Wolfe over the K-sparse polytope, then top-k "
        "filters/neurons by the kernel ℓ2 norm"
    )

    def __post_init__(self):
        _check_options(self.score_by, self.radius_rule)

    def prepare(self, model, variables):
        options = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return prepare(model, variables, **options)

    def score(self, key, views) -> list:
        return each_view(l2_score, key, views)


@register
@dataclasses.dataclass(frozen=True, kw_only=True)
class FrankWolfeMomentum(FrankWolfe):
    """:class:`FrankWolfe` with momentum ρ = 0.9 by default."""

    momentum: float | None = 0.9
    name = "frank_wolfe_momentum"
