"""Float64 boundary helpers shared by the geometry and coreset packages.

Every public entry point runs its jitted core under ``jax.enable_x64(True)`` with inputs
cast to float64; the result is cast back to the caller's floating dtype.  This works both
eagerly and when the entry point is itself traced by an outer ``jit``/``vmap`` (the x64
context only changes the dtypes created inside it).
"""

from __future__ import annotations

import contextlib
import warnings

import jax
import jax.core
import jax.numpy as jnp
import numpy as np

# DynamicJaxprTracer (the tracer of a value being staged into a jaxpr by jit) has no alias in
# jax.core; jax.interpreters.partial_eval is the public module that exposes it.
from jax.interpreters import partial_eval as pe


def x64():
    """Context manager enabling float64 locally (``jax.enable_x64`` in jax ≥ 0.10)."""
    return jax.enable_x64(True)


def out_dtype(x) -> np.dtype:
    """Dtype results are cast back to: the caller's canonical floating dtype.

    Call *before* entering :func:`x64`: float64 input gives float64 output only when the
    caller runs with x64 enabled, otherwise float32 (so results compose with the caller's
    other arrays without dtype warnings).
    """
    dt = getattr(x, "dtype", None)
    if dt is None or not jnp.issubdtype(dt, jnp.floating):
        dt = np.float64
    return np.dtype(jax.dtypes.canonicalize_dtype(dt))


def _under_jit(x) -> bool:
    """True when ``x`` is (or wraps) a jit-staging tracer: lowering will happen later, outside
    any local x64 context, so float64 cannot be used unless x64 is already on.

    Transformation tracers (``vmap``'s ``val``, ``jvp``'s ``primal``) are unwrapped until a
    concrete value (False) or a staging tracer (True) is reached."""
    seen = 0
    while isinstance(x, jax.core.Tracer) and seen < 32:
        if isinstance(x, pe.DynamicJaxprTracer):
            return True
        nxt = None
        for attr in ("val", "primal"):
            nxt = getattr(x, attr, None)
            if nxt is not None:
                break
        if nxt is None:
            return True
        x, seen = nxt, seen + 1
    return False


_WARNED = []


@contextlib.contextmanager
def precision(x):
    """Context yielding the compute dtype: float64 (local x64) unless ``x`` is being staged by
    an outer ``jit`` while x64 is off — then float32 with a one-time warning (wrap the outer
    ``jit`` call in ``with jax.enable_x64(True):`` to keep float64)."""
    # JAX's config flags are attributes its stubs do not declare
    if jax.config.jax_enable_x64 or not _under_jit(x):  # pyright: ignore[reportAttributeAccessIssue]
        with x64():
            yield jnp.float64
    else:
        if not _WARNED:
            _WARNED.append(True)
            warnings.warn(
                "jaxprune.geometry/coreset traced under jit without x64: computing in "
                "float32 (less robust rank/MVEE numerics). Call the outer jit inside "
                "`with jax.enable_x64(True):` to keep float64.",
                stacklevel=3,
            )
        yield jnp.float32


def f64(x, dtype=jnp.float64):
    """Cast to the compute dtype.  Host data stays a NumPy array (cast on the host): passing it
    straight to a jitted function is ~10× cheaper than ``jnp.asarray`` + dispatch."""
    if isinstance(x, (jax.Array, jax.core.Tracer)):
        return x if x.dtype == dtype else x.astype(dtype)
    return np.asarray(x, dtype=dtype)


def is_concrete(x) -> bool:
    """True when ``x`` holds values (not a tracer), i.e. Python-side checks are possible."""
    return not isinstance(x, jax.core.Tracer)


def cast_floats(tree, dtype):
    """Cast every floating leaf of ``tree`` to ``dtype``; other leaves are left alone."""

    def _c(a):
        if hasattr(a, "dtype") and jnp.issubdtype(a.dtype, jnp.floating):
            return a.astype(dtype)
        return a

    return jax.tree_util.tree_map(_c, tree)


__all__ = ["x64", "out_dtype", "f64", "is_concrete", "cast_floats"]
