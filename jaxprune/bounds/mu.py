"""The regression complexity measure μ(P) of the main paper (Definition 2.3, in its pruning
form of §2.4): a lower estimate by query search, and an exact LP test of ``μ(P) = ∞``."""

from __future__ import annotations

import math
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxprune.geometry import x64

__all__ = ["MuEstimate", "estimate_mu", "mu_is_unbounded"]


class MuEstimate(NamedTuple):
    value: float  # best ratio found (a LOWER bound on μ(P)); inf if unbounded found
    query: np.ndarray | None  # the y (x = (y, 1)) attaining it (None if value is inf via LP)
    unbounded: bool  # a certificate of μ(P) = ∞ was found
    num_queries: int  # queries evaluated (random + structured + ascent steps)


def _num_den(p, y):
    z = p[:, :-1] @ y + p[:, -1]
    return jnp.sum(jax.nn.relu(-z)), jnp.sum(jax.nn.relu(z))


@partial(jax.jit, static_argnames=("steps",))
def _ascend(p, y0, lr, steps):
    """Normalised gradient ascent on ``log num − log den`` from each start (vmapped)."""
    tiny = 1e-30

    def obj(y):
        num, den = _num_den(p, y)
        return jnp.log(num + tiny) - jnp.log(den + tiny)

    g_obj = jax.grad(obj)

    def ratio(y):
        num, den = _num_den(p, y)
        return jnp.where(den > 0, num / jnp.where(den > 0, den, 1.0), -jnp.inf)

    def one(y):
        def body(carry, _):
            y, best, besty = carry
            g = g_obj(y)
            gn = jnp.linalg.norm(g)
            step = lr * (jnp.linalg.norm(y) + 1.0) * g / jnp.where(gn > 0, gn, 1.0)
            y = y + step
            r = ratio(y)
            better = r > best
            return (y, jnp.where(better, r, best), jnp.where(better, y, besty)), None

        r0 = ratio(y)
        (_, best, besty), _ = jax.lax.scan(body, (y, r0, y), None, length=steps)
        return best, besty

    return jax.vmap(one)(y0)


@jax.jit
def _ratios(p, ys):
    num, den = jax.vmap(lambda y: _num_den(p, y))(ys)
    return num, den


def mu_is_unbounded(points, tol: float = 1e-9) -> bool:
    """Exact test of ``μ(P) = ∞`` (Definition 2.3 over queries ``x = (y, 1)``), by an LP.

    Claim: if some ``w_p ≠ 0`` and there is a query with every ``p^T x < 0`` (all neurons
    inactive), then ``μ(P) = ∞``: ``g(y) = max_p p^T(y, 1)`` is continuous and grows without
    bound along ``w_p``, so it crosses 0; just past the crossing the denominator is an
    arbitrarily small positive number while the numerator stays bounded away from 0.  This is
    the "a point can be separated / the bias is free" case of §2.4.  The LP
    ``min t  s.t.  w_p·y + b_p ≤ t ∀p,  t ≥ −1`` decides whether such a query exists
    (optimum < 0).  (The boundary case optimum = 0 is reported as bounded.)  All-zero points
    (e.g. pre-pruned neurons) add 0 to every sum of Definition 2.3, so they are dropped first.

    >>> import numpy as np
    >>> mu_is_unbounded(np.array([[1., -1.], [2., -1.]]))    # both off at x = (0, 1)
    True
    >>> mu_is_unbounded(np.array([[1., 1.], [-1., 1.]]))
    False
    """
    from scipy.optimize import linprog  # lazy: optional heavy dependency

    p = np.asarray(points, dtype=np.float64)
    p = p[np.any(p != 0, axis=1)]
    if p.shape[0] == 0:
        return False
    w, b = p[:, :-1], p[:, -1]
    if not np.any(np.abs(w) > 0):
        return False
    n, d = w.shape
    cost = np.zeros(d + 1)
    cost[-1] = 1.0
    a_ub = np.concatenate([w, -np.ones((n, 1))], axis=1)
    bounds = [(None, None)] * d + [(-1.0, None)]
    res = linprog(cost, A_ub=a_ub, b_ub=-b, bounds=bounds, method="highs")
    return bool(res.status == 0 and res.fun < -tol)


def estimate_mu(
    points,
    seed: int = 0,
    *,
    num_random: int = 512,
    num_scales: int = 13,
    ascent_starts: int = 32,
    ascent_steps: int = 100,
    lr: float = 0.05,
    exact_unbounded_check: bool = True,
) -> MuEstimate:
    """Lower estimate of the regression complexity measure μ(P) (main paper Definition 2.3,
    in its pruning form of §2.4):

        μ(P) = sup_{x ∈ R^d × {1}}  Σ_{p: p^T x ≤ 0} |p^T x|  /  Σ_{p: p^T x > 0} |p^T x|,

    ``points`` = P, shape (n, d+1), rows ``[w_j | b_j]`` (a layer's neurons with their bias).
    μ is a supremum, so evaluating the ratio on finitely many queries gives a **lower bound**;
    this function returns the largest ratio it finds (never more than μ(P), up to float
    rounding), not μ(P) itself.  Queries ``x = (y, 1)`` are

    1. random Gaussian directions (numpy generator seeded by ``seed``) and the structured
       directions ``±w_j/‖w_j‖``, each at
       ``num_scales`` radii log-spaced over ``R₀·[1e-3, 1e3]`` (``R₀`` = max |b| / median ‖w‖,
       at least 1) — evaluated in one vmapped pass;
    2. then ``ascent_steps`` normalised gradient-ascent steps on ``log(num) − log(den)`` from
       the ``ascent_starts`` best queries (vmapped), keeping the best ratio seen.

    Queries with denominator 0 are not in the sup's domain: if such a query has numerator > 0
    (all neurons inactive, some strictly) and some ``w_j ≠ 0``, then μ(P) = ∞ (see
    :func:`mu_is_unbounded`) and ``inf`` is returned with ``unbounded=True``; ``0/0`` queries
    are ignored.  With ``exact_unbounded_check`` the LP of :func:`mu_is_unbounded` is run first.
    Near-unbounded sets yield very large finite values.

    Consequence worth knowing: if the ``w_j`` are linearly independent (generic when
    ``n ≤ d``, e.g. LeNet-300-100's 300 → 100 layer), ``W y = −(b + 1)`` is solvable, every
    neuron can be switched off and ``μ(P) = ∞`` — Theorem 2.6 then gives no finite ``m``.
    """
    p = np.asarray(points, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] < 2:
        raise ValueError(f"points must have shape (n, d+1) with d ≥ 1, got {p.shape}")
    n, d1 = p.shape
    d = d1 - 1
    if exact_unbounded_check and mu_is_unbounded(p):
        return MuEstimate(math.inf, None, True, 0)
    w, b = p[:, :-1], p[:, -1]
    wn = np.linalg.norm(w, axis=1)
    nz = wn > 0
    if not np.any(nz):  # constant queries: ratio is fixed
        num = np.sum(np.maximum(-b, 0))
        den = np.sum(np.maximum(b, 0))
        val = num / den if den > 0 else (math.inf if num > 0 else 0.0)
        return MuEstimate(float(val), np.zeros(d), bool(den == 0 and num > 0), 1)
    r0 = max(1.0, float(np.max(np.abs(b)) / np.median(wn[nz])))
    radii = r0 * np.logspace(-3, 3, num_scales)
    dirs = np.random.default_rng(seed).standard_normal((num_random, d))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    wd = w[nz] / wn[nz, None]
    dirs = np.concatenate([dirs, wd, -wd], axis=0)
    ys = (radii[:, None, None] * dirs[None]).reshape(-1, d)
    ys = np.concatenate([np.zeros((1, d)), ys], axis=0)
    with x64():  # float64 so that tiny denominators are exact
        pj = jnp.asarray(p, jnp.float64)
        num, den = map(np.asarray, _ratios(pj, jnp.asarray(ys, jnp.float64)))
    if np.any((den == 0) & (num > 0)):
        i = int(np.argmax((den == 0) & (num > 0)))
        return MuEstimate(math.inf, ys[i], True, int(ys.shape[0]))
    ratio = np.where(den > 0, num / np.where(den > 0, den, 1.0), -np.inf)
    order = np.argsort(-ratio)[:ascent_starts]
    best_i = int(order[0])
    best, besty = float(ratio[best_i]), ys[best_i]
    if ascent_steps > 0:
        with x64():
            rb, yb = _ascend(pj, jnp.asarray(ys[order], jnp.float64), jnp.float64(lr), ascent_steps)
            rb, yb = np.asarray(rb), np.asarray(yb)
        j = int(np.argmax(rb))
        if rb[j] > best:
            best, besty = float(rb[j]), yb[j]
    return MuEstimate(max(best, 0.0), besty, False, int(ys.shape[0] + ascent_starts * ascent_steps))
