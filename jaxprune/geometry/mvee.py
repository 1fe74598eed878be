"""Minimum-volume enclosing ellipsoid (Löwner/John ellipsoid, paper Thm 2.1; DESIGN §3.2).

Khachiyan's algorithm with Todd–Yıldırım (Wolfe) away steps on the lifted points
``q_i = (y_i, 1)``: weights ``u`` on the simplex, ``X(u) = Σ u_i q_i q_iᵀ``,
``M_i = q_iᵀ X⁻¹ q_i``, ``D = r + 1``.  Step toward ``j = argmax M`` (or away from
``j = argmin_{u_j>0} M``) with ``α = (M_j − D) / (D (M_j − 1))`` (away steps clipped at
``−u_j/(1−u_j)``, a "drop").  ``X⁻¹`` and all ``M`` are updated by Sherman–Morrison in
``O(n r)`` per iteration, all inside one ``lax.while_loop``.  Stop when
``max M ≤ (1+tol) D`` and ``min_{u>0} M ≥ (1−tol) D``.  Initial weights: Kumar–Yıldırım
(two extreme points per direction; a fixed-length ``lax.fori_loop`` over the d directions
before the main loop), which keeps the support — and the iteration count — independent of
``n``.

Rank handling (masked variant).  The masked points are first put in their whitened affine
frame (:func:`jaxprune.geometry.subspace._frame`): ``d`` fixed columns, the first
``r = rank`` of them carrying coordinates with identity covariance, the other ``d − r``
exactly zero.  In the lifted ``(d+1)``-space the matrix ``X(u)`` is then singular on the
``d − r`` dead coordinates, so ``X`` is regularised there by the identity:
``X = Σ u_i q_i q_iᵀ + diag(1[j ≥ r])``.  Because every ``q_i`` is zero on the dead block,
``X`` is block diagonal and ``M_i`` is *exactly* the r-dimensional leverage; Sherman–Morrison
only rescales the dead block (harmless).  ``D = r + 1`` is traced, so one compiled program
serves every rank.  MVEE is affine invariant, so whitening changes nothing but conditioning.

Ellipsoid.  From the final ``u``: ``c = Σ u_i y_i``, ``S = Σ u_i (y_i−c)(y_i−c)ᵀ``,
``R = max_i (y_i−c)ᵀ S⁻¹ (y_i−c)`` (measured over the points, ``r ≤ R ≤ (1+tol)(r+1) − 1``
at convergence).  The returned shape is ``G = S⁻¹ / R`` (paper: ``(1/r) S⁻¹``, here enlarged
to the measured radius), so containment of every point holds by construction, not by
assumption.  For any ``u`` also ``{(x−c)ᵀ S⁻¹ (x−c) ≤ 1/R_u} ⊆ Conv(supp u)`` with ``R_u``
the max over ``supp u`` (support-function argument), which :mod:`jaxprune.coreset.linf` uses.
"""
from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxprune.geometry._precision import f64, out_dtype, precision
from jaxprune.geometry.subspace import DEFAULT_RTOL, _frame_t

DEFAULT_MAX_ITER = 20_000


class MVEEResult(NamedTuple):
    """``E = {x : (x − center)ᵀ shape (x − center) ≤ 1}`` encloses every (masked) point.

    ``weights`` are the Khachiyan dual weights (on the simplex, zero on masked-out points);
    ``radius`` is the measured ``R = max_i (p_i−c)ᵀ S⁻¹ (p_i−c)`` (``≈ rank`` at optimum);
    for a rank-deficient masked set ``shape`` is PSD of rank ``rank`` and ``E`` is the flat
    ellipsoid inside the affine hull.
    """
    center: jax.Array
    shape: jax.Array
    weights: jax.Array
    converged: jax.Array
    iterations: jax.Array
    rank: jax.Array
    radius: jax.Array


def _first(hit):
    """Index of the first ``True`` in a boolean vector (clamped to ``n − 1`` if none).

    An ``int32`` min-reduction: XLA:CPU vectorises it, unlike the (value, index) pair
    reduction behind ``jnp.argmax``, which costs ~3× as much per element.
    """
    n = hit.shape[-1]
    i = jnp.min(jnp.where(hit, jnp.arange(n, dtype=jnp.int32), n))
    return jnp.minimum(i, n - 1)


def _lifted_quad(yt, A, b, c0):
    """``yᵀ A y + 2 bᵀ y + c0`` for every column ``y`` of ``yt`` (k, n) → (n,).

    With ``[[A, b], [bᵀ, c0]] = X⁻¹`` this is the leverage ``qᵀ X⁻¹ q`` of ``q = (y, 1)``;
    with ``A = S⁻¹, b = −S⁻¹ c, c0 = cᵀ S⁻¹ c`` it is ``(y − c)ᵀ S⁻¹ (y − c)``.  One
    ``(k, k) × (k, n)`` product and one fused multiply-reduce over contiguous rows.
    """
    return jnp.sum((A @ yt + 2.0 * b[:, None]) * yt, axis=0) + c0


def _ky_init_t(yt, mask, r):
    """Kumar–Yıldırım start on frame coordinates ``yt`` (k, n): argmax/argmin along ``r``
    successive orthogonal directions.

    Returns ``(idx, wts)``, both (2k,): the two extreme points of direction ``j`` are
    ``idx[2j], idx[2j+1]``, each with weight ``1/(2r)`` (0 for ``j ≥ r``); a point picked
    twice appears twice.  ``u0 = zeros(n).at[idx].add(wts)``.  Rank 0: the first masked point.
    """
    k, n = yt.shape
    dt = yt.dtype
    act = (jnp.arange(k) < r).astype(dt)

    def step(j, carry):
        B, idx = carry
        pc = jnp.diag(act) - B @ B.T
        col = jnp.argmax(jnp.diag(pc))
        b = pc[:, col]
        b = b / jnp.maximum(jnp.linalg.norm(b), 1e-30)
        t = b @ yt
        tp = jnp.where(mask, t, -jnp.inf)
        tm = jnp.where(mask, t, jnp.inf)
        ip = _first(tp == jnp.max(tp))
        im = _first(tm == jnp.min(tm))
        delta = pc @ (yt[:, ip] - yt[:, im])
        delta = delta / jnp.maximum(jnp.linalg.norm(delta), 1e-30)
        B = B.at[:, j].set(jnp.where(j < r, delta, 0.0))
        idx = idx.at[2 * j].set(ip).at[2 * j + 1].set(im)
        return B, idx

    _, idx = jax.lax.fori_loop(0, k, step, (jnp.zeros((k, k), dt), jnp.zeros(2 * k, jnp.int32)))
    slot = jnp.arange(2 * k)
    wts = jnp.where(slot < 2 * r, 1.0 / jnp.maximum(2 * r, 1).astype(dt), 0.0)
    idx = jnp.where(r == 0, jnp.where(slot == 0, _first(mask), 0), idx).astype(jnp.int32)
    wts = jnp.where(r == 0, (slot == 0).astype(dt), wts)
    return idx, wts


def _khachiyan_t(yt, mask, r, idx0, w0, tol, max_iter):
    """Core loop (one ``lax.while_loop``) on frame coordinates ``yt`` (k, n).

    Starts from the sparse weights ``(idx0, w0)``, so ``X(u0)`` is a sum over ``2k`` points.
    Carries ``u``, ``X`` and ``X⁻¹`` (both rank-one updated: ``X ← (1−α) X + α q qᵀ`` and
    Sherman–Morrison), the leverages ``M`` (rank-one updated, never recomputed) and the two
    extreme values ``max M``, ``min_{u>0} M``; per iteration one pass ``z = (X⁻¹ q_j)ᵀ Q``
    over the points, the fused ``M``/``u`` updates and three cheap reductions (max, min over
    the support, position of the chosen extreme).  Returns ``(u, iterations, converged, X)``.
    """
    k, n = yt.shape
    dt = yt.dtype
    reg = jnp.concatenate([(jnp.arange(k) >= r).astype(dt), jnp.zeros(1, dt)])
    D = (r + 1).astype(dt)
    qs = jnp.concatenate([yt[:, idx0], jnp.ones((1, idx0.shape[0]), dt)], axis=0)
    X = (qs * w0[None, :]) @ qs.T + jnp.diag(reg)
    Xinv = jnp.linalg.inv(X)
    Xinv = 0.5 * (Xinv + Xinv.T)
    M = _lifted_quad(yt, Xinv[:k, :k], Xinv[:k, k], Xinv[k, k])
    M = jnp.where(mask, M, -jnp.inf)                                    # −inf stays −inf
    u = jnp.zeros(n, dt).at[idx0].add(w0)

    def stats(u, M):
        return jnp.max(M), jnp.min(jnp.where(u > 0, M, jnp.inf))       # u = 0 off the mask

    def cond(s):
        it, mx, mn = s[4:]
        return (it < max_iter) & ((mx / D - 1.0 > tol) | (1.0 - mn / D > tol))

    def body(s):
        u, X, Xinv, M, it, mx, mn = s
        fw = mx / D - 1.0 >= 1.0 - mn / D
        j = _first(jnp.where(fw, M == mx, (M == mn) & (u > 0)))
        kap = M[j]
        uj = u[j]
        alpha = (kap - D) / (D * jnp.where(kap - 1.0 == 0, 1e-30, kap - 1.0))
        amin = -uj / jnp.maximum(1.0 - uj, 1e-30)
        drop = (~fw) & (alpha <= amin)
        alpha = jnp.where(fw, alpha, jnp.maximum(alpha, amin))
        uj_new = jnp.where(drop, 0.0, jnp.maximum((1.0 - alpha) * uj + alpha, 0.0))
        u = ((1.0 - alpha) * u).at[j].set(uj_new)
        q = jnp.concatenate([yt[:, j], jnp.ones(1, dt)])
        w = Xinv @ q
        z = w[:k] @ yt + w[k]
        g = alpha / (1.0 - alpha + alpha * kap)
        Xinv = (Xinv - g * jnp.outer(w, w)) / (1.0 - alpha)
        X = (1.0 - alpha) * X + alpha * jnp.outer(q, q)
        M = (M - g * z * z) / (1.0 - alpha)
        return (u, X, Xinv, M, it + 1, *stats(u, M))

    s0 = (u, X, Xinv, M, jnp.asarray(0, jnp.int32), *stats(u, M))
    u, X, _, _, it, mx, mn = jax.lax.while_loop(cond, body, s0)
    conv = (mx / D - 1.0 <= tol) & (1.0 - mn / D <= tol)
    return u, it, conv, X


def _ellipsoid_from_x(yt, mask, r, X):
    """(c, S⁻¹, R_out) in frame coordinates from the carried ``X = Σ u q qᵀ`` (+ dead block).

    ``X = s [[S + c cᵀ, c], [cᵀ, 1]]`` with ``s = Σ u`` (= 1 up to round-off), so ``c`` and
    ``S`` cost nothing; the only pass over the points is the containment radius
    ``R_out = max_i (y_i − c)ᵀ S⁻¹ (y_i − c)``, measured with exactly the returned ``c``, ``S⁻¹``.
    """
    k = yt.shape[0]
    dt = yt.dtype
    act = (jnp.arange(k) < r).astype(dt)
    aa = jnp.outer(act, act)
    s = X[k, k]
    c = X[:k, k] / s * act
    S = (X[:k, :k] / s - jnp.outer(c, c)) * aa
    S = 0.5 * (S + S.T)
    Sinv = jnp.linalg.inv(S + jnp.diag(1.0 - act)) * aa
    Sinv = 0.5 * (Sinv + Sinv.T)
    b = -(Sinv @ c)
    dist = _lifted_quad(yt, Sinv, b, -(c @ b))
    r_out = jnp.max(jnp.where(mask, dist, 0.0))
    return c, Sinv, r_out


def _ellipsoid(Y, mask, r, u):
    """(c, S, S⁻¹, R_out, R_in) in frame coordinates from weights ``u`` (see module doc)."""
    k = Y.shape[1]
    dt = Y.dtype
    act = (jnp.arange(k) < r).astype(dt)
    yt = Y.T
    c = (yt @ u) * act
    yct = (yt - c[:, None]) * act[:, None]
    S = (yct * u[None, :]) @ yct.T
    Sinv = jnp.linalg.inv(S + jnp.diag(1.0 - act)) * jnp.outer(act, act)
    Sinv = 0.5 * (Sinv + Sinv.T)
    dist = jnp.sum((Sinv @ yct) * yct, axis=0)
    r_out = jnp.max(jnp.where(mask, dist, 0.0))
    r_in = jnp.max(jnp.where(mask & (u > 0), dist, 0.0))
    return c, S, Sinv, r_out, r_in


def _mvee_frame_t(yt, mask, r, tol, max_iter):
    """MVEE on transposed frame coordinates: (u, it, converged, X)."""
    idx0, w0 = _ky_init_t(yt, mask, r)
    return _khachiyan_t(yt, mask, r, idx0, w0, tol, max_iter)


def _mvee_frame(Y, mask, r, tol, max_iter):
    """MVEE in frame coordinates ``Y`` (n, k): (u, it, converged)."""
    u, it, conv, _ = _mvee_frame_t(Y.T, mask, r, tol, max_iter)
    return u, it, conv


@partial(jax.jit, static_argnames=("tol", "max_iter", "rtol", "out"))
def _mvee_masked_core(points, mask, tol, max_iter, rtol, out):
    if mask is None:
        mask = jnp.ones(points.shape[0], bool)
    fr = _frame_t(points, mask, rtol)
    u, it, conv, X = _mvee_frame_t(fr.coords_t, mask, fr.rank, tol, max_iter)
    c, Sinv, r_out = _ellipsoid_from_x(fr.coords_t, mask, fr.rank, X)
    center = fr.offset + c @ fr.W_pinv
    radius = jnp.maximum(r_out, 1e-30) * (1.0 + 1e-12)
    shape = fr.W @ (Sinv / radius) @ fr.W.T
    shape = 0.5 * (shape + shape.T)
    o = jnp.dtype(out)
    return MVEEResult(center.astype(o), shape.astype(o), u.astype(o), conv, it, fr.rank,
                      r_out.astype(o))


def mvee_masked(points, mask, tol: float = 1e-3, max_iter: int = DEFAULT_MAX_ITER,
                rtol: float = DEFAULT_RTOL) -> MVEEResult:
    """MVEE of the masked points, no Python-side checks (jit/vmap friendly).

    Works for any affine rank ``r`` (0 … d) of the masked subset: the ellipsoid lives in the
    affine hull (``shape`` has rank ``r``); see the module docstring for the regularisation.
    Requires at least one masked point.
    """
    dt = out_dtype(points)
    with precision(points) as cdt:
        m = None if mask is None else jnp.asarray(mask, bool)
        return _mvee_masked_core(f64(points, cdt), m, float(tol), int(max_iter), float(rtol),
                                 dt.name)


def _check_full_rank(points, rtol):
    """Python-boundary validation for :func:`mvee` (raises ValueError)."""
    p = np.asarray(points, dtype=np.float64)
    if p.ndim != 2:
        raise ValueError(f"mvee: points must be 2-D (n, d), got shape {p.shape}")
    n, d = p.shape
    if not np.all(np.isfinite(p)):
        raise ValueError("mvee: points contain NaN or inf")
    if n <= d:
        raise ValueError(f"mvee: need n > d points to span R^d affinely, got n={n}, d={d}")
    if np.all(p == p[0]):
        raise ValueError("mvee: all points are equal (affine rank 0)")
    return p


def mvee(points, tol: float = 1e-3, max_iter: int = DEFAULT_MAX_ITER,
         rtol: float = DEFAULT_RTOL) -> MVEEResult:
    """Löwner ellipsoid ``E(G, c) ⊇ P`` of full-dimensional points (paper Thm 2.1, DESIGN §3.2).

    ``(1 − tol)``-approximate in the Todd–Yıldırım sense; ``shape = S⁻¹/R`` with the measured
    radius ``R`` so that every point is inside.  Raises ``ValueError`` for non-finite input,
    ``n ≤ d``, equal points or affine rank < d (use :func:`mvee_masked` for those).
    Computed in float64; floating outputs are cast back to the input dtype.
    """
    if isinstance(points, jax.core.Tracer):
        raise ValueError("mvee validates its input; inside jit/vmap use mvee_masked")
    p = _check_full_rank(points, rtol)
    n, d = p.shape
    res = mvee_masked(np.asarray(points), None, tol, max_iter, rtol)
    if int(res.rank) < d:
        raise ValueError(f"mvee: points lie in a lower-dimensional affine subspace "
                         f"(affine rank {int(res.rank)} < d={d}); use mvee_masked or project "
                         "with jaxprune.geometry.affine_subspace first")
    return res
