"""Carathéodory's theorem, constructively (paper Thm 2.2, supp. Alg. 4).

``caratheodory``: while more than ``r + 1`` weights are positive, take ``r + 2`` support points,
find a null vector ``v`` of their lifted matrix ``[p_i; 1]`` (so ``Σ v_i p_i = 0`` and
``Σ v_i = 0``), and move ``w ← w − α v`` with ``α = min_{v_i>0} w_i / v_i``: one weight hits
zero, ``Σ w_i`` and ``Σ w_i p_i`` are unchanged.  ``O(n)`` steps of ``O(d³)``; the null vector
is the last column of the complete QR of the ``(d+2) × (d+1)`` transposed block.

``caratheodory_booster`` (Maalouf et al., "fast Carathéodory"): split the support into
``2d + 2`` chunks, replace each chunk by its weighted mean (weight = chunk weight), run the
plain step on the means (≤ d+1 chunks survive), rescale the surviving points' weights
by ``W'_c / W_c``, recurse.  The lifted constant-1 row keeps ``Σ w`` as well as ``Σ w p``.

Rank-aware core: with ``r < d`` *and* the coordinates ``j ≥ r`` of every point exactly zero (the
whitened frame of :mod:`jaxprune.geometry.subspace`), the dead rows are replaced by unit rows
on the unused slots, so ``r + 2`` points suffice and the output support is ``≤ r + 1``.
All loops are ``lax.while_loop`` over fixed shapes (masks); everything jits and vmaps.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxprune.geometry._compile import cheap_jit
from jaxprune.geometry._precision import f64, out_dtype, precision


def _null_step(P, w, r):
    """One Carathéodory reduction step on the first ``r + 2`` support points."""
    n, d = P.shape
    dt = P.dtype
    slots = d + 2
    sid = jnp.arange(slots)
    valid = sid < r + 2
    idx = jnp.nonzero(w > 0, size=slots, fill_value=0)[0]
    L = jnp.concatenate([P[idx], jnp.ones((slots, 1), dt)], axis=1)  # (slots, d+1)
    L = L * valid[:, None]
    # dead coordinate j (r ≤ j < d) ↦ unit entry on the unused slot j + 2
    dead = jnp.arange(d) >= r
    unit = jnp.zeros((slots, d), dt).at[jnp.arange(d) + 2, jnp.arange(d)].set(1.0)
    L = L.at[:, :d].set(jnp.where(dead[None, :], unit, L[:, :d]))
    q, _ = jnp.linalg.qr(L, mode="complete")  # (slots, slots)
    v = q[:, -1] * valid
    v = jnp.where(jnp.max(v) >= -jnp.min(v), v, -v)
    ws = w[idx] * valid
    pos = v > 1e-12 * jnp.max(jnp.abs(v))
    ratio = jnp.where(pos, ws / jnp.where(pos, v, 1.0), jnp.inf)
    t = jnp.argmin(ratio)
    new = jnp.maximum(ws - ratio[t] * v, 0.0).at[t].set(0.0)
    tgt = jnp.where(valid, idx, n)  # n = dropped
    return w.at[tgt].set(new, mode="drop")


def caratheodory_core(P, w, mask, r):
    """Reduce the support of ``w`` (masked) to ≤ ``r + 1`` points; see module doc."""
    n = P.shape[0]
    w = jnp.where(mask, jnp.maximum(w, 0.0), 0.0)

    def cond(s):
        w, it = s
        return (jnp.sum(w > 0) > r + 1) & (it < n)

    def body(s):
        w, it = s
        return _null_step(P, w, r), it + 1

    w, _ = jax.lax.while_loop(cond, body, (w, jnp.asarray(0, jnp.int32)))
    return w


def _booster_core(P, w, mask, r, chunks):
    """Fast Carathéodory: chunk means + plain step + recursion, then a final plain pass."""
    n, d = P.shape
    dt = P.dtype
    w = jnp.where(mask, jnp.maximum(w, 0.0), 0.0)

    def cond(s):
        w, it = s
        return (jnp.sum(w > 0) > chunks) & (it < 64)

    def body(s):
        w, it = s
        act = w > 0
        nnz = jnp.sum(act)
        pos = jnp.cumsum(act) - 1
        cid = jnp.where(act, (pos * chunks) // jnp.maximum(nnz, 1), chunks)
        wc = jax.ops.segment_sum(w, cid, chunks + 1)[:chunks]
        mu = jax.ops.segment_sum(w[:, None] * P, cid, chunks + 1)[:chunks]
        mu = mu / jnp.where(wc > 0, wc, 1.0)[:, None]
        wc_new = caratheodory_core(mu, wc, wc > 0, r)
        fac = jnp.where(wc > 0, wc_new / jnp.where(wc > 0, wc, 1.0), 0.0)
        fac = jnp.concatenate([fac, jnp.zeros(1, dt)])
        return w * fac[cid], it + 1

    w, _ = jax.lax.while_loop(cond, body, (w, jnp.asarray(0, jnp.int32)))
    return caratheodory_core(P, w, w > 0, r)


@cheap_jit
def _cara_jit(P, w, mask):
    return caratheodory_core(P, w, mask, P.shape[1])


@cheap_jit
def _booster_jit(P, w, mask):
    d = P.shape[1]
    return _booster_core(P, w, mask, d, 2 * d + 2)


def _call(fn, points, weights, mask):
    dt = out_dtype(weights)
    with precision(points) as cdt:
        P = f64(points, cdt)
        w = f64(weights, cdt)
        m = jnp.ones(P.shape[0], bool) if mask is None else jnp.asarray(mask, bool)
        return fn(P, w, m).astype(dt)


def caratheodory(points, weights, mask=None):
    """Carathéodory set (paper Thm 2.2): new weights ``w'`` (n,), ``w' ≥ 0``, ≤ d+1 non-zeros,
    ``Σ w' = Σ w`` and ``Σ w'_i p_i = Σ w_i p_i`` (float64 round-off).  Jittable; ``mask``
    excludes points (their weight becomes 0).

    >>> import numpy as np
    >>> square = np.array([[0., 0.], [2., 0.], [0., 2.], [2., 2.], [1., 1.]])
    >>> w = np.asarray(caratheodory(square, np.full(5, 0.2)))
    >>> int((w > 1e-9).sum()) <= 3, bool(np.allclose(w @ square, [1., 1.]))   # d + 1 points
    (True, True)
    """
    return _call(_cara_jit, points, weights, mask)


def caratheodory_booster(points, weights, mask=None):
    """Same contract as :func:`caratheodory`, in ``O(log n)`` rounds of ``2d + 2`` chunks."""
    return _call(_booster_jit, points, weights, mask)
