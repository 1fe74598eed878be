"""What the main paper's Theorem 2.6 says about a prune that was actually made.

:func:`certify` takes a structured :class:`~jaxprune.PruneResult` and gives, per pruned channel
group: the rank ``r`` and dimension ``d`` of its points ``P`` (the rows ``[W_j | b_j]`` of the
coreset view), ``μ(P)`` (Definition 2.3: ``∞`` with the LP certificate of
:func:`~jaxprune.bounds.mu.mu_is_unbounded`, else the lower estimate of
:func:`~jaxprune.bounds.mu.estimate_mu`, so the ε below is itself a lower bound on what the
theorem certifies), and, where ``μ`` is finite, the ε that Theorem 2.6 implies for the ``m``
draws made (``c = 1``, δ = 1/2; the theorem states ``m ∈ O(·)``, so this is the bound's shape).
With ``data`` and the model, the consumers' pre-activations of the pruned network are compared
with the dense network's on ``data``: the observed max and mean relative error per example.

How to read it: ``epsilon`` is usually far above 1 (vacuous) or ``None`` (μ = ∞), as the bounds
paper finds for most trained layers; the observed errors are what the prune did.
:func:`epsilon_ratios` turns a target ε into per-group ratios (epsilon-first pruning).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxprune import _flax, _nnx, selection, structure, views
from jaxprune._tree import as_variables
from jaxprune.bounds.mu import estimate_mu, mu_is_unbounded
from jaxprune.bounds.theorems import coreset_epsilon, coreset_samples

__all__ = ["certify", "epsilon_ratios", "group_epsilon_ratios"]


def _group_bound(points: np.ndarray, m: int, seed: int) -> dict:
    r = int(np.linalg.matrix_rank(points))
    n, d = points.shape
    if mu_is_unbounded(points):
        return {
            "rank": r,
            "points": n,
            "dim": d,
            "mu": math.inf,
            "mu_certificate": "lp",
            "draws": m,
            "epsilon": None,
        }
    mu = estimate_mu(points, seed, exact_unbounded_check=False)
    eps = (
        None
        if not math.isfinite(mu.value)
        else float(coreset_epsilon(max(m, 1), mu.value, max(r, 1), max(n, 2), d))
    )
    return {
        "rank": r,
        "points": n,
        "dim": d,
        "mu": float(mu.value),
        "mu_certificate": "lower estimate (query search)",
        "draws": m,
        "epsilon": eps,
    }


def _observed(model, result, data, consumers) -> dict:
    """Per consumer layer: max / mean over examples of ``‖ŷ_i − y_i‖ / ‖y_i‖``."""
    paths = {tuple(slot.path[1:-1]) for slot in consumers}

    def outs(variables):
        io = _flax.kernel_io(
            model, variables, jnp.asarray(data), paths=paths, apply_kwargs=result.apply_kwargs
        )
        return {p: o for p, (_, o) in io.items()}

    dense = jax.device_get(outs(result.dense_variables))
    masked = result.masked  # NNX input: the masked module
    pruned = jax.device_get(outs(_nnx.variables_of(masked) if _nnx.is_module(masked) else masked))
    out = {}
    for path in sorted(dense):
        y = np.asarray(dense[path]).reshape(len(data), -1)
        e = np.linalg.norm(np.asarray(pruned[path]).reshape(len(data), -1) - y, axis=1)
        rel = e / np.maximum(np.linalg.norm(y, axis=1), 1e-12)
        out["/".join(path)] = {"max_rel_err": float(rel.max()), "mean_rel_err": float(rel.mean())}
    return out


def certify(result, *, model=None, data=None, seed: int = 0) -> dict:
    """``{group: {rank, points, dim, mu, mu_certificate, draws, epsilon[, observed]}}`` for
    every group ``result`` pruned (``observed`` needs ``model`` and ``data``)."""
    if result.kind != "channels":
        raise ValueError(
            "certify covers structured (channel) prunes; weight pruning has the "
            "SiPP bounds of jaxprune.bounds.theorems"
        )
    groups = [g for g in result.groups if g.name in result.widths]
    variables = result.dense_variables
    out = {}
    for g in groups:
        points = np.asarray(views.layer_view(variables, g).points, np.float64)
        draws = result.report.get("draws", {}).get(g.name) or result.widths[g.name]
        out[g.name] = _group_bound(points, int(draws), seed)
        if model is not None and data is not None:
            out[g.name]["observed"] = _observed(model, result, data, g.consumers)
    return out


def epsilon_ratios(
    params,
    epsilon: float,
    *,
    model=None,
    input_shape=None,
    prune_residual: bool = False,
    delta: float = 0.5,
    c: float = 1.0,
    seed: int = 0,
) -> dict:
    """Epsilon-first structured pruning: per prunable group, the fraction of its channels that
    Theorem 2.6 lets go for a target ``epsilon`` (``m`` = :func:`coreset_samples` draws,
    ``1 − m/n``, 0 when ``m ≥ n``), as the ratio dict of ``jaxprune.prune``::

        prune(params, key, epsilon_ratios(params, 0.5, model=m, input_shape=s), model=m, ...)

    ``μ(P)`` is the lower estimate of :func:`estimate_mu`, so the sizes are optimistic. A group
    whose ``μ(P) = ∞`` (LP certificate) has no finite sample size: ``ValueError`` naming it.
    """
    if not (isinstance(epsilon, (int, float)) and epsilon > 0):
        raise ValueError(f"epsilon must be a positive number, got {epsilon!r}")
    variables, _ = as_variables(params)
    if model is None:
        struct, _ = structure.from_params(variables)
    else:
        if input_shape is None:
            raise ValueError("pass input_shape= with model=")
        struct = structure.from_model(model, variables, input_shape)
    return group_epsilon_ratios(
        variables,
        selection.prunable_groups(struct, prune_residual=prune_residual),
        epsilon,
        delta=delta,
        c=c,
        seed=seed,
    )


def group_epsilon_ratios(
    variables, groups, epsilon: float, *, delta: float = 0.5, c: float = 1.0, seed: int = 0
) -> dict:
    """:func:`epsilon_ratios` for given channel ``groups`` of ``variables``."""
    if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)) or epsilon <= 0:
        raise ValueError(f"epsilon must be a positive number, got {epsilon!r}")
    out = {}
    for g in groups:
        points = np.asarray(views.layer_view(variables, g).points, np.float64)
        if mu_is_unbounded(points):
            raise ValueError(
                f"group {g.name!r}: μ(P) = ∞ (an LP finds a query that switches "
                "every neuron off), so no finite sample size guarantees "
                f"epsilon={epsilon}; prune it by a ratio instead"
            )
        mu = estimate_mu(points, seed, exact_unbounded_check=False).value
        r, (n, d) = int(np.linalg.matrix_rank(points)), points.shape
        m = float(coreset_samples(epsilon, mu, max(r, 1), max(n, 2), d, delta, c))
        out[g.name] = max(0.0, 1.0 - m / n)
    return out
