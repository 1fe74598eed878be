"""Multi-process runs on JAX's own runtime (``jax.distributed``).

Every process of a run calls :func:`initialize` before any other JAX computation, then runs the
same program. ``jax.devices()`` then lists every process's devices, ``train.fit`` builds its
data-parallel mesh over all of them, each process feeds only its rows of every global batch
(:func:`shard`), orbax writes checkpoints collectively and only the main process writes logs
and JSON files (:func:`is_main`). CPU processes talk through JAX's gloo collectives.

Three ways to start a run:

* explicit: ``initialize("10.0.0.1:1234", num_processes=4, process_id=i)`` in process ``i``
  (the CLI's ``--coordinator HOST:PORT --num-processes N --process-id I``); process 0's
  coordinator listens on that address only (``127.0.0.1:PORT`` for a run on one host);
* detected: ``initialize(auto=True)`` (the CLI's ``--distributed``) lets JAX read the cluster
  from its environment (SLURM, Open MPI, Kubernetes, Cloud TPU, ...);
* neither: a single process; nothing to do.

SIGTERM or SIGINT to any process during ``train.fit`` stops every process after the same step,
once the last whole epoch's checkpoint is written (:mod:`jaxprune._signals`).

Any process that reaches the coordinator's port can join a run as one of its processes, and
the processes exchange parameters unencrypted: run multi-host jobs on a trusted network only.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys

import jax
import numpy as np
from jax.experimental import multihost_utils

__all__ = ["initialize", "check_same_config", "shard", "is_main", "process_count", "barrier"]


def initialize(
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    auto: bool = False,
) -> tuple[int, int]:
    """Join a multi-process run; returns ``(process_index, process_count)``.

    With ``coordinator`` all three of ``coordinator``, ``num_processes`` and ``process_id``
    are needed; ``auto=True`` hands cluster detection to ``jax.distributed.initialize()``.
    Neither: a single process (``(0, 1)``). A bad combination raises ``ValueError``.
    """
    explicit = (coordinator, num_processes, process_id)
    if auto and any(v is not None for v in explicit):
        raise ValueError(
            "pass either auto=True (cluster detection) or coordinator, "
            "num_processes and process_id, not both"
        )
    if not auto and all(v is None for v in explicit):
        return 0, 1
    if not auto:
        if any(v is None for v in explicit):
            raise ValueError(
                "a multi-process run needs coordinator (HOST:PORT), "
                "num_processes and process_id together"
            )
        assert num_processes is not None and process_id is not None  # checked just above
        host, sep, port = str(coordinator).rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"coordinator must be HOST:PORT, got {coordinator!r}")
        if int(num_processes) < 1 or not 0 <= int(process_id) < int(num_processes):
            raise ValueError(
                f"need num_processes >= 1 and 0 <= process_id < num_processes, "
                f"got {num_processes} and {process_id}"
            )
    if jax.distributed.is_initialized():
        raise ValueError("jax.distributed is already initialized in this process")
    # JAX's preemption service swallows SIGTERM (it only marks a sync point that jaxprune
    # does not poll): without it, SIGTERM reaches jaxprune (train.fit stops every process
    # after the same step, jaxprune._signals) or ends the process outside training
    jax.config.update("jax_enable_preemption_service", False)
    try:
        if auto:
            jax.distributed.initialize()
        else:  # the coordinator (process 0) listens on the address given, not on every
            # interface: a local run names 127.0.0.1 and nothing off the host can join
            assert num_processes is not None and process_id is not None  # checked above
            jax.distributed.initialize(
                str(coordinator),
                int(num_processes),
                int(process_id),
                coordinator_bind_address=str(coordinator),
            )
    except (RuntimeError, ValueError) as e:
        raise ValueError(
            f"could not join the multi-process run: {str(e).splitlines()[0]}"
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


def check_same_config(config: str) -> None:
    """``ValueError`` in every process when the processes of a run were started with
    different ``config`` (e.g. their command-line flags): compared by hash at the start, so a
    mismatch fails fast instead of deadlocking later. Nothing in a single process."""
    if jax.process_count() == 1:
        return
    digest = np.frombuffer(hashlib.sha256(config.encode()).digest(), np.uint32)
    everyone = np.asarray(multihost_utils.process_allgather(digest))
    differ = [i for i in range(len(everyone)) if not np.array_equal(everyone[i], everyone[0])]
    if differ:
        raise ValueError(
            f"the processes of this run were started with different settings "
            f"(process(es) {', '.join(map(str, differ))} differ from process 0); "
            "run the same command in every process"
        )


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
