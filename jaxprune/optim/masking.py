"""Fixed 0/1 masks over a params tree: the top-k magnitude mask, and an optax wrapper that
trains only the unmasked entries.

:func:`masked` multiplies the gradients by the mask before the inner optimiser and its updates
by the mask after it, so masked entries get exactly zero updates: a weight that is 0 and masked
stays exactly 0.0 (``train.fit(..., mask=m)`` zeroes the masked weights before the first step).
Masking the gradients too keeps masked entries out of the inner optimiser's statistics (Adam
moments, momentum, coupled weight decay).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxprune.optim.constraints import blocks, concat, split_back
from jaxprune.optim.lmo import keep_count
from jaxprune.selection import top_k_mask

__all__ = ["MaskedState", "masked", "apply_mask", "magnitude_mask", "kernel_sparsity"]


class MaskedState(NamedTuple):
    inner: Any  # state of the wrapped transformation


def apply_mask(tree, mask):
    """``tree * mask`` leaf by leaf (``mask=None``: ``tree`` unchanged)."""
    if mask is None:
        return tree
    return jax.tree.map(lambda x, m: x * jnp.asarray(m, x.dtype), tree, mask)


def masked(inner: optax.GradientTransformation, mask) -> optax.GradientTransformationExtraArgs:
    """``inner`` restricted to the entries where ``mask`` (0/1 pytree like params) is 1.

    ``mask`` may be a traced value (a jitted train step can take it as an argument); ``init``
    only uses ``inner.init``.
    """
    inner = optax.with_extra_args_support(inner)

    def init_fn(params):
        return MaskedState(inner=inner.init(params))

    def update_fn(updates, state, params=None, **extra_args):
        upd, inner_state = inner.update(
            apply_mask(updates, mask), state.inner, params, **extra_args
        )
        return apply_mask(upd, mask), MaskedState(inner=inner_state)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def magnitude_mask(params, sparsity: float, scope: str = "layer"):
    """0/1 float32 mask like ``params``: the ``K = keep_count(n, sparsity)`` largest ``|θ|``
    kernel entries per kernel (``scope="layer"``) or over all kernels (``"global"``) are 1;
    free leaves (biases …) are all 1. Exactly K ones per block (ties by flat index).

    >>> import jax.numpy as jnp
    >>> mask = magnitude_mask({"dense": {"kernel": jnp.array([[0.1, -3.0], [2.0, 0.2]])}}, 0.5)
    >>> mask["dense"]["kernel"].tolist()
    [[0.0, 1.0], [1.0, 0.0]]
    """
    leaves, treedef = jax.tree.flatten(params)
    out = [np.ones(np.shape(x), np.float32) for x in leaves]
    for b in blocks(leaves, scope):
        flat = np.abs(np.asarray(concat(leaves, b), np.float32))
        k = keep_count(flat.size, sparsity)
        keep = top_k_mask(flat, k).astype(np.float32)
        for i, arr in split_back(keep, leaves, b).items():
            out[i] = np.asarray(arr)
    return jax.tree.unflatten(treedef, out)


def kernel_sparsity(params, rel: float = 0.0) -> float:
    """Fraction of exactly-zero entries among kernel (``ndim > 1``) entries; with ``rel > 0``
    the entries with ``|θ| ≤ rel·max|θ|`` of their kernel count as zero (how sparse a
    Frank-Wolfe iterate already is before any mask)."""
    ks = [np.asarray(x) for x in jax.tree.leaves(params) if np.ndim(x) > 1]
    total = sum(x.size for x in ks)
    if rel == 0:
        return 1.0 - sum(int(np.count_nonzero(x)) for x in ks) / total
    return float(sum((np.abs(k) <= rel * np.abs(k).max()).sum() for k in ks) / total)
