"""A decoder-only byte language model, in Linen (:class:`LM`) and NNX (:class:`NnxLM`).

Token embedding, ``num_layers`` pre-norm blocks ``x = x + attn(rmsnorm(x))``,
``x = x + mlp(rmsnorm(x))``, a final RMSNorm and the output head (or the embedding
transposed, ``tie_embeddings=True``). Attention is causal grouped-query attention with RoPE:
``num_heads`` query heads share ``num_kv_heads`` key/value heads (``num_heads %
num_kv_heads == 0``), each of ``head_dim = dim // num_heads``; the MLP is SwiGLU,
``down(silu(gate(x)) * up(x))``. Input: integer token ids ``(B, L)`` with ``L <= max_len``;
output: logits ``(B, L, vocab_size)``, position ``t`` predicting token ``t + 1``.

Pruning: the tracer groups each block's heads by key/value head (a KV head, its
``num_heads // num_kv_heads`` query heads and their rows of ``out`` go together) and the
SwiGLU hidden units (``gate`` and ``up`` columns, ``down`` rows); the residual stream is
normalised by every RMSNorm and stays whole. The blocks read their head counts from the
kernels' shapes, so the rebuilt Linen model (``result.model(lm)``) and the NNX module
(``result.module``) run with whatever each block kept.

Both versions name their parameters alike (``embed/embedding``,
``block_{i}/{attn_norm, attn/{query, key, value, out}, mlp_norm, mlp/{gate, up, down}}``,
``norm``, ``head``), with the same layouts, so Linen weights copy onto the NNX twin.

>>> import jax, numpy as np
>>> lm = LM(dim=32, num_layers=2, num_heads=4, num_kv_heads=2, mlp_dim=64, max_len=16)
>>> tokens = np.zeros((2, 16), np.int32)
>>> variables = lm.init(jax.random.key(0), tokens)
>>> lm.apply(variables, tokens).shape
(2, 16, 256)
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxprune._nnx import init_args

__all__ = ["LM", "NnxLM", "LMBlock", "NnxLMBlock", "rope", "causal_attention"]

_EMBED_INIT = nn.initializers.normal(stddev=0.02)


def _check_sizes(
    vocab_size: int,
    dim: int,
    num_layers: int,
    num_heads: int,
    num_kv_heads: int,
    mlp_dim: int,
    max_len: int,
) -> None:
    sizes = dict(
        vocab_size=vocab_size,
        dim=dim,
        num_layers=num_layers,
        num_heads=num_heads,
        num_kv_heads=num_kv_heads,
        mlp_dim=mlp_dim,
        max_len=max_len,
    )
    bad = [
        f"{k}={v!r}"
        for k, v in sizes.items()
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1
    ]
    if bad:
        raise ValueError(f"LM sizes must be positive integers, got {', '.join(bad)}")
    if num_heads % num_kv_heads:
        raise ValueError(f"num_heads={num_heads} must be a multiple of num_kv_heads={num_kv_heads}")
    if dim % num_heads or (dim // num_heads) % 2:
        raise ValueError(
            f"dim={dim} must be num_heads={num_heads} times an even head_dim "
            "(RoPE rotates pairs of features)"
        )


def _check_tokens(tokens, max_len: int):
    """``tokens`` as an integer array ``(B, L)`` with ``L <= max_len``."""
    tokens = jnp.asarray(tokens)
    if tokens.ndim != 2 or not jnp.issubdtype(tokens.dtype, jnp.integer):
        raise ValueError(
            f"an LM takes integer token ids of shape (batch, length), got "
            f"{tokens.dtype}{list(tokens.shape)}"
        )
    if tokens.shape[1] > max_len:
        raise ValueError(f"sequence length {tokens.shape[1]} exceeds max_len={max_len}")
    return tokens


def rope(x, base: float = 10_000.0):
    """Rotary position embedding of ``x`` ``(B, L, heads, D)`` at positions ``0..L-1``:
    with ``x = [x1, x2]`` (halves of D) and ``θ_i = t / base^(2i/D)``,
    ``rope(x) = [x1 cos θ − x2 sin θ, x2 cos θ + x1 sin θ]``.

    >>> rope(jnp.ones((1, 3, 2, 4))).shape
    (1, 3, 2, 4)
    """
    d = x.shape[-1]
    freq = base ** (-jnp.arange(0, d // 2, dtype=jnp.float32) * 2.0 / d)
    angle = jnp.arange(x.shape[1], dtype=jnp.float32)[:, None] * freq  # (L, D/2)
    cos, sin = jnp.cos(angle)[None, :, None, :], jnp.sin(angle)[None, :, None, :]
    x1, x2 = jnp.split(x, 2, axis=-1)
    return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)


def causal_attention(q, k, v, base: float = 10_000.0):
    """Causal grouped-query attention of ``q`` ``(B, L, H, D)`` over ``k``, ``v``
    ``(B, L, KV, D)`` (``H % KV == 0``; query head ``h`` reads KV head ``h // (H / KV)``),
    RoPE on ``q`` and ``k``: ``softmax(q kᵀ / √D + causal mask) v``, shape ``(B, L, H, D)``.

    >>> causal_attention(jnp.ones((1, 5, 4, 8)), jnp.ones((1, 5, 2, 8)),
    ...                  jnp.ones((1, 5, 2, 8))).shape
    (1, 5, 4, 8)
    """
    b, t, h, d = q.shape
    kv = k.shape[2]
    if h % kv:
        raise ValueError(f"{h} query heads cannot share {kv} key/value heads evenly")
    q = rope(q, base).reshape(b, t, kv, h // kv, d)  # query heads grouped by their KV head
    scores = jnp.einsum("btkgd,bskd->bkgts", q, rope(k, base)) / np.sqrt(d)
    causal = jnp.tril(jnp.ones((t, t), bool))
    weights = jax.nn.softmax(jnp.where(causal, scores, jnp.finfo(scores.dtype).min), axis=-1)
    return jnp.einsum("bkgts,bskd->btkgd", weights, v).reshape(b, t, h, d)


# ----------------------------------------------------------------------------- Linen


class LMAttention(nn.Module):
    """``out(causal_attention(query(x), key(x), value(x)))`` with ``(dim, heads, head_dim)``
    kernels (no biases)."""

    num_heads: int
    num_kv_heads: int
    head_dim: int
    rope_base: float = 10_000.0

    @nn.compact
    def __call__(self, x):
        def heads(n, name):
            return nn.DenseGeneral((n, self.head_dim), use_bias=False, name=name)(x)

        o = causal_attention(
            heads(self.num_heads, "query"),
            heads(self.num_kv_heads, "key"),
            heads(self.num_kv_heads, "value"),
            self.rope_base,
        )
        return nn.DenseGeneral(x.shape[-1], axis=(-2, -1), use_bias=False, name="out")(o)


class LMMlp(nn.Module):
    """SwiGLU: ``down(silu(gate(x)) * up(x))``."""

    mlp_dim: int

    @nn.compact
    def __call__(self, x):
        h = nn.silu(nn.Dense(self.mlp_dim, use_bias=False, name="gate")(x))
        h = h * nn.Dense(self.mlp_dim, use_bias=False, name="up")(x)
        return nn.Dense(x.shape[-1], use_bias=False, name="down")(h)


class LMBlock(nn.Module):
    """Pre-norm block: ``x + attn(attn_norm(x))``, then ``x + mlp(mlp_norm(x))``."""

    num_heads: int
    num_kv_heads: int
    mlp_dim: int
    rope_base: float = 10_000.0

    @nn.compact
    def __call__(self, x):
        head_dim = x.shape[-1] // self.num_heads
        x = x + LMAttention(
            self.num_heads, self.num_kv_heads, head_dim, self.rope_base, name="attn"
        )(nn.RMSNorm(name="attn_norm")(x))
        return x + LMMlp(self.mlp_dim, name="mlp")(nn.RMSNorm(name="mlp_norm")(x))


class LM(nn.Module):
    """Decoder-only LM (see the module docstring). ``train`` is accepted for the training
    loop and changes nothing (no dropout)."""

    vocab_size: int = 256
    dim: int = 128
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 2
    mlp_dim: int = 384
    max_len: int = 128
    tie_embeddings: bool = False
    rope_base: float = 10_000.0

    @nn.compact
    def __call__(self, tokens, train: bool = False):
        _check_sizes(
            self.vocab_size,
            self.dim,
            self.num_layers,
            self.num_heads,
            self.num_kv_heads,
            self.mlp_dim,
            self.max_len,
        )
        embed = nn.Embed(self.vocab_size, self.dim, embedding_init=_EMBED_INIT, name="embed")
        x = embed(_check_tokens(tokens, self.max_len))
        for i in range(self.num_layers):
            x = LMBlock(
                self.num_heads, self.num_kv_heads, self.mlp_dim, self.rope_base, name=f"block_{i}"
            )(x)
        x = nn.RMSNorm(name="norm")(x)
        if self.tie_embeddings:
            return embed.attend(x)
        return nn.Dense(self.vocab_size, use_bias=False, name="head")(x)


# ----------------------------------------------------------------------------- NNX


class NnxLMAttention(nnx.Module):
    """The NNX twin of :class:`LMAttention` (``num_heads``/``num_kv_heads``/``head_dim``
    follow the kernels when pruned)."""

    def __init__(
        self, dim: int, num_heads: int, num_kv_heads: int, rope_base: float, *, rngs: nnx.Rngs
    ):
        self.num_heads, self.num_kv_heads = num_heads, num_kv_heads
        self.head_dim, self.rope_base = dim // num_heads, rope_base

        def heads(n):
            return nnx.LinearGeneral(dim, (n, self.head_dim), use_bias=False, rngs=rngs)

        self.query, self.key, self.value = (
            heads(num_heads),
            heads(num_kv_heads),
            heads(num_kv_heads),
        )
        self.out = nnx.LinearGeneral(
            (num_heads, self.head_dim), dim, axis=(-2, -1), use_bias=False, rngs=rngs
        )

    def __call__(self, x):
        return self.out(causal_attention(self.query(x), self.key(x), self.value(x), self.rope_base))


class NnxLMMlp(nnx.Module):
    """The NNX twin of :class:`LMMlp`."""

    def __init__(self, dim: int, mlp_dim: int, *, rngs: nnx.Rngs):
        self.gate = nnx.Linear(dim, mlp_dim, use_bias=False, rngs=rngs)
        self.up = nnx.Linear(dim, mlp_dim, use_bias=False, rngs=rngs)
        self.down = nnx.Linear(mlp_dim, dim, use_bias=False, rngs=rngs)

    def __call__(self, x):
        return self.down(nnx.silu(self.gate(x)) * self.up(x))


class NnxLMBlock(nnx.Module):
    """The NNX twin of :class:`LMBlock`."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        num_kv_heads: int,
        mlp_dim: int,
        rope_base: float,
        *,
        rngs: nnx.Rngs,
    ):
        self.attn_norm = nnx.RMSNorm(dim, rngs=rngs)
        self.attn = NnxLMAttention(dim, num_heads, num_kv_heads, rope_base, rngs=rngs)
        self.mlp_norm = nnx.RMSNorm(dim, rngs=rngs)
        self.mlp = NnxLMMlp(dim, mlp_dim, rngs=rngs)

    def __call__(self, x):
        x = x + self.attn(self.attn_norm(x))
        return x + self.mlp(self.mlp_norm(x))


class NnxLM(nnx.Module):
    """The NNX twin of :class:`LM` (same fields, parameter names and layouts).
    ``num_classes`` (the dataset's label count, as ``jaxprune train`` passes it) sets
    ``vocab_size`` when given; ``image`` (the input shape :func:`jaxprune.models.get_model`
    passes every NNX model) is not needed: any length up to ``max_len`` runs."""

    def __init__(
        self,
        vocab_size: int = 256,
        dim: int = 128,
        num_layers: int = 4,
        num_heads: int = 4,
        num_kv_heads: int = 2,
        mlp_dim: int = 384,
        max_len: int = 128,
        tie_embeddings: bool = False,
        rope_base: float = 10_000.0,
        num_classes: int | None = None,
        image: tuple | None = None,
        *,
        rngs: nnx.Rngs,
    ):
        vocab_size = vocab_size if num_classes is None else num_classes
        _check_sizes(vocab_size, dim, num_layers, num_heads, num_kv_heads, mlp_dim, max_len)
        self.init_args = init_args(
            vocab_size=vocab_size,
            dim=dim,
            num_layers=num_layers,
            num_heads=num_heads,
            num_kv_heads=num_kv_heads,
            mlp_dim=mlp_dim,
            max_len=max_len,
            tie_embeddings=tie_embeddings,
            rope_base=rope_base,
        )
        self.num_layers, self.max_len, self.tie_embeddings = num_layers, max_len, tie_embeddings
        self.embed = nnx.Embed(vocab_size, dim, embedding_init=_EMBED_INIT, rngs=rngs)
        for i in range(num_layers):
            setattr(
                self,
                f"block_{i}",
                NnxLMBlock(dim, num_heads, num_kv_heads, mlp_dim, rope_base, rngs=rngs),
            )
        self.norm = nnx.RMSNorm(dim, rngs=rngs)
        self.head = (
            None if tie_embeddings else nnx.Linear(dim, vocab_size, use_bias=False, rngs=rngs)
        )

    def __call__(self, tokens):
        x = self.embed(_check_tokens(tokens, self.max_len))
        for i in range(self.num_layers):
            x = getattr(self, f"block_{i}")(x)
        x = self.norm(x)
        return self.embed.attend(x) if self.head is None else self.head(x)
