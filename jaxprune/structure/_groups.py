"""Channel groups and what they cost: the data model of :mod:`jaxprune.structure`."""
from __future__ import annotations

import dataclasses
import math

from jaxprune._tree import Path


@dataclasses.dataclass(frozen=True)
class ArraySlot:
    """One axis of one array (``path`` into the variables dict) indexed by a group's channels.

    Along ``axis`` the array has ``outer * size * inner`` entries; channel ``c`` owns the
    entries ``(o * size + c) * inner + i`` for ``o < outer``, ``i < inner``.
    """
    path: Path
    axis: int
    outer: int = 1
    inner: int = 1


@dataclasses.dataclass(frozen=True)
class ChannelGroup:
    """A set of channels that must be kept or removed together."""
    name: str                       # path of the first producer module, e.g. "dense_0"
    size: int                       # number of channels
    producers: tuple[ArraySlot, ...]  # kernels whose output axis creates the channels
    members: tuple[ArraySlot, ...]    # biases, norm scale/bias/mean/var over the channels
    consumers: tuple[ArraySlot, ...]  # kernels whose input axis reads the channels
    prunable: bool
    reason: str = ""                # why a group is not prunable

    @property
    def residual(self) -> bool:
        """True when a residual add ties the outputs of several producers together."""
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

    def new_shapes(self, widths: dict) -> dict:
        """Shape of every variable when group ``g`` keeps ``widths[g.name]`` channels."""
        shapes = {p: list(s) for p, s in self.shapes.items()}
        for g in self.groups:
            if g.name not in widths:  # untouched groups keep their shapes (a frozen group
                continue              # may tie axes the tracer could not size consistently)
            k = widths[g.name]
            for slot in (*g.producers, *g.members, *g.consumers):
                shapes[slot.path][slot.axis] = slot.outer * k * slot.inner
        return {p: tuple(s) for p, s in shapes.items()}

    def touched(self, only_prunable: bool = True) -> set:
        """Paths of the arrays that some (prunable) group shrinks."""
        return {s.path for g in self.groups if g.prunable or not only_prunable
                for s in (*g.producers, *g.members, *g.consumers)}

    def count_params(self, widths: dict | None = None, paths=None, collection: str = "params") -> int:
        """Number of entries of the ``collection`` arrays (restricted to ``paths``) at ``widths``."""
        shapes = self.new_shapes(widths or {})
        return int(sum(math.prod(s) for p, s in shapes.items()
                       if p[0] == collection and (paths is None or p in paths)))

    def count_macs(self, widths: dict | None = None) -> int:
        """Multiply-accumulates per example of all Dense/Conv kernels at ``widths``."""
        shapes = self.new_shapes(widths or {})
        return int(sum(math.prod(shapes[p]) * n for p, n in self.kernel_positions.items()))
