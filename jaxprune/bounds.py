"""The bound laboratory (DESIGN §5; issue 7): approximation bounds of coreset pruning, made
computable, after "When are neural pruning approximation bounds useful?" (the *bounds paper*,
``../shared/papers/when-are-pruning-bounds-useful.txt``) and Theorem 2.6 of the main paper.

Everything here is a pure function of arrays.  Conventions used throughout:

* ``log`` is the natural logarithm (the papers do not fix a base; any other base only changes
  the unspecified constants).
* Sample counts are returned as float64 (integer valued, rounded *up*; ``inf`` when the bound is
  infinite, e.g. ``μ(P) = ∞``), so that vacuous cases are representable.  Rounding up uses a
  relative tolerance of ``1e-9`` (``ceil(x·(1 − 1e-9))``) so that round trips
  ``m(ε(m)) == m`` are not broken by float noise.
* Scalar formulas are vectorised with numpy (they broadcast over arrays of ``ε`` / ``m``);
  the array-heavy parts (μ(P) estimation, label margins, observed errors) use jax.

Bounds (all with the notation of the bounds paper, Appendix A):

=============================  ==================================================================
SiPP randomized, Thm A.1       ``S̃ = K·S·log(4/δ)``, ``S = Σ_{j∈I} s_j``;
                               ``ε_m = sqrt((S̃/m)(S̃/m + 6)) + S̃/m``  (valid for ``m > S̃``);
                               inverse (exact): ``m(ε) = ⌈S̃ (6 + 2ε) / ε²⌉``.
SiPP deterministic, Thm A.2    ``ε_m = 3K · Σ_{j ∈ I \\ I_m} s_j`` (I_m = the m largest s_j).
Mussay neurons, Thm A.4        ``m ≥ (c·t/ε²)(d·log t + log(1/δ))``, ``t = Σ_j s_j``,
                               ``s_j = max_{i∈[k]} w⁽²⁾_ij φ(β‖w⁽¹⁾_j‖₂)``; additive error ε.
Main paper, Thm 2.6            ``m = c·μ(P)·r^3.5·log n / ε² · (d·log(μ(P)·r·log n) + log(1/δ))``
                               (the theorem states ``m ∈ O(·)``: ``c`` (default 1) stands for the
                               hidden constant, so these numbers are only defined up to it).
=============================  ==================================================================

The garbled PDF text of Theorem A.1 was reconstructed as above; the reconstruction agrees with
the paper's own remark (§4.3.2) that "even at the minimum total sensitivity [S = 1] Theorem A.1
would require sampling ~1.5× the number of weights" of a 100-input perceptron at ε ≈ 0.46,
δ = 0.5, K = 2:  ``2·log 8·(6 + 0.92)/0.46² ≈ 136``.  Theorem A.1 additionally needs
``|S| = ⌈K'·log(2ρ/δ)⌉`` validation points to estimate the sensitivities (K' = 3 by default,
:func:`sipp_num_validation_points`); it does not enter ``ε_m``.
"""
from __future__ import annotations

import math
from functools import partial
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxprune.coreset.sampling import sample, sample_until_distinct, top_k
from jaxprune.geometry._precision import x64

__all__ = [
    "sipp_randomized_epsilon", "sipp_randomized_samples", "sipp_num_validation_points",
    "sipp_sensitivities",
    "sipp_deterministic_epsilon", "sipp_deterministic_samples",
    "mussay_sensitivities", "mussay_epsilon", "mussay_samples",
    "coreset_epsilon", "coreset_samples",
    "estimate_mu", "mu_is_unbounded", "MuEstimate",
    "label_margins", "epsilon_for_guarantee", "guaranteed_fraction",
    "PruneDraw", "epsilon_first", "sparsity_first", "expected_distinct",
    "deterministic_epsilon_first", "deterministic_sparsity_first",
    "ErrorStats", "observed_error", "observed_errors",
    "two_layer_forward", "scale_two_layer", "total_sensitivity",
]

_CEIL_RTOL = 1e-9


def _ceil(x):
    """``⌈x⌉`` with a relative tolerance (see module docstring); keeps ``inf``; float64."""
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        out = np.where(np.isfinite(x), np.ceil(x * (1.0 - _CEIL_RTOL)), x)
    return out[()] if out.ndim == 0 else out


def _check_prob(name, value, lo_open=True, hi_open=True):
    v = np.asarray(value, dtype=np.float64)
    ok = (v > 0 if lo_open else v >= 0) & (v < 1 if hi_open else v <= 1)
    if not np.all(ok):
        raise ValueError(f"{name} must lie in (0, 1), got {value!r}")


def _check_positive(name, value):
    v = np.asarray(value, dtype=np.float64)
    if not np.all(v > 0):
        raise ValueError(f"{name} must be > 0, got {value!r}")


def _scalar(x):
    x = np.asarray(x, dtype=np.float64)
    return x[()] if x.ndim == 0 else x


# --------------------------------------------------------------------------------------------
# SiPP randomized weight pruning (Theorem A.1)
# --------------------------------------------------------------------------------------------

def _sipp_s_tilde(total_sensitivity, delta, K):
    _check_prob("delta", delta)
    _check_positive("K", K)
    _check_positive("total_sensitivity", total_sensitivity)
    s = np.asarray(total_sensitivity, np.float64)
    return K * s * np.log(4.0 / np.asarray(delta, np.float64))


def sipp_randomized_epsilon(m, total_sensitivity, delta: float = 0.5, K: float = 2.0):
    """ε implied by ``m`` samples for SiPP randomized weight pruning (bounds paper Theorem A.1).

    ``S̃ = K·S·log(4/δ)`` with ``S = Σ_{j∈I} s_j`` (the total sensitivity of the perceptron's
    non-negative weights) and

        ε_m = sqrt( (S̃/m)·(S̃/m + 6) ) + S̃/m,

    so that ``Pr(|ẑ(x) − z(x)| ≥ ε_m z(x)) ≤ δ`` (multiplicative).  The theorem requires
    ``m > S̃``; for ``m ≤ S̃`` this returns ``inf`` (no guarantee).  It states ``ε_m ∈ (0, 1)``,
    i.e. ``m > 8 S̃``; values ≥ 1 are returned as computed (a vacuous guarantee, as in the
    bounds paper's Figure 8).  ``K`` = 2 is the authors' recommended constant of Assumption A.3.
    """
    s_t = _sipp_s_tilde(total_sensitivity, delta, K)
    m = np.asarray(m, dtype=np.float64)
    _check_positive("m", m)
    a = s_t / m
    eps = np.where(m > s_t, np.sqrt(a * (a + 6.0)) + a, np.inf)
    return _scalar(eps)


def sipp_randomized_samples(epsilon, total_sensitivity, delta: float = 0.5, K: float = 2.0):
    """Samples ``m`` SiPP randomized needs for a target ε (bounds paper Theorem A.1, inverted).

    Solving ``ε = sqrt(a(a + 6)) + a`` for ``a = S̃/m`` gives ``a = ε²/(2ε + 6)`` exactly, so

        m(ε) = ⌈ S̃·(6 + 2ε) / ε² ⌉,   S̃ = K·S·log(4/δ)

    (the theorem's ``m > S̃`` then holds automatically for ε < 1 + √7, since
    ``(6 + 2ε)/ε² > 1`` there).  This is the smallest integer ``m`` with ``ε_m ≤ ε`` (up to
    the rounding tolerance; cf. Corollary 5 of Baykal et al. 2019b).
    """
    s_t = _sipp_s_tilde(total_sensitivity, delta, K)
    eps = np.asarray(epsilon, dtype=np.float64)
    _check_positive("epsilon", eps)
    return _ceil(s_t * (6.0 + 2.0 * eps) / eps ** 2)


def sipp_num_validation_points(rho: int, delta: float = 0.5, K_prime: float = 3.0) -> int:
    """Size of the validation batch ``S`` of Theorem A.1: ``|S| = ⌈K'·log(2ρ/δ)⌉``, ``ρ`` =
    nnz of the layer's weight matrix, ``K'`` = 3 as recommended (reconstructed from the
    garbled PDF text "⌈K' log(2ρ/δ)⌉"; it sizes the sensitivity estimate only)."""
    _check_prob("delta", delta)
    if rho < 1:
        raise ValueError(f"rho must be ≥ 1, got {rho}")
    return int(math.ceil(K_prime * math.log(2.0 * rho / delta)))


@jax.jit
def sipp_sensitivities(w: jax.Array, inputs: jax.Array) -> jax.Array:
    """Empirical SiPP weight sensitivities (bounds paper Algorithm 1, line 1), one perceptron.

    For the non-negative weights ``I = {j : w_j > 0}`` and non-negative inputs (ReLU
    activations) ``x ∈ S`` (rows of ``inputs``, shape (N, d)):

        s_j = max_{x ∈ S} w_j x_j / Σ_{k∈I} w_k x_k,     j ∈ I;    s_j = 0 for j ∉ I.

    Inputs with ``Σ_{k∈I} w_k x_k = 0`` are skipped.  For the negative weights (Lemma 6 of
    Baykal et al. 2019b: sparsify I⁺ and I⁻ separately) call it again with ``-w``.
    """
    w = jnp.asarray(w)
    pos = w > 0
    wp = jnp.where(pos, w, 0.0)
    contrib = inputs * wp[None, :]                       # (N, d)
    den = jnp.sum(contrib, axis=1, keepdims=True)
    g = jnp.where(den > 0, contrib / jnp.where(den > 0, den, 1.0), 0.0)
    return jnp.where(pos, jnp.max(g, axis=0), 0.0)


# --------------------------------------------------------------------------------------------
# SiPP deterministic weight pruning (Theorem A.2)
# --------------------------------------------------------------------------------------------

def _tail_sums(s):
    s = np.sort(np.asarray(s, dtype=np.float64))[::-1]
    if s.ndim != 1 or np.any(s < 0) or not np.all(np.isfinite(s)):
        raise ValueError("sensitivities must be a finite, non-negative 1-D array")
    # tail[m] = Σ of all but the m largest, m = 0..n  (computed from the small end: exact 0 at n)
    rev = np.concatenate([[0.0], np.cumsum(s[::-1])])      # rev[k] = sum of the k smallest
    return rev[::-1]


def sipp_deterministic_epsilon(m, sensitivities, K: float = 2.0):
    """ε of SiPP deterministic pruning keeping the ``m`` largest sensitivities (Theorem A.2):

        ε_m = 3K · Σ_{j ∈ I \\ I_m} s_j,

    ``I_m`` = indices of the ``m`` largest ``s_j`` (ties arbitrary; the tail sum does not
    depend on them).  Guarantee: ``Pr(|ẑ(x) − z(x)| ≥ ε_m z(x)) ≤ δ/2`` (multiplicative).
    ``m`` may be an array; ``m ≥ n`` gives 0.
    """
    _check_positive("K", K)
    tail = _tail_sums(sensitivities)
    n = tail.shape[0] - 1
    m = np.asarray(m)
    if np.any(m < 0):
        raise ValueError(f"m must be ≥ 0, got {m!r}")
    return _scalar(3.0 * K * tail[np.minimum(m, n).astype(np.int64)])


def sipp_deterministic_samples(epsilon, sensitivities, K: float = 2.0):
    """Smallest ``m`` (weights kept, largest sensitivities first) with
    ``3K · Σ_{j ∉ I_m} s_j ≤ ε`` (Theorem A.2 inverted; compared with the relative tolerance
    ``1e-9`` so that float noise in the tail sum does not cost a sample).  Returned as float64
    (integer valued)."""
    _check_positive("K", K)
    tail = 3.0 * K * _tail_sums(sensitivities)           # non-increasing in m
    eps = np.asarray(epsilon, dtype=np.float64)
    if np.any(eps < 0):
        raise ValueError(f"epsilon must be ≥ 0, got {epsilon!r}")
    # first m with tail[m] <= eps: tail is non-increasing, search on the reversed array
    m = tail.shape[0] - np.searchsorted(tail[::-1], eps * (1.0 + _CEIL_RTOL), side="right")
    return _scalar(np.asarray(m, dtype=np.float64))


# --------------------------------------------------------------------------------------------
# Mussay et al. neuron pruning (Theorem A.4)
# --------------------------------------------------------------------------------------------

def mussay_sensitivities(w1, b1, w2, beta: float, *, absolute: bool = False) -> jax.Array:
    """Neuron sensitivities of Theorem A.4 (and Algorithm 3), for ``φ = ReLU``:

        s_j = max_{i∈[k]} w⁽²⁾_ij · φ(β‖w⁽¹⁾_j‖₂),      j ∈ [η⁽²⁾].

    Shapes follow the paper: ``w1`` (h, d) rows ``w⁽¹⁾_j``, ``b1`` (h,) or None, ``w2`` (k, h).
    The bias is embedded in the weight matrix (bounds paper A.1: "we assume that the bias is
    embedded in the weight matrix"), so ``‖w⁽¹⁾_j‖ = ‖[w_j | b_j]‖``.  As stated, the theorem
    takes ``max_i w⁽²⁾_ij`` *without* an absolute value (a neuron whose outgoing weights are all
    negative gets ``s_j ≤ 0``); ``absolute=True`` uses ``max_i |w⁽²⁾_ij|`` as in Mussay et al.'s
    sampling (``jaxprune.methods.pvc``).
    """
    w1 = jnp.asarray(w1)
    p = w1 if b1 is None else jnp.concatenate([w1, jnp.asarray(b1)[:, None]], axis=1)
    w2 = jnp.asarray(w2)
    out = jnp.abs(w2) if absolute else w2
    return jnp.max(out, axis=0) * jax.nn.relu(beta * jnp.linalg.norm(p, axis=1))


def _mussay_A(total_sensitivity, d, delta, c):
    _check_prob("delta", delta)
    _check_positive("c", c)
    _check_positive("total_sensitivity (t, needed for log t)", total_sensitivity)
    t = np.asarray(total_sensitivity, np.float64)
    bracket = d * np.log(t) + np.log(1.0 / delta)
    return c * t * np.maximum(bracket, 0.0)


def mussay_samples(epsilon, total_sensitivity, d: int, delta: float = 0.5, c: float = 1.0):
    """Neurons to sample for an additive ε (bounds paper Theorem A.4, Mussay et al. 2020):

        m = ⌈ (c·t/ε²)·(d·log t + log(1/δ)) ⌉,

    ``t = Σ_j s_j`` (:func:`mussay_sensitivities`), ``d`` the VC dimension (= the input
    dimension of the layer for a ReLU perceptron), ``c`` the unspecified "sufficiently large"
    constant (a parameter; default 1).  With probability ≥ 1 − δ every output of the pruned
    2-layer net is within an *additive* ε on the ball of radius β.  If the bracket is ≤ 0
    (t < 1 and small d) it is clamped at 0 and ``m`` at 1.
    """
    eps = np.asarray(epsilon, dtype=np.float64)
    _check_positive("epsilon", eps)
    return np.maximum(_ceil(_mussay_A(total_sensitivity, d, delta, c) / eps ** 2), 1.0)


def mussay_epsilon(m, total_sensitivity, d: int, delta: float = 0.5, c: float = 1.0):
    """Additive ε implied by ``m`` sampled neurons (Theorem A.4 inverted):
    ``ε = sqrt( c·t·(d·log t + log(1/δ)) / m )``."""
    m = np.asarray(m, dtype=np.float64)
    _check_positive("m", m)
    return _scalar(np.sqrt(_mussay_A(total_sensitivity, d, delta, c) / m))


# --------------------------------------------------------------------------------------------
# Main paper, Theorem 2.6 (ReLU ε-coreset)
# --------------------------------------------------------------------------------------------

def _coreset_A(mu, r, n, d, delta, c):
    _check_prob("delta", delta)
    _check_positive("c", c)
    mu = np.asarray(mu, np.float64)
    if np.any(mu < 0):
        raise ValueError(f"mu must be ≥ 0, got {mu!r}")
    if r < 1 or n < 1 or d < 1:
        raise ValueError(f"need r, n, d ≥ 1, got r={r}, n={n}, d={d}")
    logn = math.log(n)
    with np.errstate(divide="ignore", invalid="ignore"):
        inner = mu * r * logn
        bracket = d * np.log(np.where(inner > 0, inner, 1.0)) + math.log(1.0 / delta)
        A = c * mu * r ** 3.5 * logn * np.maximum(bracket, 0.0)
    return np.where(np.isinf(mu), np.inf, A)


def coreset_samples(epsilon, mu, r: int, n: int, d: int, delta: float = 0.5, c: float = 1.0):
    """Sample size of the main paper's Theorem 2.6 (ReLU ε-coreset, multiplicative ε):

        m = ⌈ c · μ(P)·r^3.5·log n / ε² · ( d·log(μ(P)·r·log n) + log(1/δ) ) ⌉

    ``μ(P)`` the regression complexity measure (Definition 2.3, :func:`estimate_mu`),
    ``r = rank(P)``, ``n = |P|``, ``d`` the dimension.  The theorem only states
    ``m ∈ O(·)``: ``c`` (default 1) is the hidden constant, so the value is the bound's
    *shape*, not a certified count.  ``μ = ∞`` gives ``inf``; a non-positive ``log`` argument
    or bracket is clamped (bracket ≥ 0) and ``m ≥ 1``.
    """
    eps = np.asarray(epsilon, dtype=np.float64)
    _check_positive("epsilon", eps)
    A = _coreset_A(mu, r, n, d, delta, c)
    return np.maximum(_ceil(A / eps ** 2), 1.0)


def coreset_epsilon(m, mu, r: int, n: int, d: int, delta: float = 0.5, c: float = 1.0):
    """ε implied by ``m`` samples under Theorem 2.6 (inverted):
    ``ε = sqrt( c·μ·r^3.5·log n·(d·log(μ·r·log n) + log(1/δ)) / m )`` (``c`` as in
    :func:`coreset_samples`)."""
    m = np.asarray(m, dtype=np.float64)
    _check_positive("m", m)
    return _scalar(np.sqrt(_coreset_A(mu, r, n, d, delta, c) / m))


# --------------------------------------------------------------------------------------------
# Regression complexity measure μ(P) (main paper Definition 2.3, §2.4)
# --------------------------------------------------------------------------------------------

class MuEstimate(NamedTuple):
    value: float              # best ratio found (a LOWER bound on μ(P)); inf if unbounded found
    query: np.ndarray         # the y (x = (y, 1)) attaining it (None if value is inf via LP)
    unbounded: bool           # a certificate of μ(P) = ∞ was found
    num_queries: int          # queries evaluated (random + structured + ascent steps)


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
    """
    from scipy.optimize import linprog

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


def estimate_mu(points, seed: int = 0, *, num_random: int = 512, num_scales: int = 13,
                ascent_starts: int = 32, ascent_steps: int = 100, lr: float = 0.05,
                exact_unbounded_check: bool = True) -> MuEstimate:
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
    if not np.any(nz):                      # constant queries: ratio is fixed
        num = np.sum(np.maximum(-b, 0)); den = np.sum(np.maximum(b, 0))
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
    with x64():                               # float64 so that tiny denominators are exact
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
            rb, yb = _ascend(pj, jnp.asarray(ys[order], jnp.float64), jnp.float64(lr),
                             ascent_steps)
            rb, yb = np.asarray(rb), np.asarray(yb)
        j = int(np.argmax(rb))
        if rb[j] > best:
            best, besty = float(rb[j]), yb[j]
    return MuEstimate(max(best, 0.0), besty, False,
                      int(ys.shape[0] + ascent_starts * ascent_steps))


# --------------------------------------------------------------------------------------------
# Label consistency (Lemma 4.1)
# --------------------------------------------------------------------------------------------

@jax.jit
def label_margins(logits: jax.Array):
    """Per example, the largest element-wise ε that cannot change the arg-max (Lemma 4.1).

    With ``j`` the arg-max and ``j'`` the runner-up of the pre-softmax logits ``f(x)``:

        additive:        ε_add(x) = (f(x)_j − f(x)_j') / 2
        multiplicative:  ε_mul(x) = (f(x)_j − f(x)_j') / (|f(x)_j| + |f(x)_j'|)

    For ε strictly below these values the arg-max provably cannot change; at equality a tie
    is possible (the lemma writes ``≤``).  The runner-up is the binding competitor for both
    forms (for the multiplicative one, ``(f_j − f_k)/(|f_j| + |f_k|)`` is smallest at
    ``k = j'``), so these are exactly the largest such ε.  A tie ``f_j = f_j'`` gives 0; the
    multiplicative ``0/0`` (both zero) is guarded to 0.  ``logits`` (N, k), k ≥ 2 →
    ``(ε_add (N,), ε_mul (N,), argmax (N,))``.
    """
    top2 = jax.lax.top_k(logits, 2)[0]
    fj, fj2 = top2[..., 0], top2[..., 1]
    gap = fj - fj2
    den = jnp.abs(fj) + jnp.abs(fj2)
    mul = jnp.where(den > 0, gap / jnp.where(den > 0, den, 1.0), 0.0)
    return gap / 2.0, mul, jnp.argmax(logits, axis=-1)


def _guarantee_k(fraction, n):
    f = np.asarray(fraction, dtype=np.float64)
    if np.any((f <= 0) | (f > 1)):
        raise ValueError(f"fraction must lie in (0, 1], got {fraction!r}")
    return np.maximum(np.ceil(f * n - 1e-9), 1).astype(np.int64)


def epsilon_for_guarantee(logits, labels, fraction=0.5, kind: str = "additive"):
    """ε that guarantees a ``fraction`` of the correctly classified examples stays correct
    (bounds paper §4.1 with Lemma 4.1).

    Over the ``N_c`` examples with ``argmax f(x) = label`` take the per-example margins
    ``ε_i`` (:func:`label_margins`, ``kind`` = "additive" or "multiplicative") and return the
    ``k``-th largest, ``k = ⌈fraction·N_c⌉``: then at least ``k`` (≥ fraction·N_c) correct
    examples have ``ε_i ≥ ε`` and keep their label under an ε-approximation (Lemma 4.1).  This
    is the lower order-statistic quantile ``Q(1 − fraction)``.  ``fraction`` may be an array.
    Raises ``ValueError`` if no example is correct.
    """
    add, mul, pred = label_margins(jnp.asarray(logits))
    eps = {"additive": add, "multiplicative": mul}.get(kind)
    if eps is None:
        raise ValueError(f"kind must be 'additive' or 'multiplicative', got {kind!r}")
    correct = np.asarray(pred) == np.asarray(labels)
    e = np.sort(np.asarray(eps, np.float64)[correct])[::-1]
    if e.size == 0:
        raise ValueError("no correctly classified example: nothing to guarantee")
    k = _guarantee_k(fraction, e.size)
    return _scalar(e[k - 1])


def guaranteed_fraction(logits, labels, epsilon, kind: str = "additive"):
    """Fraction of the correctly classified examples whose Lemma 4.1 margin is ≥ ``epsilon``
    (the accuracy guarantee implied by an ε-approximation; ``epsilon`` may be an array)."""
    add, mul, pred = label_margins(jnp.asarray(logits))
    eps = {"additive": add, "multiplicative": mul}.get(kind)
    if eps is None:
        raise ValueError(f"kind must be 'additive' or 'multiplicative', got {kind!r}")
    correct = np.asarray(pred) == np.asarray(labels)
    e = np.asarray(eps, np.float64)[correct]
    if e.size == 0:
        raise ValueError("no correctly classified example")
    epsilon = np.asarray(epsilon, np.float64)
    return _scalar(np.mean(e[None, :] >= epsilon.reshape(-1, 1), axis=1).reshape(epsilon.shape))


# --------------------------------------------------------------------------------------------
# Epsilon-first and sparsity-first pruning (bounds paper §3.3)
# --------------------------------------------------------------------------------------------

class PruneDraw(NamedTuple):
    counts: np.ndarray        # (n,) multiplicity of each element (kept ⇔ count > 0)
    weights: np.ndarray       # (n,) reweighting count_j/(m q_j) (0 if dropped; 1 if deterministic)
    num_samples: int          # m (draws, or elements kept for the deterministic method)
    num_distinct: int         # elements kept
    sparsity: float           # 1 − num_distinct / n
    epsilon: float            # the ε guaranteed by the bound for this m


def _finish(counts, weights, m, eps, n):
    counts = np.asarray(counts)
    k = int(np.sum(counts > 0))
    return PruneDraw(counts, np.asarray(weights), int(m), k, 1.0 - k / n, float(eps))


def expected_distinct(sensitivities, m):
    """Expected number of distinct elements in ``m`` i.i.d. draws ∝ ``s``:
    ``Σ_j 1 − (1 − q_j)^m`` (for sample sizes too large to draw)."""
    s = np.asarray(sensitivities, np.float64)
    q = s / s.sum()
    with np.errstate(divide="ignore"):                   # q_j = 1: log1p(-1) = -inf → term 1
        return float(np.sum(-np.expm1(float(m) * np.log1p(-q))))


def epsilon_first(key, sensitivities, epsilon: float, samples_for: Callable, *,
                  max_samples: int = 10_000_000) -> PruneDraw:
    """Epsilon-first pruning (bounds paper §3.3): ``m = samples_for(ε)`` from a bound, then
    ``m`` i.i.d. draws with replacement ∝ ``s`` (:func:`jaxprune.coreset.sample`); the
    sparsity follows from the number of distinct elements drawn.

    ``samples_for`` maps ε → m, e.g. ``functools.partial(sipp_randomized_samples,
    total_sensitivity=S)`` or ``lambda e: mussay_samples(e, t, d)``.  ``ValueError`` if the
    bound is infinite or above ``max_samples`` (use :func:`expected_distinct` then).
    The reported ``epsilon`` is the requested one.
    """
    m = float(samples_for(epsilon))
    if not math.isfinite(m):
        raise ValueError(f"epsilon_first: the bound requires infinitely many samples for "
                         f"epsilon={epsilon}")
    if m > max_samples:
        raise ValueError(f"epsilon_first: the bound requires m={m:.0f} samples > max_samples="
                         f"{max_samples}; use expected_distinct() for the sparsity")
    m = max(int(m), 1)
    counts, weights = sample(key, jnp.asarray(sensitivities), m)
    return _finish(counts, weights, m, epsilon, np.shape(sensitivities)[0])


def sparsity_first(key, sensitivities, num_keep: int, epsilon_for: Callable, *,
                   max_draws: int | None = None) -> PruneDraw:
    """Sparsity-first pruning (bounds paper §3.3): draw i.i.d. ∝ ``s`` until ``num_keep``
    distinct elements are drawn (:func:`jaxprune.coreset.sample_until_distinct`), then report
    the ε implied by the number of draws ``m``: ``epsilon_for(m)``.

    The paper's "runs forever" case — fewer than ``num_keep`` elements have non-zero
    probability (e.g. the pre-pruned easy case asked for < its sparsity) — is detected up front
    and raises ``ValueError`` immediately; a target that is reachable but not within
    ``max_draws`` draws (default ``max(64 n, 4096)``) also raises ``ValueError``.
    """
    s = np.asarray(sensitivities, np.float64)
    n = s.shape[0]
    npos = int(np.sum(s > 0))
    if not 1 <= int(num_keep) <= n:
        raise ValueError(f"sparsity_first: num_keep={num_keep} outside [1, {n}]")
    if int(num_keep) > npos:
        raise ValueError(f"sparsity_first: target of {num_keep} distinct elements is unreachable:"
                         f" only {npos} of {n} elements have non-zero probability (sparsity "
                         f"< {1 - npos / n:.4f} cannot be reached; sampling would never stop)")
    out = sample_until_distinct(key, jnp.asarray(sensitivities), int(num_keep), max_draws)
    m = int(out.num_draws)
    return _finish(out.counts, out.weights, m, float(epsilon_for(m)), n)


def deterministic_epsilon_first(sensitivities, epsilon: float, K: float = 2.0) -> PruneDraw:
    """SiPP deterministic, epsilon-first (footnote 1 of the bounds paper): keep the fewest
    largest-sensitivity elements so that ``3K Σ_{dropped} s_j ≤ ε`` (Theorem A.2); no
    reweighting."""
    m = int(sipp_deterministic_samples(epsilon, sensitivities, K))
    return deterministic_sparsity_first(sensitivities, m, K)


def deterministic_sparsity_first(sensitivities, num_keep: int, K: float = 2.0) -> PruneDraw:
    """SiPP deterministic, sparsity-first: keep the ``num_keep`` largest sensitivities and
    report ``ε = 3K Σ_{dropped} s_j`` (Theorem A.2).  Always terminates."""
    s = jnp.asarray(sensitivities)
    mask, _ = top_k(s, int(num_keep))
    mask = np.asarray(mask)
    eps = float(3.0 * K * np.sum(np.asarray(s, np.float64)[~mask]))
    return _finish(mask.astype(np.int32), mask.astype(np.float32), int(num_keep), eps, s.shape[0])


# --------------------------------------------------------------------------------------------
# Observed error
# --------------------------------------------------------------------------------------------

class ErrorStats(NamedTuple):
    additive: np.ndarray          # (N,) per-example additive error
    multiplicative: np.ndarray    # (N,) per-example multiplicative error (nan: no valid unit)
    additive_mean: float
    additive_std: float
    multiplicative_mean: float
    multiplicative_std: float
    num_excluded: int             # (example, unit) entries with |original| ≤ zero_tol


def observed_error(original, pruned, *, reduce: str = "max", zero_tol: float = 0.0,
                   zero_policy: str = "exclude") -> ErrorStats:
    """Observed approximation error of a pruned layer/output on a dev set.

    ``original``, ``pruned``: (N, ...) pre-activations (or pre-softmax logits) of the original
    and the pruned network, flattened to (N, U) units.  The guarantees are element-wise —
    additive ``|f̂_u(x) − f_u(x)| ≤ ε`` (Theorem A.4, Lemma 4.1) and multiplicative
    ``|f̂_u(x) − f_u(x)| ≤ ε |f_u(x)|`` (Theorems A.1/A.2, 2.6) — so the error of an example is
    the smallest ε for which the guarantee holds on it:

        additive:        e_add(x) = max_u |f̂_u(x) − f_u(x)|
        multiplicative:  e_mul(x) = max_u |f̂_u(x) − f_u(x)| / |f_u(x)|

    (``reduce="mean"`` averages over units instead).  Units with ``|f_u(x)| ≤ zero_tol`` have
    no finite multiplicative error unless unchanged: ``zero_policy="exclude"`` (default) drops
    them (counted in ``num_excluded``; an example with no unit left gets nan and is left out
    of the mean/std); ``"inf"`` makes them ``inf`` (0 if ``f̂_u = f_u``).  The summary is the
    mean ± (population) std over examples, as the paper's "Observed Err" column.
    """
    f = np.asarray(original, np.float64)
    g = np.asarray(pruned, np.float64)
    if f.shape != g.shape or f.ndim < 1:
        raise ValueError(f"shape mismatch: {f.shape} vs {g.shape}")
    f = f.reshape(f.shape[0], -1)
    g = g.reshape(g.shape[0], -1)
    if reduce not in ("max", "mean"):
        raise ValueError(f"reduce must be 'max' or 'mean', got {reduce!r}")
    red = np.max if reduce == "max" else np.mean
    nred = np.nanmax if reduce == "max" else np.nanmean
    diff = np.abs(g - f)
    add = red(diff, axis=1)
    small = np.abs(f) <= zero_tol
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = diff / np.abs(f)
    if zero_policy == "exclude":
        rel = np.where(small, np.nan, rel)
        allnan = np.all(small, axis=1)
        mul = np.full(f.shape[0], np.nan)
        if np.any(~allnan):
            mul[~allnan] = nred(rel[~allnan], axis=1)
    elif zero_policy == "inf":
        rel = np.where(small, np.where(diff == 0, 0.0, np.inf), rel)
        mul = red(rel, axis=1)
    else:
        raise ValueError(f"zero_policy must be 'exclude' or 'inf', got {zero_policy!r}")
    mv = mul[~np.isnan(mul)]
    with np.errstate(invalid="ignore"):          # inf entries (zero_policy="inf"): std = nan
        return ErrorStats(add, mul, float(np.mean(add)), float(np.std(add)),
                          float(np.mean(mv)) if mv.size else math.nan,
                          float(np.std(mv)) if mv.size else math.nan, int(np.sum(small)))


def observed_errors(original: dict, pruned: dict, **kw) -> dict:
    """:func:`observed_error` per layer: ``{name: ErrorStats}`` for every key of ``original``
    (e.g. hidden pre-activations and the output logits)."""
    missing = set(original) - set(pruned)
    if missing:
        raise ValueError(f"pruned activations missing for {sorted(missing)}")
    return {k: observed_error(original[k], pruned[k], **kw) for k in original}


# --------------------------------------------------------------------------------------------
# α-scaling (Lemma C.1)
# --------------------------------------------------------------------------------------------

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


def scale_two_layer(params, alpha: float, *, w2_power: float = 0.0,
                    scale_output_bias: bool = True):
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
    _check_positive("alpha", alpha)
    w1, b1, w2, b2 = params
    out_scale = alpha ** (1.0 + w2_power)
    return (alpha * w1, None if b1 is None else alpha * b1, alpha ** w2_power * w2,
            None if b2 is None else (out_scale * b2 if scale_output_bias else b2))


def total_sensitivity(params, beta: float, alpha: float = 1.0, *, w2_power: float = 0.0,
                      sensitivity_fn: Callable | None = None) -> float:
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
