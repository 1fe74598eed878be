"""The method contract, shared by structured (channel) and unstructured (weight) methods.

A :class:`Method` turns *views* of the prunable units into importance scores:

* ``kind="channels"`` — one :class:`LayerView` per channel group; ``score`` returns one
  ``(C,)`` non-negative array per group. :func:`jaxprune.prune` allocates widths, keeps
  channels by the sampling rule (:func:`jaxprune.selection.select`) and shrinks the network.
* ``kind="weights"`` — one :class:`WeightView` per prunable kernel; ``score`` returns one
  kernel-shaped array per layer. The kept entries are the top-``keep_l`` scores of each layer
  unless the method supplies its own ``select`` (a global threshold, per-neuron budgets,
  sampling); the network keeps its shapes and pruned weights become exact zeros.

Both kinds share one registry and one options rule: a method is a frozen dataclass whose
fields are its options, checked when it is built (``jaxprune.methods.coreset(projection_dim=5)``);
``prune(..., method="coreset", projection_dim=5)`` builds the same object from the name with
:meth:`Method.configure` (an unknown option is a ``ValueError`` that lists the valid ones).
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, NamedTuple

import jax
import numpy as np

from jaxprune.geometry import cheap_jit

KINDS = ("channels", "weights")
SAMPLINGS = ("sparsity_first", "deterministic")


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

    keep: np.ndarray  # bool: kept entries
    scale: np.ndarray | None  # re-weights of the kept entries (None: 1)
    scores: np.ndarray  # per-weight scores (sensitivities)
    draws: int | None = None  # i.i.d. draws made (sampling methods), else None


REQUIRED = dataclasses.MISSING  # the default of an option that has none (Frank-Wolfe's train_ds)


@dataclasses.dataclass(frozen=True)
class Method:
    """A configured pruning method: a frozen dataclass whose fields are its options.

    Subclasses set the class attributes ``name``, ``kind`` (``"channels"``/``"weights"``),
    ``sampling`` (default selection rule: ``"deterministic"`` = top-k, no re-weighting;
    ``"sparsity_first"`` = draw ∝ score with replacement until the target count, re-weight
    ``count/(m q)``), ``samplings`` (the rules it defines; a weight method without ``select``
    keeps the top scores, ``"deterministic"`` only), ``needs_data`` (``prune`` requires
    ``data=``), ``uses_data`` (reads it when given), ``statistics`` (the views hold streamed
    input statistics, :class:`~jaxprune.calibration.ChannelStats`, instead of activations)
    and ``description``, check their fields in ``__post_init__`` (one ``ValueError`` each)
    and implement:

    * ``score(key, views) -> list``: one score array per view;
    * optionally ``select(key, scores, views, keep, sampling) -> list[Selection]`` (weight
      methods: replaces the per-layer top-k), ``prepare(model, variables) -> (variables to
      shrink, variables to score)`` (a training phase run before scoring) and
      ``info(views) -> {key: [value per view]}`` (extra entries of
      ``report["method_info"]``), ``after_selection(result, model, data) -> result`` (a step
      on the pruned channel result, e.g. FLAP's bias compensation).

    >>> import jax, jaxprune
    >>> m = jaxprune.methods.l1_norm()
    >>> (m.name, m.kind, m.sampling)
    ('l1_norm', 'channels', 'deterministic')
    """

    name: ClassVar[str] = ""
    kind: ClassVar[str] = "channels"
    sampling: ClassVar[str] = "deterministic"
    samplings: ClassVar[tuple[str, ...]] = SAMPLINGS
    needs_data: ClassVar[bool] = False
    uses_data: ClassVar[bool] = False
    description: ClassVar[str] = ""
    statistics: ClassVar[bool] = False
    select: ClassVar[Callable | None] = None
    prepare: ClassVar[Callable | None] = None
    info: ClassVar[Callable | None] = None
    after_selection: ClassVar[Callable | None] = None

    def score(self, key: jax.Array, views: list) -> list:
        """One score array per view (``(C,)`` per channel group, kernel-shaped per layer)."""
        raise NotImplementedError(f"method {self.name!r} does not define score")

    @classmethod
    def options(cls) -> dict[str, Any]:
        """``{option: default}`` of every option (``REQUIRED`` when it has no default)."""
        return {
            f.name: (f.default_factory() if f.default_factory is not REQUIRED else f.default)
            for f in dataclasses.fields(cls)
            if f.init
        }

    @classmethod
    def configure(cls, options: Mapping[str, Any]) -> Method:
        """``cls(**options)``, with an unknown or a missing required option reported in one
        line that lists the valid ones."""
        valid = cls.options()
        unknown = sorted(set(options) - set(valid))
        if unknown:
            listed = ", ".join(sorted(valid)) or "none"
            raise ValueError(
                f"unknown option(s) {unknown} for method {cls.name!r}; its options are: {listed}"
            )
        missing = sorted(k for k, v in valid.items() if v is REQUIRED and k not in options)
        if missing:
            raise ValueError(
                f"method {cls.name!r} needs the option(s) {missing} (e.g. "
                "train_ds=: the training set its prepare phase trains on)"
            )
        return cls(**options)


def check_positive_int(value, what: str) -> int:
    """``value`` as an int when it is an integer >= 1 (not a bool), else a one-line
    ``ValueError`` naming ``what``: ``check_positive_int(3, "k") == 3``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{what} must be a positive int, got {value!r}")
    return int(value)


KEY_BUCKET = 64


# Threefry is integer arithmetic: the cheap compile gives the same keys at a fraction of the
# compile (a first prune's largest program after the geometry's)
_split = cheap_jit(lambda key, count: jax.random.split(key, count), static_argnames=("count",))


def split_keys(key: jax.Array, n: int) -> list:
    """``list(jax.random.split(key, n))`` with one compiled program for every ``n ≤ 64``.

    With JAX's partitionable Threefry (the default) key ``i`` of a split is
    ``threefry(key, i)`` whatever the count, so the first ``n`` keys of a split into a
    power-of-two bucket (at least 64) are the very keys of ``split(key, n)``; the keys come
    back through the host, so no per-``n`` slicing program compiles either."""
    n = int(n)
    count = n
    if jax.config.jax_threefry_partitionable:  # pyright: ignore[reportAttributeAccessIssue]  (a config flag)
        count = max(KEY_BUCKET, 1 << max(n - 1, 0).bit_length())
    keys = _split(key, count)
    # raw uint32 keys (jax.dtypes.issubdtype is public API its stubs do not re-export)
    if not jax.dtypes.issubdtype(keys.dtype, jax.dtypes.prng_key):  # pyright: ignore[reportPrivateImportUsage]
        rows = np.asarray(keys)
        return [jax.device_put(rows[i]) for i in range(n)]
    impl = jax.random.key_impl(key)
    rows = np.asarray(jax.random.key_data(keys))
    return [jax.random.wrap_key_data(rows[i], impl=impl) for i in range(n)]


def each_view(fn: Callable, key: jax.Array, views: list) -> list:
    """``[fn(k, view) for each view]``, the key split into one key per view
    (:func:`split_keys`): the list form of a one-view scorer."""
    keys = split_keys(key, max(len(views), 1))
    return [fn(k, v) for k, v in zip(keys, views)]


_REGISTRY: dict[str, type[Method]] = {}


def register(method: type[Method]) -> type[Method]:
    """Add the method class ``method`` (a :class:`Method` dataclass subclass) to the
    registry under ``method.name`` (a later class of the same name replaces it); returns it,
    so it works as a class decorator."""
    if not (
        isinstance(method, type) and issubclass(method, Method) and dataclasses.is_dataclass(method)
    ):
        raise ValueError(f"register takes a Method dataclass subclass, got {method!r}")
    if not isinstance(method.name, str) or not method.name:
        raise ValueError(f"{method.__name__}: set the class attribute name (a non-empty str)")
    if method.kind not in KINDS:
        raise ValueError(
            f"method {method.name!r}: kind must be one of {KINDS}, got {method.kind!r}"
        )
    if method.sampling not in SAMPLINGS:
        raise ValueError(f"method {method.name!r}: sampling must be one of {SAMPLINGS}")
    if method.select is not None and method.kind != "weights":
        raise ValueError(f"method {method.name!r}: only weight methods supply select")
    _REGISTRY[method.name] = method
    return method


def get(name: str) -> type[Method]:
    """The registered method class called ``name`` (call it with options to configure it)."""
    if name not in _REGISTRY:
        raise ValueError(
            f"unknown pruning method {name!r}; available: {', '.join(sorted(_REGISTRY))}"
        )
    return _REGISTRY[name]


def names() -> tuple[str, ...]:
    """Names of every registered method."""
    return tuple(sorted(_REGISTRY))
