"""Constraint sets over the *kernels* of a params tree (leaves with ``ndim > 1``: Dense/Conv
weights; biases and normalisation parameters are "free").

* :class:`KSparsePolytope` ``C_K(r) = {θ : ‖θ‖₁ ≤ K·r, ‖θ‖∞ ≤ r}``, ``K = keep_count(n,
  sparsity)`` for a block of ``n`` entries.
* :class:`L1Ball` ``{θ : ‖θ‖₁ ≤ R}``.

``scope="layer"``: one constraint block per kernel (its own K and radius); ``scope="global"``:
one block over the concatenation of all kernels (one K, one radius; the LMO's top-K then
decides how the budget is spread over layers).

Radius rule, from the weights the optimiser starts from: ``K-sparse: r = τ·max(‖θ‖∞, ‖θ‖₁/K)``,
``L1: R = τ·‖θ‖₁`` per block. This is the smallest radius of that family that contains the
starting point, so every Frank-Wolfe iterate (a convex combination of the start and vertices)
stays feasible for ``τ ≥ 1``. A fixed ``radius=r`` overrides the rule.
``KSparsePolytope(rule="topk_mean")``: ``r = τ·mean of the K largest |θ|``, the magnitude the
kept weights have now; smaller (vertices do not inflate the surviving weights to ``max|θ|``) but
the start is in general NOT feasible (the iterates enter the set at the rate ``Π(1 − γ_s)`` at
which the dense start decays).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxprune.optim.lmo import keep_count, ksparse_lmo, l1_lmo

__all__ = ["is_kernel", "KSparsePolytope", "L1Ball", "radii", "lmo", "violation"]


def is_kernel(leaf) -> bool:
    """Constrained / pruned leaves: Dense/Conv kernels (``ndim > 1``)."""
    return jnp.ndim(leaf) > 1


def blocks(leaves, scope: str) -> list[list[int]]:
    """Indices of the kernel leaves grouped into constraint blocks."""
    idx = [i for i, x in enumerate(leaves) if is_kernel(x)]
    if not idx:
        raise ValueError("no kernel (ndim > 1) leaves to constrain")
    if scope == "layer":
        return [[i] for i in idx]
    if scope == "global":
        return [idx]
    raise ValueError(f"scope must be 'layer' or 'global', got {scope!r}")


def concat(leaves, block):
    """The entries of the leaves of ``block`` as one flat array."""
    return jnp.concatenate([jnp.ravel(leaves[i]) for i in block])


def split_back(flat, leaves, block) -> dict:
    """Inverse of :func:`concat`: ``{leaf index: array shaped like that leaf}``."""
    out, start = {}, 0
    for i in block:
        n = int(np.size(leaves[i]))
        out[i] = flat[start : start + n].reshape(jnp.shape(leaves[i]))
        start += n
    return out


@dataclasses.dataclass(frozen=True)
class KSparsePolytope:
    """``{θ : ‖θ‖₁ ≤ K·r, ‖θ‖∞ ≤ r}`` per kernel (``scope="layer"``) or over all kernels."""

    sparsity: float = 0.9
    scope: str = "layer"
    tau: float = 1.0
    radius: float | None = None  # fixed r (overrides the rule)
    rule: str = "feasible"  # 'feasible' | 'topk_mean' (see the module doc)

    def k(self, n: int) -> int:
        return keep_count(n, self.sparsity)

    def block_radius(self, flat):
        if self.radius is not None:
            return jnp.asarray(self.radius, jnp.float32)
        k = self.k(flat.shape[0])
        a = jnp.abs(flat).astype(jnp.float32)
        if self.rule == "topk_mean":
            return self.tau * jnp.mean(jax.lax.top_k(a, k)[0])
        if self.rule != "feasible":
            raise ValueError(f"rule must be 'feasible' or 'topk_mean', got {self.rule!r}")
        return self.tau * jnp.maximum(jnp.max(a), jnp.sum(a) / k)

    def block_lmo(self, d_flat, r):
        return ksparse_lmo(d_flat, self.k(d_flat.shape[0]), r)

    def block_diameter(self, n: int, r):
        """ℓ2 diameter ``2·r·√K``."""
        return 2.0 * r * math.sqrt(self.k(n))

    def block_violation(self, flat, r):
        """Relative violation ``max(‖θ‖∞/r, ‖θ‖₁/(K r)) − 1`` (≤ 0 inside)."""
        a = jnp.abs(flat)
        return jnp.maximum(jnp.max(a) / r, jnp.sum(a) / (self.k(flat.shape[0]) * r)) - 1.0


@dataclasses.dataclass(frozen=True)
class L1Ball:
    """``{θ : ‖θ‖₁ ≤ R}`` per kernel or over all kernels (``R = τ·‖θ₀‖₁`` by default)."""

    scope: str = "layer"
    tau: float = 1.0
    radius: float | None = None

    def block_radius(self, flat):
        if self.radius is not None:
            return jnp.asarray(self.radius, jnp.float32)
        return self.tau * jnp.sum(jnp.abs(flat)).astype(jnp.float32)

    def block_lmo(self, d_flat, r):
        return l1_lmo(d_flat, r)

    def block_diameter(self, n: int, r):
        """ℓ2 diameter ``2·R``."""
        return 2.0 * r

    def block_violation(self, flat, r):
        return jnp.sum(jnp.abs(flat)) / r - 1.0


def radii(constraint, params) -> list:
    """One radius per constraint block, by the rule in the module docstring."""
    leaves = jax.tree.leaves(params)
    return [constraint.block_radius(concat(leaves, b)) for b in blocks(leaves, constraint.scope)]


def lmo(constraint, direction, block_radii):
    """LMO of the whole constraint applied to a params-shaped ``direction``; free leaves → 0."""
    leaves, treedef = jax.tree.flatten(direction)
    out = [jnp.zeros_like(x) for x in leaves]
    for b, r in zip(blocks(leaves, constraint.scope), block_radii):
        v = constraint.block_lmo(concat(leaves, b), r)
        for i, arr in split_back(v, leaves, b).items():
            out[i] = arr
    return jax.tree.unflatten(treedef, out)


def violation(constraint, params, block_radii) -> float:
    """Largest relative constraint violation over blocks (≤ 0: feasible)."""
    leaves = jax.tree.leaves(params)
    return max(
        float(constraint.block_violation(concat(leaves, b), r))
        for b, r in zip(blocks(leaves, constraint.scope), block_radii)
    )
