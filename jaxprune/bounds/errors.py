"""Observed approximation error of a pruned layer or output on a dev set, in the element-wise
forms the guarantees are stated in (additive and multiplicative)."""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

__all__ = ["ErrorStats", "observed_error", "observed_errors"]


class ErrorStats(NamedTuple):
    additive: np.ndarray  # (N,) per-example additive error
    multiplicative: np.ndarray  # (N,) per-example multiplicative error (nan: no valid unit)
    additive_mean: float
    additive_std: float
    multiplicative_mean: float
    multiplicative_std: float
    num_excluded: int  # (example, unit) entries with |original| ≤ zero_tol


def observed_error(
    original, pruned, *, reduce: str = "max", zero_tol: float = 0.0, zero_policy: str = "exclude"
) -> ErrorStats:
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
    with np.errstate(invalid="ignore"):  # inf entries (zero_policy="inf"): std = nan
        return ErrorStats(
            add,
            mul,
            float(np.mean(add)),
            float(np.std(add)),
            float(np.mean(mv)) if mv.size else math.nan,
            float(np.std(mv)) if mv.size else math.nan,
            int(np.sum(small)),
        )


def observed_errors(original: dict, pruned: dict, **kw) -> dict:
    """:func:`observed_error` per layer: ``{name: ErrorStats}`` for every key of ``original``
    (e.g. hidden pre-activations and the output logits)."""
    missing = set(original) - set(pruned)
    if missing:
        raise ValueError(f"pruned activations missing for {sorted(missing)}")
    return {k: observed_error(original[k], pruned[k], **kw) for k in original}
