"""A zoo of small third-party-style Linen models for :mod:`test_zoo`.

These are written the way user code is written (not jaxprune's model classes): compact and
``setup`` styles, auto-named (``Dense_0``) and explicitly named submodules, mode flags of
every usual spelling. Each is tiny, so pruning all of them with two methods stays cheap.

``ZOO``: ``name -> (factory, input_shape, inference kwargs or None)``. The factory returns an
unbound module; the classes live at module level so a saved (pruned) model can be rebuilt in
another process (``tests/`` on ``sys.path``: importable as ``zoo``).

``BARE``: entries pruned from their bare params, WITHOUT ``model=`` (plain Dense chains).
``ModeSwitch``: a model whose inference call needs an unusual flag (``mode="eval"``); not in
``ZOO`` because ``prune`` cannot detect it (see the ``apply_kwargs`` tests).
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


# --------------------------------------------------------------------------------------------
# 1. nn.Sequential MLP
# --------------------------------------------------------------------------------------------
def sequential_mlp():
    return nn.Sequential([nn.Dense(24), nn.relu, nn.Dense(16), nn.relu, nn.Dense(12), nn.relu,
                          nn.Dense(5)])


# --------------------------------------------------------------------------------------------
# 2. MobileNetV2-style inverted residual blocks
# --------------------------------------------------------------------------------------------
class InvertedResidual(nn.Module):
    """1x1 expand -> BN -> relu6 -> 3x3 depthwise -> BN -> relu6 -> 1x1 project -> BN (+x)."""
    out_ch: int
    expand: int = 2
    stride: int = 1

    @nn.compact
    def __call__(self, x, train: bool):
        hidden = x.shape[-1] * self.expand
        y = nn.Conv(hidden, (1, 1), use_bias=False, name="expand")(x)
        y = nn.BatchNorm(use_running_average=not train, name="bn_expand")(y)
        y = nn.relu6(y)
        y = nn.Conv(hidden, (3, 3), strides=self.stride, feature_group_count=hidden,
                    use_bias=False, name="depthwise")(y)
        y = nn.BatchNorm(use_running_average=not train, name="bn_depthwise")(y)
        y = nn.relu6(y)
        y = nn.Conv(self.out_ch, (1, 1), use_bias=False, name="project")(y)
        y = nn.BatchNorm(use_running_average=not train, name="bn_project")(y)
        if self.stride == 1 and x.shape[-1] == self.out_ch:
            y = x + y
        return y


class TinyMobileNetV2(nn.Module):
    num_classes: int = 5

    @nn.compact
    def __call__(self, x, train: bool):
        x = nn.Conv(8, (3, 3), use_bias=False, name="stem")(x)
        x = nn.relu6(nn.BatchNorm(use_running_average=not train, name="stem_bn")(x))
        x = InvertedResidual(8, expand=2)(x, train)            # residual
        x = InvertedResidual(12, expand=2, stride=2)(x, train)  # no residual
        x = InvertedResidual(12, expand=3)(x, train)           # residual
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_classes, name="head")(x)


# --------------------------------------------------------------------------------------------
# 3. DenseNet-style block
# --------------------------------------------------------------------------------------------
class DenseLayer(nn.Module):
    growth: int

    @nn.compact
    def __call__(self, x):
        y = nn.Conv(self.growth, (3, 3))(nn.relu(x))
        return jnp.concatenate([x, y], axis=-1)


class TinyDenseNet(nn.Module):
    """stem -> 3 dense layers (each concatenates its output to its input) -> 1x1 transition."""
    growth: int = 4
    num_layers: int = 3
    transition: int = 10
    num_classes: int = 4

    def setup(self):
        self.stem = nn.Conv(6, (3, 3))
        self.block = [DenseLayer(self.growth) for _ in range(self.num_layers)]
        self.trans = nn.Conv(self.transition, (1, 1))
        self.head = nn.Dense(self.num_classes)

    def __call__(self, x):
        x = self.stem(x)
        for layer in self.block:
            x = layer(x)
        x = nn.relu(self.trans(nn.relu(x)))
        x = nn.avg_pool(x, (2, 2), (2, 2))
        return self.head(jnp.mean(x, axis=(1, 2)))


# --------------------------------------------------------------------------------------------
# 4. small U-Net
# --------------------------------------------------------------------------------------------
class TinyUNet(nn.Module):
    """Two down levels; up by ``jax.image.resize`` (inner) and ``ConvTranspose`` (outer),
    skips concatenated along channels."""
    out_ch: int = 3

    @nn.compact
    def __call__(self, x):
        e1 = nn.relu(nn.Conv(6, (3, 3), name="enc1")(x))                       # 8x8
        e2 = nn.relu(nn.Conv(8, (3, 3), name="enc2")(nn.max_pool(e1, (2, 2), (2, 2))))  # 4x4
        b = nn.relu(nn.Conv(10, (3, 3), name="bottleneck")(nn.max_pool(e2, (2, 2), (2, 2))))
        n, h, w, c = b.shape
        u2 = jax.image.resize(b, (n, h * 2, w * 2, c), method="nearest")         # 4x4
        d2 = nn.relu(nn.Conv(8, (3, 3), name="dec2")(jnp.concatenate([u2, e2], axis=-1)))
        u1 = nn.relu(nn.ConvTranspose(6, (2, 2), strides=(2, 2), name="up1")(d2))  # 8x8
        d1 = nn.relu(nn.Conv(6, (3, 3), name="dec1")(jnp.concatenate([e1, u1], axis=-1)))
        return nn.Conv(self.out_ch, (1, 1), name="out")(d1)


# --------------------------------------------------------------------------------------------
# 5. a module called twice (weight sharing)
# --------------------------------------------------------------------------------------------
class SharedTwiceChain(nn.Module):
    """One ``nn.Dense`` applied twice in a row (its input and output channels are tied)."""
    width: int = 16

    def setup(self):
        self.inp = nn.Dense(self.width)
        self.shared = nn.Dense(self.width)
        self.out = nn.Dense(3)

    def __call__(self, x):
        h = nn.relu(self.inp(x))
        h = nn.relu(self.shared(h))
        h = nn.relu(self.shared(h))
        return self.out(h)


class SharedTwoBranches(nn.Module):
    """One ``nn.Dense`` applied to two branches (the branches' channels are tied)."""

    @nn.compact
    def __call__(self, x):
        shared = nn.Dense(12, name="shared")
        a = nn.relu(nn.Dense(10, name="branch_a")(x))
        b = nn.tanh(nn.Dense(10, name="branch_b")(x))
        y = nn.relu(shared(a)) + nn.relu(shared(b))
        return nn.Dense(4, name="out")(y)


# --------------------------------------------------------------------------------------------
# 6. mode flags: `deterministic` (Dropout) and `training` (BatchNorm)
# --------------------------------------------------------------------------------------------
class DropoutMLP(nn.Module):
    widths: Sequence[int] = (20, 14)
    rate: float = 0.3

    @nn.compact
    def __call__(self, x, deterministic: bool = False):
        for w in self.widths:
            x = nn.Dense(w)(x)
            x = nn.Dropout(self.rate)(nn.relu(x), deterministic=deterministic)
        return nn.Dense(4)(x)


class BatchNormCNN(nn.Module):
    @nn.compact
    def __call__(self, x, training: bool = True):
        x = nn.Conv(8, (3, 3), name="conv_a")(x)
        x = nn.relu(nn.BatchNorm(use_running_average=not training, name="bn_a")(x))
        x = nn.Conv(12, (3, 3), strides=2, name="conv_b")(x)
        x = nn.relu(nn.BatchNorm(use_running_average=not training, name="bn_b")(x))
        x = x.reshape((x.shape[0], -1))
        x = nn.relu(nn.Dense(16, name="fc")(x))
        return nn.Dense(4, name="logits")(x)


# --------------------------------------------------------------------------------------------
# 7. LayerNorm MLP, GroupNorm CNN
# --------------------------------------------------------------------------------------------
class LayerNormMLP(nn.Module):
    """LayerNorm after the first layer (its channels are mixed: frozen); a plain layer next."""

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.LayerNorm()(nn.Dense(20)(x)))
        x = nn.relu(nn.Dense(16)(x))
        x = nn.gelu(nn.Dense(12)(x))
        return nn.Dense(3)(x)


class GroupNormCNN(nn.Module):
    """Every conv is followed by GroupNorm: no channel may be removed (the whole model is
    frozen, each group with its reason)."""

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.GroupNorm(num_groups=2)(nn.Conv(8, (3, 3))(x)))
        x = nn.relu(nn.GroupNorm(num_groups=4)(nn.Conv(8, (3, 3))(x)))
        return nn.Dense(3)(jnp.mean(x, axis=(1, 2)))


# --------------------------------------------------------------------------------------------
# 8. a 12-layer Dense chain of equal widths, auto-named (Dense_0..Dense_11)
# --------------------------------------------------------------------------------------------
class DenseChain(nn.Module):
    """``Dense_0 .. Dense_11``, all ``width`` wide (the shapes cannot tell the order; only the
    numbers can: alphabetically Dense_10 comes before Dense_2). ReLU between layers, as
    ``jaxprune.structure.from_params`` assumes for a bare chain."""
    width: int = 16
    depth: int = 12

    @nn.compact
    def __call__(self, x):
        for i in range(self.depth):
            x = nn.Dense(self.width)(x)
            if i < self.depth - 1:
                x = nn.relu(x)
        return x


# --------------------------------------------------------------------------------------------
# a model with an unusual inference flag (not in ZOO)
# --------------------------------------------------------------------------------------------
class ModeSwitch(nn.Module):
    """Dropout is active unless ``mode == "eval"``: nothing in the signature says so."""

    @nn.compact
    def __call__(self, x, mode: str = "train"):
        x = nn.relu(nn.Dense(16)(x))
        x = nn.Dropout(0.5, deterministic=mode == "eval")(x)
        x = nn.relu(nn.Dense(12)(x))
        return nn.Dense(3)(x)


ZOO = {
    "sequential_mlp": (sequential_mlp, (10,), None),
    "mobilenetv2": (TinyMobileNetV2, (8, 8, 3), {"train": False}),
    "densenet": (TinyDenseNet, (8, 8, 3), None),
    "unet": (TinyUNet, (8, 8, 3), None),
    "shared_twice_chain": (SharedTwiceChain, (7,), None),
    "shared_two_branches": (SharedTwoBranches, (7,), None),
    "dropout_mlp": (DropoutMLP, (9,), {"deterministic": True}),
    "batchnorm_cnn": (BatchNormCNN, (8, 8, 3), {"training": False}),
    "layernorm_mlp": (LayerNormMLP, (9,), None),
    "groupnorm_cnn": (GroupNormCNN, (8, 8, 3), None),
    "dense_chain12": (DenseChain, (16,), None),
}

BARE = frozenset({"dense_chain12"})
