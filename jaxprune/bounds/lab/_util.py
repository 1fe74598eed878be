"""Console output used across the lab."""
from __future__ import annotations

import sys


def log(msg):
    print(msg, flush=True)


def progress(iterable, desc, total=None):
    """tqdm on a terminal; a plain pass-through otherwise (the stage lines say what runs)."""
    from tqdm.auto import tqdm  # lazy: optional heavy dependency
    return tqdm(iterable, desc=desc, total=total, leave=False, disable=None, file=sys.stderr)


