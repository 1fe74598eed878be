"""Selection: how many channels/weights each layer keeps, and which.

* Widths. ``ratio`` is the fraction removed, counted in a unit: ``"params"`` (entries of the
  arrays the pruned groups live in), ``"neurons"`` (channels of the pruned groups) or
  ``"flops"`` (multiply-accumulates of the whole network). :func:`allocate_widths` splits a
  float ratio over groups (``"uniform"``: one keep fraction; ``"bound"``: balance the
  sensitivity-sampling error bounds); :func:`removed_fraction` measures a choice.
* Channels. :func:`select` keeps ``k`` channels of a group: the top-k of the scores, or the
  paper's sparsity-first sampling with re-weights ``count_j·t/(m·s_j)`` (Algorithm 2).
* Weights. :func:`layer_budgets` splits a weight budget over kernels by largest-remainder
  rounding; :func:`top_k_mask` keeps the ``k`` largest entries of an array.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxprune import coreset
from jaxprune.structure import Structure

UNITS = ("params", "neurons", "flops")  # "params" counts the whole model's parameters
ALLOCATIONS = ("bound", "uniform")
SAMPLINGS = ("sparsity_first", "deterministic")


def prunable_groups(
    struct: Structure, leave=(), prune_residual: bool = False, ratio=None, allow_empty: bool = False
) -> list:
    """The groups :func:`jaxprune.prune` cuts: prunable (not reaching the output, not frozen),
    not named in ``leave``, not tied by a residual add unless ``prune_residual``; with a ratio
    dict, only the groups it names. None at all: ``[]`` with ``allow_empty``, else an error
    that lists every group and why it is left whole."""
    names = {g.name for g in struct.groups}
    unknown = set(leave) - names
    if unknown:
        raise ValueError(f"leave= names unknown groups {sorted(unknown)}; groups: {sorted(names)}")
    groups = [
        g
        for g in struct.groups
        if g.prunable and g.name not in set(leave) and (prune_residual or not g.residual)
    ]
    if not groups:
        if allow_empty and not isinstance(ratio, Mapping):
            return []
        why = (
            "; ".join(
                f"{g.name}: {g.reason or 'tied with other producers / left alone'}"
                for g in struct.groups
            )
            or "the network has no Dense/Conv layer"
        )
        raise ValueError(f"no prunable channel group found ({why})")
    if isinstance(ratio, Mapping):  # only the named groups are pruned
        groups = [g for g in groups if g.name in ratio] or groups
    return groups


def removed_fraction(struct: Structure, groups, widths: Mapping[str, int], unit: str) -> float:
    """Fraction removed, in ``unit``, when ``groups`` shrink to ``widths``: ``"params"`` of
    the whole model, ``"params_prunable"`` of the arrays the groups live in, ``"neurons"`` of
    the groups' channels, ``"flops"`` of the whole network."""
    if not groups and unit in ("neurons", "params_prunable"):
        return 0.0
    if unit == "neurons":
        before = sum(g.size for g in groups)
        return 1.0 - sum(widths.get(g.name, g.size) for g in groups) / before
    if unit == "flops":
        return 1.0 - struct.count_macs(widths) / struct.count_macs()
    if unit == "params":
        return 1.0 - struct.count_params(widths) / struct.count_params()
    if unit != "params_prunable":
        raise ValueError(f"unknown unit {unit!r}; use one of {UNITS} or 'params_prunable'")
    touched = {s.path for g in groups for s in (*g.producers, *g.members, *g.consumers)}
    return 1.0 - struct.count_params(widths, touched) / struct.count_params({}, touched)


def _cost(struct: Structure, groups, widths: Mapping[str, int], unit: str) -> dict:
    """Marginal cost of one channel of each group at ``widths``, in ``unit``."""

    def measure(w):
        if unit == "neurons":
            return sum(w.get(g.name, g.size) for g in groups)
        if unit == "flops":
            return struct.count_macs(w)
        return struct.count_params(w)

    here = measure(widths)
    return {g.name: max(here - measure({**widths, g.name: widths[g.name] - 1}), 1) for g in groups}


def _fit_scale(struct, groups, ratio, unit, width_at) -> dict:
    """Bisection on the monotone knob ``x ∈ [0, 1]`` of ``width_at(x)`` for ``ratio``."""
    lo, hi = 0.0, 1.0  # removed(width_at(lo)) >= ratio >= removed(width_at(hi))
    if removed_fraction(struct, groups, width_at(lo), unit) < ratio:
        return width_at(lo)  # the minimum widths are as far as we can go; the report says so
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if removed_fraction(struct, groups, width_at(mid), unit) >= ratio:
            lo = mid
        else:
            hi = mid
    return min(
        (width_at(lo), width_at(hi)),
        key=lambda w: abs(removed_fraction(struct, groups, w, unit) - ratio),
    )


def min_widths(groups, min_width: int = 1, max_ratio: float = 1.0) -> dict[str, int]:
    """The fewest channels each group keeps under a float ratio: ``min_width``, and at most
    ``max_ratio`` of its channels removed, so that a whole-model target never cuts one group
    to (almost) nothing (Torch-Pruning's ``max_pruning_ratio``)."""
    return {
        g.name: min(g.size, max(min_width, g.size - int(math.floor(max_ratio * g.size + 1e-9))))
        for g in groups
    }


def allocate_widths(
    struct: Structure,
    groups,
    ratio,
    unit: str = "params",
    min_width: int = 1,
    scores: Mapping[str, Any] | None = None,
    allocation: str = "bound",
    round_to: int = 1,
    max_ratio: float = 1.0,
) -> dict:
    """Per-group widths for ``ratio``.

    ``allocation="uniform"``: one keep fraction ``q`` for every group, ``m_g = round(q·C_g)``.
    ``allocation="bound"``: balance the sensitivity-sampling error bounds. A group sampled
    ``m_g`` times has error ``ε_g ∝ sqrt(t_g / m_g)`` (``t_g`` = total sensitivity, measured
    as ``Σ_j s_j / max_j s_j`` so it is scale-free and equals ``C_g`` for uniform scores).
    Minimising ``Σ_g ε_g`` subject to ``Σ_g c_g m_g = budget`` (``c_g`` = cost of one
    channel in ``unit``) gives ``m_g ∝ t_g^{1/3} c_g^{-2/3}``. Costs depend on the
    neighbours' widths, so ``c_g`` is re-evaluated at the allocated widths (5 fixed-point
    rounds). Widths are clipped to ``[min_width, C_g]`` (and rounded to multiples of
    ``round_to``) and the common scale is found by bisection so that the achieved ratio is
    closest to ``ratio``. ``max_ratio``: no group loses more than this fraction of its
    channels (:func:`min_widths`; a ratio dict names its widths itself).
    """
    if isinstance(ratio, Mapping):
        names = {g.name: g for g in groups}
        unknown = set(ratio) - set(names)
        if unknown:
            raise ValueError(
                f"ratio names unknown or non-prunable groups {sorted(unknown)}; "
                f"prunable: {sorted(names)}"
            )
        widths = {}
        for name, r in ratio.items():
            k = names[name].size - int(math.floor(float(r) * names[name].size + 1e-9))
            if k < max(min_width, 1):
                raise ValueError(
                    f"group {name!r} would end up with width {k} (< {max(min_width, 1)})"
                )
            widths[name] = k
        return widths

    floor = min_widths(groups, min_width, max_ratio)

    def clip(g, value):
        if round_to > 1:  # a multiple of round_to, at least one step; small groups stay whole
            value = round_to * max(round(value / round_to), -(-floor[g.name] // round_to), 1)
        return int(min(g.size, max(floor[g.name], round(value))))

    if allocation == "uniform" or scores is None:
        return _fit_scale(
            struct, groups, ratio, unit, lambda q: {g.name: clip(g, q * g.size) for g in groups}
        )
    total = {}
    for g in groups:
        s = np.asarray(scores[g.name], np.float64)
        total[g.name] = float(s.sum() / s.max()) if s.max() > 0 else float(g.size)
    widths = {g.name: g.size for g in groups}
    for _ in range(5):
        cost = _cost(struct, groups, {n: max(w, 2) for n, w in widths.items()}, unit)
        raw = {g.name: total[g.name] ** (1 / 3) * cost[g.name] ** (-2 / 3) for g in groups}
        low = min(raw[g.name] / g.size for g in groups)  # x = 1 keeps every channel
        widths = _fit_scale(
            struct,
            groups,
            ratio,
            unit,
            lambda x, raw=raw, low=low: {g.name: clip(g, x * raw[g.name] / low) for g in groups},
        )
    return widths


def select(key: jax.Array, scores: np.ndarray | jax.Array, k: int, sampling: str):
    """Kept indices (sorted), re-weights for them, and the number of draws.

    ``sparsity_first``: i.i.d. draws ∝ score until ``k`` distinct channels; re-weight
    ``count_j·t/(m·s_j)`` (Alg. 2, line 14). Channels with zero score get a floor of
    ``1e-6·max(s)`` so that every target width is reachable. ``deterministic``: top-k, weight 1.
    """
    scores = jnp.asarray(scores, jnp.float32)
    n = scores.shape[0]
    if k >= n:
        return np.arange(n), np.ones(n, np.float32), 0
    if sampling == "deterministic":
        idx = top_k_indices(scores, k)
        return idx, np.ones(k, np.float32), 0
    if sampling != "sparsity_first":
        raise ValueError(f"unknown sampling {sampling!r}; use one of {SAMPLINGS}")
    floor = 1e-6 * jnp.maximum(jnp.max(scores), 1e-30)
    s = jnp.maximum(scores, floor)
    n_budget = max(64 * n, 4096)
    try:
        counts, weights, m, _ = coreset.sample_until_distinct(key, s, k, max_draws=n_budget)
    except ValueError:  # heavy-tailed scores: collecting the last coupons takes long
        try:
            counts, weights, m, _ = coreset.sample_until_distinct(
                key, s, k, max_draws=256 * n_budget
            )
        except ValueError as err:
            raise ValueError(
                f"sparsity-first sampling could not reach {k} distinct channels of "
                f"{n} within {256 * n_budget} draws; use sampling='deterministic' "
                "or prune more"
            ) from err
    idx = np.flatnonzero(np.asarray(counts) > 0)
    return idx, np.asarray(weights)[idx].astype(np.float32), int(m)


def top_k_indices(scores, k: int) -> np.ndarray:
    """Sorted flat indices of the ``k`` largest entries (ties -> the lower index).

    Host-side NumPy on purpose: one XLA compile per distinct ``(n, k)`` would dominate a
    first prune of a deep network."""
    s = np.asarray(scores, np.float64).reshape(-1)
    k = int(min(max(k, 0), s.size))
    return np.sort(np.argsort(-s, kind="stable")[:k])


def top_k_mask(scores, k: int) -> np.ndarray:
    """Bool mask (same shape) of the ``k`` largest entries of ``scores`` (row-major order;
    ties -> the lower flat index is kept). Exactly ``k`` entries (``k`` clipped to [0, size]).

    >>> import numpy as np
    >>> top_k_mask(np.array([0.1, 0.5, 0.2, 0.9]), 2).tolist()
    [False, True, False, True]
    """
    s = np.asarray(scores)
    keep = np.zeros(s.size, bool)
    keep[top_k_indices(s, k)] = True
    return keep.reshape(s.shape)


def layer_budgets(sizes, ratio: float, minimum: int | Sequence[int] = 1) -> list[int]:
    """Entries to keep per layer: ``R = round(ratio·Σ sizes)`` removed in total, split by
    largest-remainder rounding of ``ratio·size_l`` (ties -> earlier layer), then each
    ``keep_l`` clipped to ``[minimum_l, size_l]`` (``minimum`` an int or one per layer).

    >>> layer_budgets([100, 50], 0.5)
    [50, 25]
    """
    sizes = [int(n) for n in sizes]
    # pyright does not narrow int | Sequence[int] by np.isscalar
    mins = [int(minimum)] * len(sizes) if np.isscalar(minimum) else [int(m) for m in minimum]  # pyright: ignore[reportArgumentType, reportGeneralTypeIssues]
    total = sum(sizes)
    removed_total = int(math.floor(float(ratio) * total + 0.5))
    quotas = [float(ratio) * n for n in sizes]
    removed = [int(math.floor(q)) for q in quotas]
    left = removed_total - sum(removed)
    order = sorted(range(len(sizes)), key=lambda i: (-(quotas[i] - removed[i]), i))
    for i in order[: max(left, 0)]:
        removed[i] += 1
    return [int(min(n, max(m, n - r))) for n, r, m in zip(sizes, removed, mins)]
