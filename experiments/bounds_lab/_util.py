"""Console output and host copies used across the lab."""
from __future__ import annotations

import sys

import jax
import numpy as np


def log(msg):
    print(msg, flush=True)


def progress(iterable, desc, total=None):
    """tqdm on a terminal; a plain pass-through otherwise (the stage lines say what runs)."""
    from tqdm.auto import tqdm  # lazy: optional heavy dependency
    return tqdm(iterable, desc=desc, total=total, leave=False, disable=None, file=sys.stderr)


def to_host(tree):
    """Every leaf as a NumPy array (the lab runs in one process)."""
    return jax.tree.map(lambda x: np.asarray(jax.device_get(x)), tree)
