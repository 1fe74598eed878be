"""Labels the tracer attaches to jaxpr values: which axes index which channel group."""
from __future__ import annotations

import dataclasses


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


@dataclasses.dataclass
class _Info:
    """Abstract value of a jaxpr variable.

    ``chan``: axis -> (group id, outer, inner) for axes indexed by channels.
    ``porig``: tuple of (leaf index, {param axis: var axis}) for values derived only from
    parameters (e.g. a reshaped bias, ``scale * rsqrt(var + eps)``).
    """
    chan: dict = dataclasses.field(default_factory=dict)
    porig: tuple = ()
