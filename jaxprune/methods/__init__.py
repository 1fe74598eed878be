"""Registry of pruning methods: name -> :class:`Method`.

A method scores the channels of one group from a :class:`LayerView` (the group's points and
the absolute weights that read them). :func:`jaxprune.prune` turns scores into kept channels
and re-weights with the method's sampling rule, so every method goes through the same
structure -> selection -> surgery path.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, NamedTuple

import jax
import numpy as np


class LayerView(NamedTuple):
    """What a method may look at for one channel group (C channels).

    ``points``: (C, D) — per channel, its producer kernel entries flattened with the producer
    bias appended (``p_j = [W_j | b_j]``, DESIGN §3). ``outgoing``: (C, K) — ``|w_kj|``, the
    absolute weight from channel ``j`` to each consumer output ``k`` (for conv consumers the
    ℓ1 norm of the ``kh×kw`` slice, for flatten→dense consumers the sum over the ``h·w`` rows
    channel ``j`` owns). ``is_bias``: (D,) bool numpy array marking the bias columns of
    ``points`` (none for bias-free producers; one per producer bias for residual groups).
    """
    points: jax.Array
    outgoing: jax.Array
    is_bias: np.ndarray | None = None


@dataclasses.dataclass(frozen=True)
class Method:
    """``score(key, view, **options) -> (C,)`` non-negative importance per channel.

    ``sampling``: the default selection rule: ``"sparsity_first"`` (draw with replacement
    ∝ score until the target number of distinct channels, re-weight by ``count/(m q)``),
    ``"deterministic"`` (top-k, no re-weighting) or ``"uniform"`` (k channels without
    replacement, no re-weighting).
    """
    name: str
    score: Callable
    sampling: str
    description: str = ""
    score_many: Callable | None = None  # optional batched form: (key, [views], **opts) -> [scores]
    # optional data phase run before scoring (e.g. Frank-Wolfe training):
    # (model, variables, **options) -> (variables to shrink, variables to score, options left)
    prepare: Callable | None = None
    # "channels": structured (scores channels of a group, then surgery shrinks the network);
    # "weights": unstructured (scores individual weights; prune returns a masked pytree of the
    # same shapes, see jaxprune.unstructured).
    kind: str = "channels"
    # data-informed methods need ``prune(..., data=)`` (a small batch of inputs S)
    needs_data: bool = False

    def scores(self, key: jax.Array, views: list, **options) -> list:
        """Scores of several groups (batched when the method provides ``score_many``)."""
        if self.score_many is not None:
            return self.score_many(key, views, **options)
        keys = jax.random.split(key, max(len(views), 1))
        return [self.score(k, v, **options) for k, v in zip(keys, views)]


_REGISTRY: dict[str, Method] = {}


def register(method: Method) -> Method:
    _REGISTRY[method.name] = method
    return method


def get(name: str) -> Method:
    _load_builtins()
    if name not in _REGISTRY:
        raise ValueError(f"unknown pruning method {name!r}; available: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def names() -> tuple[str, ...]:
    _load_builtins()
    return tuple(sorted(_REGISTRY))


def _load_builtins() -> None:
    from jaxprune.methods import coreset, norms, pvc, random  # noqa: F401  (registers on import)
    if "frank_wolfe" not in _REGISTRY:
        from jaxprune import frank_wolfe
        frank_wolfe.register_methods()
