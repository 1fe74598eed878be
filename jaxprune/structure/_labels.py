"""Labels the tracer attaches to jaxpr values: which axes index which channel group."""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple


class _UnionFind:
    def __init__(self):
        self.parent: list[int] = []

    def new(self) -> int:
        self.parent.append(len(self.parent))
        return len(self.parent) - 1

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: int, b: int) -> None:
        a, b = self.find(a), self.find(b)
        if a != b:
            self.parent[max(a, b)] = min(a, b)


class Seg(NamedTuple):
    """One group's channels on an axis of ``outer · period · inner`` entries: channel ``c``
    of group ``gid`` owns the entries ``(o · period + offset + c) · inner + i``
    (``o < outer``, ``i < inner``). A plain channel axis is ``Seg(g, 1, 1, 0, size)``; a
    concatenation puts several segments (at different offsets) on one axis."""

    gid: int
    outer: int
    inner: int
    offset: int
    period: int


@dataclasses.dataclass
class _Info:
    """Abstract value of a jaxpr variable.

    ``chan``: axis -> tuple of :class:`Seg` for axes indexed by channels.
    ``porig``: tuple of (leaf index, {param axis: var axis}) for values derived only from
    parameters (e.g. a reshaped bias, ``scale * rsqrt(var + eps)``).
    ``act``: the value depends on the network input (an activation); an activation is never
    taken for a parameter, so a bias added to it is not mistaken for the bias itself.
    ``uniform``: axes along which the value is constant (stretched or added by a broadcast,
    e.g. an attention mask ``(B, 1, q, k)`` broadcast over the heads): they index no
    channels, so an activation unlabelled there does not freeze the groups it meets.
    """

    chan: dict = dataclasses.field(default_factory=dict)
    porig: tuple = ()
    act: bool = False
    uniform: frozenset = frozenset()


class Layout(NamedTuple):
    """Where the ``size`` channels of a group split off a parent group lie among the
    parent's channels: child channel ``c`` is parent channels ``(o · period + offset + c) ·
    inner + i`` (``o < outer``, ``i < inner``). Heads of a ``(H·D) -> (H, D)`` reshape:
    ``Layout(H, 1, H, 0, D)``; the second of three equal pieces of a split of ``3·C``
    channels: ``Layout(C, 1, 3·C, C, 1)``."""

    size: int
    outer: int
    period: int
    offset: int
    inner: int


def product_layouts(sizes) -> list[Layout]:
    """The layouts of the factors of a channel axis reshaped to ``sizes`` (row-major): factor
    ``k`` repeats ``prod(sizes[:k])`` times and owns blocks of ``prod(sizes[k+1:])``."""
    return [
        Layout(n, math.prod(sizes[:k]), n, 0, math.prod(sizes[k + 1 :]))
        for k, n in enumerate(sizes)
    ]
