"""Flax NNX plumbing: an ``nnx.Module`` seen as a Linen-style variables dict.

Pruning works on ``{'params': ..., 'batch_stats': ...}`` dicts of arrays with string keys (the
tracer, the views, surgery). :func:`variables_of` reads that dict off an NNX module (``Param``
→ ``params``, ``BatchStat`` → ``batch_stats``; list indices become ``'0'``, ``'1'``...),
:func:`inference_apply` is the pure ``apply(variables, x)`` the tracer needs (the module in
``eval()`` mode, split once, merged with the given arrays), and :func:`with_variables` puts
(possibly smaller) arrays back into a copy of the module.
"""
from __future__ import annotations

from typing import Any, Callable, Iterator

from flax import nnx

from jaxprune._tree import Path

_COLLECTIONS = ((nnx.BatchStat, "batch_stats"), (nnx.Param, "params"))


def is_module(obj) -> bool:
    """True for a Flax NNX module."""
    return isinstance(obj, nnx.Module)


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


def inference_apply(module: nnx.Module) -> Callable:
    """``apply(variables, x)``: a copy of ``module`` in ``eval()`` mode (Dropout off,
    BatchNorm on its running statistics) called on ``x`` with the given arrays."""
    frozen = nnx.clone(module)
    frozen.eval()
    graphdef, state = nnx.split(frozen)

    def apply(variables, x):
        return nnx.merge(graphdef, _replaced(state, variables))(x)

    return apply


def with_variables(module: nnx.Module, variables) -> nnx.Module:
    """A copy of ``module`` holding ``variables``' arrays (any shapes; the module's size
    attributes are not touched — see :func:`jaxprune.rebuild.smaller_nnx`)."""
    graphdef, state = nnx.split(nnx.clone(module))
    return nnx.merge(graphdef, _replaced(state, variables))


def submodules(module: nnx.Module) -> Iterator[tuple[Path, nnx.Module]]:
    """``(path with string keys, submodule)`` for the module and every module inside it."""
    for path, sub in nnx.iter_modules(module):
        yield tuple(map(str, path)), sub
