"""``wanda_sp``: structured Wanda, a channel's weights times its input activation norms.

Wanda (Sun et al. 2023, "A Simple and Effective Pruning Approach for Large Language Models",
Eq. (1)) scores one weight by ``|W_ij| · ‖X_j‖₂``; its structured variant (Wanda-sp, as An et
al. 2024 define it for their FLAP comparison) sums that score over every weight that reads a
channel. For a group of ``C`` channels and each of its *consumer* layers (the kernels that read
the channels; the producer's columns are not part of the score)::

    s_j = Σ_{consumers} Σ_{f owned by j} ‖X_f‖₂ · Σ_k |W[f, k]|

* ``X_f``: what the consumer reads as input feature ``f`` on ``data``, over every row it
  reads (examples × tokens, or × conv positions); ``‖X_f‖₂ = sqrt(Σ_n X_nf²)``.
* ``W[f, k]``: the consumer kernel's entries reading feature ``f``: its row ``f`` for a Dense
  ``(D_in, K)``; for an einsum out-projection ``(heads, head_dim, d_model)`` reading pruned
  heads, a head ``j`` owns the features ``(j, 0..head_dim−1)``; for a conv ``(*window, C_in,
  K)`` every window offset of input channel ``f``.
* ``Σ_consumers``: a group read by several layers (a residual stream, q/k/v) sums them.

Statistics come from :func:`jaxprune.calibration.statistics_of`: streamed per batch
(:func:`jaxprune.calibration.input_statistics`) when the views hold statistics, else reduced
from the captured activations. Selection: top-k (``sampling="deterministic"``).

Example::

    >>> import flax.linen as nn, jax, numpy as np, jaxprune
    >>> model = nn.Sequential([nn.Dense(8), nn.relu, nn.Dense(2)])
    >>> x = np.random.default_rng(0).normal(size=(16, 4)).astype(np.float32)
    >>> v = model.init(jax.random.key(0), x)
    >>> res = jaxprune.prune(v, 0, 0.5, method="wanda_sp", model=model, data=x,
    ...                      unit="neurons", allocation="uniform")
    >>> res.widths
    {'layers_0': 4}
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from jaxprune import calibration
from jaxprune.methods._base import LayerView, Method, each_view, register


def consumer_scores(reader, size: int) -> jax.Array:
    """``Σ_{f owned by j} ‖X_f‖₂ Σ_k |W[f, k]|`` (size,) of one consumer
    (:class:`~jaxprune.methods.LayerInput`)."""
    return calibration.consumer_channel_sum(
        calibration.statistics_of(reader), reader.kernel, reader.slot, size, "norm", 1
    )


def group_scores(view: LayerView, scorer, name: str) -> jax.Array:
    """Sum of ``scorer(reader, C)`` over the group's consumers; one-line errors without
    data or without a consumer."""
    if view.consumer_inputs is None:
        raise ValueError(
            f"{name} is data-informed: call prune(..., method={name!r}, data=S, "
            "model=...) with a small batch S of inputs"
        )
    if not view.consumer_inputs:
        raise ValueError(f"{name}: the group has no consumer layer to score against")
    size = view.points.shape[0]
    return jnp.sum(jnp.stack([scorer(r, size) for r in view.consumer_inputs]), axis=0).astype(
        jnp.float32
    )


def score(key: jax.Array, view: LayerView) -> jax.Array:
    """``s`` (C,) of one group (module docstring); ``key`` is unused."""
    del key
    return group_scores(view, consumer_scores, "wanda_sp")


def check_batch_size(name: str, batch_size) -> None:
    """One-line ``ValueError`` unless ``batch_size`` is a positive int."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"{name}: batch_size must be a positive integer, got {batch_size!r}")


@register
@dataclasses.dataclass(frozen=True)
class WandaSP(Method):
    """Structured Wanda (module docstring). ``batch_size``: calibration examples per forward
    pass when the statistics are streamed (``statistics``: the views hold
    :class:`~jaxprune.calibration.ChannelStats`, not activations).

    >>> WandaSP(batch_size=8).batch_size
    8
    """

    batch_size: int = 32
    name = "wanda_sp"
    needs_data = True
    statistics = True
    description = (
        "structured Wanda (Sun et al. 2023; An et al. 2024): Σ |W|·‖X‖₂ over the "
        "consumer weights reading a channel"
    )

    def __post_init__(self):
        check_batch_size(self.name, self.batch_size)

    def score(self, key, views) -> list:
        return each_view(score, key, views)
