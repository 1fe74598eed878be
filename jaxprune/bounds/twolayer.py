"""The two-layer ReLU network ``f(x) = W2 φ(W1 x + b1) + b2`` of the α-scaling argument
(bounds paper Lemma C.1): forward pass, the rescaling, and the total sensitivity under it."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from jaxprune.bounds._checks import check_positive
from jaxprune.bounds.theorems import mussay_sensitivities

__all__ = ["two_layer_forward", "scale_two_layer", "total_sensitivity"]


@jax.jit
def two_layer_forward(params, x):
    """``f(x) = W2 φ(W1 x + b1) + b2`` for ``params = (W1 (h,d), b1 (h,) | None, W2 (k,h),
    b2 (k,) | None)`` and a batch ``x`` (N, d) → logits (N, k)."""
    w1, b1, w2, b2 = params
    h = x @ w1.T
    if b1 is not None:
        h = h + b1
    out = jax.nn.relu(h) @ w2.T
    return out if b2 is None else out + b2


def scale_two_layer(params, alpha: float, *, w2_power: float = 0.0, scale_output_bias: bool = True):
    """The rescaling of Lemma C.1: ``W1, b1 → α W1, α b1`` (the bias is embedded in ``W⁽¹⁾``),
    and ``W2 → α^w2_power W2``.

    ``w2_power=0`` (default) is **exactly the lemma**: only the first layer is scaled, the
    network becomes ``α f`` (positive homogeneity of ReLU), so labels are unchanged and the
    total sensitivity scales by α.  This needs the output bias to scale too
    (``scale_output_bias=True``: ``b2 → α b2``; the lemma's network has no output bias).
    ``w2_power=-1`` is the function-preserving rebalancing ``W2 → W2/α``: outputs are identical
    and the total sensitivity of Theorem A.4 does *not* change (the α cancels in
    ``w⁽²⁾_ij φ(β‖α w⁽¹⁾_j‖)``).
    """
    check_positive("alpha", alpha)
    w1, b1, w2, b2 = params
    out_scale = alpha ** (1.0 + w2_power)
    return (
        alpha * w1,
        None if b1 is None else alpha * b1,
        alpha**w2_power * w2,
        None if b2 is None else (out_scale * b2 if scale_output_bias else b2),
    )


def total_sensitivity(
    params,
    beta: float,
    alpha: float = 1.0,
    *,
    w2_power: float = 0.0,
    sensitivity_fn: Callable | None = None,
) -> float:
    """Total sensitivity ``t = Σ_j s_j`` of the hidden layer of a 2-layer ReLU net after the
    α-rescaling of :func:`scale_two_layer` (Lemma C.1).

    ``sensitivity_fn(W1, b1, W2, beta) -> s (h,)`` defaults to Theorem A.4's
    ``s_j = max_i w⁽²⁾_ij φ(β‖w⁽¹⁾_j‖₂)`` (:func:`mussay_sensitivities`).  For it, Lemma C.1
    gives ``t(α) = α·t(1)`` with ``w2_power=0`` (``max(0, αx) = α max(0, x)``,
    ``‖αw‖ = α‖w‖``, α > 0), and ``t(α) = t(1)`` with ``w2_power=-1``.
    """
    fn = sensitivity_fn or mussay_sensitivities
    w1, b1, w2, _ = scale_two_layer(params, alpha, w2_power=w2_power)
    return float(jnp.sum(fn(w1, b1, w2, beta)))
