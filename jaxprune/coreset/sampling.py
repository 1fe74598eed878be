"""Sensitivity sampling (paper Algorithm 2, lines 12–14).

``t = Σ s_j``, ``q_j = s_j / t``; ``m`` i.i.d. draws with replacement ∝ ``q`` (inverse-CDF on
``cumsum(q)``, ``O(m log n)``, no (m, n) Gumbel table); a drawn point gets weight
``u_j = count_j · t / (m · s_j) = count_j / (m q_j)`` (0 if never drawn), so
``E[Σ_j u_j f_j] = Σ_j f_j`` for any ``f`` (unbiased).  *Sparsity-first*: draw until ``k``
distinct points have been seen (``m`` = number of draws then).  ``top_k``: the ``k`` largest
sensitivities, ties to the lower index, no reweighting.  All jitted, fixed shapes.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.core
import jax.numpy as jnp
import numpy as np

from jaxprune.geometry import cheap_jit, f64, out_dtype, precision


class Sample(NamedTuple):
    counts: jax.Array  # (n,) int32 multiplicities
    weights: jax.Array  # (n,) count_j · t / (m s_j), 0 where not drawn
    num_draws: jax.Array  # () int32, m
    ok: jax.Array  # () bool, False if the draw budget could not reach the target


def _draw(key, s, m):
    """``m`` (static) i.i.d. indices ∝ ``s`` (inverse CDF); never returns an s_j = 0 index."""
    t = jnp.sum(s)
    cdf = jnp.cumsum(s) / t
    u = jax.random.uniform(key, (m,), dtype=s.dtype)
    idx = jnp.searchsorted(cdf, u, side="right")
    idx = jnp.minimum(idx, s.shape[0] - 1)
    # guard round-off at the top end / zero-probability bins: move to the last positive entry
    last = s.shape[0] - 1 - jnp.argmax((s > 0)[::-1])
    return jnp.where(s[idx] > 0, idx, last)


def _weights(counts, s, m):
    t = jnp.sum(s)
    return jnp.where(counts > 0, counts * t / (m * jnp.where(s > 0, s, 1.0)), 0.0)


@cheap_jit(static_argnames=("m",))
def _sample_jit(key, s, m):
    idx = _draw(key, s, m)
    counts = jnp.zeros(s.shape[0], jnp.int32).at[idx].add(1)
    return counts, _weights(counts, s, m)


@cheap_jit(static_argnames=("max_draws",))
def _until_jit(key, s, k, max_draws):  # k is traced: no recompiles per target width
    n = s.shape[0]
    idx = _draw(key, s, max_draws)
    pos = jnp.arange(max_draws)
    first = jnp.full(n, max_draws, jnp.int32).at[idx].min(pos.astype(jnp.int32))
    is_first = first[idx] == pos
    distinct = jnp.cumsum(is_first)  # distinct after draws 0..j
    reach = distinct >= k
    ok = jnp.any(reach) & (jnp.sum(s > 0) >= k) & (k >= 1)
    m = jnp.where(ok, jnp.argmax(reach) + 1, max_draws).astype(jnp.int32)
    counts = jnp.zeros(n, jnp.int32).at[idx].add((pos < m).astype(jnp.int32))
    return Sample(counts, _weights(counts, s, m.astype(s.dtype)), m, ok)


def _check_s(s, name):
    if isinstance(s, jax.core.Tracer):
        return
    a = np.asarray(s, dtype=np.float64)
    if a.ndim != 1 or a.size == 0:
        raise ValueError(f"{name}: sensitivities must be a non-empty 1-D array, got {a.shape}")
    if not np.all(np.isfinite(a)) or np.any(a < 0):
        raise ValueError(f"{name}: sensitivities must be finite and non-negative")
    if not np.any(a > 0):
        raise ValueError(f"{name}: all sensitivities are zero; nothing can be sampled")


def sample(key, sensitivities, m: int):
    """``m`` i.i.d. draws with replacement ∝ ``s`` → ``(counts (n,) int32, weights (n,))``,
    ``weights_j = count_j · t / (m s_j)`` (Alg. 2 lines 13–14).

    >>> import jax, jax.numpy as jnp
    >>> counts, weights = sample(jax.random.key(0), jnp.array([0.1, 0.5, 0.2, 0.9]), 6)
    >>> int(counts.sum()), counts.shape == weights.shape == (4,)
    (6, True)
    """
    _check_s(sensitivities, "sample")
    if int(m) < 1:
        raise ValueError(f"sample: m must be ≥ 1, got {m}")
    dt = out_dtype(sensitivities)
    with precision(sensitivities) as cdt:
        counts, w = _sample_jit(key, f64(sensitivities, cdt), int(m))
        return counts, w.astype(dt)


def sample_until_distinct(key, sensitivities, k: int, max_draws: int | None = None) -> Sample:
    """Sparsity-first sampling: i.i.d. draws ∝ ``s`` until ``k`` distinct points are drawn.

    Returns :class:`Sample` ``(counts, weights, num_draws, ok)``; weights use ``m = num_draws``.
    ``max_draws`` (static; default ``max(64 n, 4096)``) bounds the work.  With concrete inputs
    a ``ValueError`` is raised when fewer than ``k`` sensitivities are positive (unreachable)
    or the budget ran out; under ``jit`` check ``ok`` instead.
    """
    _check_s(sensitivities, "sample_until_distinct")
    n = np.shape(sensitivities)[0]
    k = int(k)
    if not isinstance(sensitivities, jax.core.Tracer):
        npos = int(np.sum(np.asarray(sensitivities) > 0))
        if not 1 <= k <= npos:
            raise ValueError(
                f"sample_until_distinct: cannot draw k={k} distinct points: only "
                f"{npos} of {n} sensitivities are positive"
            )
    max_draws = int(max_draws or max(64 * n, 4096))
    dt = out_dtype(sensitivities)
    with precision(sensitivities) as cdt:
        out = _until_jit(key, f64(sensitivities, cdt), jnp.asarray(k, jnp.int32), max_draws)
        out = out._replace(weights=out.weights.astype(dt))
    if not isinstance(out.ok, jax.core.Tracer) and not bool(out.ok):
        raise ValueError(
            f"sample_until_distinct: {k} distinct points not reached within "
            f"max_draws={max_draws}; raise max_draws"
        )
    return out


@cheap_jit(static_argnames=("k",))
def _topk_jit(s, k):
    _, idx = jax.lax.top_k(s, k)
    return jnp.zeros(s.shape[0], bool).at[idx].set(True), idx


def top_k(sensitivities, k: int):
    """Deterministic top-``k`` → ``(mask (n,) bool, indices (k,))``; ties keep the lower index.

    >>> import jax.numpy as jnp
    >>> keep, idx = top_k(jnp.array([0.1, 0.5, 0.2, 0.9]), 2)
    >>> keep.tolist(), sorted(idx.tolist())
    ([False, True, False, True], [1, 3])
    """
    n = np.shape(sensitivities)[0]
    if not 0 <= int(k) <= n:
        raise ValueError(f"top_k: k={k} outside [0, {n}]")
    return _topk_jit(jnp.asarray(sensitivities), int(k))
