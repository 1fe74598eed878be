"""Sample-size and ε formulas of the pruning approximation bounds, made computable.

Notation of "When are neural pruning approximation bounds useful?" (the *bounds paper*),
Appendix A, and Theorem 2.6 of the main paper.  ``log`` is the natural logarithm (the papers
do not fix a base; any other base only changes the unspecified constants).  Sample counts are
float64 (integer valued, rounded *up* with a relative tolerance of ``1e-9``:
``⌈x·(1 − 1e-9)⌉``, so that round trips ``m(ε(m)) == m`` are not broken by float noise;
``inf`` when the bound is infinite, e.g. ``μ(P) = ∞``), so that vacuous cases are
representable.  The formulas broadcast over arrays
of ``ε`` / ``m``.

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

The garbled PDF text of Theorem A.1 is reconstructed as above; the reconstruction agrees with
the paper's own remark (§4.3.2) that "even at the minimum total sensitivity [S = 1] Theorem A.1
would require sampling ~1.5× the number of weights" of a 100-input perceptron at ε ≈ 0.46,
δ = 0.5, K = 2:  ``2·log 8·(6 + 0.92)/0.46² ≈ 136``.  Theorem A.1 additionally needs
``|S| = ⌈K'·log(2ρ/δ)⌉`` validation points to estimate the sensitivities (K' = 3 by default,
:func:`sipp_num_validation_points`); it does not enter ``ε_m``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxprune.bounds._checks import CEIL_RTOL, ceil, check_positive, check_prob, scalar

__all__ = [
    "sipp_randomized_epsilon",
    "sipp_randomized_samples",
    "sipp_num_validation_points",
    "sipp_sensitivities",
    "sipp_deterministic_epsilon",
    "sipp_deterministic_samples",
    "mussay_sensitivities",
    "mussay_epsilon",
    "mussay_samples",
    "coreset_epsilon",
    "coreset_samples",
]


# --------------------------------------------------------------------------------------------
# SiPP randomized weight pruning (Theorem A.1)
# --------------------------------------------------------------------------------------------


def _sipp_s_tilde(total_sensitivity, delta, K):
    check_prob("delta", delta)
    check_positive("K", K)
    check_positive("total_sensitivity", total_sensitivity)
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
    check_positive("m", m)
    a = s_t / m
    eps = np.where(m > s_t, np.sqrt(a * (a + 6.0)) + a, np.inf)
    return scalar(eps)


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
    check_positive("epsilon", eps)
    return ceil(s_t * (6.0 + 2.0 * eps) / eps**2)


def sipp_num_validation_points(rho: int, delta: float = 0.5, K_prime: float = 3.0) -> int:
    """Size of the validation batch ``S`` of Theorem A.1: ``|S| = ⌈K'·log(2ρ/δ)⌉``, ``ρ`` =
    nnz of the layer's weight matrix, ``K'`` = 3 as recommended (reconstructed from the
    garbled PDF text "⌈K' log(2ρ/δ)⌉"; it sizes the sensitivity estimate only)."""
    check_prob("delta", delta)
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
    contrib = inputs * wp[None, :]  # (N, d)
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
    rev = np.concatenate([[0.0], np.cumsum(s[::-1])])  # rev[k] = sum of the k smallest
    return rev[::-1]


def sipp_deterministic_epsilon(m, sensitivities, K: float = 2.0):
    """ε of SiPP deterministic pruning keeping the ``m`` largest sensitivities (Theorem A.2):

        ε_m = 3K · Σ_{j ∈ I \\ I_m} s_j,

    ``I_m`` = indices of the ``m`` largest ``s_j`` (ties arbitrary; the tail sum does not
    depend on them).  Guarantee: ``Pr(|ẑ(x) − z(x)| ≥ ε_m z(x)) ≤ δ/2`` (multiplicative).
    ``m`` may be an array; ``m ≥ n`` gives 0.
    """
    check_positive("K", K)
    tail = _tail_sums(sensitivities)
    n = tail.shape[0] - 1
    m = np.asarray(m)
    if np.any(m < 0):
        raise ValueError(f"m must be ≥ 0, got {m!r}")
    return scalar(3.0 * K * tail[np.minimum(m, n).astype(np.int64)])


def sipp_deterministic_samples(epsilon, sensitivities, K: float = 2.0):
    """Smallest ``m`` (weights kept, largest sensitivities first) with
    ``3K · Σ_{j ∉ I_m} s_j ≤ ε`` (Theorem A.2 inverted; compared with the relative tolerance
    ``1e-9`` so that float noise in the tail sum does not cost a sample).  Returned as float64
    (integer valued)."""
    check_positive("K", K)
    tail = 3.0 * K * _tail_sums(sensitivities)  # non-increasing in m
    eps = np.asarray(epsilon, dtype=np.float64)
    if np.any(eps < 0):
        raise ValueError(f"epsilon must be ≥ 0, got {epsilon!r}")
    # first m with tail[m] <= eps: tail is non-increasing, search on the reversed array
    m = tail.shape[0] - np.searchsorted(tail[::-1], eps * (1.0 + CEIL_RTOL), side="right")
    return scalar(np.asarray(m, dtype=np.float64))


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
    check_prob("delta", delta)
    check_positive("c", c)
    check_positive("total_sensitivity (t, needed for log t)", total_sensitivity)
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

    >>> m = float(mussay_samples(0.5, total_sensitivity=20.0, d=10))
    >>> m > float(mussay_samples(1.0, total_sensitivity=20.0, d=10))     # smaller ε, more samples
    True
    """
    eps = np.asarray(epsilon, dtype=np.float64)
    check_positive("epsilon", eps)
    return np.maximum(ceil(_mussay_A(total_sensitivity, d, delta, c) / eps**2), 1.0)


def mussay_epsilon(m, total_sensitivity, d: int, delta: float = 0.5, c: float = 1.0):
    """Additive ε implied by ``m`` sampled neurons (Theorem A.4 inverted):
    ``ε = sqrt( c·t·(d·log t + log(1/δ)) / m )``."""
    m = np.asarray(m, dtype=np.float64)
    check_positive("m", m)
    return scalar(np.sqrt(_mussay_A(total_sensitivity, d, delta, c) / m))


# --------------------------------------------------------------------------------------------
# Main paper, Theorem 2.6 (ReLU ε-coreset)
# --------------------------------------------------------------------------------------------


def _coreset_A(mu, r, n, d, delta, c):
    check_prob("delta", delta)
    check_positive("c", c)
    mu = np.asarray(mu, np.float64)
    if np.any(mu < 0):
        raise ValueError(f"mu must be ≥ 0, got {mu!r}")
    if r < 1 or n < 1 or d < 1:
        raise ValueError(f"need r, n, d ≥ 1, got r={r}, n={n}, d={d}")
    logn = math.log(n)
    with np.errstate(divide="ignore", invalid="ignore"):
        inner = mu * r * logn
        bracket = d * np.log(np.where(inner > 0, inner, 1.0)) + math.log(1.0 / delta)
        A = c * mu * r**3.5 * logn * np.maximum(bracket, 0.0)
    return np.where(np.isinf(mu), np.inf, A)


def coreset_samples(epsilon, mu, r: int, n: int, d: int, delta: float = 0.5, c: float = 1.0):
    """Sample size of the main paper's Theorem 2.6 (ReLU ε-coreset, multiplicative ε):

        m = ⌈ c · μ(P)·r^3.5·log n / ε² · ( d·log(μ(P)·r·log n) + log(1/δ) ) ⌉

    ``μ(P)`` the regression complexity measure (Definition 2.3, :func:`estimate_mu`),
    ``r = rank(P)``, ``n = |P|``, ``d`` the dimension.  The theorem only states
    ``m ∈ O(·)``: ``c`` (default 1) is the hidden constant, so the value is the bound's
    *shape*, not a certified count.  ``μ = ∞`` gives ``inf``; a non-positive ``log`` argument
    or bracket is clamped (bracket ≥ 0) and ``m ≥ 1``.

    >>> float(coreset_samples(0.5, mu=10.0, r=3, n=100, d=8)) > 100    # vacuous for 100 neurons
    True
    >>> float(coreset_samples(0.5, mu=float("inf"), r=3, n=100, d=8))
    inf
    """
    eps = np.asarray(epsilon, dtype=np.float64)
    check_positive("epsilon", eps)
    A = _coreset_A(mu, r, n, d, delta, c)
    return np.maximum(ceil(A / eps**2), 1.0)


def coreset_epsilon(m, mu, r: int, n: int, d: int, delta: float = 0.5, c: float = 1.0):
    """ε implied by ``m`` samples under Theorem 2.6 (inverted):
    ``ε = sqrt( c·μ·r^3.5·log n·(d·log(μ·r·log n) + log(1/δ)) / m )`` (``c`` as in
    :func:`coreset_samples`)."""
    m = np.asarray(m, dtype=np.float64)
    check_positive("m", m)
    return scalar(np.sqrt(_coreset_A(mu, r, n, d, delta, c) / m))
