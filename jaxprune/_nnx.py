"""Flax NNX plumbing: an ``nnx.Module`` seen as a Linen-style variables dict and module.

Pruning works on ``{'params': ..., 'batch_stats': ...}`` dicts of arrays with string keys (the
tracer, the views, surgery). :func:`variables_of` reads that dict off an NNX module (``Param``
→ ``params``, ``BatchStat`` → ``batch_stats``; list indices become ``'0'``, ``'1'``...) and
:func:`with_variables` puts (possibly smaller) arrays back into a copy of the module.

:func:`as_linen` is the module seen as a Flax Linen module over that dict, so that everything
that runs a Linen model (the structure tracer, the layer inputs of the data-informed methods,
``reconstruct``, training) runs the NNX module unchanged: ``as_linen(m).apply(variables, x,
train=False)`` calls a copy of ``m`` holding ``variables`` in ``eval()`` (``train=True``:
``train()``) mode, with each ``nnx.Linear``/``Conv``/``BatchNorm``/``Dropout`` computed by its
Linen counterpart at the layer's path (``nn.Dense``/``Conv``/``BatchNorm``/``Dropout`` of the
same configuration) and any other layer owning a ``kernel`` wrapped in a Linen module of the
layer's class name. So the Linen interceptors see every kernel layer at its params path,
BatchNorm statistics update through ``mutable=['batch_stats']`` and dropout draws from
``rngs={'dropout': key}``.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Iterator, MutableMapping, MutableSequence
from typing import Any

import flax.linen as nn
from flax import nnx

from jaxprune._flax import mode_kwargs
from jaxprune._tree import Path

_COLLECTIONS = ((nnx.BatchStat, "batch_stats"), (nnx.Param, "params"))


def is_module(obj) -> bool:
    """True for a Flax NNX module."""
    return isinstance(obj, nnx.Module)


def init_args(**kwargs) -> tuple:
    """Constructor arguments as a static attribute value (sorted ``(name, value)`` pairs,
    lists as tuples): what a registered NNX model keeps as ``init_args`` so that
    :func:`jaxprune.models.model_config` can record it (a pruned copy keeps the dense
    module's arguments; its arrays have the pruned shapes)."""
    return tuple(sorted((k, _tupled(v)) for k, v in kwargs.items()))


def _collection(variable) -> str | None:
    for cls, name in _COLLECTIONS:
        if isinstance(variable, cls):
            return name
    return None  # RNG state, caches: they stay in the module graph


def _entries(state) -> Iterator[tuple[Path, Any]]:
    """``(('params', 'layers', '0', 'kernel'), variable)`` for every Param / BatchStat."""
    for path, variable in nnx.to_flat_state(state):
        collection = _collection(variable)
        if collection is not None:
            yield (collection, *map(str, path)), variable


def _set(tree: dict, path: Path, value) -> None:
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value


def _get(tree, path: Path):
    for key in path:
        tree = tree[key]
    return tree


def variables_of(module: nnx.Module) -> dict:
    """``{'params': {...}, ['batch_stats': {...}]}`` of the module's current arrays."""
    out: dict = {}
    for path, variable in _entries(nnx.state(module)):
        _set(out, path, variable.get_value())
    if "params" not in out:
        raise ValueError(f"{type(module).__name__} has no nnx.Param: nothing to prune")
    return out


def _replaced(state, variables):
    """``state`` with every Param/BatchStat value taken from ``variables``."""
    flat = []
    for path, variable in nnx.to_flat_state(state):
        collection = _collection(variable)
        if collection is not None:
            variable = variable.replace(_get(variables, (collection, *map(str, path))))
        flat.append((path, variable))
    return nnx.from_flat_state(flat)


def with_variables(module: nnx.Module, variables) -> nnx.Module:
    """A copy of ``module`` holding ``variables``' arrays (any shapes; the module's size
    attributes are not touched — see :func:`jaxprune.rebuild.smaller_nnx`)."""
    graphdef, state = nnx.split(nnx.clone(module))
    return nnx.merge(graphdef, _replaced(state, variables))


def submodules(module: nnx.Module) -> Iterator[tuple[Path, nnx.Module]]:
    """``(path with string keys, submodule)`` for the module and every module inside it."""
    for path, sub in nnx.iter_modules(module):
        yield tuple(map(str, path)), sub


# --------------------------------------------------------------------------------------------
# The module as a Linen module
# --------------------------------------------------------------------------------------------
class _Graph:
    """The split module (graph definition and state) behind an identity hash, so that the
    Linen module holding it can be a static argument of ``jax.jit``."""

    def __init__(self, module: nnx.Module):
        self.graphdef, self.state = nnx.split(nnx.clone(module))


class NnxAsLinen(nn.Module):
    """An NNX module as a Linen module over :func:`variables_of`'s dict (module docstring).

    ``train`` picks ``train()``/``eval()`` and is passed on when the module's own ``__call__``
    takes a mode flag (``train``, ``deterministic``, ...); other keyword arguments are passed
    on as they are. Runs on existing variables only (``init`` creates nothing)."""

    graph: _Graph

    def __call__(self, *args, train: bool = False, **kwargs):
        module = nnx.merge(self.graph.graphdef, _replaced(self.graph.state, self.variables))
        if train:
            module.train()
        else:
            module.eval()
        _to_linen(module, self.scope)
        return module(*args, **{**mode_kwargs(module, train), **kwargs})


def as_linen(module: nnx.Module) -> NnxAsLinen:
    """``module`` (copied; later changes to it are not seen) as a Linen module."""
    return NnxAsLinen(_Graph(module))


def _is_default(layer, cls, names) -> bool:
    """True when ``layer`` is exactly a ``cls`` and its options ``names`` have the defaults
    of ``cls`` (those options have no Linen counterpart)."""
    defaults = inspect.signature(cls.__init__).parameters
    return type(layer) is cls and all(getattr(layer, n) is defaults[n].default for n in names)


def _tupled(value) -> Any:
    return tuple(map(_tupled, value)) if isinstance(value, (list, tuple)) else value


def _linen_layer(layer, scope) -> nn.Module | None:
    """The Linen module computing what ``layer`` computes, bound to ``scope``; ``None`` for a
    layer that owns no kernel and has no Linen counterpart here (it runs as it is)."""
    extra = ("promote_dtype", "preferred_element_type")
    if _is_default(layer, nnx.Linear, ("dot_general", *extra)):
        return nn.Dense(
            layer.out_features,
            use_bias=layer.use_bias,
            dtype=layer.dtype,
            param_dtype=layer.param_dtype,
            precision=layer.precision,
            parent=scope,
        )
    if _is_default(layer, nnx.Conv, ("conv_general_dilated", "mask", *extra)):
        return nn.Conv(
            layer.out_features,
            _tupled(layer.kernel_size),
            strides=_tupled(layer.strides),
            padding=_tupled(layer.padding),
            input_dilation=_tupled(layer.input_dilation),
            kernel_dilation=_tupled(layer.kernel_dilation),
            feature_group_count=layer.feature_group_count,
            use_bias=layer.use_bias,
            dtype=layer.dtype,
            param_dtype=layer.param_dtype,
            precision=layer.precision,
            parent=scope,
        )
    if _is_default(layer, nnx.BatchNorm, ("promote_dtype",)):
        return nn.BatchNorm(
            use_running_average=layer.use_running_average,
            axis=layer.axis,
            momentum=layer.momentum,
            epsilon=layer.epsilon,
            dtype=layer.dtype,
            param_dtype=layer.param_dtype,
            use_bias=layer.use_bias,
            use_scale=layer.use_scale,
            axis_name=layer.axis_name,
            axis_index_groups=layer.axis_index_groups,
            use_fast_variance=layer.use_fast_variance,
            force_float32_reductions=False,
            parent=scope,
        )
    if type(layer) is nnx.Dropout:
        return nn.Dropout(
            layer.rate,
            broadcast_dims=_tupled(layer.broadcast_dims),
            deterministic=layer.deterministic,
            rng_collection=layer.rng_collection,
            parent=scope,
        )
    if isinstance(vars(layer).get("kernel"), nnx.Param):
        return _native(type(layer))(_Ref(layer), parent=scope)
    return None


class _Ref:
    """A layer behind an identity hash (a field of a Linen module)."""

    def __init__(self, layer):
        self.layer = layer


class _Native(nn.Module):
    """Runs an NNX layer as it is; a Linen module only so that interceptors see its call."""

    ref: _Ref

    def __call__(self, *args, **kwargs):
        return self.ref.layer(*args, **kwargs)


@functools.cache
def _native(cls) -> type:
    """:class:`_Native` under the NNX layer's class name (what reports call the layer)."""
    return type(cls.__name__, (_Native,), {"__module__": __name__})


def _to_linen(module: nnx.Module, root) -> None:
    """Replace, in place, every layer of ``module`` that :func:`_linen_layer` converts by its
    Linen module at the layer's path under the Linen scope ``root`` (a layer held at several
    places is replaced at each, bound to its first path)."""
    scopes: dict[Path, Any] = {(): root}

    def scope_at(path):
        if path not in scopes:
            scopes[path] = scope_at(path[:-1]).push(path[-1], reuse=True)
        return scopes[path]

    nodes = list(submodules(module))
    linen = {}
    for path, layer in nodes:
        if path and id(layer) not in linen:
            new = _linen_layer(layer, scope_at(path))
            if new is not None:
                linen[id(layer)] = new
    for _, parent in nodes:
        for key, child in list(nnx.iter_children(parent)):
            if id(child) in linen:
                _put(parent, key, linen[id(child)])


def _put(parent, key, value) -> None:
    if isinstance(parent, MutableSequence):
        parent[int(key)] = value
    elif isinstance(parent, MutableMapping):
        parent[key] = value
    else:
        setattr(parent, key, value)
