"""Stochastic Frank-Wolfe (SFW), with and without momentum, as an optax transformation.

Update per step ``t`` and per constraint block ``b`` (blocks and LMOs: :mod:`.constraints`)::

    d_t = g_t                               (plain SFW, momentum=None)
    m_t = ρ·m_{t−1} + (1 − ρ)·g_t, d_t = m_t (momentum=ρ; m_{−1} = 0; ρ = 0 gives d_t = g_t)
    v_t = LMO_b(d_t)
    η_t = step_size(t)                      (constant or an optax schedule)
    γ_t = clip(η_t, 0, 1)                                   rescale="none"
    γ_t = clip(η_t / D_b, 0, 1)                             rescale="diameter"
          with the ℓ2 diameter D_b = 2·r·√K (K-sparse), 2·R (ℓ1)
    γ_t = clip(η_t·‖d_t,b‖₂ / ‖v_t,b − θ_t,b‖₂, 0, 1)      rescale="gradient"
    Δθ_b = γ_t·(v_t,b − θ_t,b)   ⇒   θ_{t+1} = (1 − γ_t)·θ_t + γ_t·v_t
    free leaves (biases …): Δθ = −free_learning_rate·d_t

The diameter / gradient rescalings are those of Pokutta, Spiegel & Zimmer 2020 ("Deep neural
network training with Frank-Wolfe"): they decouple the learning rate from the size of the
feasible region. The classic schedule ``γ_t = 2/(t+2)`` is :func:`classic_schedule` (use it
with ``rescale="none"``).

Why this prunes. ``θ_t = Π(1−γ_s)·θ_0 + Σ_s c_s v_s``: the dense start decays geometrically and
the iterate becomes a combination of K-sparse vertices. When successive LMOs pick the same
coordinates the iterate concentrates on ≈ K entries and a final hard top-K mask
(:func:`~jaxprune.optim.magnitude_mask` of the iterate) removes little; momentum averages the
stochastic gradients, so successive vertices agree more ("FW + momentum is sparser").
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxprune.optim.constraints import blocks, concat, lmo, radii

__all__ = ["SFWState", "classic_schedule", "stochastic_frank_wolfe"]


class SFWState(NamedTuple):
    count: jax.Array  # int32 step counter
    momentum: Any  # params-shaped buffer m (zeros when momentum=None)
    radii: list  # one radius per constraint block (fixed at init)


def classic_schedule(offset: int = 2) -> optax.Schedule:
    """``γ_t = 2 / (t + offset)`` (the classic open-loop FW step; use ``rescale="none"``)."""
    return lambda t: 2.0 / (jnp.asarray(t, jnp.float32) + offset)


def _gamma(constraint, rescale: str, eta, d, v, theta, r):
    """Step ``γ`` of one block (see the module docstring), clipped to ``[0, 1]``."""
    if rescale == "none":
        gamma = eta
    elif rescale == "diameter":
        gamma = eta / constraint.block_diameter(v.shape[0], r)
    else:
        gap = jnp.linalg.norm(v - theta)
        gamma = jnp.where(gap > 0, eta * jnp.linalg.norm(d) / jnp.where(gap > 0, gap, 1.0), 0.0)
    return jnp.clip(gamma, 0.0, 1.0)


def stochastic_frank_wolfe(
    constraint,
    step_size: float | optax.Schedule = 0.1,
    *,
    rescale: str = "gradient",
    momentum: float | None = None,
    free_learning_rate: float = 0.0,
) -> optax.GradientTransformationExtraArgs:
    """SFW / SFW-with-momentum over ``constraint`` (update rule in the module docstring).

    ``update(grads, state, params)`` needs ``params`` and returns ``Δθ = γ(v − θ)`` for the
    constrained leaves, so ``optax.apply_updates`` gives ``θ ← (1−γ)θ + γv``. The radii are
    fixed at ``init`` from the starting params. ``momentum=ρ`` feeds ``m ← ρm + (1−ρ)g`` to the
    LMO (``ρ = 0`` is exactly plain SFW).
    """
    if rescale not in ("none", "diameter", "gradient"):
        raise ValueError(f"rescale must be 'none', 'diameter' or 'gradient', got {rescale!r}")
    if momentum is not None and not 0.0 <= float(momentum) < 1.0:
        raise ValueError(f"momentum must be None or in [0, 1), got {momentum!r}")
    sched = step_size if callable(step_size) else (lambda t: jnp.asarray(step_size, jnp.float32))

    def init_fn(params):
        return SFWState(
            count=jnp.zeros((), jnp.int32),
            momentum=jax.tree.map(jnp.zeros_like, params),
            radii=radii(constraint, params),
        )

    def update_fn(grads, state, params=None, **extra_args):
        del extra_args
        if params is None:
            raise ValueError("stochastic_frank_wolfe needs params: tx.update(grads, state, params)")
        if momentum is None:
            d, m = grads, state.momentum
        else:
            rho = float(momentum)
            m = jax.tree.map(lambda m_, g: rho * m_ + (1.0 - rho) * g, state.momentum, grads)
            d = m
        eta = jnp.asarray(sched(state.count), jnp.float32)
        d_leaves, treedef = jax.tree.flatten(d)
        p_leaves = treedef.flatten_up_to(params)
        v_leaves = treedef.flatten_up_to(lmo(constraint, d, state.radii))
        upd = [(-free_learning_rate * x).astype(p.dtype) for x, p in zip(d_leaves, p_leaves)]
        for b, r in zip(blocks(p_leaves, constraint.scope), state.radii):
            gamma = _gamma(
                constraint,
                rescale,
                eta,
                concat(d_leaves, b),
                concat(v_leaves, b),
                concat(p_leaves, b),
                r,
            )
            for i in b:
                upd[i] = (gamma * (v_leaves[i] - p_leaves[i])).astype(p_leaves[i].dtype)
        return (
            jax.tree.unflatten(treedef, upd),
            SFWState(count=state.count + 1, momentum=m, radii=state.radii),
        )

    # optax calls update_fn positionally; its protocol also names the first argument
    return optax.GradientTransformationExtraArgs(init_fn, update_fn)  # pyright: ignore[reportArgumentType]
