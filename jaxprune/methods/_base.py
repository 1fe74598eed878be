"""The method contract, shared by structured (channel) and unstructured (weight) methods.

A :class:`Method` turns *views* of the prunable units into importance scores:

* ``kind="channels"`` — one :class:`LayerView` per channel group; ``score`` returns one
  ``(C,)`` non-negative array per group. :func:`jaxprune.prune` allocates widths, keeps
  channels by the sampling rule (:func:`jaxprune.selection.select`) and shrinks the network.
* ``kind="weights"`` — one :class:`WeightView` per prunable kernel; ``score`` returns one
  kernel-shaped array per layer. The kept entries are the top-``keep_l`` scores of each layer
  unless the method supplies its own ``select`` (a global threshold, per-neuron budgets,
  sampling); the network keeps its shapes and pruned weights become exact zeros.

Both kinds share one registry and one options rule: the options a method accepts are the
keyword-only parameters of its ``score``/``select``/``prepare``/``info`` callables, and
:meth:`Method.route` hands every option to the callables that declare it (an unknown option
is a ``ValueError`` that lists the valid ones).
"""
from __future__ import annotations

import dataclasses
import inspect
from typing import Any, Callable, NamedTuple

import jax
import numpy as np

KINDS = ("channels", "weights")
SAMPLINGS = ("sparsity_first", "deterministic")
_HOOKS = ("score", "select", "prepare", "info")


class LayerView(NamedTuple):
    """What a channel method may look at for one channel group (C channels).

    ``points``: (C, D) — per channel, its producer kernel entries flattened with the producer
    bias appended (``p_j = [W_j | b_j]``). ``outgoing``: (C, K) — ``|w_kj|``, the absolute
    weight from channel ``j`` to each consumer output ``k`` (for conv consumers the ℓ1 norm of
    the ``kh×kw`` slice, for flatten→dense consumers the sum over the ``h·w`` rows channel
    ``j`` owns). ``is_bias``: (D,) bool NumPy array marking the bias columns of ``points``.

    Filled only when :func:`jaxprune.prune` got ``data=`` and the method reads it
    (``needs_data``/``uses_data``), else ``None``: ``consumer_inputs``, one
    :class:`LayerInput` per consumer slot of the group (``slot`` is its input axis);
    ``producer_inputs``, one per producer slot (``slot`` is its output axis).
    """
    points: jax.Array
    outgoing: jax.Array
    is_bias: np.ndarray | None = None
    consumer_inputs: tuple | None = None
    producer_inputs: tuple | None = None


class LayerInput(NamedTuple):
    """What one kernel module reads on the data batch ``S``.

    ``inputs``: (N, ..., D_in) host array (after activations, pooling, flatten). ``kernel``:
    the module's whole kernel (``(D_in, K)`` Dense, ``(*window, D_in, K)`` Conv). ``slot``:
    the :class:`~jaxprune.structure.ArraySlot` of the group's channels in ``kernel``.
    ``module``: the unbound Flax module (a Conv's strides/padding/dilation) or ``None``.
    """
    inputs: np.ndarray
    kernel: np.ndarray
    slot: Any
    module: Any = None


class WeightView(NamedTuple):
    """What a weight method sees of one prunable kernel.

    ``kernel``: NumPy array (Dense ``(in, out)``, Conv ``(*window, in, out)``); the last axis
    indexes the layer's output units. ``layer``: ``"dense"``, ``"conv"`` or ``"other"`` (with
    ``why``); ``conv``: the :class:`~jaxprune.structure.ConvSpec` of a conv. ``inputs``: the
    layer's input on ``data`` for data-informed methods, else ``None``.
    """
    name: str
    kernel: np.ndarray
    layer: str
    conv: Any = None
    inputs: np.ndarray | None = None
    why: str = ""


class Selection(NamedTuple):
    """The kept entries of one kernel (arrays of the kernel's shape)."""
    keep: np.ndarray                  # bool: kept entries
    scale: np.ndarray | None          # re-weights of the kept entries (None: 1)
    scores: np.ndarray                # per-weight scores (sensitivities)
    draws: int | None = None          # i.i.d. draws made (sampling methods), else None


def keyword_options(fn: Callable | None) -> dict[str, Any]:
    """``{name: default}`` of the keyword-only parameters of ``fn``."""
    if fn is None:
        return {}
    params = inspect.signature(fn).parameters.values()
    return {p.name: p.default for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY}


@dataclasses.dataclass(frozen=True)
class Method:
    """A registered pruning method (see the module docstring for the two kinds).

    ``score(key, views, **options) -> list``: one score array per view.
    ``sampling``: the default selection rule, ``"deterministic"`` (top-k, no re-weighting) or
    ``"sparsity_first"`` (draw ∝ score with replacement until the target count, re-weight
    ``count/(m q)``). ``select(key, scores, views, keep, sampling, **options) ->
    list[Selection]``: weight methods only, replaces the per-layer top-k. ``prepare(model,
    variables, **options) -> (variables to shrink, variables to score)``: a data phase run
    before scoring (Frank-Wolfe training). ``needs_data``: ``prune`` requires ``data=``;
    ``uses_data``: reads it when given. ``info(views, **options) -> {key: [value per view]}``:
    extra report entries.
    """
    name: str
    kind: str
    score: Callable
    sampling: str
    description: str = ""
    select: Callable | None = None
    prepare: Callable | None = None
    needs_data: bool = False
    uses_data: bool = False
    info: Callable | None = None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"method {self.name!r}: kind must be one of {KINDS}, got {self.kind!r}")
        if self.sampling not in SAMPLINGS:
            raise ValueError(f"method {self.name!r}: sampling must be one of {SAMPLINGS}")
        if self.select is not None and self.kind != "weights":
            raise ValueError(f"method {self.name!r}: only weight methods supply select")

    def options(self) -> dict[str, Any]:
        """Every option the method accepts, with its default."""
        out: dict[str, Any] = {}
        for hook in _HOOKS:
            out.update(keyword_options(getattr(self, hook)))
        return out

    def route(self, options: dict) -> dict[str, dict]:
        """``{hook: the options it declares}``; unknown or missing required options raise
        ``ValueError``."""
        valid = self.options()
        unknown = sorted(set(options) - set(valid))
        if unknown:
            listed = ", ".join(sorted(valid)) or "none"
            raise ValueError(f"unknown option(s) {unknown} for method {self.name!r}; its "
                             f"options are: {listed}")
        missing = sorted(name for hook in _HOOKS
                         for name, default in keyword_options(getattr(self, hook)).items()
                         if default is inspect.Parameter.empty and name not in options)
        if missing:
            raise ValueError(f"method {self.name!r} needs the option(s) {missing} (e.g. "
                             "train_ds=: the training set its prepare phase trains on)")
        return {hook: {k: v for k, v in options.items()
                       if k in keyword_options(getattr(self, hook))} for hook in _HOOKS}


KEY_BUCKET = 64


def split_keys(key: jax.Array, n: int) -> list:
    """``list(jax.random.split(key, n))`` with one compiled program for every ``n ≤ 64``.

    With JAX's partitionable Threefry (the default) key ``i`` of a split is
    ``threefry(key, i)`` whatever the count, so the first ``n`` keys of a split into a
    power-of-two bucket (at least 64) are the very keys of ``split(key, n)``; the keys come
    back through the host, so no per-``n`` slicing program compiles either."""
    n = int(n)
    count = n
    if jax.config.jax_threefry_partitionable:
        count = max(KEY_BUCKET, 1 << max(n - 1, 0).bit_length())
    keys = jax.random.split(key, count)
    if not jax.dtypes.issubdtype(keys.dtype, jax.dtypes.prng_key):  # raw uint32 keys
        rows = np.asarray(keys)
        return [jax.device_put(rows[i]) for i in range(n)]
    impl = jax.random.key_impl(key)
    rows = np.asarray(jax.random.key_data(keys))
    return [jax.random.wrap_key_data(rows[i], impl=impl) for i in range(n)]


def per_view(fn: Callable) -> Callable:
    """List form of a one-view scorer ``fn(key, view, **options) -> (C,)``: the key is split
    into one key per view (:func:`split_keys`)."""
    def score(key, views, **options):
        keys = split_keys(key, max(len(views), 1))
        return [fn(k, v, **options) for k, v in zip(keys, views)]

    score.__signature__ = _list_signature(fn)
    score.__doc__ = fn.__doc__
    score.__name__ = getattr(fn, "__name__", "score")
    return score


def _list_signature(fn: Callable) -> inspect.Signature:
    sig = inspect.signature(fn)
    params = list(sig.parameters.values())
    views = inspect.Parameter("views", inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return sig.replace(parameters=[params[0], views, *params[2:]])


_REGISTRY: dict[str, Method] = {}


def register(method: Method) -> Method:
    """Add ``method`` to the registry (a later method of the same name replaces it)."""
    _REGISTRY[method.name] = method
    return method


def get(name: str) -> Method:
    """The registered method called ``name``."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown pruning method {name!r}; available: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def names() -> tuple[str, ...]:
    """Names of every registered method."""
    return tuple(sorted(_REGISTRY))
