"""The small pieces every MNIST experiment shares: method entries, test error, the
validation batch ``S``.

A method entry is ``name`` or ``name:sampling`` (``coreset:sparsity_first``). Data-informed
methods (``Method.needs_data``: ``sipp``, ``pfp``) and methods that use data when given
(``Method.uses_data``: ``pvc`` estimates its input-norm bound β) get a small batch ``S`` from
the validation split, never from the test set.
"""
from __future__ import annotations

import os
import sys

import numpy as np

from jaxprune import methods, train


def parse_entry(entry: str) -> tuple[str, str | None]:
    """``"name[:sampling]"`` -> (method name, sampling or None); unknown names fail early."""
    name, _, sampling = entry.partition(":")
    methods.get(name)
    return name, (sampling or None)


def error(model, variables, ds) -> float:
    """Test error in %."""
    return 100.0 * (1.0 - train.evaluate(model, variables, ds)["accuracy"])


def validation_batch(val_ds, size: int) -> np.ndarray:
    """The first ``size`` images of the validation split (the batch ``S`` of sipp/pfp)."""
    if size < 1 or len(val_ds) == 0:
        raise ValueError("data-informed methods need a non-empty validation batch "
                         f"(got size={size}, {len(val_ds)} validation images)")
    return np.asarray(val_ds.images[:size])


def main(run, args) -> None:
    """``run(args)`` as a script: missing data or checkpoints end in one ``error:`` line on
    stderr and exit status 2 (no traceback), success in exit status 0."""
    try:
        run(args)
    except FileNotFoundError as err:
        print(f"{os.path.basename(sys.argv[0])}: error: {err}", file=sys.stderr)
        sys.exit(2)
    sys.exit(0)
