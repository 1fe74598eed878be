"""Benchmark helpers: per-phase clocks over ``prune``'s ``on_phase`` hook, random weights,
peak memory."""
from __future__ import annotations

import contextlib
import resource
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxprune import pipeline
from jaxprune.structure import path_of

PHASES = pipeline.PHASES
_JAX_EVENTS = {"/jax/core/compile/jaxpr_trace_duration": "trace",
               "/jax/core/compile/jaxpr_to_mlir_module_duration": "lower",
               "/jax/core/compile/backend_compile_duration": "compile"}


class PhaseClock:
    """Wall time, process CPU time and JAX compile events per phase of ``prune``."""

    def __init__(self):
        self.current = None
        self.reset()

    def reset(self):
        self.wall = dict.fromkeys(PHASES + ("other",), 0.0)
        self.cpu = dict.fromkeys(PHASES + ("other",), 0.0)  # process CPU s (all threads)
        self.jax = {p: dict(trace=0.0, lower=0.0, compile=0.0) for p in PHASES + ("other",)}

    def on_event(self, event, duration, **_):
        kind = _JAX_EVENTS.get(event)
        if kind is not None:
            self.jax[self.current or "other"][kind] += duration

    @contextlib.contextmanager
    def phase(self, name):
        outer, self.current = self.current, name
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self.wall[name] += time.perf_counter() - t0
            self.cpu[name] += time.process_time() - c0
            self.current = outer


@contextlib.contextmanager
def listening(clock: PhaseClock):
    jax.monitoring.register_event_duration_secs_listener(clock.on_event)
    try:
        yield clock
    finally:
        jax.monitoring.unregister_event_duration_listener(clock.on_event)


def random_variables(model, input_shape, seed: int):
    """Shapes from ``jax.eval_shape(model.init)``; He-normal kernels, small random biases,
    BatchNorm scale ≈ 1 and positive running variances."""
    x = jax.ShapeDtypeStruct((1, *input_shape), jnp.float32)
    shapes = jax.eval_shape(model.init, jax.random.key(0), x)
    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        name = path_of(path)[-1]
        shape = leaf.shape
        if name == "kernel":
            fan_in = int(np.prod(shape[:-1]))
            a = rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)
        elif name == "scale":
            a = 1.0 + 0.1 * rng.standard_normal(shape)
        elif name == "var":
            a = rng.uniform(0.5, 1.5, shape)
        else:  # bias, BatchNorm mean
            a = 0.05 * rng.standard_normal(shape)
        return jnp.asarray(a, leaf.dtype)

    return jax.tree_util.tree_map_with_path(fill, shapes)


def max_rss_mib() -> float:
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return kib / (1024.0 * 1024.0) if sys.platform == "darwin" else kib / 1024.0
