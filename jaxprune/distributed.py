"""Multi-process runs on JAX's own runtime (``jax.distributed``).

Every process of a run calls :func:`initialize` before any other JAX computation, then runs the
same program. ``jax.devices()`` then lists every process's devices, ``train.fit`` builds its
data-parallel mesh over all of them, each process feeds only its rows of every global batch
(:func:`shard`), orbax writes checkpoints collectively and only the main process writes logs
and JSON files (:func:`is_main`). CPU processes talk through JAX's gloo collectives.

Three ways to start a run:

* explicit: ``initialize("10.0.0.1:1234", num_processes=4, process_id=i)`` in process ``i``
  (the CLI's ``--coordinator HOST:PORT --num-processes N --process-id I``);
* detected: ``initialize(auto=True)`` (the CLI's ``--distributed``) lets JAX read the cluster
  from its environment (SLURM, Open MPI, Kubernetes, Cloud TPU, ...);
* neither: a single process; nothing to do.
"""
from __future__ import annotations

import contextlib
import os
import sys

import jax
from jax.experimental import multihost_utils

__all__ = ["initialize", "shard", "is_main", "process_count", "barrier"]


def initialize(coordinator: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, *, auto: bool = False) -> tuple[int, int]:
    """Join a multi-process run; returns ``(process_index, process_count)``.

    With ``coordinator`` all three of ``coordinator``, ``num_processes`` and ``process_id``
    are needed; ``auto=True`` hands cluster detection to ``jax.distributed.initialize()``.
    Neither: a single process (``(0, 1)``). A bad combination raises ``ValueError``.
    """
    explicit = (coordinator, num_processes, process_id)
    if auto and any(v is not None for v in explicit):
        raise ValueError("pass either auto=True (cluster detection) or coordinator, "
                         "num_processes and process_id, not both")
    if not auto and all(v is None for v in explicit):
        return 0, 1
    if not auto:
        if any(v is None for v in explicit):
            raise ValueError("a multi-process run needs coordinator (HOST:PORT), "
                             "num_processes and process_id together")
        host, sep, port = str(coordinator).rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"coordinator must be HOST:PORT, got {coordinator!r}")
        if int(num_processes) < 1 or not 0 <= int(process_id) < int(num_processes):
            raise ValueError(f"need num_processes >= 1 and 0 <= process_id < num_processes, "
                             f"got {num_processes} and {process_id}")
    if jax.distributed.is_initialized():
        raise ValueError("jax.distributed is already initialized in this process")
    try:
        if auto:
            jax.distributed.initialize()
        else:
            jax.distributed.initialize(str(coordinator), int(num_processes), int(process_id))
    except (RuntimeError, ValueError) as e:
        raise ValueError(f"could not join the multi-process run: {str(e).splitlines()[0]}"
                         ) from None
    with _stdout_to_stderr():  # the collectives' connection log is not the program's output
        barrier("jaxprune.initialize")
    return jax.process_index(), jax.process_count()


@contextlib.contextmanager
def _stdout_to_stderr():
    """Send file descriptor 1 (also native code's writes) to stderr for the block."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def process_count() -> int:
    return jax.process_count()


def shard() -> tuple[int, int]:
    """``(index, count)`` of this process: it feeds rows ``[index*b/count, (index+1)*b/count)``
    of every global batch of ``b`` examples."""
    return jax.process_index(), jax.process_count()


def is_main() -> bool:
    """True in the one process that writes logs, JSON files and progress bars."""
    return jax.process_index() == 0


def barrier(name: str) -> None:
    """Wait until every process has reached the barrier ``name`` (nothing in one process)."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)
