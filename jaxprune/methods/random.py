"""``random``: uniform neuron/filter selection (the baseline every structured method must beat).

Score of channel ``j``: ``u_j ~ U[0, 1)`` i.i.d.; keeping the top-k is a uniform k-subset
without replacement.

    >>> import jaxprune
    >>> jaxprune.methods.random().name
    'random'
"""

import dataclasses

import jax

from jaxprune.methods._base import LayerView, Method, each_view, register


def score(key: jax.Array, view: LayerView) -> jax.Array:
    """i.i.d. uniform scores; keeping the top-k is a uniform k-subset without replacement."""
    return jax.random.uniform(key, (view.points.shape[0],))


@register
@dataclasses.dataclass(frozen=True)
class Random(Method):
    """Uniform random channel scores (no options)."""

    name = "random"
    description = "uniform k-subset of channels, no re-weighting"

    def score(self, key, views) -> list:
        return each_view(score, key, views)
