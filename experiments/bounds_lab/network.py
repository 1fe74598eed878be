"""LeNet-300-100 parameter algebra of the lab: the eval-mode forward pass with every
intermediate, final layers as ``(101, 10)`` matrices (kernel rows + bias row), and masks.

Parameters are the Flax tree ``{"dense_0", "dense_1", "head"}`` of
:class:`jaxprune.models.LeNet300100` (``kernel`` (in, out), ``bias`` (out,)).
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxprune.selection import top_k_mask

__all__ = ["forward", "forward_np", "max_augmented_norm", "heads_logits", "head_aug",
           "with_head", "ones_like", "apply_mask", "magnitude_mask", "neuron_mask",
           "gated_apply", "raw_pixel_layer", "row_top_k"]


def _dense(p, x):
    return x @ p["kernel"] + p["bias"]


@jax.jit
def forward(params, x):
    """LeNet-300-100 in eval mode with every intermediate (pure jnp, equals ``model.apply``)."""
    x = x.reshape((x.shape[0], -1))
    z1 = _dense(params["dense_0"], x)
    h1 = jax.nn.relu(z1)
    z2 = _dense(params["dense_1"], h1)
    h2 = jax.nn.relu(z2)
    return {"z1": z1, "h1": h1, "z2": z2, "h2": h2, "logits": _dense(params["head"], h2)}


def forward_np(params, images, chunk=10000):
    """:func:`forward` over a big array in chunks, as numpy."""
    outs = [forward(params, jnp.asarray(images[i:i + chunk])) for i in
            range(0, len(images), chunk)]
    return {k: np.concatenate([np.asarray(o[k]) for o in outs]) for k in outs[0]}


@jax.jit
def _max_sq_h1(params, x):
    return jnp.max(jnp.sum(forward(params, x)["h1"] ** 2, axis=1))


def max_augmented_norm(params, images, chunk=10000):
    """β of Theorem A.4 for the 100→10 layer's two-layer view: ``max ‖(h1(x), 1)‖`` over
    ``images`` (the bias is embedded, so the constant input 1 counts)."""
    m = max(float(_max_sq_h1(params, jnp.asarray(images[i:i + chunk])))
            for i in range(0, len(images), chunk))
    return math.sqrt(m + 1.0)


@jax.jit
def heads_logits(h2, heads):
    """Logits of a stack of final layers: ``h2`` (N, 100), ``heads`` (F, 101, 10) = kernel rows
    with the bias as the last row → (F, N, 10)."""
    return jnp.einsum("nh,fhk->fnk", h2, heads[:, :-1]) + heads[:, -1][:, None, :]


def head_aug(params):
    """The final layer as one (101, 10) float64 matrix: kernel rows, then the bias row."""
    return np.concatenate([np.asarray(params["head"]["kernel"], np.float64),
                           np.asarray(params["head"]["bias"], np.float64)[None]], 0)


def with_head(params, head):
    """Host copy of ``params`` with the final layer replaced by ``head`` (101, 10)."""
    p = jax.tree.map(np.asarray, params)
    p = {k: dict(v) for k, v in p.items()}
    p["head"] = {"kernel": np.asarray(head[:-1], np.float32),
                 "bias": np.asarray(head[-1], np.float32)}
    return p


def ones_like(params):
    """An all-ones float32 mask shaped like ``params``."""
    return jax.tree.map(lambda x: np.ones(np.shape(x), np.float32), params)


def apply_mask(params, mask):
    return jax.tree.map(lambda p, m: np.asarray(p) * m, params, mask)


def magnitude_mask(kernel, sparsity):
    """Magnitude pruning (Han et al. 2015) of one matrix: a float32 0/1 mask keeping the
    ``round((1 − sparsity)·size)`` largest ``|w|`` (ties: the lower flat index)."""
    keep = int(round((1.0 - sparsity) * np.size(kernel)))
    return top_k_mask(np.abs(np.asarray(kernel)), keep).astype(np.float32)


def neuron_mask(params, keep):
    """Mask holding the dropped last-hidden neurons at zero (incoming, bias, outgoing)."""
    m = ones_like(params)
    keep = np.asarray(keep, np.float32)
    m["dense_1"]["kernel"] = m["dense_1"]["kernel"] * keep[None, :]
    m["dense_1"]["bias"] = keep.copy()
    m["head"]["kernel"] = m["head"]["kernel"] * keep[:, None]
    return m


def gated_apply(params, x, z):
    """LeNet-300-100 with the 100 last-hidden neurons multiplied by the gates ``z``."""
    x = x.reshape((x.shape[0], -1))
    h1 = jax.nn.relu(_dense(params["dense_0"], x))
    h2 = jax.nn.relu(_dense(params["dense_1"], h1)) * z
    return _dense(params["head"], h2)


def raw_pixel_layer(kernel, bias, mean, std):
    """The first layer in raw-pixel coordinates ``x_raw = σ x + μ ∈ [0, 1]`` (non-negative
    inputs, as SiPP requires): ``z = x W + b = x_raw (W/σ) + (b − (μ/σ) Σ_i W_i)``."""
    w = kernel / std
    return w, bias - (mean / std) * kernel.sum(0)


def row_top_k(scores, k):
    """Float64 0/1 mask of the ``k[..., r]`` largest entries of every row ``r`` of ``scores``
    (R, n) (ties: the lower index); ``k`` has shape (..., R) → mask (..., R, n)."""
    k = np.asarray(k)
    flat = k.reshape(-1, k.shape[-1])
    out = np.stack([np.stack([top_k_mask(s, int(kr)) for s, kr in zip(scores, row)])
                    for row in flat])
    return out.reshape(k.shape + (np.shape(scores)[-1],)).astype(np.float64)
