"""``random``: uniform neuron/filter selection (the baseline every structured method must beat)."""
import jax

from jaxprune.methods._base import LayerView, Method, per_view, register


def score(key: jax.Array, view: LayerView) -> jax.Array:
    """i.i.d. uniform scores; keeping the top-k is a uniform k-subset without replacement."""
    return jax.random.uniform(key, (view.points.shape[0],))


register(Method("random", "channels", per_view(score), sampling="deterministic",
                description="uniform k-subset of channels, no re-weighting"))
