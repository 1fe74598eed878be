"""VGG with BatchNorm for 32×32 CIFAR inputs.

``VGG(widths, pool_after, num_dense)``: the first ``len(widths) - num_dense`` entries of
``widths`` are 3×3 conv layers (``conv_i`` → ``bn_i`` → ReLU, with a 2×2 max-pool after the
conv indices listed in ``pool_after``); the last ``num_dense`` entries are hidden dense layers
(``dense_j`` → ReLU → dropout) of the classifier, followed by the ``head`` output layer.
Every conv and hidden dense layer is prunable, so all of them appear in ``widths``.

Classifier choices (documented design decision):

* :func:`vgg16` — the 13 standard conv widths followed by two hidden dense layers 512 → 512
  (``num_dense=2``), the CIFAR VGG-16 of the coreset-pruning literature whose "dense layers"
  are compressed in Table 1 of the main paper. After five max-pools a 32×32 input is 1×1×512,
  so the classifier is ``512 → 512 → 512 → num_classes``.
* :func:`vgg19` — the 16 standard conv widths and *no* hidden dense layer (``num_dense=0``):
  ``512 → num_classes``, the CIFAR VGG-19 used by the filter-pruning baselines (network
  slimming etc.) it is compared against in Table 2, where only conv filters are pruned.
  Pass ``num_dense``/``widths`` to get another classifier.

Convs keep their bias (as the common PyTorch CIFAR VGGs do); BatchNorm uses
``use_running_average=not train`` with the ``'batch_stats'`` collection.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

VGG16_CONV = (64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512)
VGG16_POOL = (1, 3, 6, 9, 12)
VGG19_CONV = (64, 64, 128, 128, 256, 256, 256, 256, 512, 512, 512, 512, 512, 512, 512, 512)
VGG19_POOL = (1, 3, 7, 11, 15)


class VGG(nn.Module):
    widths: tuple[int, ...] = VGG16_CONV + (512, 512)
    pool_after: tuple[int, ...] = VGG16_POOL
    num_dense: int = 2
    num_classes: int = 10
    dropout_rate: float = 0.0
    bn_momentum: float = 0.9

    def __post_init__(self):
        if not 0 <= self.num_dense <= len(self.widths):
            raise ValueError(f"num_dense={self.num_dense} incompatible with widths={self.widths}")
        n_conv = len(self.widths) - self.num_dense
        bad = [p for p in self.pool_after if not 0 <= p < n_conv]
        if bad:
            raise ValueError(f"pool_after indices {bad} are not conv layers (0..{n_conv - 1})")
        super().__post_init__()

    @property
    def num_conv(self) -> int:
        return len(self.widths) - self.num_dense

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = jnp.asarray(x, jnp.float32)
        n_conv = self.num_conv
        for i, w in enumerate(self.widths[:n_conv]):
            x = nn.Conv(w, (3, 3), padding="SAME", name=f"conv_{i}")(x)
            x = nn.BatchNorm(
                use_running_average=not train,
                momentum=self.bn_momentum,
                epsilon=1e-5,
                name=f"bn_{i}",
            )(x)
            x = nn.relu(x)
            if i in self.pool_after:
                x = nn.max_pool(x, (2, 2), strides=(2, 2))
        x = x.reshape((x.shape[0], -1))
        for j, w in enumerate(self.widths[n_conv:]):
            x = nn.relu(nn.Dense(w, name=f"dense_{j}")(x))
            if self.dropout_rate > 0.0:
                x = nn.Dropout(self.dropout_rate, deterministic=not train, name=f"dropout_{j}")(x)
        return nn.Dense(self.num_classes, name="head")(x)

    def prunable_layers(self) -> tuple[str, ...]:
        return tuple(f"conv_{i}" for i in range(self.num_conv)) + tuple(
            f"dense_{j}" for j in range(self.num_dense)
        )


def vgg16(**overrides) -> VGG:
    """CIFAR VGG-16 with BatchNorm and a 512→512 hidden classifier (see module doc)."""
    cfg: dict[str, Any] = dict(widths=VGG16_CONV + (512, 512), pool_after=VGG16_POOL, num_dense=2)
    cfg.update(overrides)
    return VGG(**cfg)


def vgg19(**overrides) -> VGG:
    """CIFAR VGG-19 with BatchNorm and a single linear classifier (see module doc)."""
    cfg: dict[str, Any] = dict(widths=VGG19_CONV, pool_after=VGG19_POOL, num_dense=0)
    cfg.update(overrides)
    return VGG(**cfg)
