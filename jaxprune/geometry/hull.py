"""Convex representation of a point: weights on the simplex with ``Σ w_i p_i ≈ target``.

Two solvers of ``min_w ‖Σ w_i p_i − t‖`` over the (masked) simplex:

* ``"wolfe"`` (default): Wolfe's minimum-norm-point algorithm (1976) on ``z_i = p_i − t``:
  an active "corral" of affinely independent points (≤ d + 2 fixed slots); major step adds
  ``argmin_i x·z_i``, minor steps move to the corral's affine minimiser (a small KKT solve)
  and drop points whose weight hits zero.  Finite, exact up to round-off, and the answer's
  support is ≤ rank + 1 (already a Carathéodory set).
* ``"fw"``: away-step Frank–Wolfe (Wolfe 1970; Lacoste-Julien & Jaggi 2015) on
``min_w ½‖Σ w_i p_i − t‖²`` over the (masked) simplex, exact line search.  Linear
convergence for targets in the hull; the FW gap ``g = (y−t)·(y−p_s) ≥ ‖y−t‖²`` is the stop
test (``g ≤ tol²`` ⇒ residual ``≤ tol``).  Used for the ellipsoid vertices of Algorithm 1,
line 8.  One ``lax.while_loop``, fixed shapes.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxprune.geometry._compile import cheap_jit
from jaxprune.geometry._precision import f64, out_dtype, precision


def _fw_core(P, mask, t, tol, max_iter):
    """Returns (w, residual, iterations). ``tol`` is absolute."""
    n = P.shape[0]
    dt = P.dtype
    idx = jnp.arange(n)
    d0 = jnp.sum((P - t) ** 2, axis=1)
    w = jnp.zeros(n, dt).at[jnp.argmin(jnp.where(mask, d0, jnp.inf))].set(1.0)
    y = w @ P

    def gap(w, y):
        r = y - t
        g = P @ r
        ry = r @ y
        s = jnp.argmin(jnp.where(mask, g, jnp.inf))
        a = jnp.argmax(jnp.where(mask & (w > 0), g, -jnp.inf))
        return s, a, ry - g[s], g[a] - ry

    def cond(st):
        _, _, it, _, _, gfw, _ = st
        return (it < max_iter) & (gfw > tol * tol)

    def body(st):
        w, y, it, s, a, gfw, ga = st
        fw = gfw >= ga
        d = jnp.where(fw, P[s] - y, y - P[a])
        wa = w[a]
        gmax = jnp.where(fw, 1.0, wa / jnp.maximum(1.0 - wa, 1e-30))
        dd = d @ d
        gam = jnp.clip(-((y - t) @ d) / jnp.where(dd > 0, dd, 1.0), 0.0, gmax)
        gam = jnp.where(dd > 0, gam, 0.0)
        y = y + gam * d
        w_fw = (1.0 - gam) * w + gam * (idx == s)
        w_aw = (1.0 + gam) * w - gam * (idx == a)
        w_aw = jnp.where((idx == a) & (gam >= gmax), 0.0, w_aw)
        w = jnp.maximum(jnp.where(fw, w_fw, w_aw), 0.0)
        return (w, y, it + 1, *gap(w, y))

    st = (w, y, jnp.asarray(0, jnp.int32), *gap(w, y))
    w, _, it, _, _, _, _ = jax.lax.while_loop(cond, body, st)
    w = w / jnp.sum(w)
    res = jnp.linalg.norm(w @ P - t)
    return w, res, it


def min_norm_point_core(P, mask, t, tol, max_iter):
    """Wolfe's min-norm point; returns (w, residual, iterations).  ``tol`` absolute."""
    n, d = P.shape
    dt = P.dtype
    slots = d + 2
    sid = jnp.arange(slots)
    Z = P - t
    nrm = jnp.sum(Z * Z, axis=1)
    j0 = jnp.argmin(jnp.where(mask, nrm, jnp.inf))
    idx0 = jnp.zeros(slots, jnp.int32).at[0].set(j0.astype(jnp.int32))
    on0 = sid == 0
    lam0 = on0.astype(dt)
    eps_pos = 1e-12

    def cond(s):
        _, _, _, _, _, done, it = s
        return (~done) & (it < max_iter)

    def body(s):
        idx, on, lam, x, major, done, it = s
        # ---- major: add the most negative direction, or stop
        g = Z @ x
        j = jnp.argmin(jnp.where(mask, g, jnp.inf))
        xx = x @ x
        small = (xx - g[j] <= 0.5 * tol * tol) | (xx <= tol * tol)
        stall = jnp.any(on & (idx == j))
        free = jnp.argmin(on)  # first free slot
        idx_M = idx.at[free].set(j.astype(jnp.int32))
        on_M = on.at[free].set(True)
        lam_M = lam.at[free].set(0.0)
        done_M = small | stall | jnp.all(on)
        # ---- minor: affine minimiser of the corral
        Zc = Z[idx] * on[:, None]
        G = Zc @ Zc.T
        onf = on.astype(dt)
        A = jnp.where(on[:, None] & on[None, :], G, jnp.diag(1.0 - onf))
        A = jnp.concatenate(
            [
                jnp.concatenate([A, onf[:, None]], 1),
                jnp.concatenate([onf, jnp.zeros(1, dt)])[None, :],
            ],
            0,
        )
        rhs = jnp.zeros(slots + 1, dt).at[slots].set(1.0)
        alpha = jnp.linalg.solve(A, rhs)[:slots] * onf
        neg = on & (alpha <= eps_pos)
        allpos = ~jnp.any(neg)
        ratio = jnp.where(neg, lam / jnp.where(neg, lam - alpha, 1.0), jnp.inf)
        tt = jnp.argmin(ratio)
        theta = jnp.clip(ratio[tt], 0.0, 1.0)
        lam_m = jnp.where(allpos, alpha, theta * alpha + (1.0 - theta) * lam)
        lam_m = jnp.where(allpos, lam_m, lam_m.at[tt].set(0.0))
        lam_m = jnp.maximum(lam_m, 0.0) * onf
        on_m = on & (lam_m > 0)
        lam_m = lam_m / jnp.sum(lam_m)
        x_m = lam_m @ Zc
        major_m = allpos
        bad = ~jnp.all(jnp.isfinite(alpha))
        # ---- merge
        pick = lambda a, b: jnp.where(major, a, b)
        return (
            pick(idx_M, idx),
            pick(on_M, on_m),
            pick(lam_M, lam_m),
            pick(x, x_m),
            pick(False, major_m),
            pick(done_M, bad),
            it + 1,
        )

    s0 = (idx0, on0, lam0, Z[j0], jnp.asarray(True), jnp.asarray(False), jnp.asarray(0, jnp.int32))
    idx, on, lam, x, _, _, it = jax.lax.while_loop(cond, body, s0)
    w = jnp.zeros(n, dt).at[jnp.where(on, idx, n)].add(lam, mode="drop")
    res = jnp.linalg.norm(w @ P - t)
    return w, res, it


@cheap_jit(static_argnames=("max_iter", "method"))
def _fw_jit(P, mask, t, tol, max_iter, method="wolfe"):
    cen = jnp.sum(jnp.where(mask[:, None], P, 0.0), 0) / jnp.maximum(jnp.sum(mask), 1)
    scale = jnp.maximum(jnp.max(jnp.where(mask, jnp.linalg.norm(P - cen, axis=1), 0.0)), 1e-30)
    core = min_norm_point_core if method == "wolfe" else _fw_core
    w, res, it = core((P - cen) / scale, mask, (t - cen) / scale, tol, max_iter)
    return w, res * scale, it


def convex_combination(
    points, target, mask=None, tol: float = 1e-10, max_iter: int = 20_000, method: str = "wolfe"
):
    """Weights ``w`` on the simplex with ``Σ w_i p_i ≈ target`` (``method``: "wolfe" | "fw").

    Returns ``(weights (n,), residual ‖Σ w_i p_i − target‖, iterations)``; ``tol`` is relative
    to the radius ``max_i ‖p_i − mean‖``.  For a target outside the hull the weights give the
    (approximately) nearest hull point and the residual is its distance.
    """
    dt = out_dtype(points)
    with precision(points) as cdt:
        P = f64(points, cdt)
        m = jnp.ones(P.shape[0], bool) if mask is None else jnp.asarray(mask, bool)
        if method not in ("wolfe", "fw"):
            raise ValueError(f"convex_combination: unknown method {method!r}")
        w, res, it = _fw_jit(P, m, f64(target, cdt), f64(tol, cdt), int(max_iter), method)
        return w.astype(dt), res.astype(dt), it
