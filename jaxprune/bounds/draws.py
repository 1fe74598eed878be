"""Epsilon-first and sparsity-first pruning (bounds paper §3.3): draw elements ∝ their
sensitivities with the sample size a bound asks for, or until a sparsity is reached and report
the ε the bound implies; and the deterministic (top-k) SiPP counterparts."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

from jaxprune.bounds.theorems import sipp_deterministic_samples
from jaxprune.coreset import sample, sample_until_distinct, top_k

__all__ = [
    "PruneDraw",
    "expected_distinct",
    "epsilon_first",
    "sparsity_first",
    "deterministic_epsilon_first",
    "deterministic_sparsity_first",
]


class PruneDraw(NamedTuple):
    counts: np.ndarray  # (n,) multiplicity of each element (kept ⇔ count > 0)
    weights: np.ndarray  # (n,) reweighting count_j/(m q_j) (0 if dropped; 1 if deterministic)
    num_samples: int  # m (draws, or elements kept for the deterministic method)
    num_distinct: int  # elements kept
    sparsity: float  # 1 − num_distinct / n
    epsilon: float  # the ε guaranteed by the bound for this m


def _finish(counts, weights, m, eps, n):
    counts = np.asarray(counts)
    k = int(np.sum(counts > 0))
    return PruneDraw(counts, np.asarray(weights), int(m), k, 1.0 - k / n, float(eps))


def expected_distinct(sensitivities, m):
    """Expected number of distinct elements in ``m`` i.i.d. draws ∝ ``s``:
    ``Σ_j 1 − (1 − q_j)^m`` (for sample sizes too large to draw)."""
    s = np.asarray(sensitivities, np.float64)
    q = s / s.sum()
    with np.errstate(divide="ignore"):  # q_j = 1: log1p(-1) = -inf → term 1
        return float(np.sum(-np.expm1(float(m) * np.log1p(-q))))


def epsilon_first(
    key, sensitivities, epsilon: float, samples_for: Callable, *, max_samples: int = 10_000_000
) -> PruneDraw:
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
        raise ValueError(
            f"epsilon_first: the bound requires infinitely many samples for epsilon={epsilon}"
        )
    if m > max_samples:
        raise ValueError(
            f"epsilon_first: the bound requires m={m:.0f} samples > max_samples="
            f"{max_samples}; use expected_distinct() for the sparsity"
        )
    m = max(int(m), 1)
    counts, weights = sample(key, jnp.asarray(sensitivities), m)
    return _finish(counts, weights, m, epsilon, np.shape(sensitivities)[0])


def sparsity_first(
    key, sensitivities, num_keep: int, epsilon_for: Callable, *, max_draws: int | None = None
) -> PruneDraw:
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
        raise ValueError(
            f"sparsity_first: target of {num_keep} distinct elements is unreachable:"
            f" only {npos} of {n} elements have non-zero probability (sparsity "
            f"< {1 - npos / n:.4f} cannot be reached; sampling would never stop)"
        )
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
