"""Evaluation: accuracy / mean cross-entropy over a whole dataset, and logits, on one device.

The final partial batch is padded and masked out, so every example counts and there is one
compiled program per (model, batch size). Labels are ``(N,)`` class ids or ``(N, L)``
per-position ids (a language model's next bytes); the means are over all labelled positions.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import jax
import jax.numpy as jnp
import numpy as np

from jaxprune._flax import hashable
from jaxprune._tree import as_variables, to_host
from jaxprune.train._step import apply_eval, cross_entropy, model_input

__all__ = ["evaluate", "predict_logits"]


def _eval_batch_impl(model, variables, images, labels, weights):
    logits = apply_eval(model, variables, images)
    ce = cross_entropy(logits, labels)
    correct = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
    w = weights.reshape(weights.shape + (1,) * (labels.ndim - 1))  # per position
    return jnp.sum(correct * w), jnp.sum(ce * w)


_eval_batch = jax.jit(_eval_batch_impl, static_argnums=(0,))
_predict_batch = jax.jit(apply_eval, static_argnums=(0,))


def _padded_chunks(n: int, batch_size: int) -> Iterable[tuple[int, int]]:
    for start in range(0, n, batch_size):
        yield start, min(start + batch_size, n)


def _pad(x: np.ndarray, size: int) -> np.ndarray:
    if x.shape[0] == size:
        return x
    pad = np.zeros((size - x.shape[0],) + x.shape[1:], x.dtype)
    return np.concatenate([x, pad], axis=0)


def _eval_device_vars(variables):
    """Host copies of ``variables`` (or bare params) on the first local device."""
    variables, _ = as_variables(variables)
    dev = jax.local_devices()[0]
    return jax.device_put(to_host(variables), dev)


def evaluate(model, variables, ds, batch_size: int = 1000) -> dict:
    """Accuracy and mean cross-entropy (nats) over ALL examples of ``ds``:
    ``{'accuracy', 'loss', 'n'}``, ``n`` the number of examples.

    With sequence labels ``(N, L)`` (a byte language model: position ``t`` predicts byte
    ``t + 1``) both are means over all ``N * L`` predicted positions, and the result also
    holds ``positions = N * L`` and ``bits_per_byte = loss / ln 2`` (image labels get neither
    key).

    >>> import flax.linen as nn, jax
    >>> from jaxprune.data import ArrayDataset
    >>> ds = ArrayDataset(np.zeros((4, 3), np.int32), np.ones((4, 3), np.int32), 5, "toy")
    >>> net = nn.Embed(5, 5)
    >>> ev = evaluate(net, net.init(jax.random.key(0), ds.images[:1]), ds)
    >>> bool(np.isclose(ev["bits_per_byte"], ev["loss"] / np.log(2))), ev["positions"]
    (True, 12)
    """
    n = len(ds.labels)
    if n == 0:
        return {"accuracy": float("nan"), "loss": float("nan"), "n": 0}
    bs = min(int(batch_size), n)
    variables = _eval_device_vars(variables)
    correct = 0.0
    loss = 0.0
    per_example = int(np.prod(np.shape(ds.labels[:1])[1:], dtype=np.int64))  # positions
    for a, b in _padded_chunks(n, bs):
        images = _pad(model_input(ds.images[a:b]), bs)
        labels = _pad(np.asarray(ds.labels[a:b], np.int32), bs)
        weights = _pad(np.ones((b - a,), np.float32), bs)
        c, l_ = _eval_batch(hashable(model), variables, images, labels, weights)
        correct += float(c)
        loss += float(l_)
    positions = n * per_example
    out = {"accuracy": correct / positions, "loss": loss / positions, "n": int(n)}
    if np.ndim(ds.labels[:1]) > 1:  # sequence labels
        out.update(positions=int(positions), bits_per_byte=out["loss"] / math.log(2))
    return out


def predict_logits(model, variables, images, batch_size: int = 1000) -> np.ndarray:
    """Logits (numpy, float32) of ``model`` in eval mode for every row of ``images`` (float
    images or integer token ids, :func:`jaxprune.train.model_input`)."""
    images = model_input(images)
    n = images.shape[0]
    if n == 0:
        return np.zeros((0,), np.float32)
    bs = min(int(batch_size), n)
    variables = _eval_device_vars(variables)
    out = []
    for a, b in _padded_chunks(n, bs):
        logits = _predict_batch(hashable(model), variables, _pad(images[a:b], bs))
        out.append(np.asarray(logits)[: b - a])
    return np.concatenate(out, axis=0)
