"""A small Vision Transformer, in Linen (:class:`ViT`) and NNX (:class:`NnxViT`).

Patch embedding (a ``patch×patch`` conv of stride ``patch``), a class token (or mean
pooling), a learned position embedding, ``depth`` pre-LN blocks ``x + MHA(LN(x))``,
``x + MLP(LN(x))``, a final LayerNorm and the ``head`` classifier.

Pruning: the tracer ties the head axis of each block's query/key/value kernels into one
group (whole heads are removed; ``head_dim`` is frozen, mixed by the attention products),
and each MLP hidden layer (``mlp_0``) is a group of its own. The embedding dimension is the
residual stream: tied by the adds and normalised by every LayerNorm, it is frozen. The ViT
has no ``widths`` field: its pruned form is the generic :class:`jaxprune.rebuild.Resized`
(``result.model(vit)``), and the NNX one is ``result.module``.

Both versions name their parameters alike (``embed``, ``cls``, ``pos``,
``block_{i}/{ln_0, attn/{query, key, value, out}, ln_1, mlp_0, mlp_1}``, ``norm``, ``head``)
with the same layouts, so Linen weights copy onto the NNX twin one to one.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp
from flax import nnx

from jaxprune._nnx import init_args

__all__ = ["ViT", "NnxViT", "ViTBlock", "NnxViTBlock"]


def _tokens(patches: jnp.ndarray, cls, pos, pool: str) -> jnp.ndarray:
    """``(B, H, W, C)`` patch embeddings -> ``(B, N, C)`` tokens with class token and ``pos``."""
    b, h, w, c = patches.shape
    x = patches.reshape(b, h * w, c)
    if pool == "cls":
        x = jnp.concatenate([jnp.broadcast_to(cls, (b, 1, c)), x], axis=1)
    return x + pos


def _pooled(x: jnp.ndarray, pool: str) -> jnp.ndarray:
    return x[:, 0] if pool == "cls" else x.mean(axis=1)


def _check_pool(pool: str) -> None:
    if pool not in ("cls", "mean"):
        raise ValueError(f"pool must be 'cls' or 'mean', got {pool!r}")


class ViTBlock(nn.Module):
    """Pre-LN transformer block: ``x + attn(ln_0(x))``, ``x + mlp_1(gelu(mlp_0(ln_1(x))))``."""

    heads: int
    mlp: int
    dropout_rate: float = 0.0

    @nn.compact
    def __call__(self, x, train: bool = False):
        dim = x.shape[-1]
        h = nn.LayerNorm(name="ln_0")(x)
        h = nn.MultiHeadDotProductAttention(
            num_heads=self.heads,
            qkv_features=dim,
            out_features=dim,
            dropout_rate=self.dropout_rate,
            deterministic=not train,
            name="attn",
        )(h)
        x = x + nn.Dropout(self.dropout_rate, deterministic=not train)(h)
        h = nn.gelu(nn.Dense(self.mlp, name="mlp_0")(nn.LayerNorm(name="ln_1")(x)))
        h = nn.Dense(dim, name="mlp_1")(h)
        return x + nn.Dropout(self.dropout_rate, deterministic=not train)(h)


class ViT(nn.Module):
    """Vision Transformer for NHWC images whose sides are multiples of ``patch``.

    ``dim``: embedding (residual stream) width, ``heads`` attention heads of
    ``dim // heads`` each, ``mlp``: hidden width of each block's MLP, ``pool``: ``"cls"``
    (class token) or ``"mean"`` (mean of the tokens)."""

    patch: int = 4
    dim: int = 32
    depth: int = 2
    heads: int = 4
    mlp: int = 64
    num_classes: int = 10
    pool: str = "cls"
    dropout_rate: float = 0.0

    @nn.compact
    def __call__(self, x, train: bool = False):
        _check_pool(self.pool)
        x = jnp.asarray(x, jnp.float32)
        p = self.patch
        patches = nn.Conv(self.dim, (p, p), strides=(p, p), padding="VALID", name="embed")(x)
        n = patches.shape[1] * patches.shape[2] + (self.pool == "cls")
        cls = (
            self.param("cls", nn.initializers.zeros, (1, 1, self.dim))
            if self.pool == "cls"
            else None
        )
        pos = self.param("pos", nn.initializers.normal(0.02), (1, n, self.dim))
        x = _tokens(patches, cls, pos, self.pool)
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        for i in range(self.depth):
            x = ViTBlock(self.heads, self.mlp, self.dropout_rate, name=f"block_{i}")(x, train)
        x = nn.LayerNorm(name="norm")(x)
        return nn.Dense(self.num_classes, name="head")(_pooled(x, self.pool))


class NnxViTBlock(nnx.Module):
    """The NNX twin of :class:`ViTBlock`."""

    def __init__(
        self, dim: int, heads: int, mlp: int, dropout_rate: float = 0.0, *, rngs: nnx.Rngs
    ):
        self.ln_0 = nnx.LayerNorm(dim, rngs=rngs)
        self.attn = nnx.MultiHeadAttention(
            num_heads=heads,
            in_features=dim,
            qkv_features=dim,
            dropout_rate=dropout_rate,
            decode=False,
            rngs=rngs,
        )
        self.ln_1 = nnx.LayerNorm(dim, rngs=rngs)
        self.mlp_0 = nnx.Linear(dim, mlp, rngs=rngs)
        self.mlp_1 = nnx.Linear(mlp, dim, rngs=rngs)
        self.drop = nnx.Dropout(dropout_rate, rngs=rngs)

    def __call__(self, x):
        x = x + self.drop(self.attn(self.ln_0(x)))
        h = self.mlp_1(nnx.gelu(self.mlp_0(self.ln_1(x))))
        return x + self.drop(h)


class NnxViT(nnx.Module):
    """The NNX twin of :class:`ViT` (same fields, parameter names and layouts);
    ``image``: the input's ``(height, width, channels)`` (sizes the position embedding).
    ``.eval()`` / ``.train()`` switch dropout."""

    def __init__(
        self,
        patch: int = 4,
        dim: int = 32,
        depth: int = 2,
        heads: int = 4,
        mlp: int = 64,
        num_classes: int = 10,
        pool: str = "cls",
        dropout_rate: float = 0.0,
        image: tuple = (28, 28, 1),
        *,
        rngs: nnx.Rngs,
    ):
        _check_pool(pool)
        self.init_args = init_args(
            patch=patch,
            dim=dim,
            depth=depth,
            heads=heads,
            mlp=mlp,
            num_classes=num_classes,
            pool=pool,
            dropout_rate=dropout_rate,
            image=image,
        )
        self.pool, self.depth = pool, depth
        self.embed = nnx.Conv(
            image[-1], dim, (patch, patch), strides=(patch, patch), padding="VALID", rngs=rngs
        )
        n = (image[0] // patch) * (image[1] // patch) + (pool == "cls")
        self.cls = nnx.Param(jnp.zeros((1, 1, dim))) if pool == "cls" else None
        self.pos = nnx.Param(nnx.initializers.normal(0.02)(rngs.params(), (1, n, dim)))
        self.drop = nnx.Dropout(dropout_rate, rngs=rngs)
        for i in range(depth):
            setattr(self, f"block_{i}", NnxViTBlock(dim, heads, mlp, dropout_rate, rngs=rngs))
        self.norm = nnx.LayerNorm(dim, rngs=rngs)
        self.head = nnx.Linear(dim, num_classes, rngs=rngs)

    def __call__(self, x):
        cls = None if self.cls is None else self.cls[...]
        x = self.drop(
            _tokens(self.embed(jnp.asarray(x, jnp.float32)), cls, self.pos[...], self.pool)
        )
        for i in range(self.depth):
            x = getattr(self, f"block_{i}")(x)
        return self.head(_pooled(self.norm(x), self.pool))
