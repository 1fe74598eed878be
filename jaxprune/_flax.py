"""Flax Linen plumbing: applying a module in inference mode and watching its kernel layers.

Every part that needs to know what a network's Dense/Conv layers do on an input (their
inputs, their configuration, their call order, their MACs) goes through one helper,
:func:`kernel_calls`, a wrapper of :func:`flax.linen.intercept_methods` that reports each
``__call__`` of a module owning a ``'kernel'`` parameter.
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxprune._tree import as_variables

Path = tuple[str, ...]


def has_kernel(module: nn.Module) -> bool:
    """True for a bound module that owns a ``'kernel'`` parameter (Dense, Conv, ...)."""
    try:
        params = module.variables.get("params", {})
    except Exception:  # unbound module / no scope: nothing to look at
        return False
    return isinstance(params, Mapping) and "kernel" in params


def apply_inference(model: nn.Module, variables, x, **kwargs):
    """``model.apply(variables, x)`` in inference mode (``train=False`` when accepted)."""
    try:
        return model.apply(variables, x, train=False, **kwargs)
    except TypeError:
        return model.apply(variables, x, **kwargs)


@contextlib.contextmanager
def kernel_calls(on_call: Callable[[nn.Module, Any, Any], None]):
    """Within the block, ``on_call(module, input, output)`` runs after every ``__call__``
    of a kernel-bearing module (``input`` is its first positional argument)."""
    def interceptor(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        module = context.module
        if context.method_name == "__call__" and args and has_kernel(module):
            on_call(module, args[0], out)
        return out

    with nn.intercept_methods(interceptor):
        yield


def module_path(module: nn.Module) -> Path:
    """Params path of a bound module (``('dense_0',)``, ``('stage_1', 'block_0', 'conv_0')``)."""
    return tuple(module.scope.path)


def trace_kernel_calls(model: nn.Module, variables, input_shape, on_call) -> None:
    """Run :func:`kernel_calls` over one abstract (``jax.eval_shape``) inference call of
    ``model`` on a batch of one example of ``input_shape``; nothing is computed."""
    variables, _ = as_variables(variables)

    def run(v, x):
        with kernel_calls(on_call):
            return apply_inference(model, v, x)

    jax.eval_shape(run, variables,
                   jax.ShapeDtypeStruct((1, *tuple(input_shape)), jnp.float32))


def kernel_modules(model: nn.Module, variables, input_shape) -> dict[Path, nn.Module]:
    """``{module path: the kernel-bearing module, unbound}`` in the order of their last call
    (their configuration: a Conv's strides, padding, dilation)."""
    found: dict[Path, nn.Module] = {}

    def record(module, _x, _out):
        path = module_path(module)
        found.pop(path, None)  # re-insert: order of the last call
        found[path] = module.clone(parent=None)

    trace_kernel_calls(model, variables, input_shape, record)
    return found


def _capture_impl(model: nn.Module, variables, images):
    captured = {}

    def record(module, x, _out):
        captured[module_path(module)] = x

    with kernel_calls(record):
        apply_inference(model, variables, images)
    return captured


_capture = jax.jit(_capture_impl, static_argnums=0)


def kernel_inputs(model: nn.Module, variables, images, *, batch_size: int = 256
                  ) -> dict[Path, np.ndarray]:
    """``{module path: its input on images}`` (host arrays) for every kernel-bearing module.

    ``images``: (N, *input_shape); the model runs in inference mode in chunks of
    ``batch_size``. A module called more than once (weight sharing) keeps its last call's input.
    """
    variables, _ = as_variables(variables)
    images = np.asarray(images)
    if images.ndim < 2 or images.shape[0] == 0:
        raise ValueError(f"images must be a non-empty batch (N, ...), got shape {images.shape}")
    chunks = []
    for start in range(0, images.shape[0], int(batch_size)):
        part = jnp.asarray(images[start:start + int(batch_size)], jnp.float32)
        chunks.append(jax.device_get(_capture(model, variables, part)))
    if not chunks[0]:
        raise ValueError(f"{type(model).__name__}: no submodule with a 'kernel' parameter was "
                         "called; nothing to capture")
    return {path: np.concatenate([c[path] for c in chunks], axis=0) for path in chunks[0]}
