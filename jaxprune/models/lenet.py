"""LeNet-300-100 (MLP) and LeNet-5 (small CNN) for 28×28 MNIST-like inputs.

Contract shared by every model in :mod:`jaxprune.models`:

* ``__call__(x, train=False)`` with ``x`` NHWC float32 (MLPs flatten it);
* ``widths``: output width of every *prunable* hidden layer, in call order;
* ``prunable_layers()``: the '/'-joined params path of the module producing each width;
* a pruned model is ``model.clone(widths=smaller)`` and accepts the shrunk params;
* every module is named explicitly so params paths are stable.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxprune._nnx import init_args


def _flatten(x: jnp.ndarray) -> jnp.ndarray:
    return x.reshape((x.shape[0], -1))


def _dense_head(x, widths, num_classes: int, dropout_rate: float, train: bool):
    """``dense_i`` + ReLU (+ ``dropout_i``) per width, then the ``head`` classifier.

    Called from a parent's ``@nn.compact`` method, so the layers are the parent's submodules.
    """
    for i, w in enumerate(widths):
        x = nn.relu(nn.Dense(w, name=f"dense_{i}")(x))
        if dropout_rate > 0.0:
            x = nn.Dropout(dropout_rate, deterministic=not train, name=f"dropout_{i}")(x)
    return nn.Dense(num_classes, name="head")(x)


class LeNet300100(nn.Module):
    """Fully connected ``784 → widths[0] → … → widths[-1] → num_classes`` with ReLU.

    The depth follows ``len(widths)``: hidden layer ``i`` is ``dense_i``; the classifier is
    ``head``. With the default widths the network has 266,610 parameters.
    """

    widths: tuple[int, ...] = (300, 100)
    num_classes: int = 10
    dropout_rate: float = 0.0

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = _flatten(jnp.asarray(x, jnp.float32))
        return _dense_head(x, self.widths, self.num_classes, self.dropout_rate, train)

    def prunable_layers(self) -> tuple[str, ...]:
        return tuple(f"dense_{i}" for i in range(len(self.widths)))


class LeNet5(nn.Module):
    """LeNet-5: two 5×5 conv layers (ReLU + 2×2 max-pool each), then dense layers.

    ``widths = (conv_0, conv_1, dense_0, dense_1, …)``: the first two entries are the conv
    filter counts, every further entry is a hidden dense layer (default ``(6, 16, 120, 84)``).

    Padding: the first conv uses ``'SAME'`` padding so a 28×28 MNIST image plays the role of
    the original 32×32 LeNet input (28 →conv SAME→ 28 →pool→ 14 →conv VALID→ 10 →pool→ 5),
    giving the classic 5·5·16 = 400 features before the dense layers. The second conv is
    ``'VALID'``. Default parameter count: 156 + 2,416 + 48,120 + 10,164 + 850 = 61,706.
    """

    widths: tuple[int, ...] = (6, 16, 120, 84)
    num_classes: int = 10
    dropout_rate: float = 0.0

    def __post_init__(self):
        if len(self.widths) < 2:
            raise ValueError(f"LeNet5 needs at least the two conv widths, got {self.widths}")
        super().__post_init__()

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = jnp.asarray(x, jnp.float32)
        for i, (w, pad) in enumerate(zip(self.widths[:2], ("SAME", "VALID"))):
            x = nn.Conv(w, (5, 5), padding=pad, name=f"conv_{i}")(x)
            x = nn.max_pool(nn.relu(x), (2, 2), strides=(2, 2))
        x = _flatten(x)
        return _dense_head(x, self.widths[2:], self.num_classes, self.dropout_rate, train)

    def prunable_layers(self) -> tuple[str, ...]:
        return ("conv_0", "conv_1") + tuple(f"dense_{i}" for i in range(len(self.widths) - 2))


# --------------------------------------------------------------------------------------------
# Flax NNX twins: the same layers, parameter names and layouts (Linen weights copy across)
# --------------------------------------------------------------------------------------------
class _NnxDenseHead(nnx.Module):
    """``dense_i`` + ReLU (+ dropout) per width, then ``head``: the NNX :func:`_dense_head`."""

    def _build_head(
        self, features: int, widths, num_classes: int, dropout_rate: float, rngs: nnx.Rngs
    ) -> None:
        sizes = (features, *widths)
        self.depth = len(widths)
        for i, (a, b) in enumerate(zip(sizes, sizes[1:])):
            setattr(self, f"dense_{i}", nnx.Linear(a, b, rngs=rngs))
        self.drop = nnx.Dropout(dropout_rate, rngs=rngs)
        self.head = nnx.Linear(sizes[-1], num_classes, rngs=rngs)

    def _head(self, x):
        for i in range(self.depth):
            x = self.drop(nnx.relu(getattr(self, f"dense_{i}")(x)))
        return self.head(x)


class NnxLeNet300100(_NnxDenseHead):
    """The NNX twin of :class:`LeNet300100`; ``image``: the input's ``(H, W, C)`` (sizes the
    first layer). ``.eval()`` / ``.train()`` switch dropout."""

    def __init__(
        self,
        widths=(300, 100),
        num_classes: int = 10,
        dropout_rate: float = 0.0,
        image=(28, 28, 1),
        *,
        rngs: nnx.Rngs,
    ):
        self.init_args = init_args(
            widths=widths, num_classes=num_classes, dropout_rate=dropout_rate, image=image
        )
        self._build_head(int(np.prod(image)), widths, num_classes, dropout_rate, rngs)

    def __call__(self, x):
        return self._head(_flatten(jnp.asarray(x, jnp.float32)))


class NnxLeNet5(_NnxDenseHead):
    """The NNX twin of :class:`LeNet5` (same paddings and pooling); ``image``: the input's
    ``(H, W, C)``."""

    def __init__(
        self,
        widths=(6, 16, 120, 84),
        num_classes: int = 10,
        dropout_rate: float = 0.0,
        image=(28, 28, 1),
        *,
        rngs: nnx.Rngs,
    ):
        if len(widths) < 2:
            raise ValueError(f"NnxLeNet5 needs at least the two conv widths, got {widths}")
        self.init_args = init_args(
            widths=widths, num_classes=num_classes, dropout_rate=dropout_rate, image=image
        )
        self.conv_0 = nnx.Conv(image[-1], widths[0], (5, 5), padding="SAME", rngs=rngs)
        self.conv_1 = nnx.Conv(widths[0], widths[1], (5, 5), padding="VALID", rngs=rngs)
        h, w = image[0] // 2 - 4, image[1] // 2 - 4  # SAME conv, pool, VALID 5x5 conv
        features = (h // 2) * (w // 2) * widths[1]
        self._build_head(features, widths[2:], num_classes, dropout_rate, rngs)

    def __call__(self, x):
        x = jnp.asarray(x, jnp.float32)
        for conv in (self.conv_0, self.conv_1):
            x = nnx.max_pool(nnx.relu(conv(x)), (2, 2), strides=(2, 2))
        return self._head(_flatten(x))
