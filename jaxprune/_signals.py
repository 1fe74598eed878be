"""SIGTERM and SIGINT during training: finish the step, keep the checkpoints, stop every process.

While :func:`jaxprune.train.fit` runs, a :class:`StopRequest` holds both signals. The first one
is only recorded (a second one acts as it would without ``fit``: SIGINT raises
``KeyboardInterrupt``, SIGTERM ends the process). ``fit`` asks after every train step whether to
stop; it then leaves the partial epoch, waits for the checkpoint of the last whole epoch to be
written and raises :class:`Stopped`, a ``KeyboardInterrupt``: the CLI exits 130 and keeps
``--out`` unfinished, for ``--resume`` to continue.

In a multi-process run the processes must stop at the same step (every step is a collective).
Each step every process contributes its flag to a global ``any`` computed on the devices; the
result is read one step later, so all processes read the same value at the same step without
waiting on the step in flight, and stop together after that step.
"""

from __future__ import annotations

import signal
import sys
import threading

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

__all__ = ["Stopped", "StopRequest"]

_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Stopped(KeyboardInterrupt):
    """Training stopped by a signal after a whole step; the checkpoints of the whole epochs
    are written (``fit`` with ``out_dir``) and a later ``fit`` with the same ``out_dir``
    continues from the last one."""

    def __init__(self, signum: int, epochs_done: int):
        self.signum, self.epochs_done = signum, epochs_done
        name = signal.Signals(signum).name if signum else "a signal in another process"
        super().__init__(f"training stopped by {name} after {epochs_done} whole epoch(s)")


class StopRequest:
    """The signals SIGTERM/SIGINT held for one training run (see the module docstring).

    ``sharding``: the batch sharding of a multi-process run's mesh (every process's
    devices), on which the processes agree to stop; unused in one process."""

    def __init__(self, sharding: NamedSharding | None = None):
        self.sharding = sharding
        self.signum = 0  # the signal this process received (0: none)
        self.stopped = False  # every process agreed to stop
        self._previous: dict = {}
        self._pending = None  # the agreement dispatched at the last step
        self._told = False

    # -- handlers
    def install(self) -> StopRequest:
        if threading.current_thread() is not threading.main_thread():
            return self  # signals reach the main thread only: nothing to hold
        for sig in _SIGNALS:
            self._previous[sig] = signal.signal(sig, self._record)
        return self

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def _record(self, signum, _frame) -> None:
        self.signum = self.signum or signum
        self.uninstall()  # a second signal acts as usual

    def _tell(self) -> None:
        if self.signum and not self._told:
            self._told = True
            print(
                f"jaxprune: {signal.Signals(self.signum).name} received: stopping after this "
                "step, once the last epoch's checkpoint is written (send it again to stop at "
                "once)",
                file=sys.stderr,
                flush=True,
            )

    # -- agreement
    def after_step(self) -> bool:
        """Whether every process stops after the step just dispatched."""
        self._tell()
        if jax.process_count() == 1 or self.sharding is None:
            self.stopped = self.signum != 0
            return self.stopped
        agreed = self._pending is not None and bool(int(self._pending))
        self._pending = _any_flag(self.signum != 0, self.sharding)
        self.stopped = agreed
        return agreed

    def at_epoch_end(self) -> bool:
        """Whether every process stops now that an epoch has ended (waits for the others)."""
        self._tell()
        if jax.process_count() == 1 or self.sharding is None:
            self.stopped = self.signum != 0
            return self.stopped
        pending, self._pending = self._pending, None
        agreed = bool(int(_any_flag(self.signum != 0, self.sharding)))
        self.stopped = agreed or (pending is not None and bool(int(pending)))
        return self.stopped

    def raise_if_stopped(self, epochs_done: int) -> None:
        if self.stopped:
            raise Stopped(self.signum, epochs_done)


_ANY: dict = {}


def _any_flag(flag: bool, sharding: NamedSharding) -> jax.Array:
    """``any`` of every process's ``flag``, replicated on every device (not waited for)."""
    mesh = sharding.mesh
    if mesh not in _ANY:
        _ANY[mesh] = jax.jit(jnp.max, out_shardings=NamedSharding(mesh, P()))
    local = np.full((len(sharding.addressable_devices),), int(flag), np.int32)
    flags = jax.make_array_from_process_local_data(sharding, local, (mesh.size,))
    return _ANY[mesh](flags)
