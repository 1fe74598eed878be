"""Registry of pruning methods: name -> :class:`Method`.

A method scores the channels of one group from a :class:`LayerView` (the group's points and
the absolute weights that read them). :func:`jaxprune.prune` turns scores into kept channels
and re-weights with the method's sampling rule, so every method goes through the same
structure -> selection -> surgery path.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple

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

    Filled only when :func:`jaxprune.prune` got ``data=`` and the method uses it
    (``Method.needs_data`` / ``Method.uses_data``); ``None`` otherwise:
    ``consumer_inputs``: one :class:`LayerInput` per consumer slot of the group (what each
    consumer reads on the batch ``S``; ``slot`` its input axis); ``producer_inputs``: one per
    producer slot (what each producer reads; ``slot`` its output axis).
    """
    points: jax.Array
    outgoing: jax.Array
    is_bias: np.ndarray | None = None
    consumer_inputs: tuple | None = None
    producer_inputs: tuple | None = None


class LayerInput(NamedTuple):
    """What one kernel module reads on the data batch ``S`` (data-informed methods).

    ``inputs``: (N, ..., D_in) host array, the module's input as captured by
    :func:`jaxprune.activations.layer_inputs` (after activations, pooling, flatten).
    ``kernel``: the module's whole kernel (``(D_in, K)`` for Dense, ``(*window, D_in, K)`` for
    Conv). ``slot``: the :class:`~jaxprune.structure.ArraySlot` of the group's channels in
    ``kernel`` (layout ``outer, size, inner`` along ``slot.axis``). ``module``: the unbound Flax
    module (a Conv's strides/padding/dilation), ``None`` if unknown.
    """
    inputs: np.ndarray
    kernel: np.ndarray
    slot: Any
    module: Any = None


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
    # uses ``prune(..., data=)`` when given, without needing it (pvc: β estimated from data)
    uses_data: bool = False
    # optional extra report: (views, **options) -> {key: [value per view]}; prune records it as
    # ``report["method_info"][key][group name]`` (pvc: the β used per group)
    info: Callable | None = None

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
    from jaxprune.methods import coreset, magnitude, norms, pfp, pvc, random, sipp  # noqa: F401  (registers on import)
    if "frank_wolfe" not in _REGISTRY:
        from jaxprune import frank_wolfe
        frank_wolfe.register_methods()
