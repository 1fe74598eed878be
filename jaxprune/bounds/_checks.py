"""Argument checks and rounding shared by the bound formulas of this package."""

from __future__ import annotations

import numpy as np

# Relative tolerance of the rounding up of sample counts: ``ceil(x·(1 − CEIL_RTOL))`` keeps
# round trips ``m(ε(m)) == m`` from being broken by float noise.
CEIL_RTOL = 1e-9


def ceil(x):
    """``⌈x⌉`` with the relative tolerance :data:`CEIL_RTOL`; keeps ``inf``; float64."""
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        out = np.where(np.isfinite(x), np.ceil(x * (1.0 - CEIL_RTOL)), x)
    return out[()] if out.ndim == 0 else out


def check_prob(name, value, lo_open=True, hi_open=True):
    v = np.asarray(value, dtype=np.float64)
    ok = (v > 0 if lo_open else v >= 0) & (v < 1 if hi_open else v <= 1)
    if not np.all(ok):
        raise ValueError(f"{name} must lie in (0, 1), got {value!r}")


def check_positive(name, value):
    v = np.asarray(value, dtype=np.float64)
    if not np.all(v > 0):
        raise ValueError(f"{name} must be > 0, got {value!r}")


def scalar(x):
    """float64 array, or a numpy scalar when 0-d."""
    x = np.asarray(x, dtype=np.float64)
    return x[()] if x.ndim == 0 else x
