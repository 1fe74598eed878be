"""Channel groups and what they cost: the data model of :mod:`jaxprune.structure`."""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping

import numpy as np

from jaxprune._tree import Path


@dataclasses.dataclass(frozen=True)
class ArraySlot:
    """One axis of one array (``path`` into the variables dict) indexed by a group's channels.

    Along ``axis`` the array has ``outer * period * inner`` entries (``period`` defaults to
    the group size); channel ``c`` owns the entries ``(o * period + offset + c) * inner + i``
    for ``o < outer``, ``i < inner``. Several slots on one axis (a concatenation: one per
    operand, at different offsets) are applied together.
    """

    path: Path
    axis: int
    outer: int = 1
    inner: int = 1
    offset: int = 0
    period: int | None = None

    def entries(self, size: int) -> np.ndarray:
        """``(size, outer·inner)``: the indices along ``axis`` each channel owns."""
        period = size if self.period is None else self.period
        o = np.arange(self.outer)[None, :, None]
        c = np.arange(size)[:, None, None]
        i = np.arange(self.inner)[None, None, :]
        return ((o * period + self.offset + c) * self.inner + i).reshape(size, -1)


@dataclasses.dataclass(frozen=True)
class ChannelGroup:
    """A set of channels that must be kept or removed together."""

    name: str  # path of the first producer module, e.g. "dense_0"
    size: int  # number of channels
    producers: tuple[ArraySlot, ...]  # kernels whose output axis creates the channels
    members: tuple[ArraySlot, ...]  # biases, norm scale/bias/mean/var over the channels
    consumers: tuple[ArraySlot, ...]  # kernels whose input axis reads the channels
    prunable: bool
    reason: str = ""  # why a group is not prunable
    # merged with another group by an element-wise op (a residual add): pruned only with
    # ``prune(..., prune_residual=True)``. Ties that are not adds (the heads of q/k/v joined
    # by an attention-like product, the groups a shared layer reads) do not make it residual.
    residual: bool = False

    @property
    def tied(self) -> bool:
        """True when several producers create the channels (a residual add, the q/k/v heads
        of an attention, a layer shared by several branches)."""
        return len(self.producers) > 1

    @property
    def producer_modules(self) -> tuple[str, ...]:
        return tuple("/".join(s.path[1:-1]) for s in self.producers)


@dataclasses.dataclass(frozen=True)
class Structure:
    """Everything pruning needs to know about a network's shape.

    ``groups``: the channel groups; ``shapes``: path -> shape of every variable;
    ``kernel_positions``: path -> output positions per example at which a kernel is applied
    (1 for a Dense layer, ``H_out·W_out`` for a conv), so MACs = kernel size × positions.
    """

    groups: tuple[ChannelGroup, ...]
    shapes: dict
    kernel_positions: dict

    def group(self, name: str) -> ChannelGroup:
        for g in self.groups:
            if g.name == name:
                return g
        raise KeyError(f"no channel group named {name!r}; groups: {[g.name for g in self.groups]}")

    @functools.cached_property
    def _axis_slots(self) -> dict:
        """``path -> {axis: [(slot, group name, group size)]}`` over every group."""
        out: dict = {}
        for g in self.groups:
            for slot in (*g.producers, *g.members, *g.consumers):
                out.setdefault(slot.path, {}).setdefault(slot.axis, []).append(
                    (slot, g.name, g.size)
                )
        return out

    def _new_shape(self, path, widths: Mapping) -> tuple:
        shape = list(self.shapes[path])
        for axis, slots in self._axis_slots.get(path, {}).items():
            # untouched groups keep their shapes (a frozen group may tie axes the tracer
            # could not size consistently)
            active = [(slot, size, widths[name]) for slot, name, size in slots if name in widths]
            if not active:
                continue
            if len(active) == 1 and active[0][0].period is None:
                slot, _, k = active[0]
                shape[axis] = slot.outer * k * slot.inner
                continue
            # several groups on one axis: count the entries no removed channel owns (the
            # count does not depend on which channels are kept, so keep the first k)
            kept = np.ones(shape[axis], bool)
            for slot, size, k in active:
                kept[slot.entries(size)[k:]] = False
            shape[axis] = int(kept.sum())
        return tuple(shape)

    def new_shapes(self, widths: Mapping) -> dict:
        """Shape of every variable when group ``g`` keeps ``widths[g.name]`` channels."""
        touched = self._axis_slots
        return {
            p: self._new_shape(p, widths) if p in touched else tuple(s)
            for p, s in self.shapes.items()
        }

    def touched(self, only_prunable: bool = True) -> set:
        """Paths of the arrays that some (prunable) group shrinks."""
        return {
            s.path
            for g in self.groups
            if g.prunable or not only_prunable
            for s in (*g.producers, *g.members, *g.consumers)
        }

    @functools.cached_property
    def _size_table(self) -> tuple:
        """Entries of every array as a product over groups: array ``p`` has
        ``const[p] · Π_j mult[p, j] · k[group[p, j]]`` entries when each group keeps ``k``
        channels (an axis one slot of one group spans whole), so a count is a few NumPy
        operations.  Arrays with an axis that several slots share (a concatenation, a
        period) are listed apart and counted by :meth:`_new_shape`."""
        index = {g.name: i for i, g in enumerate(self.groups)}
        one = len(self.groups)  # the index of a factor 1
        simple, const, group, mult, special = [], [], [], [], []
        for p, shape in self.shapes.items():
            factors, c = [], 1
            for axis, n in enumerate(shape):
                slots = self._axis_slots.get(p, {}).get(axis)
                if not slots:
                    c *= n
                    continue
                slot, name, size = slots[0]
                whole = (
                    slot.period is None and slot.offset == 0 and slot.outer * size * slot.inner == n
                )
                if len(slots) > 1 or not whole:
                    factors = None
                    break
                factors.append((index[name], slot.outer * slot.inner))
            if factors is None:
                special.append(p)
                continue
            simple.append(p)
            const.append(c)
            group.append([g for g, _ in factors])
            mult.append([m for _, m in factors])
        width = max((len(g) for g in group), default=0)
        group_arr = np.full((len(simple), width), one, np.int64)
        mult_arr = np.ones((len(simple), width), np.int64)
        for r, (g, m) in enumerate(zip(group, mult)):
            group_arr[r, : len(g)] = g
            mult_arr[r, : len(m)] = m
        return simple, np.asarray(const, np.int64), group_arr, mult_arr, special

    def _weighted_size(self, widths: Mapping, weight) -> int:
        """``Σ_p weight(p) · entries(p)`` at ``widths`` (``weight(p)`` 0 leaves ``p`` out)."""
        simple, const, group, mult, special = self._size_table
        k = np.ones(len(self.groups) + 1, np.int64)
        for i, g in enumerate(self.groups):
            k[i] = widths.get(g.name, g.size)
        w = np.asarray([weight(p) for p in simple], np.int64)
        total = int(np.sum(w * const * np.prod(mult * k[group], axis=1)))
        for p in special:
            if w_p := weight(p):
                total += w_p * math.prod(self._new_shape(p, widths))
        return total

    def count_params(
        self, widths: Mapping | None = None, paths=None, collection: str = "params"
    ) -> int:
        """Number of entries of the ``collection`` arrays (restricted to ``paths``) at
        ``widths``."""
        return self._weighted_size(
            widths or {}, lambda p: p[0] == collection and (paths is None or p in paths)
        )

    def count_macs(self, widths: Mapping | None = None) -> int:
        """Multiply-accumulates per example of all Dense/Conv kernels at ``widths``."""
        positions = self.kernel_positions
        return self._weighted_size(widths or {}, lambda p: positions.get(p, 0))
