"""What each layer reads: the inputs of every kernel-bearing submodule on a batch of data.

Data-informed methods (``sipp``, ``pfp``) and the bound laboratory need ``a(x)``, the input a
``Dense``/``Conv`` layer multiplies by its kernel, for every ``x`` of a small batch ``S``. They
are captured with :func:`flax.linen.intercept_methods` while the model runs in eval mode, so the
model needs no hooks of its own: any Flax module whose submodules own a ``kernel`` works.
"""
from __future__ import annotations

import functools
from typing import Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


def _has_kernel(module: nn.Module) -> bool:
    try:
        params = module.variables.get("params", {})
    except Exception:  # unbound / no scope
        return False
    return isinstance(params, Mapping) and "kernel" in params


@functools.partial(jax.jit, static_argnums=0)
def _capture(model: nn.Module, variables, images):
    captured = {}

    def interceptor(next_fun, args, kwargs, context):
        module = context.module
        if context.method_name == "__call__" and args and _has_kernel(module):
            captured[tuple(module.scope.path)] = args[0]
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(interceptor):
        model.apply(variables, images, train=False)
    return captured


def layer_inputs(model: nn.Module, variables, images, *, batch_size: int = 256
                 ) -> dict[tuple[str, ...], np.ndarray]:
    """``{params path of a kernel-bearing module: its input on images}`` (host NumPy arrays).

    ``variables``: the full variables dict (``{'params', ...}``) or bare params. ``images``:
    (N, *input_shape). The model is applied with ``train=False`` in chunks of ``batch_size``.
    A module called more than once (weight sharing) keeps its last call's input.
    """
    if not (isinstance(variables, Mapping) and "params" in variables):
        variables = {"params": variables}
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
