"""Model surgery: remove channels from every array they live in and re-weight the consumers.

For a group keeping channel indices ``K`` with re-weights ``u`` (paper Alg. 2, line 14:
``u(p) = t / (m s(p))`` per draw), the consumer kernels become ``W'[k-th kept row] = u_k W[K_k]``
and every producer/member array is indexed by ``K`` along its channel axis. ``mask`` produces the
same network at the original shapes (pruned rows zeroed, kept rows re-weighted), which is what the
equivalence tests compare against.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

from jaxprune._tree import leaves_with_paths, map_with_paths
from jaxprune.structure import ArraySlot, ChannelGroup


def split_channels(arr, slot: ArraySlot, size: int):
    """``(view, shape)``: ``arr`` with its channel axis split into ``(outer, size, inner)``
    (channel ``c`` owns the entries ``(o·period + offset + c)·inner + i`` along ``slot.axis``;
    when the axis also holds other groups' channels the view is the group's slice of it) and
    the original shape."""
    shape = arr.shape
    period = size if slot.period is None else slot.period
    view = arr.reshape(
        shape[: slot.axis] + (slot.outer, period, slot.inner) + shape[slot.axis + 1 :]
    )
    if period != size:
        view = view[(slice(None),) * (slot.axis + 1) + (slice(slot.offset, slot.offset + size),)]
    return view, shape


def channels_first(arr, slot: ArraySlot, size: int) -> np.ndarray:
    """``(size, rest)``: one row per channel, every entry the channel owns flattened."""
    view, _ = split_channels(np.asarray(arr), slot, size)
    return np.moveaxis(view, slot.axis + 1, 0).reshape(size, -1)


def _axis_plan(n: int, ops) -> tuple[np.ndarray, np.ndarray]:
    """``(kept entries, factor per entry)`` of one array axis of ``n`` entries from the
    channel operations ``(slot, size, kept indices, factor or None)`` of every group on it:
    an entry is kept unless a removed channel owns it, and scaled by the factors of the
    channels owning it. One combined index, so groups at different offsets of one axis (a
    concatenation) or interleaved on it (a flattened ``(H, D)``) do not shift each other."""
    keep = np.ones(n, bool)
    factor = np.ones(n, np.float64)
    for slot, size, idx, f in ops:
        owned = slot.entries(size)
        gone = np.ones(size, bool)
        gone[idx] = False
        keep[owned[gone]] = False
        if f is not None:
            factor[owned] *= f[:, None]
    return np.flatnonzero(keep), factor


def _scale_axis(arr: np.ndarray, axis: int, factor: np.ndarray) -> np.ndarray:
    shape = [1] * arr.ndim
    shape[axis] = -1
    return arr * factor.astype(arr.dtype).reshape(shape)


def _map_paths(variables, fn):
    """Apply ``fn(path, leaf)`` to every leaf (container types kept; leaves become jax arrays).

    ``jax.device_put``, not ``jnp.asarray``: the latter compiles a small staging kernel per
    distinct shape, one XLA compile per array of a deep network on the first call."""
    return map_with_paths(lambda path, leaf: jax.device_put(fn(path, leaf)), variables)


def _plan(groups, keep: Mapping[str, Any], scales: Mapping[str, Any]) -> dict:
    """Per array path and axis, the channel operations of every group that keeps
    ``keep[g.name]``.

    Each entry is ``(slot, size, kept indices, factor)`` where ``factor`` (size,) is the
    consumer re-weight (0 for removed channels) or ``None`` for producer/member slots. Kept
    indices are sorted (the re-weights follow their channels), so every array of a group
    keeps its channels in the same order.
    """
    names = {g.name for g in groups}
    unknown = set(keep) - names
    if unknown:
        raise KeyError(
            f"keep names unknown channel groups {sorted(unknown)}; known: {sorted(names)}"
        )
    ops: dict = {}
    for g in groups:
        if g.name not in keep:
            continue
        idx = np.asarray(keep[g.name])
        if idx.ndim != 1 or idx.size == 0:
            raise ValueError(f"group {g.name!r} would end up with zero width")
        if np.any(idx < 0) or np.any(idx >= g.size) or len(np.unique(idx)) != idx.size:
            raise ValueError(
                f"group {g.name!r}: kept indices must be distinct and in [0, {g.size})"
            )
        factor = np.zeros(g.size, np.float64)
        factor[idx] = np.asarray(scales[g.name]) if g.name in scales else 1.0
        idx = np.sort(idx)
        for slot in (*g.producers, *g.members):
            ops.setdefault(slot.path, {}).setdefault(slot.axis, []).append(
                (slot, g.size, idx, None)
            )
        for slot in g.consumers:
            ops.setdefault(slot.path, {}).setdefault(slot.axis, []).append(
                (slot, g.size, idx, factor)
            )
    return ops


def shrink(
    variables: Any,
    groups: tuple[ChannelGroup, ...],
    keep: Mapping[str, Any],
    scales: Mapping[str, Any] | None = None,
) -> Any:
    """Smaller variables: group ``g`` keeps ``keep[g.name]`` (int indices).

    ``scales[g.name]`` (one factor per kept channel, in the order of ``keep[g.name]``)
    multiplies the consumer rows of the kept channels. Groups not in ``keep`` are left whole.
    Same pytree structure, smaller arrays.
    """
    ops = _plan(groups, keep, scales or {})

    def apply(path, leaf):
        leaf = np.asarray(leaf)
        for axis, axis_ops in ops.get(path, {}).items():
            kept, factor = _axis_plan(leaf.shape[axis], axis_ops)
            if any(f is not None for *_, f in axis_ops):
                leaf = _scale_axis(leaf, axis, factor)
            leaf = np.take(leaf, kept, axis=axis)
        return leaf

    return _map_paths(variables, apply)


def mask(
    variables: Any,
    groups: tuple[ChannelGroup, ...],
    keep: Mapping[str, Any],
    scales: Mapping[str, Any] | None = None,
) -> Any:
    """The pruned network at the original shapes.

    Consumer rows of removed channels are zeroed and kept rows multiplied by their re-weights;
    producer kernels/biases of removed channels are zeroed too (statistics are left alone: a
    channel no layer reads cannot change the output).
    """
    ops = _plan(groups, keep, scales or {})

    def apply(path, leaf):
        leaf = np.asarray(leaf)
        for axis, axis_ops in ops.get(path, {}).items():
            if path[0] != "params":  # statistics: only consumer re-weights (none) apply
                axis_ops = [op for op in axis_ops if op[3] is not None]
            if not axis_ops:
                continue
            axis_ops = [
                (slot, size, idx, _indicator(size, idx) if f is None else f)
                for slot, size, idx, f in axis_ops
            ]
            _, factor = _axis_plan(leaf.shape[axis], axis_ops)
            leaf = _scale_axis(leaf, axis, factor)
        return leaf

    return _map_paths(variables, apply)


def expand(
    small: Any, dense: Any, groups: tuple[ChannelGroup, ...], keep: Mapping[str, Any]
) -> Any:
    """Inverse of :func:`shrink` on the shapes: ``small``'s arrays placed back at ``dense``'s
    shapes, at the kept channels' positions. Removed entries are 0 in ``'params'`` and keep
    ``dense``'s values in the other collections (statistics of channels no layer reads), so
    ``expand(shrink(v, g, k, s), v, g, k)`` equals ``mask(v, g, k, s)`` — and stays the
    dense-shaped twin of the smaller network after its arrays were changed (refit, trained).
    """
    ops = _plan(groups, keep, {})
    dense_leaves = dict(leaves_with_paths(dense))

    def apply(path, leaf):
        leaf = np.asarray(leaf)
        if path not in ops:
            return leaf
        base = np.asarray(dense_leaves[path])
        out = np.zeros_like(base) if path[0] == "params" else base.copy()
        index = [np.arange(n) for n in base.shape]
        for axis, axis_ops in ops[path].items():
            index[axis], _ = _axis_plan(base.shape[axis], axis_ops)
        out[np.ix_(*index)] = leaf
        return out

    return _map_paths(small, apply)


def _indicator(size: int, idx) -> np.ndarray:
    out = np.zeros(size, np.float64)
    out[idx] = 1.0
    return out
