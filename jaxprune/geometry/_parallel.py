"""Independent geometry programs side by side on the CPU's cores.

XLA:CPU runs one program's LAPACK calls (the eigendecompositions of the PCA) and a ``lax.map``
(the peeling kernel over point sets) one after the other, on one core.  The work of a prune
splits into independent parts (one per channel group): :func:`balanced_chunks` cuts it into as
many chunks as there are cores, balanced by cost, and :func:`split_run` runs one jitted call
per chunk on a thread (XLA releases the GIL while it compiles and runs).  Each item's
arithmetic is that of a single call, so the results do not depend on the split.
"""

from __future__ import annotations

import concurrent.futures
import os
from collections.abc import Callable, Sequence

import jax

from jaxprune.geometry._compile import on_cpu


def cpu_workers() -> int:
    """Threads worth using for the geometry: the cores this process may run on (1 off the CPU,
    where one program already fills the device)."""
    if not on_cpu():
        return 1
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def balanced_chunks(costs: Sequence[float], parts: int) -> list[list[int]]:
    """Indices ``0..len(costs)-1`` in at most ``parts`` non-empty chunks of similar total cost
    (largest first, each to the lightest chunk); each chunk keeps its indices in order.

    >>> balanced_chunks([8, 1, 1, 4, 4], 2)
    [[0, 1], [2, 3, 4]]
    """
    parts = max(1, min(parts, len(costs)))
    chunks: list[list[int]] = [[] for _ in range(parts)]
    load = [0.0] * parts
    for i in sorted(range(len(costs)), key=lambda i: -costs[i]):
        j = load.index(min(load))
        chunks[j].append(i)
        load[j] += costs[i]
    return [sorted(c) for c in chunks if c]


def split_run(fn: Callable[[list[int]], Sequence], chunks: Sequence[list[int]]) -> list:
    """``fn(chunk)`` for every chunk of item indices (e.g. :func:`balanced_chunks`), side by
    side on threads; the per-item results of all chunks in item order.  ``fn`` returns one
    result per index of its chunk.  Float64 stays on inside the threads when the caller has it
    on.

    >>> split_run(lambda chunk: [10 * i for i in chunk], [[0, 2], [1]])
    [0, 10, 20]
    """
    x64 = bool(jax.config.jax_enable_x64)  # pyright: ignore[reportAttributeAccessIssue]

    def run(chunk):
        with jax.enable_x64(x64):
            return jax.block_until_ready(fn(chunk))

    if len(chunks) <= 1:
        parts = [run(c) for c in chunks]
    else:
        with concurrent.futures.ThreadPoolExecutor(len(chunks), "jaxprune-geometry") as pool:
            parts = list(pool.map(run, chunks))
    out: list = [None] * sum(len(c) for c in chunks)
    for chunk, results in zip(chunks, parts):
        for i, r in zip(chunk, results):
            out[i] = r
    return out
