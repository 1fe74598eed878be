"""Linear minimisation oracles: ``argmin_{v ∈ C} ⟨g, v⟩`` over the vertices of a constraint set.

* K-sparse polytope ``C_K(r) = conv{v : ‖v‖₀ = K, v_i ∈ {±r}}``: ``−r·sign(g)`` on the K entries
  of largest ``|g|``, 0 elsewhere (``sign(0) := +1``, so every output is a vertex with exactly K
  non-zeros).
* ℓ1 ball of radius ``R``: ``−R·sign(g_i*)·e_i*`` with ``i* = argmax|g_i|``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

__all__ = ["keep_count", "ksparse_lmo", "l1_lmo"]


def keep_count(n: int, sparsity: float) -> int:
    """``K = max(1, round((1 − sparsity)·n))``: entries kept out of ``n``."""
    if not 0.0 <= float(sparsity) < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity!r}")
    return max(1, min(int(n), int(round((1.0 - float(sparsity)) * int(n)))))


@functools.partial(jax.jit, static_argnames=("k",))
def ksparse_lmo(g: jax.Array, k: int, r) -> jax.Array:
    """Vertex of the K-sparse polytope minimising ``⟨g, v⟩``: ``−r·sign(g)`` on the ``k``
    largest ``|g|`` entries (ties: lower flat index first; ``sign(0) := +1``), 0 elsewhere."""
    flat = g.reshape(-1)
    k = int(k)
    if not 1 <= k <= flat.shape[0]:
        raise ValueError(f"k must be in [1, {flat.shape[0]}], got {k}")
    _, idx = jax.lax.top_k(jnp.abs(flat), k)
    r = jnp.asarray(r, g.dtype)
    vals = jnp.where(flat[idx] < 0, r, -r)
    return jnp.zeros_like(flat).at[idx].set(vals).reshape(g.shape)


@jax.jit
def l1_lmo(g: jax.Array, radius) -> jax.Array:
    """Vertex of the ℓ1 ball of radius ``R`` minimising ``⟨g, v⟩``: ``−R·sign(g_i*)·e_i*``.

    >>> import jax.numpy as jnp
    >>> l1_lmo(jnp.array([0.5, -2.0, 1.0]), 3.0).tolist()    # a vertex of the ℓ1 ball
    [0.0, 3.0, 0.0]
    """
    flat = g.reshape(-1)
    i = jnp.argmax(jnp.abs(flat))
    radius = jnp.asarray(radius, g.dtype)
    val = jnp.where(flat[i] < 0, radius, -radius)
    return jnp.zeros_like(flat).at[i].set(val).reshape(g.shape)
