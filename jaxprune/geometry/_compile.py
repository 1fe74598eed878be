"""Cheap-to-compile ``jit`` for the geometry's one-off programs.

A prune calls each geometry program once or twice, so on the CPU its XLA compile, not its
run, is the cost.  Two XLA:CPU options cut that compile about fourfold (the peeling kernel:
~2.7 → ~0.7 CPU s) and leave the numbers bit-for-bit unchanged:

* ``xla_backend_optimization_level=0``: LLVM's optimisation passes off;
* ``xla_cpu_use_fusion_emitters=False``: fusions are emitted by the classic elemental LLVM
  emitter instead of the MLIR fusion emitters, whose lowering pipeline dominates the compile
  of a program made of many small loop fusions.

Other backends compile with their defaults (these options are CPU compile-time knobs).
"""

from __future__ import annotations

import functools

import jax
import jax.core

CHEAP_CPU_OPTIONS = {"xla_backend_optimization_level": 0, "xla_cpu_use_fusion_emitters": False}
# XLA's defaults for the same two options, stated so that a program asked to be optimised is,
# whatever ``XLA_FLAGS`` says (the test suite compiles everything else cheaply)
OPTIMISED_CPU_OPTIONS = {"xla_backend_optimization_level": 3, "xla_cpu_use_fusion_emitters": True}


def on_cpu() -> bool:
    return jax.default_backend() == "cpu"


def cheap_jit(fn=None, **jit_kwargs):
    """``jax.jit(fn, **jit_kwargs)`` compiled with :data:`CHEAP_CPU_OPTIONS` on the CPU.

    Usable as ``@cheap_jit`` or ``@cheap_jit(static_argnames=...)``; ``.lower`` lowers the
    CPU variant (what :mod:`tests.test_recompile` and the benchmarks inspect)."""
    if fn is None:
        return functools.partial(cheap_jit, **jit_kwargs)
    cheap = jax.jit(fn, compiler_options=CHEAP_CPU_OPTIONS, **jit_kwargs)
    default = jax.jit(fn, **jit_kwargs)

    @functools.wraps(fn)
    def call(*args, **kwargs):
        # inside another transformation (an outer jit traces its arguments) this call is
        # inlined into the outer program, where compiler options are not allowed
        traced = any(
            isinstance(x, jax.core.Tracer) for x in jax.tree_util.tree_leaves((args, kwargs))
        )
        return (cheap if on_cpu() and not traced else default)(*args, **kwargs)

    call.lower = cheap.lower  # pyright: ignore[reportAttributeAccessIssue]  (function attribute)
    return call
