"""``pfp``: Provable Filter Pruning, data-informed channel sensitivities.

Liebenwein, Baykal, Lang, Feldman, Rus, "Provable Filter Pruning for Efficient Neural
Networks", ICLR 2020 (Algorithm 1 and the relative sensitivity of its §3). A channel ``j`` of a
group (an output channel of the producer layer = an input channel of the consumer layer(s))
matters as much as the largest share it ever takes of a consumer neuron's pre-activation on a
small batch ``S`` of inputs (``prune(..., data=S)``):

    c⁺_ij(x) = Σ_{r ∈ rows(j)} (w_ri a_r(x))⁺         (·)⁺ = max(·, 0)
    g⁺_ij(x) = c⁺_ij(x) / Σ_k c⁺_ik(x)                 (0/0 := 0)
    s_j = max_{x ∈ S} max_i max(g⁺_ij(x), g⁻_ij(x))     g⁻ likewise with (·)⁻ = max(−·, 0)

* ``a(x)`` is what the consumer reads, captured by :func:`jaxprune.activations.layer_inputs`
  (after the activation, BatchNorm, pooling, flatten); ``k`` runs over the group's channels,
  which are the consumer's whole input axis (the consumer's bias is not part of the sum).
* ``rows(j)``: the kernel rows channel ``j`` owns (``ArraySlot`` layout). Dense→Dense: the
  one row ``j``; conv→flatten→dense: the ``h·w`` rows of channel ``j``.
* Conv consumer: as in the paper, every output position's receptive-field patch is a separate
  input, so the max also runs over positions, and ``rows(j)`` are the ``kh×kw`` offsets of
  channel ``j`` in the patch: ``c⁺_ij(x, pos) = Σ_off (w[off, j, i] a_j(x, pos·stride + off))⁺``
  (zero padding contributes nothing). The consumer module's own strides/padding/dilation are
  used (a Flax ``nn.Conv`` cloned with ``feature_group_count = C_in``, so each input channel is
  convolved on its own).
* ``i`` runs over the outputs of every consumer of the group.
* For ``a ≥ 0`` (after ReLU, the paper's setting) ``(w a)⁺ = w⁺ a`` and this is the paper's
  ``g_ij = w⁺_ij a_j / Σ_k w⁺_ik a_k`` (and ``w⁻`` for the negative weights). Signed inputs
  use ``(w a)⁺ = w⁺a⁺ + w⁻a⁻``, so that ``g`` stays in ``[0, 1]`` with ``Σ_j g_ij = 1``.

Selection (``jaxprune.prune``): default ``sampling="deterministic"`` keeps the top-k of ``s``;
``sampling="sparsity_first"`` is the paper's randomized variant: draw i.i.d. ∝ ``s_j`` until the
target width, re-weight the kept channels' outgoing weights by ``count_j / (m q_j)``,
``q = s / Σ s``.

Memory: the contributions ``c_ij`` of a block of examples and a block of consumer outputs are
formed at once, never the whole ``(N, positions, C, K)`` tensor; blocks have at most
``block_elements`` entries (default 2²² floats = 16 MiB per term) and are visited with
``lax.map`` (VGG-16 at batch 8 fits in well under a GB).
"""

from __future__ import annotations

import dataclasses
import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxprune.methods._base import (
    LayerInput,
    LayerView,
    Method,
    check_positive_int,
    each_view,
    register,
)

HIGHEST = jax.lax.Precision.HIGHEST
BLOCK_ELEMENTS = 1 << 22


def apply_conv(
    module, inputs: jax.Array, kernel: jax.Array, feature_group_count: int = 1
) -> jax.Array:
    """``inputs ⊛ kernel`` with ``module``'s strides, padding and dilation (no bias), float32.

    ``module``: the consumer's (or producer's) ``flax.linen.Conv``; ``kernel``:
    ``(*window, C_in / feature_group_count, features)``.
    """
    if not isinstance(module, nn.Conv):
        raise ValueError(
            f"only flax.linen.Conv (and Dense) layers are supported here, got "
            f"{type(module).__name__}"
        )
    conv = module.clone(
        parent=None,
        features=int(kernel.shape[-1]),
        feature_group_count=int(feature_group_count),
        use_bias=False,
        mask=None,
        precision=HIGHEST,
        dtype=jnp.float32,
        param_dtype=jnp.float32,
    )
    # no mutable collections: apply returns the output alone
    return conv.apply({"params": {"kernel": kernel}}, inputs)  # pyright: ignore[reportReturnType]


def _check_reader(reader: LayerInput, who: str) -> None:
    k = reader.kernel
    if k.ndim == 2:
        if reader.inputs.shape[-1] != k.shape[0]:
            raise ValueError(
                f"{who}: input width {reader.inputs.shape[-1]} of "
                f"{'/'.join(reader.slot.path)} does not match its kernel {k.shape}"
            )
        return
    if reader.module is None or not isinstance(reader.module, nn.Conv):
        raise ValueError(
            f"{who}: {'/'.join(reader.slot.path)} has a {k.ndim}-D kernel but is not "
            f"a flax.linen.Conv ({type(reader.module).__name__}); unsupported"
        )


def _plus_minus(x):
    return jnp.maximum(x, 0.0), jnp.maximum(-x, 0.0)


def _share_max(num: jax.Array) -> jax.Array:
    """``max_{x, pos, i} num_j / Σ_k num_k`` of ``num`` (n, P, C, Kc) -> (C,), 0/0 := 0."""
    den = jnp.sum(num, axis=2, keepdims=True)
    g = jnp.where(den > 0, num / jnp.where(den > 0, den, 1.0), 0.0)
    return jnp.max(g, axis=(0, 1, 3))


def _per_channel(x, wk, module, layout, size):
    """``Σ_{r ∈ rows(j)} x_r w_ri`` (both non-negative) of a block -> (nb, P, size, kc);
    ``layout``: (outer, inner), channel ``j`` owns input rows ``(o·size + j)·inner + r``."""
    outer, inner = layout
    if module is None:  # Dense: x (nb, P, D_in), wk (D_in, kc)
        xs = x.reshape(*x.shape[:2], outer, size, inner)
        ws = wk.reshape(outer, size, inner, wk.shape[-1])
        return jnp.einsum("npocr,ocrk->npck", xs, ws, precision=HIGHEST)
    d_in = wk.shape[-2]  # Conv: every input channel convolved on its own, output j·kc + i
    grouped = wk.reshape(*wk.shape[:-2], 1, d_in * wk.shape[-1])
    out = apply_conv(module, x, grouped, feature_group_count=d_in)
    out = out.reshape(x.shape[0], -1, outer, size, inner, wk.shape[-1])
    return jnp.sum(out, axis=(2, 4))


@functools.partial(jax.jit, static_argnames=("module", "layout", "size", "signed"))
def _blocked_max(a_blocks, w_blocks, *, module, layout, size, signed):
    """``max`` over example blocks (``a_blocks``: (nN, nb, ...)) and output blocks
    (``w_blocks``: (nK, ..., D_in, kc)) of ``max(g⁺, g⁻)`` -> (size,), via ``lax.map``."""

    def block(x, wk):
        xp, xm = _plus_minus(x)
        wp, wm = _plus_minus(wk)
        pos = _per_channel(xp, wp, module, layout, size)
        neg = _per_channel(xp, wm, module, layout, size)
        if signed:
            pos = pos + _per_channel(xm, wm, module, layout, size)
            neg = neg + _per_channel(xm, wp, module, layout, size)
        return jnp.maximum(_share_max(pos), _share_max(neg))

    def over_outputs(x):
        return jnp.max(jax.lax.map(lambda wk: block(x, wk), w_blocks), axis=0)

    return jnp.max(jax.lax.map(over_outputs, a_blocks), axis=0)


def consumer_sensitivity(
    reader: LayerInput, size: int, *, block_elements: int = BLOCK_ELEMENTS
) -> jax.Array:
    """``max_{x, pos, i} max(g⁺_ij, g⁻_ij)`` (C,) for one consumer (module docstring)."""
    _check_reader(reader, "pfp")
    slot = reader.slot
    kernel = np.asarray(reader.kernel, np.float32)
    a = np.asarray(reader.inputs, np.float32)
    n_ex, k_out, d_in = a.shape[0], kernel.shape[-1], kernel.shape[-2]
    signed = bool(np.any(a < 0))  # static: skip the a⁻ terms after ReLU
    module = None if kernel.ndim == 2 else reader.module
    if module is None:
        a = a.reshape(n_ex, -1, d_in)
        positions = a.shape[1]
    else:
        if a.shape[-1] != d_in:
            raise ValueError(
                f"pfp: grouped convolutions are not supported "
                f"({'/'.join(slot.path)}: kernel {kernel.shape}, input {a.shape})"
            )
        probe = jax.eval_shape(
            lambda x: apply_conv(module, x, jnp.zeros((*kernel.shape[:-2], d_in, 1))),
            jax.ShapeDtypeStruct(a[:1].shape, jnp.float32),
        )
        positions = math.prod(probe.shape[1:-1])
    if slot.axis != kernel.ndim - 2 or slot.outer * size * slot.inner != d_in:
        raise ValueError(
            f"pfp: the group's channels of {'/'.join(slot.path)} are not its "
            f"whole input axis (slot {slot}, kernel {kernel.shape})"
        )

    # blocks of nb examples x kc outputs with nb·P·D_in·kc <= block_elements (padded with zeros,
    # which contribute 0/0 := 0)
    per_example = max(positions * d_in, 1)
    nb = int(min(n_ex, max(1, block_elements // max(per_example, math.prod(a.shape[1:])))))
    kc = int(min(k_out, max(1, block_elements // (nb * per_example))))
    n_pad, k_pad = -n_ex % nb, -k_out % kc
    if n_pad:
        a = np.concatenate([a, np.zeros((n_pad, *a.shape[1:]), a.dtype)])
    w = np.concatenate([kernel, np.zeros((*kernel.shape[:-1], k_pad), kernel.dtype)], axis=-1)
    a_blocks = a.reshape(-1, nb, *a.shape[1:])
    w_blocks = np.moveaxis(w.reshape(*kernel.shape[:-1], -1, kc), -2, 0)  # (nK, ..., D_in, kc)
    return _blocked_max(
        jnp.asarray(a_blocks),
        jnp.asarray(w_blocks),
        module=module,
        layout=(int(slot.outer), int(slot.inner)),
        size=int(size),
        signed=signed,
    )


def score(key: jax.Array, view: LayerView, block_elements: int = BLOCK_ELEMENTS) -> jax.Array:
    """``s`` (C,) of one group: the max over its consumers; ``key`` is unused."""
    del key
    if view.consumer_inputs is None:
        raise ValueError(
            "pfp is data-informed: call prune(..., method='pfp', data=S, model=...) "
            "with a small batch S of inputs (the view has no consumer inputs)"
        )
    if not view.consumer_inputs:
        raise ValueError("pfp: the group has no consumer layer to measure against")
    if int(block_elements) < 1:
        raise ValueError(f"pfp: block_elements must be >= 1, got {block_elements!r}")
    size = view.points.shape[0]
    per = [
        consumer_sensitivity(r, size, block_elements=int(block_elements))
        for r in view.consumer_inputs
    ]
    return jnp.max(jnp.stack(per), axis=0).astype(jnp.float32)


@register
@dataclasses.dataclass(frozen=True)
class PFP(Method):
    """Provable Filter Pruning sensitivities (module docstring); ``block_elements``: the most
    contributions ``c_ij`` formed at once (memory).

    >>> PFP(block_elements=1024).block_elements
    1024
    """

    block_elements: int = BLOCK_ELEMENTS
    name = "pfp"
    needs_data = True
    description = (
        "Liebenwein et al. 2020: max over S, patches and next-layer neurons of the "
        "channel's share of the pre-activation"
    )

    def __post_init__(self):
        check_positive_int(self.block_elements, "pfp: block_elements")

    def score(self, key, views) -> list:
        return each_view(functools.partial(score, block_elements=self.block_elements), key, views)
