"""The model registry: one :func:`register_model` call per model gives the CLI its name,
factory, input shape, training recipe and optional NNX twin."""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np

__all__ = [
    "RegisteredModel",
    "register_model",
    "unregister_model",
    "registered",
    "entry_of",
    "model_names",
    "MODELS",
    "NNX_MODELS",
]


@dataclasses.dataclass(frozen=True)
class RegisteredModel:
    """One registry entry. ``linen`` is the Linen model whose recipe and input shape an NNX
    twin shares (the entry's own name for a Linen model); ``matches(module)`` says whether a
    module is recorded under this name by :func:`jaxprune.models.model_config`."""

    name: str
    factory: Callable[..., Any]
    input_shape: tuple[int, ...]
    recipe: Mapping[str, Any]
    linen: str
    is_nnx: bool
    matches: Callable[[Any], bool]
    input_dtype: str = "float32"


_REGISTRY: dict[str, RegisteredModel] = {}


class _Table(Mapping):
    """A read-only view of the registry: ``name -> value(entry)`` for the entries kept."""

    def __init__(
        self, keep: Callable[[RegisteredModel], bool], value: Callable[[RegisteredModel], Any]
    ):
        self._keep, self._value = keep, value

    def _entries(self) -> dict[str, RegisteredModel]:
        return {n: e for n, e in _REGISTRY.items() if self._keep(e)}

    def __getitem__(self, name: str):
        return self._value(self._entries()[name])

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries())

    def __len__(self) -> int:
        return len(self._entries())

    def __repr__(self) -> str:
        return repr(dict(self.items()))


#: Linen models: ``name -> factory``.
MODELS: Mapping[str, Callable[..., Any]] = _Table(lambda e: not e.is_nnx, lambda e: e.factory)
#: NNX twins: ``name -> (class, the Linen twin's name)``.
NNX_MODELS: Mapping[str, tuple[Callable[..., Any], str]] = _Table(
    lambda e: e.is_nnx, lambda e: (e.factory, e.linen)
)


def _shape(input_shape) -> tuple[int, ...]:
    try:
        shape = tuple(int(d) for d in input_shape)
    except TypeError:
        shape = ()
    if not shape or any(d <= 0 for d in shape):
        raise ValueError(
            f"input_shape must be a tuple of positive ints (one example, no "
            f"batch dim), got {input_shape!r}"
        )
    return shape


def _dtype(input_dtype) -> str:
    try:
        dtype = np.dtype(input_dtype)
    except TypeError:
        dtype = None
    if dtype is None or not (np.issubdtype(dtype, np.floating) or np.issubdtype(dtype, np.integer)):
        raise ValueError(f"input_dtype must name a float or integer dtype, got {input_dtype!r}")
    return dtype.name


def _free(name: str) -> str:
    if not isinstance(name, str) or not name:
        raise ValueError(f"a model name must be a non-empty string, got {name!r}")
    if name in _REGISTRY:
        raise ValueError(f"model {name!r} is already registered")
    return name


def _instances_of(factory) -> Callable[[Any], bool] | None:
    return (lambda module: isinstance(module, factory)) if isinstance(factory, type) else None


def register_model(
    name: str,
    factory: Callable[..., Any],
    input_shape,
    *,
    recipe: Mapping[str, Any] | None = None,
    nnx: type | None = None,
    matches: Callable[[Any], bool] | None = None,
    input_dtype="float32",
) -> RegisteredModel:
    """Register a Linen model for :func:`get_model`, checkpoints and ``jaxprune train``.

    ``factory(**fields)`` builds the module (a ``flax.linen.Module`` class or a function
    returning one); ``input_shape``: one example's NHWC shape (no batch dim); ``recipe``:
    the :class:`jaxprune.train.TrainConfig` fields ``jaxprune train --model NAME`` starts from
    (``{}``: the defaults); ``nnx``: an NNX class with the same parameter names, registered
    as ``NAME_nnx`` (built as ``nnx(image=input_shape, rngs=..., **fields)``) with the same
    recipe; ``matches(module)``: whether a module is recorded under this name when saved
    (default: the instances of ``factory`` when it is a class); ``input_dtype``: the dtype
    of its input (``"int32"`` for token ids; traced, initialised and fed as that dtype).
    Returns the Linen entry.

    >>> import flax.linen as nn
    >>> from jaxprune import models
    >>> class Tiny(nn.Module):
    ...     widths: tuple = (16,)
    ...     num_classes: int = 10
    ...     @nn.compact
    ...     def __call__(self, x, train=False):
    ...         x = nn.relu(nn.Dense(self.widths[0])(x.reshape(x.shape[0], -1)))
    ...         return nn.Dense(self.num_classes)(x)
    >>> _ = models.register_model("tiny", Tiny, (28, 28, 1), recipe={"epochs": 1})
    >>> models.get_model("tiny", widths=[8])
    Tiny(
        # attributes
        widths = (8,)
        num_classes = 10
    )
    >>> models.model_config(Tiny())["name"], models.default_input_shape("tiny")
    ('tiny', (28, 28, 1))
    >>> models.unregister_model("tiny")
    """
    if not callable(factory):
        raise ValueError(f"factory of model {name!r} must be callable, got {factory!r}")
    shape, dtype = _shape(input_shape), _dtype(input_dtype)
    if recipe is not None and not isinstance(recipe, Mapping):
        raise ValueError(
            f"recipe of model {name!r} must be a mapping of TrainConfig fields, "
            f"got {type(recipe).__name__}"
        )
    recipe = types.MappingProxyType(dict(recipe or {}))
    matches = matches or _instances_of(factory) or (lambda module: False)
    twin = None
    if nnx is not None:
        if not isinstance(nnx, type):
            raise ValueError(f"nnx= of model {name!r} must be an nnx.Module class, got {nnx!r}")
        twin = RegisteredModel(
            _free(f"{name}_nnx"),
            nnx,
            shape,
            recipe,
            name,
            True,
            lambda module, cls=nnx: type(module) is cls,
            dtype,
        )
    entry = RegisteredModel(_free(name), factory, shape, recipe, name, False, matches, dtype)
    _REGISTRY[name] = entry
    if twin is not None:
        _REGISTRY[twin.name] = twin
    return entry


def unregister_model(name: str) -> None:
    """Remove a Linen model registered by :func:`register_model` and its NNX twin."""
    entry = registered(name)
    if entry.is_nnx:
        raise ValueError(f"{name!r} is the NNX twin of {entry.linen!r}; unregister that")
    del _REGISTRY[name]
    twin = _REGISTRY.get(f"{name}_nnx")
    if twin is not None and twin.linen == name:
        del _REGISTRY[twin.name]


def model_names() -> tuple[str, ...]:
    """Every registered name: the Linen models, then the NNX twins."""
    return tuple(MODELS) + tuple(NNX_MODELS)


def registered(name: str) -> RegisteredModel:
    """The registry entry of ``name``; a ``ValueError`` listing the known names otherwise."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(model_names())}")
    return _REGISTRY[name]


def entry_of(module) -> RegisteredModel:
    """The entry a module is recorded under (the latest registration that matches it)."""
    for entry in reversed(_REGISTRY.values()):
        if entry.matches(module):
            return entry
    raise TypeError(f"{type(module).__name__} is not a registered jaxprune model")
