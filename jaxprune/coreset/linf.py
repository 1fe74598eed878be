"""ℓ∞-coreset for ℓ1 regression (paper Algorithm 1, Lemma 2.5).

Steps, all on fixed shapes inside one jitted function:

1. affine frame of the masked points (Alg. 1 lines 1–2): whitened coordinates ``y`` in the
   affine hull, ``r = rank``, dead coordinates exactly 0 (:mod:`jaxprune.geometry.subspace`);
2. Khachiyan MVEE weights ``u`` in that frame (line 5, :mod:`jaxprune.geometry.mvee`);
3. candidates = ``supp u'`` with ``u'`` = ``u`` restricted to its top-``K`` entries (all of
   ``supp u`` in practice; interior points never enter); with the
   restricted weights ``u'`` set ``c = Σ u' y``, ``S = Σ u' (y−c)(y−c)ᵀ``,
   ``R_in = max_{u'_i>0} (y_i−c)ᵀS⁻¹(y_i−c)`` and ``R_out`` = the same max over all points;
   then ``{(x−c)ᵀS⁻¹(x−c) ≤ 1/R_in} ⊆ Conv(supp u')`` and ``P ⊆ {… ≤ R_out}``
   (support-function argument), so with ``S = Σ σ_j e_j e_jᵀ`` the ``2r`` vertices
   ``c ± e_j sqrt(σ_j / R_in)`` (line 6; the paper's ``c ± v_j/(r√λ_j)`` with the exact radius
   in place of ``r``) are guaranteed to lie in the hull of the candidates;
4. each vertex is written as a convex combination of the candidates (Wolfe's min-norm-point
   algorithm, :mod:`jaxprune.geometry.hull`; exact up to round-off, where away-step
   Frank–Wolfe needed thousands of iterations) and reduced to ≤ ``r + 1`` points by
   Carathéodory (line 8; usually already the case, then a no-op);
5. ``S`` = union (line 10), so ``|S| ≤ 2r(r+1)``.

Lemma 2.5 then holds with ``1 + sqrt(R_in R_out) sqrt(r) ≤ 2 r^1.5`` (``R ≈ r``) for every
``X, v``.  Rank 0 (all masked points equal): ``S`` = the first masked point.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.core
import jax.numpy as jnp
import numpy as np

from jaxprune.geometry import (
    DEFAULT_RTOL,
    caratheodory_core,
    cheap_jit,
    ellipsoid_of,
    f64,
    frame_of,
    min_norm_point_core,
    mvee_frame,
    out_dtype,
    precision,
)


class LinfConfig(NamedTuple):
    """Static knobs of Algorithm 1 (hashable; used as a jit static argument)."""

    tol: float = 1e-3  # MVEE tolerance
    max_iter: int = 5_000  # MVEE iterations cap
    rtol: float = DEFAULT_RTOL  # affine-rank threshold
    n_candidates: int = 0  # K (0 → (d+1)(d+2)/2 + 2d + 16, capped at n)
    fw_tol: float = 1e-10  # convex-combination residual target (whitened units)
    fw_iter: int = 500  # Wolfe min-norm-point iterations cap


class LinfCoreset(NamedTuple):
    """Algorithm 1 output with diagnostics (original coordinates)."""

    mask: jax.Array  # (n,) bool, the coreset S
    rank: jax.Array  # () int, r = rank(P)
    vertices: jax.Array  # (2d, d) vertices of the shrunk ellipsoid (first d: c+a, then c−a)
    vertex_valid: jax.Array  # (2d,) bool, the 2r real ones
    vertex_weights: jax.Array  # (2d, n) Carathéodory weights of each vertex (≤ r+1 non-zeros)
    residual: jax.Array  # (2d,) ‖Σ w p − vertex‖ (original units; includes the
    #                            distance of P to its rank-r affine hull, ~0 for exact rank)
    r_in: jax.Array  # () radius used for the inner ellipsoid
    r_out: jax.Array  # () radius that encloses all points


def _n_cand(n, d, cfg):
    k = cfg.n_candidates or ((d + 1) * (d + 2) // 2 + 2 * d + 16)
    return int(min(n, k))


def _linf_core(points, mask, cfg: LinfConfig, fr=None):
    """Masked Algorithm 1; returns :class:`LinfCoreset`.  Pure, fixed shapes, jit/vmap-able.
    ``fr``: the masked points' frame (``frame_of(points, mask, cfg.rtol)``) if already known."""
    n, d = points.shape
    dt = points.dtype
    if fr is None:
        fr = frame_of(points, mask, cfg.rtol)
    Y, r = fr.coords, fr.rank
    u, _, _ = mvee_frame(Y, mask, r, cfg.tol, cfg.max_iter)
    K = _n_cand(n, d, cfg)
    uc, cand = jax.lax.top_k(u, K)
    u_r = jnp.zeros(n, dt).at[cand].set(uc)
    u_r = u_r / jnp.sum(u_r)
    c, S, _, r_out, r_in = ellipsoid_of(Y, mask, r, u_r)
    act = jnp.arange(d) < r
    lam, V = jnp.linalg.eigh(S - jnp.diag(1.0 - act.astype(dt)))  # dead block → −1
    axis_ok = lam > 0
    a = (V * jnp.sqrt(jnp.maximum(lam, 0.0) / jnp.maximum(r_in, 1e-30))[None, :]).T
    verts = jnp.concatenate([c + a, c - a], axis=0)  # (2d, d)
    vvalid = jnp.concatenate([axis_ok, axis_ok])
    Pc = Y[cand]
    cmask = mask[cand] & (uc > 0)  # E_in ⊆ Conv(supp u') — use only the support
    fw = jax.vmap(lambda t: min_norm_point_core(Pc, cmask, t, cfg.fw_tol, cfg.fw_iter))
    wv, _, _ = fw(verts)  # (2d, K)
    wv = jax.vmap(lambda w: caratheodory_core(Pc, w, cmask, r))(wv)
    wv = wv * vvalid[:, None]
    sel = jnp.any(wv > 0, axis=0)
    S_mask = jnp.zeros(n, bool).at[cand].set(sel) & mask
    first = jnp.zeros(n, bool).at[jnp.argmax(mask)].set(True) & mask
    S_mask = jnp.where((r == 0) | ~jnp.any(S_mask), first, S_mask)
    # diagnostics in original coordinates
    W_full = jnp.zeros((2 * d, n), dt).at[:, cand].set(wv)
    verts_p = fr.offset + verts @ fr.W_pinv
    res = jnp.linalg.norm(W_full @ points - verts_p, axis=1) * vvalid
    return LinfCoreset(S_mask, r, verts_p, vvalid, W_full, res, r_in, r_out)


@cheap_jit(static_argnames=("cfg",))
def _linf_jit(points, mask, cfg):
    return _linf_core(points, mask, cfg)


def _check_points(points, name):
    if isinstance(points, jax.core.Tracer):
        return
    p = np.asarray(points)
    if p.ndim != 2 or p.shape[0] == 0:
        raise ValueError(f"{name}: points must be a non-empty 2-D array (n, d), got {p.shape}")
    if not np.all(np.isfinite(p)):
        raise ValueError(f"{name}: points contain NaN or inf")


def linf_coreset_masked(points, mask, *, return_info: bool = False, cfg: LinfConfig = LinfConfig()):
    """Algorithm 1 on the masked points: mask (n,) of ``S`` (``⊆ mask``), or the
    :class:`LinfCoreset` record with ``return_info=True``.  No Python-side checks (jit/vmap
    friendly); float64 inside."""
    dt = out_dtype(points)
    with precision(points) as cdt:
        out = _linf_jit(f64(points, cdt), jnp.asarray(mask, bool), cfg)
        if not return_info:
            return out.mask
        return out._replace(
            vertices=out.vertices.astype(dt),
            vertex_weights=out.vertex_weights.astype(dt),
            residual=out.residual.astype(dt),
            r_in=out.r_in.astype(dt),
            r_out=out.r_out.astype(dt),
        )


def linf_coreset(points, mask=None, *, return_info: bool = False, cfg: LinfConfig = LinfConfig()):
    """ℓ∞-coreset ``S ⊆ P`` of Algorithm 1 as a boolean mask (n,).

    ``|S| ≤ 2r(r+1)`` and (Lemma 2.5) ``max_P ‖(q−v)X‖₁ / max_S ‖(q−v)X‖₁ ∈ [1, 2r^1.5]``
    for all ``X, v``.  Works for any affine rank (via the affine subspace).  Raises
    ``ValueError`` for NaN/inf.  ``return_info=True`` gives the :class:`LinfCoreset` record.

    >>> import numpy as np
    >>> square = np.array([[0., 0.], [2., 0.], [0., 2.], [2., 2.], [1., 1.]])
    >>> np.asarray(linf_coreset(square)).tolist()     # the corners, not the centre
    [True, True, True, True, False]
    """
    _check_points(points, "linf_coreset")
    n = np.shape(points)[0]
    m = np.ones(n, bool) if mask is None else mask
    return linf_coreset_masked(points, m, return_info=return_info, cfg=cfg)
