"""ResNets: CIFAR basic-block ResNets (ResNet-56) and the ImageNet bottleneck ResNet-50.

Pruning convention: only the channels *inside* a residual block are in ``widths`` (conv1 of a
basic block; conv1 and conv2 of a bottleneck). The block outputs are tied across the whole
stage by the residual additions; they are a separate field ``stage_widths`` and are not
pruned by default.

CIFAR shortcut (documented design decision): ``shortcut='A'`` (default) is the
parameter-free option A of He et al. (2016) used for the CIFAR ResNets (ResNet-56 has
853,018 params, the "0.85M" of the literature): when a block changes resolution/width, the
identity is subsampled with stride 2 and zero-padded with the missing channels (it needs
non-decreasing stage widths). ``shortcut='B'`` uses a 1×1 conv + BatchNorm projection
(``shortcut_conv``/``shortcut_bn``) instead, only where the shape changes.

ResNet-50 is the torchvision "v1.5" layout: stride on the 3×3 conv of the bottleneck,
projection shortcuts (1×1 conv + BN) on the first block of each stage. Convs have no bias.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp


def _bn(train: bool, name: str, momentum: float) -> nn.BatchNorm:
    return nn.BatchNorm(use_running_average=not train, momentum=momentum, epsilon=1e-5, name=name)


class BasicBlock(nn.Module):
    """3×3 conv (``inner``) → BN → ReLU → 3×3 conv (``features``) → BN, + shortcut, ReLU."""

    inner: int
    features: int
    strides: int = 1
    shortcut: str = "A"
    bn_momentum: float = 0.9

    @nn.compact
    def __call__(self, x, train: bool = False):
        s = (self.strides, self.strides)
        y = nn.Conv(self.inner, (3, 3), s, padding=((1, 1), (1, 1)), use_bias=False, name="conv1")(
            x
        )
        y = nn.relu(_bn(train, "bn1", self.bn_momentum)(y))
        y = nn.Conv(self.features, (3, 3), padding=((1, 1), (1, 1)), use_bias=False, name="conv2")(
            y
        )
        y = _bn(train, "bn2", self.bn_momentum)(y)
        c_in = x.shape[-1]
        if self.strides != 1 or c_in != self.features:
            if self.shortcut == "A":
                if c_in > self.features:
                    raise ValueError(
                        "option-A shortcut needs non-decreasing widths "
                        f"({c_in} -> {self.features}); use shortcut='B'"
                    )
                x = x[:, :: self.strides, :: self.strides, :]
                x = jnp.pad(x, ((0, 0), (0, 0), (0, 0), (0, self.features - c_in)))
            elif self.shortcut == "B":
                x = nn.Conv(self.features, (1, 1), s, use_bias=False, name="shortcut_conv")(x)
                x = _bn(train, "shortcut_bn", self.bn_momentum)(x)
            else:
                raise ValueError(f"shortcut must be 'A' or 'B', got {self.shortcut!r}")
        return nn.relu(x + y)


def block_names(num_blocks) -> list[str]:
    """Module name of every residual block: ``block{stage+1}_{index}`` in call order."""
    return [f"block{s + 1}_{b}" for s, n in enumerate(num_blocks) for b in range(n)]


class CifarResNet(nn.Module):
    """CIFAR ResNet: 3×3 stem (``stage_widths[0]``), stages of basic blocks, GAP, ``head``.

    ``widths[k]`` is the inner width (conv1 output) of block ``k`` in call order; block ``b``
    of stage ``s`` is the module ``block{s+1}_{b}``. ResNet-56: ``num_blocks=(9, 9, 9)``.
    """

    widths: tuple[int, ...] = (16,) * 9 + (32,) * 9 + (64,) * 9
    stage_widths: tuple[int, ...] = (16, 32, 64)
    num_blocks: tuple[int, ...] = (9, 9, 9)
    shortcut: str = "A"
    num_classes: int = 10
    bn_momentum: float = 0.9

    def __post_init__(self):
        if len(self.stage_widths) != len(self.num_blocks):
            raise ValueError("stage_widths and num_blocks must have the same length")
        if len(self.widths) != sum(self.num_blocks):
            raise ValueError(
                f"widths needs one entry per block ({sum(self.num_blocks)}), got {len(self.widths)}"
            )
        super().__post_init__()

    def _block_names(self):
        return block_names(self.num_blocks)

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = jnp.asarray(x, jnp.float32)
        x = nn.Conv(
            self.stage_widths[0], (3, 3), padding=((1, 1), (1, 1)), use_bias=False, name="conv_stem"
        )(x)
        x = nn.relu(_bn(train, "bn_stem", self.bn_momentum)(x))
        names, k = self._block_names(), 0
        for s, (n, feat) in enumerate(zip(self.num_blocks, self.stage_widths)):
            for b in range(n):
                strides = 2 if (s > 0 and b == 0) else 1
                x = BasicBlock(
                    self.widths[k], feat, strides, self.shortcut, self.bn_momentum, name=names[k]
                )(x, train)
                k += 1
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_classes, name="head")(x)

    def prunable_layers(self) -> tuple[str, ...]:
        return tuple(f"{n}/conv1" for n in self._block_names())

    def tied_width_layers(self) -> dict[str, tuple[str, ...]]:
        """Width fields outside ``widths`` and, per entry, one producer layer of its channels.

        ``stage_widths[s]`` is the width of the channels tied by the residual adds of stage
        ``s`` (pruned only with ``prune(..., prune_residual=True)``); the stem conv produces
        stage 1's, the ``conv2`` of a stage's first block the others'.
        """
        names = ["conv_stem"] + [f"block{s + 1}_0/conv2" for s in range(1, len(self.num_blocks))]
        return {"stage_widths": tuple(names)}


class Bottleneck(nn.Module):
    """1×1 (``inner1``) → 3×3 stride s (``inner2``) → 1×1 (``features``), BN each, + shortcut."""

    inner1: int
    inner2: int
    features: int
    strides: int = 1
    bn_momentum: float = 0.9

    @nn.compact
    def __call__(self, x, train: bool = False):
        s = (self.strides, self.strides)
        y = nn.Conv(self.inner1, (1, 1), use_bias=False, name="conv1")(x)
        y = nn.relu(_bn(train, "bn1", self.bn_momentum)(y))
        y = nn.Conv(self.inner2, (3, 3), s, padding=((1, 1), (1, 1)), use_bias=False, name="conv2")(
            y
        )
        y = nn.relu(_bn(train, "bn2", self.bn_momentum)(y))
        y = nn.Conv(self.features, (1, 1), use_bias=False, name="conv3")(y)
        y = _bn(train, "bn3", self.bn_momentum)(y)
        if self.strides != 1 or x.shape[-1] != self.features:
            x = nn.Conv(self.features, (1, 1), s, use_bias=False, name="shortcut_conv")(x)
            x = _bn(train, "shortcut_bn", self.bn_momentum)(x)
        return nn.relu(x + y)


def _r50_widths(inner=(64, 128, 256, 512), num_blocks=(3, 4, 6, 3)) -> tuple[int, ...]:
    return tuple(w for c, n in zip(inner, num_blocks) for _ in range(n) for w in (c, c))


class ResNet50(nn.Module):
    """ImageNet bottleneck ResNet (default ResNet-50, 25,557,032 params at 1000 classes).

    Stem: 7×7/2 conv (``stem_width``) + BN + ReLU + 3×3/2 max-pool. ``stage_widths`` are the
    block outputs; ``widths`` holds, for every bottleneck in call order, its conv1 and conv2
    widths (``widths[2k]``, ``widths[2k+1]``: 32 entries for ResNet-50).
    """

    widths: tuple[int, ...] = _r50_widths()
    stage_widths: tuple[int, ...] = (256, 512, 1024, 2048)
    num_blocks: tuple[int, ...] = (3, 4, 6, 3)
    stem_width: int = 64
    num_classes: int = 1000
    bn_momentum: float = 0.9

    def __post_init__(self):
        if len(self.stage_widths) != len(self.num_blocks):
            raise ValueError("stage_widths and num_blocks must have the same length")
        if len(self.widths) != 2 * sum(self.num_blocks):
            raise ValueError(
                f"widths needs two entries per bottleneck "
                f"({2 * sum(self.num_blocks)}), got {len(self.widths)}"
            )
        super().__post_init__()

    def _block_names(self):
        return block_names(self.num_blocks)

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = jnp.asarray(x, jnp.float32)
        x = nn.Conv(
            self.stem_width,
            (7, 7),
            (2, 2),
            padding=((3, 3), (3, 3)),
            use_bias=False,
            name="conv_stem",
        )(x)
        x = nn.relu(_bn(train, "bn_stem", self.bn_momentum)(x))
        # Flax takes explicit (low, high) pads here too; its annotation names only strings
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))  # pyright: ignore[reportArgumentType]
        names, k = self._block_names(), 0
        for s, (n, feat) in enumerate(zip(self.num_blocks, self.stage_widths)):
            for b in range(n):
                strides = 2 if (s > 0 and b == 0) else 1
                x = Bottleneck(
                    self.widths[2 * k],
                    self.widths[2 * k + 1],
                    feat,
                    strides,
                    self.bn_momentum,
                    name=names[k],
                )(x, train)
                k += 1
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_classes, name="head")(x)

    def prunable_layers(self) -> tuple[str, ...]:
        return tuple(f"{n}/{c}" for n in self._block_names() for c in ("conv1", "conv2"))

    def tied_width_layers(self) -> dict[str, tuple[str, ...]]:
        """Width fields outside ``widths`` and, per entry, one producer layer of its channels.

        ``stem_width``: the stem conv (a plain, non-residual group: it feeds the first block's
        conv1 and projection shortcut). ``stage_widths[s]``: the residual channels of stage
        ``s``, produced by the ``conv3`` of every block and the stage's projection shortcut.
        """
        return {
            "stem_width": ("conv_stem",),
            "stage_widths": tuple(f"block{s + 1}_0/conv3" for s in range(len(self.num_blocks))),
        }


def resnet56(**overrides) -> CifarResNet:
    """CIFAR ResNet-56: 3 stages × 9 basic blocks, stage widths (16, 32, 64), option-A."""
    return CifarResNet(**overrides)


def resnet20(**overrides) -> CifarResNet:
    """CIFAR ResNet-20 (3 × 3 blocks): a fast stand-in for ResNet-56 in experiments."""
    cfg: dict[str, Any] = dict(widths=(16,) * 3 + (32,) * 3 + (64,) * 3, num_blocks=(3, 3, 3))
    cfg.update(overrides)
    return CifarResNet(**cfg)


def resnet50(**overrides) -> ResNet50:
    return ResNet50(**overrides)
