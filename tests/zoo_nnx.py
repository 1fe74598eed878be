"""Flax NNX models for the NNX tests (importable, so a fresh process can rebuild them)."""
from __future__ import annotations

import flax.linen as nn
from flax import nnx


class NnxMLP(nnx.Module):
    def __init__(self, din: int = 10, hidden=(24, 16), dout: int = 3, *, rngs: nnx.Rngs):
        sizes = (din, *hidden)
        self.layers = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in zip(sizes, sizes[1:])])
        self.drop = nnx.Dropout(0.2, rngs=rngs)
        self.out = nnx.Linear(sizes[-1], dout, rngs=rngs)

    def __call__(self, x):
        for layer in self.layers:
            x = self.drop(nnx.relu(layer(x)))
        return self.out(x)


class NnxCNN(nnx.Module):
    """Conv + BatchNorm, a residual block, conv -> flatten -> Linear."""

    def __init__(self, channels: int = 2, width: int = 8, hw: int = 6, *, rngs: nnx.Rngs):
        self.stem = nnx.Conv(channels, width, (3, 3), rngs=rngs)
        self.bn0 = nnx.BatchNorm(width, rngs=rngs)
        self.inner = nnx.Conv(width, 12, (3, 3), rngs=rngs)
        self.bn1 = nnx.BatchNorm(12, rngs=rngs)
        self.back = nnx.Conv(12, width, (1, 1), rngs=rngs)
        self.fc = nnx.Linear(width * hw * hw, 16, rngs=rngs)
        self.head = nnx.Linear(16, 3, rngs=rngs)

    def __call__(self, x):
        h = nnx.relu(self.bn0(self.stem(x)))
        h = h + self.back(nnx.relu(self.bn1(self.inner(h))))   # residual: stem/back tied
        h = nnx.relu(self.fc(h.reshape(h.shape[0], -1)))
        return self.head(h)


class LinenMLP(nn.Module):
    """The Linen twin of :class:`NnxMLP` (same parameter names and layout)."""
    hidden: tuple = (24, 16)
    dout: int = 3

    @nn.compact
    def __call__(self, x, train: bool = False):
        drop = nn.Dropout(0.2, deterministic=not train, name="drop")
        for i, h in enumerate(self.hidden):
            x = drop(nn.relu(nn.Dense(h, name=f"layers_{i}")(x)))
        return nn.Dense(self.dout, name="out")(x)


class LinenCNN(nn.Module):
    """The Linen twin of :class:`NnxCNN` (same parameter names and layout)."""
    width: int = 8

    @nn.compact
    def __call__(self, x, train: bool = False):
        def bn(name):
            return nn.BatchNorm(use_running_average=not train, name=name)

        h = nn.relu(bn("bn0")(nn.Conv(self.width, (3, 3), name="stem")(x)))
        inner = nn.relu(bn("bn1")(nn.Conv(12, (3, 3), name="inner")(h)))
        h = h + nn.Conv(self.width, (1, 1), name="back")(inner)
        h = nn.relu(nn.Dense(16, name="fc")(h.reshape(h.shape[0], -1)))
        return nn.Dense(3, name="head")(h)
