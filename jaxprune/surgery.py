"""Model surgery: remove channels from every array they live in and re-weight the consumers.

For a group keeping channel indices ``K`` with re-weights ``u`` (paper Alg. 2, line 14:
``u(p) = t / (m s(p))`` per draw), the consumer kernels become ``W'[k-th kept row] = u_k W[K_k]``
and every producer/member array is indexed by ``K`` along its channel axis. ``mask`` produces the
same network at the original shapes (pruned rows zeroed, kept rows re-weighted), which is what the
equivalence tests compare against.
"""
from __future__ import annotations

from typing import Any, Mapping

import jax
import numpy as np

from jaxprune._tree import map_with_paths
from jaxprune.structure import ArraySlot, ChannelGroup


def split_channels(arr, slot: ArraySlot, size: int):
    """``(view, shape)``: ``arr`` with its channel axis split into ``(outer, size, inner)``
    (channel ``c`` owns the entries ``(o·size + c)·inner + i`` along ``slot.axis``) and the
    original shape to reshape back to."""
    shape = arr.shape
    new = shape[: slot.axis] + (slot.outer, size, slot.inner) + shape[slot.axis + 1:]
    return arr.reshape(new), shape


def channels_first(arr, slot: ArraySlot, size: int) -> np.ndarray:
    """``(size, rest)``: one row per channel, every entry the channel owns flattened."""
    view, _ = split_channels(np.asarray(arr), slot, size)
    return np.moveaxis(view, slot.axis + 1, 0).reshape(size, -1)


def take_channels(arr, slot: ArraySlot, size: int, index) -> np.ndarray:
    """Keep the channels ``index`` of ``arr`` along ``slot`` (layout-aware).

    Surgery changes shapes, so it runs on the host in NumPy (no per-shape compilation).
    """
    view, shape = split_channels(np.asarray(arr), slot, size)
    view = np.take(view, np.asarray(index), axis=slot.axis + 1)
    return view.reshape(shape[: slot.axis] + (-1,) + shape[slot.axis + 1:])


def scale_channels(arr, slot: ArraySlot, size: int, factors) -> np.ndarray:
    """Multiply channel ``c`` of ``arr`` along ``slot`` by ``factors[c]``."""
    arr = np.asarray(arr)
    view, shape = split_channels(arr, slot, size)
    bshape = [1] * view.ndim
    bshape[slot.axis + 1] = size
    return (view * np.asarray(factors, arr.dtype).reshape(bshape)).reshape(shape)


def _map_paths(variables, fn):
    """Apply ``fn(path, leaf)`` to every leaf (container types kept; leaves become jax arrays).

    ``jax.device_put``, not ``jnp.asarray``: the latter compiles a small staging kernel per
    distinct shape, one XLA compile per array of a deep network on the first call."""
    return map_with_paths(lambda path, leaf: jax.device_put(fn(path, leaf)), variables)


def _plan(groups, keep: Mapping[str, Any], scales: Mapping[str, Any]) -> dict:
    """Per array path, the channel operations of every group that keeps ``keep[g.name]``.

    Each entry is ``(slot, size, kept indices, factor)`` where ``factor`` (size,) is the
    consumer re-weight (0 for removed channels) or ``None`` for producer/member slots.
    """
    names = {g.name for g in groups}
    unknown = set(keep) - names
    if unknown:
        raise KeyError(f"keep names unknown channel groups {sorted(unknown)}; known: {sorted(names)}")
    ops: dict = {}
    for g in groups:
        if g.name not in keep:
            continue
        idx = np.asarray(keep[g.name])
        if idx.ndim != 1 or idx.size == 0:
            raise ValueError(f"group {g.name!r} would end up with zero width")
        if np.any(idx < 0) or np.any(idx >= g.size) or len(np.unique(idx)) != idx.size:
            raise ValueError(f"group {g.name!r}: kept indices must be distinct and in [0, {g.size})")
        factor = np.zeros(g.size, np.float64)
        factor[idx] = np.asarray(scales[g.name]) if g.name in scales else 1.0
        for slot in (*g.producers, *g.members):
            ops.setdefault(slot.path, []).append((slot, g.size, idx, None))
        for slot in g.consumers:
            ops.setdefault(slot.path, []).append((slot, g.size, idx, factor))
    return ops


def shrink(variables: Any, groups: tuple[ChannelGroup, ...], keep: Mapping[str, Any],
           scales: Mapping[str, Any] | None = None) -> Any:
    """Smaller variables: group ``g`` keeps ``keep[g.name]`` (sorted int indices).

    ``scales[g.name]`` (one factor per kept channel) multiplies the consumer rows of the kept
    channels. Groups not in ``keep`` are left whole. Same pytree structure, smaller arrays.
    """
    ops = _plan(groups, keep, scales or {})

    def apply(path, leaf):
        for slot, size, idx, factor in ops.get(path, ()):
            if factor is not None:
                leaf = scale_channels(leaf, slot, size, factor)
            leaf = take_channels(leaf, slot, size, idx)
        return leaf

    return _map_paths(variables, apply)


def mask(variables: Any, groups: tuple[ChannelGroup, ...], keep: Mapping[str, Any],
         scales: Mapping[str, Any] | None = None) -> Any:
    """The pruned network at the original shapes.

    Consumer rows of removed channels are zeroed and kept rows multiplied by their re-weights;
    producer kernels/biases of removed channels are zeroed too (statistics are left alone: a
    channel no layer reads cannot change the output).
    """
    ops = _plan(groups, keep, scales or {})

    def apply(path, leaf):
        for slot, size, idx, factor in ops.get(path, ()):
            if factor is None:
                if path[0] != "params":
                    continue
                factor = np.zeros(size, np.float64)
                factor[idx] = 1.0
            leaf = scale_channels(leaf, slot, size, factor)
        return leaf

    return _map_paths(variables, apply)
