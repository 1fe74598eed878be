"""Peeling sensitivities (paper Algorithm 2, lines 1–11).

``Q = P, i = 1``; while ``|Q| ≥ 2 rank(Q)²``: ``S_i = ℓ∞-coreset(Q)`` (Algorithm 1),
``s(p) = 2 rank(Q)^1.5 / i`` for ``p ∈ S_i``, ``Q = Q \\ S_i``, ``i += 1``; the remaining
points get ``2 rank(Q)^1.5 / i``.

One ``lax.while_loop`` whose carry is ``(Q mask, s, layer, i, frame of Q)``: ``Q`` shrinks as
a boolean mask over the fixed (n, d) array, Algorithm 1 runs on the masked set each round
(:func:`jaxprune.coreset.linf._linf_core`), and the affine frame of ``Q`` (which holds
``rank(Q)``) is recomputed at the end of the body, so the loop test needs no extra work and
the next round's Algorithm 1 starts from it.  No ``lax.cond`` (it would become a select under
``vmap``), so ``jax.vmap`` over a leading batch of equal-shape point sets is efficient and
each batch member stops independently (the batched while_loop masks finished members).

Conventions: ``rank`` is floored at 1 in the formula (``r_eff = max(rank, 1)``): for a set of
identical points the paper's value ``2·0^1.5/i = 0`` would make them unsampleable, and a
larger value is still a valid upper bound.  ``P`` is a *set*: exact duplicates of a point of
``S_i`` are peeled with it (same layer, same value; ``|S_i| ≤ 2r(r+1)`` counts distinct
points).  Without this, e.g. a thousand dead all-zero neurons would take a thousand rounds
and get arbitrary, index-dependent values.  Each round removes ≥ 1 point, so the loop ends
after ≤ n rounds.  Points outside ``mask`` (padding) get sensitivity 0 and layer 0.
"""

from __future__ import annotations

import jax
import jax.core
import jax.numpy as jnp
import numpy as np

from jaxprune.coreset.linf import LinfConfig, _linf_core
from jaxprune.geometry import cheap_jit, f64, frame_of, out_dtype, precision

PEEL_CONFIG = LinfConfig(tol=2e-2)
"""Default Algorithm-1 knobs inside the peeling loop: MVEE tolerance 2e-2 (the vertices use the
measured radius ``R ≤ 1.02 (r+1) − 1``, so Lemma 2.5's ``1 + R√r ≤ 2r^1.5`` still holds for r ≥ 2,
and r = 1 is exact); 1e-3 is ~5× slower on 4096×8 with near-identical layers."""


def _duplicate_classes(points):
    """Class id per point, equal iff the rows are exactly equal (lexsort, ``O(n log n · d)``)."""
    n, d = points.shape
    order = jnp.lexsort(tuple(points[:, j] for j in range(d - 1, -1, -1)))
    sp = points[order]
    new = jnp.concatenate([jnp.ones(1, bool), jnp.any(sp[1:] != sp[:-1], axis=1)])
    return jnp.zeros(n, jnp.int32).at[order].set((jnp.cumsum(new) - 1).astype(jnp.int32))


def _peel_core(points, mask, cfg: LinfConfig):
    """Returns (s (n,), layer (n,) int32, rounds)."""
    n = points.shape[0]
    dt = points.dtype

    def value(r, i):
        re = jnp.maximum(r, 1).astype(dt)
        return 2.0 * re**1.5 / i.astype(dt)

    def cond(st):
        Q, _, _, i, fr = st
        cnt = jnp.sum(Q)
        re = jnp.maximum(fr.rank, 1)
        return (cnt > 0) & (cnt >= 2 * re * re) & (i <= n)

    gid = _duplicate_classes(points)

    def body(st):
        Q, s, layer, i, fr = st
        S = _linf_core(points, Q, cfg, fr).mask & Q
        # exact duplicates of a coreset point join it (same point of the set P)
        hit = jax.ops.segment_max(S.astype(jnp.int32), gid, num_segments=n)
        S = (hit[gid] > 0) & Q
        s = jnp.where(S, value(fr.rank, i), s)
        layer = jnp.where(S, i, layer)
        Q = Q & ~S
        return Q, s, layer, i + 1, frame_of(points, Q, cfg.rtol)

    st0 = (
        mask,
        jnp.zeros(n, dt),
        jnp.zeros(n, jnp.int32),
        jnp.asarray(1, jnp.int32),
        frame_of(points, mask, cfg.rtol),
    )
    Q, s, layer, i, fr = jax.lax.while_loop(cond, body, st0)
    r = fr.rank
    s = jnp.where(Q, value(r, i), s)
    layer = jnp.where(Q, i, layer)
    return s, layer, i - 1


@cheap_jit(static_argnames=("cfg",))
def _peel_jit(points, mask, cfg):
    return _peel_core(points, mask, cfg)


def _run(points, mask, cfg):
    if not isinstance(points, jax.core.Tracer):
        p = np.asarray(points)
        if p.ndim != 2 or p.shape[0] == 0:
            raise ValueError(
                f"sensitivities: points must be a non-empty (n, d) array, got {p.shape}"
            )
        if not np.all(
            np.isfinite(
                p
                if mask is None or isinstance(mask, jax.core.Tracer)
                else p[np.asarray(mask, bool)]
            )
        ):
            raise ValueError("sensitivities: points contain NaN or inf")
    dt = out_dtype(points)
    with precision(points) as cdt:
        P = f64(points, cdt)
        m = jnp.ones(P.shape[0], bool) if mask is None else jnp.asarray(mask, bool)
        P = jnp.where(m[:, None], P, 0.0)  # padding may hold anything
        s, layer, rounds = _peel_jit(P, m, cfg)
        return s.astype(dt), layer, rounds


def sensitivities(points, mask=None, *, return_layers: bool = False, cfg: LinfConfig = PEEL_CONFIG):
    """Upper bounds ``s(p)`` of Algorithm 2 (lines 1–11): ``2 rank(Q)^1.5 / i`` by peel index.

    ``points`` (n, d) — typically already projected to k = 2..10 dims; ``mask`` (n,) marks
    real points (padding gets 0).  Deterministic, jittable, ``jax.vmap``-able over a leading
    axis of equal-shape sets.  ``return_layers=True`` also returns the peel index ``i`` of
    each point (int32, 0 for padding).  Float64 inside; output in the input's float dtype.

    >>> import numpy as np
    >>> points = np.random.default_rng(0).normal(size=(20, 3))
    >>> s = np.asarray(sensitivities(points))
    >>> s.shape, bool((s > 0).all())
    ((20,), True)
    """
    s, layer, _ = _run(points, mask, cfg)
    return (s, layer) if return_layers else s


def peeling_layers(points, mask=None, *, cfg: LinfConfig = PEEL_CONFIG):
    """Peel index ``i`` (1 = outermost ℓ∞-coreset) of every point; 0 for padding."""
    return _run(points, mask, cfg)[1]
