"""``flap``: FLuctuation-based Adaptive structured Pruning (An et al. 2024, AAAI).

A channel whose input to the next layer hardly fluctuates over the calibration data can be
replaced by its mean: the fluctuation metric (their Eq. (4), "WIFV") is the variance of the
channel's input times the squared norm of the consumer weights that read it::

    s_j = Σ_{consumers} Σ_{f owned by j} Var_n(X_nf) · ‖W[f, :]‖₂²

(``X_f``, ``W[f, :]``, ``f owned by j`` as in :mod:`jaxprune.methods.wanda_sp`: a Dense row,
the ``head_dim`` features of a head in an einsum out-projection, a conv input channel with
every window offset; ``Var`` is the population variance over every row the consumer reads).

**Bias compensation** (their Eq. (5)): after the removal, each consumer's bias absorbs the
removed channels' mean contribution, ``b' = b + Σ_{f removed} W[f, :] μ_f``
(:func:`jaxprune.calibration.bias_compensation`; ``μ_f`` from the dense network on ``data``),
so the pruned layer keeps its output mean on the calibration data. It runs after selection:
``jaxprune.calibration.compensate(result, model, data)``. A consumer without a bias is named
in the report as skipped (no bias is created).

What differs from the paper: FLAP standardises each layer's scores (``(s − mean)/std``) and
keeps the channels above one global threshold (its adaptive structure search). Here the
per-group scores go to jaxprune's own allocation (``allocation="bound"`` balances the groups'
score mass, ``"uniform"`` keeps one fraction everywhere, a ratio dict names the widths) and
each group keeps its top-k; the scores are not standardised.

Example::

    >>> import flax.linen as nn, jax, numpy as np, jaxprune
    >>> from jaxprune import calibration
    >>> model = nn.Sequential([nn.Dense(8), nn.relu, nn.Dense(2)])
    >>> x = np.random.default_rng(0).normal(size=(16, 4)).astype(np.float32)
    >>> v = model.init(jax.random.key(0), x)
    >>> res = jaxprune.prune(v, 0, 0.5, method="flap", model=model, data=x,
    ...                      unit="neurons", allocation="uniform")
    >>> res = calibration.compensate(res, model, x)
    >>> sorted(res.report["bias_compensation"]["compensated"])
    ['layers_2']
"""

from __future__ import annotations

import dataclasses

import jax

from jaxprune import calibration
from jaxprune.methods._base import LayerView, Method, each_view, register
from jaxprune.methods.wanda_sp import check_batch_size, group_scores


def consumer_scores(reader, size: int) -> jax.Array:
    """``Σ_{f owned by j} Var(X_f) ‖W[f, :]‖₂²`` (size,) of one consumer
    (:class:`~jaxprune.methods.LayerInput`)."""
    return calibration.consumer_channel_sum(
        calibration.statistics_of(reader), reader.kernel, reader.slot, size, "variance", 2
    )


def score(key: jax.Array, view: LayerView) -> jax.Array:
    """``s`` (C,) of one group (module docstring); ``key`` is unused."""
    del key
    return group_scores(view, consumer_scores, "flap")


@register
@dataclasses.dataclass(frozen=True)
class FLAP(Method):
    """FLAP's fluctuation metric (module docstring). ``bias_compensation``: after selection,
    :meth:`after_selection` moves the removed channels' mean contribution into the consumers'
    biases; ``batch_size``: calibration examples per forward pass (streamed statistics).

    >>> FLAP(bias_compensation=False).bias_compensation
    False
    """

    bias_compensation: bool = True
    batch_size: int = 32
    name = "flap"
    needs_data = True
    statistics = True
    description = (
        "FLAP (An et al. 2024): input variance × squared consumer weight norm, "
        "with bias compensation"
    )

    def __post_init__(self):
        if not isinstance(self.bias_compensation, bool):
            raise ValueError(
                f"flap: bias_compensation must be a bool, got {self.bias_compensation!r}"
            )
        check_batch_size(self.name, self.batch_size)

    def score(self, key, views) -> list:
        return each_view(score, key, views)

    def after_selection(self, result, model, data):
        """``result`` with the bias compensation applied
        (:func:`jaxprune.calibration.compensate`), or as it is when ``bias_compensation`` is
        off."""
        if not self.bias_compensation:
            return result
        return calibration.compensate(result, model, data, batch_size=self.batch_size)
