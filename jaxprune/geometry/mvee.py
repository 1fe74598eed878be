"""Minimum-volume enclosing ellipsoid (Löwner/John ellipsoid, paper Thm 2.1).

Khachiyan's algorithm with Todd–Yıldırım (Wolfe) away steps on the lifted points
``q_i = (y_i, 1)``: weights ``u`` on the simplex, ``X(u) = Σ u_i q_i q_iᵀ``,
``M_i = q_iᵀ X⁻¹ q_i``, ``D = r + 1``.  Step toward ``j = argmax M`` (or away from
``j = argmin_{u_j>0} M``) with ``α = (M_j − D) / (D (M_j − 1))`` (away steps clipped at
``−u_j/(1−u_j)``, a "drop").  ``X⁻¹`` and all ``M`` are updated by Sherman–Morrison in
``O(n r)`` per iteration, all inside one ``lax.while_loop``.  Stop when
``max M ≤ (1+tol) D`` and ``min_{u>0} M ≥ (1−tol) D``.  Initial weights: Kumar–Yıldırım
(two extreme points per direction, computed once before the main loop), which keeps the
support — and the iteration count — independent of ``n``.

Cost model (XLA:CPU).  Few iterations run at small ``d`` or large ``n``, so the single passes
over the data and the number of XLA kernels matter as much as the loop.  Hence: everything
works on the transposed frame coordinates ``Y`` (d, n) (reductions and products over the long
axis run on contiguous rows); the loop body makes one product ``z = (X⁻¹ q_j)ᵀ Q`` and one
fused ``M`` update per step, keeps the weights as a scalar times a vector (no O(n) rescaling)
and reads only the carried ``M`` (so XLA updates it in place); ``X(u0)`` is summed over the
``2d`` start points only; index searches are ``int32`` min-reductions rather than the slower
(value, index) pair reductions of ``argmax``; the centre and ``S⁻¹`` come from quantities
carried by the loop (``Σ u q`` and ``X⁻¹``), so the only pass after the loop is the
containment radius; and :func:`mvee` validates without an extra pass over the points.

Rank handling (masked variant).  The masked points are first put in their whitened affine
frame (:func:`jaxprune.geometry.subspace._frame_pt`): ``d`` fixed columns, the first
``r = rank`` of them carrying coordinates with identity covariance, the other ``d − r``
exactly zero.  In the lifted ``(d+1)``-space the matrix ``X(u)`` is then singular on the
``d − r`` dead coordinates, so ``X`` is regularised there by the identity:
``X = Σ u_i q_i q_iᵀ + diag(1[j ≥ r])``.  Because every ``q_i`` is zero on the dead block,
``X`` is block diagonal and ``M_i`` is *exactly* the r-dimensional leverage; Sherman–Morrison
only rescales the dead block (harmless).  ``D = r + 1`` is traced, so one compiled program
serves every rank.  MVEE is affine invariant, so whitening changes nothing but conditioning.

Ellipsoid.  From the final ``u``: ``c = Σ u_i y_i``, ``S = Σ u_i (y_i−c)(y_i−c)ᵀ``
(``S⁻¹ = X⁻¹[:r, :r]`` by the block inverse of ``X``),
``R = max_i (y_i−c)ᵀ S⁻¹ (y_i−c)`` (measured over the points, ``r ≤ R ≤ (1+tol)(r+1) − 1``
at convergence).  The returned shape is ``G = S⁻¹ / R`` (paper: ``(1/r) S⁻¹``, here enlarged
to the measured radius), so containment of every point holds by construction, not by
assumption.  For any ``u`` also ``{(x−c)ᵀ S⁻¹ (x−c) ≤ 1/R_u} ⊆ Conv(supp u)`` with ``R_u``
the max over ``supp u`` (support-function argument), which :mod:`jaxprune.coreset.linf` uses.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.core
import jax.numpy as jnp
import numpy as np

from jaxprune.geometry._compile import cheap_jit
from jaxprune.geometry._precision import f64, out_dtype, precision
from jaxprune.geometry.subspace import DEFAULT_RTOL, _frame_pt

DEFAULT_MAX_ITER = 20_000

# Size thresholds (static shapes, so each picks code at trace time): up to this many frame
# coordinates the Kumar–Yıldırım directions are unrolled, the leverages are one fused
# elementwise kernel instead of a product, and a host (NumPy) input is transposed by NumPy.
_KY_UNROLL = 8
_QUAD_UNROLL_K = 8
_HOST_TRANSPOSE_D = 4


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


def _argmax_rows(v):
    """First index of the maximum of each row of ``v`` (m, n): one max- and one
    ``int32`` min-reduction over all rows together (see :func:`_first`)."""
    n = v.shape[-1]
    top = jnp.max(v, axis=-1, keepdims=True)
    i = jnp.min(jnp.where(v == top, jnp.arange(n, dtype=jnp.int32), n), axis=-1)
    return jnp.minimum(i, n - 1)


def _lifted_quad(yt, A, b, c0):
    """``yᵀ A y + 2 bᵀ y + c0`` for every column ``y`` of ``yt`` (k, n) → (n,), ``A`` symmetric.

    With ``[[A, b], [bᵀ, c0]] = X⁻¹`` this is the leverage ``qᵀ X⁻¹ q`` of ``q = (y, 1)``;
    with ``A = S⁻¹, b = −S⁻¹ c, c0 = cᵀ S⁻¹ c`` it is ``(y − c)ᵀ S⁻¹ (y − c)``.  Small ``k``:
    one elementwise loop over the rows of ``yt`` (``k(k+1)/2`` products per point, a single
    fused kernel); larger ``k``: one ``(k, k) × (k, n)`` product and a fused multiply-reduce.
    """
    k = yt.shape[0]
    if k <= _QUAD_UNROLL_K:
        acc = c0
        for i in range(k):
            inner = A[i, i] * yt[i] + 2.0 * b[i]
            for j in range(i + 1, k):
                inner = inner + 2.0 * A[i, j] * yt[j]
            acc = acc + inner * yt[i]
        return acc
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

    if k <= _KY_UNROLL:
        # straight-line code: no loop machinery, and the picks are stacked once at the end
        # (no scatter per pick).  The projector is formed as diag(act) − B Bᵀ exactly as in
        # the loop below: later directions are orthogonal to earlier gaps, so earlier picks
        # tie there and only identical arithmetic keeps the same tie-breaks.
        deltas = []
        picks = []
        for j in range(k):
            if j == 0:
                pc = jnp.diag(act)
                t = yt[0]  # b = e_0 (r ≥ 1; for r = 0 the picks are unused)
            else:
                B = jnp.stack(deltas + [jnp.zeros(k, dt)] * (k - j), axis=1)
                pc = jnp.diag(act) - B @ B.T
                b = pc[:, jnp.argmax(jnp.diag(pc))]
                t = (b / jnp.maximum(jnp.linalg.norm(b), 1e-30)) @ yt
            ip, im = _argmax_rows(jnp.where(mask, jnp.stack([t, -t]), -jnp.inf))
            gap = yt[:, ip] - yt[:, im]
            delta = act * gap if j == 0 else pc @ gap
            delta = delta / jnp.maximum(jnp.linalg.norm(delta), 1e-30)
            deltas.append(jnp.where(j < r, delta, 0.0))
            picks += [ip, im]
        idx = jnp.stack(picks)
    else:

        def step(j, carry):
            B, idx = carry
            pc = jnp.diag(act) - B @ B.T
            b = pc[:, jnp.argmax(jnp.diag(pc))]
            t = (b / jnp.maximum(jnp.linalg.norm(b), 1e-30)) @ yt
            ip, im = _argmax_rows(jnp.where(mask, jnp.stack([t, -t]), -jnp.inf))
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
    """Core loop (a ``lax.while_loop``) on frame coordinates ``yt`` (k, n).

    Starts from the sparse weights ``(idx0, w0)``, so ``X(u0)`` is a sum over ``2k`` points.
    Carries ``X⁻¹`` (Sherman–Morrison), the leverages ``M`` (rank-one updated, never
    recomputed) and the weights as ``u = sc · v`` (a step rescales the scalar ``sc`` and writes
    one entry of ``v``: no pass over the points; ``sc`` is folded into ``v`` at the end, or
    earlier by an outer loop should it ever leave ``[√tiny, 1/√tiny]``).  Each pass of the
    body first reads the carried ``M`` — ``max M``, ``min_{u>0} M``, the convergence test and
    the position of the chosen extreme — and then makes the step (``α = 0`` once converged,
    and the loop stops).
    Reading only the carried ``M`` lets XLA update it in place instead of copying it and
    re-deriving the new values inside every reduction; per step that leaves one product
    ``z = (X⁻¹ q_j)ᵀ Q`` and one fused ``M`` update over the points, plus the reductions.
    It also carries ``Σ u q = (Σ u y, Σ u)`` (``k + 1`` numbers), which gives the centre without
    a pass at the end.  The body runs once more than there are steps: that pass finds the
    stopping test true and leaves the state unchanged.
    Returns ``(u, iterations, converged, X⁻¹, Σ u q, M)``.
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
    M = jnp.where(mask, M, -jnp.inf)  # −inf stays −inf
    v = jnp.zeros(n, dt).at[idx0].add(w0)
    cq = qs @ w0  # Σ u q = (Σ u y, Σ u)
    lo = float(np.sqrt(np.finfo(dt).tiny))

    def cond(s):  # sc leaving its safe range (never seen in
        return ~s[-1] & (s[1] > lo) & (s[1] < 1.0 / lo)  # practice) pauses the loop

    def body(s):
        v, sc, cq, Xinv, M, it, conv, _ = s
        mx = jnp.max(M)  # reads the carried M only
        mn = jnp.min(jnp.where(v > 0, M, jnp.inf))  # v = 0 off the mask
        ep = mx / D - 1.0
        em = 1.0 - mn / D
        conv = (ep <= tol) & (em <= tol)
        stop = ~((ep > tol) | (em > tol)) | (it >= max_iter)  # NaN (bad input) also stops
        fw = ep >= em
        j = _first(jnp.where(fw, M == mx, (M == mn) & (v > 0)))
        kap = M[j]
        uj = sc * v[j]
        alpha = (kap - D) / (D * jnp.where(kap - 1.0 == 0, 1e-30, kap - 1.0))
        amin = -uj / jnp.maximum(1.0 - uj, 1e-30)
        drop = (~fw) & (alpha <= amin)
        alpha = jnp.where(fw, alpha, jnp.maximum(alpha, amin))
        alpha = jnp.where(stop, 0.0, alpha)  # last pass only checks
        uj_new = jnp.where(drop, 0.0, jnp.maximum((1.0 - alpha) * uj + alpha, 0.0))
        sc = sc * (1.0 - alpha)  # u = sc · v: O(1) per step, no pass
        v = v.at[j].set(jnp.where(stop, v[j], uj_new / sc))
        q = jnp.concatenate([yt[:, j], jnp.ones(1, dt)])
        cq = (1.0 - alpha) * cq + alpha * q
        w = Xinv @ q
        z = w[:k] @ yt + w[k]
        g = alpha / (1.0 - alpha + alpha * kap)
        Xinv = (Xinv - g * jnp.outer(w, w)) / (1.0 - alpha)
        M = (M - g * z * z) / (1.0 - alpha)
        return v, sc, cq, Xinv, M, it + (~stop).astype(jnp.int32), conv, stop

    s0 = (
        v,
        jnp.ones((), dt),
        cq,
        Xinv,
        M,
        jnp.asarray(0, jnp.int32),
        jnp.asarray(False),
        jnp.asarray(False),
    )

    def fold(s):  # u = sc · v → v, sc = 1 (one pass)
        s = jax.lax.while_loop(cond, body, s)
        return (s[0] * s[1], jnp.ones_like(s[1])) + s[2:]

    u, _, cq, Xinv, M, it, conv, _ = jax.lax.while_loop(lambda s: ~s[-1], fold, s0)
    return u, it, conv, Xinv, cq, M


def _ellipsoid_from_inv(yt, mask, r, cq, Xinv):
    """(c, S⁻¹, R_out) in frame coordinates from the carried ``Σ u q`` and ``X⁻¹``.

    With ``s = Σ u`` (= 1 up to round-off), ``c = Σ u y / s`` and ``S = Σ u (y−c)(y−c)ᵀ / s``
    the lifted ``X = Σ u q qᵀ`` has the block inverse ``X⁻¹[:k, :k] = (s S)⁻¹``, so
    ``S⁻¹ = s X⁻¹[:k, :k]`` needs no factorisation (the dead block of ``X⁻¹`` is masked off).
    The only pass over the points is the containment radius
    ``R_out = max_i (y_i − c)ᵀ S⁻¹ (y_i − c)``, measured with exactly the returned ``c`` and
    ``S⁻¹`` (so containment never rests on the rank-one updates).
    """
    k = yt.shape[0]
    dt = yt.dtype
    act = (jnp.arange(k) < r).astype(dt)
    s = cq[k]
    c = cq[:k] / s * act
    Sinv = s * Xinv[:k, :k] * jnp.outer(act, act)
    Sinv = 0.5 * (Sinv + Sinv.T)
    b = -(Sinv @ c)
    dist = _lifted_quad(yt, Sinv, b, -(c @ b))
    r_out = jnp.max(jnp.where(mask, dist, 0.0))
    return c, Sinv, r_out


def ellipsoid_of(Y, mask, r, u):
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
    """MVEE on transposed frame coordinates: (u, it, converged, X⁻¹, Σ u q, M)."""
    idx0, w0 = _ky_init_t(yt, mask, r)
    return _khachiyan_t(yt, mask, r, idx0, w0, tol, max_iter)


def mvee_frame(Y, mask, r, tol, max_iter):
    """MVEE in frame coordinates ``Y`` (n, k): (u, it, converged)."""
    u, it, conv = _mvee_frame_t(Y.T, mask, r, tol, max_iter)[:3]
    return u, it, conv


def _mvee_pt(pt, mask, tol, max_iter, rtol, out):
    """The whole computation on transposed points ``pt`` (d, n)."""
    if mask is None:
        mask = jnp.ones(pt.shape[1], bool)
    fr = _frame_pt(pt, mask, rtol)
    u, it, conv, Xinv, cq, _ = _mvee_frame_t(fr.coords_t, mask, fr.rank, tol, max_iter)
    c, Sinv, r_out = _ellipsoid_from_inv(fr.coords_t, mask, fr.rank, cq, Xinv)
    center = fr.offset + c @ fr.W_pinv
    radius = jnp.maximum(r_out, 1e-30) * (1.0 + 1e-12)
    shape = fr.W @ (Sinv / radius) @ fr.W.T
    shape = 0.5 * (shape + shape.T)
    o = jnp.dtype(out)
    return MVEEResult(
        center.astype(o), shape.astype(o), u.astype(o), conv, it, fr.rank, r_out.astype(o)
    )


_STATIC = ("tol", "max_iter", "rtol", "out")


@cheap_jit(static_argnames=_STATIC)
def _mvee_masked_core(points, mask, tol, max_iter, rtol, out):
    """Jitted MVEE of ``points`` (n, d)."""
    return _mvee_pt(points.T, mask, tol, max_iter, rtol, out)


@cheap_jit(static_argnames=_STATIC)
def _mvee_masked_core_t(pt, mask, tol, max_iter, rtol, out):
    """Jitted MVEE of points given transposed, ``pt`` (d, n)."""
    return _mvee_pt(pt, mask, tol, max_iter, rtol, out)


def _call_core(points, mask, tol, max_iter, rtol):
    """Shared entry: cast to the compute dtype, run the jitted core under local x64.

    Kept lean because it is on the timed path of every call: when float64 is already on
    (and the input is a float64 host or device array) the x64 context and the casts are
    skipped, and the core is called positionally with canonical static arguments so that
    jit's C++ fast path serves it.  A host array with few columns is transposed by NumPy (a
    few µs; XLA's transpose of an (n, 3) array costs several times that); otherwise the
    transpose happens inside the jitted program.
    """
    if (
        getattr(points, "dtype", None) == np.float64
        and jax.config.jax_enable_x64  # pyright: ignore[reportAttributeAccessIssue]  (a config flag)
        and isinstance(points, (np.ndarray, jax.Array))
    ):
        return _dispatch(points, (mask, float(tol), int(max_iter), float(rtol), "float64"))
    dt = out_dtype(points)
    args = (mask, float(tol), int(max_iter), float(rtol), _DTYPE_NAMES.get(dt, dt.name))
    with precision(points) as cdt:
        return _dispatch(f64(points, cdt), args)


def _dispatch(points, args):
    host = isinstance(points, np.ndarray) and points.ndim == 2
    if host and points.shape[1] <= _HOST_TRANSPOSE_D:
        return _mvee_masked_core_t(np.ascontiguousarray(points.T), *args)
    return _mvee_masked_core(points, *args)


_DTYPE_NAMES = {
    np.dtype(t): np.dtype(t).name for t in (np.float16, np.float32, np.float64, jnp.bfloat16)
}


def mvee_masked(
    points, mask, tol: float = 1e-3, max_iter: int = DEFAULT_MAX_ITER, rtol: float = DEFAULT_RTOL
) -> MVEEResult:
    """MVEE of the masked points, no Python-side checks (jit/vmap friendly).

    Works for any affine rank ``r`` (0 … d) of the masked subset: the ellipsoid lives in the
    affine hull (``shape`` has rank ``r``); see the module docstring for the regularisation.
    Requires at least one masked point.
    """
    m = None if mask is None else jnp.asarray(mask, bool)
    return _call_core(points, m, tol, max_iter, rtol)


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


def mvee(
    points, tol: float = 1e-3, max_iter: int = DEFAULT_MAX_ITER, rtol: float = DEFAULT_RTOL
) -> MVEEResult:
    """Löwner ellipsoid ``E(G, c) ⊇ P`` of full-dimensional points (paper Thm 2.1).

    ``(1 − tol)``-approximate in the Todd–Yıldırım sense; ``shape = S⁻¹/R`` with the measured
    radius ``R`` so that every point is inside.  Raises ``ValueError`` for non-finite input,
    ``n ≤ d``, equal points or affine rank < d (use :func:`mvee_masked` for those).
    Computed in float64; floating outputs are cast back to the input dtype.

    Validation costs no extra pass over the data: shapes are checked up front, and non-finite
    input yields affine rank 0 inside the jitted core (its max-|p| reduction is not finite), so
    the detailed host-side checks run only when the returned rank is below ``d``.

    >>> import numpy as np
    >>> square = np.array([[0., 0.], [2., 0.], [0., 2.], [2., 2.], [1., 1.]])
    >>> e = mvee(square)
    >>> bool(e.converged), int(e.rank), np.round(np.asarray(e.center), 2).tolist()
    (True, 2, [1.0, 1.0])
    >>> float(np.asarray(e.weights)[-1])    # the inner point does not touch the ellipsoid
    0.0
    """
    if isinstance(points, jax.core.Tracer):
        raise ValueError("mvee validates its input; inside jit/vmap use mvee_masked")
    if not isinstance(points, (np.ndarray, jax.Array)):
        points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2:
        raise ValueError(f"mvee: points must be 2-D (n, d), got shape {points.shape}")
    n, d = points.shape
    if n <= d:
        _check_full_rank(points, rtol)  # raises (non-finite first, then n ≤ d)
    res = _call_core(points, None, tol, max_iter, rtol)
    rank = int(np.asarray(res.rank))  # ~5× cheaper than int() on a jax.Array
    if rank < d:
        _check_full_rank(points, rtol)  # NaN/inf or all-equal: the specific message
        raise ValueError(
            f"mvee: points lie in a lower-dimensional affine subspace "
            f"(affine rank {rank} < d={d}); use mvee_masked or project "
            "with jaxprune.geometry.affine_subspace first"
        )
    return res
