"""Pytree plumbing shared by every module: key paths, path look-ups, params vs variables.

A Flax *variables* dict holds collections (``{'params': ..., 'batch_stats': ...}``); many
callers pass just the ``'params'`` collection. :func:`as_variables` is the one place that
tells the two apart, and :func:`restore_form` gives a result back in the caller's form.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils

Path = tuple[str, ...]


def path_of(key_path) -> Path:
    """JAX key path (``DictKey``, ``GetAttrKey``, ``SequenceKey``...) -> tuple of strings."""
    return tuple(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in key_path)


def get_path(tree, path: Path) -> Any:
    """``tree[path[0]][path[1]]...``."""
    for k in path:
        tree = tree[k]
    return tree


def leaves_with_paths(tree) -> list[tuple[Path, Any]]:
    """``[(path, leaf), ...]`` in pytree order."""
    return [(path_of(p), leaf) for p, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]]


def map_with_paths(fn: Callable[[Path, Any], Any], tree):
    """``fn(path, leaf)`` on every leaf, container types kept."""
    return jax.tree_util.tree_map_with_path(lambda p, leaf: fn(path_of(p), leaf), tree)


def is_variables(tree) -> bool:
    """True for a Flax variables dict (a mapping with a ``'params'`` collection)."""
    try:
        return isinstance(tree, Mapping) and "params" in tree
    except TypeError:
        return False


def as_variables(tree) -> tuple[dict, bool]:
    """``(variables dict, was_variables)``: bare params are wrapped as ``{'params': tree}``."""
    if is_variables(tree):
        return dict(tree), True
    if not isinstance(tree, Mapping) or not tree:
        raise ValueError(
            "params must be a non-empty (nested) dict of arrays, e.g. "
            "variables['params'] or the full variables dict"
        )
    return {"params": tree}, False


def params_of(tree):
    """The ``'params'`` collection of a variables dict, or ``tree`` itself."""
    return tree["params"] if is_variables(tree) else tree


def restore_form(variables: dict, was_variables: bool):
    """Inverse of :func:`as_variables`: the variables dict, or just its params."""
    return variables if was_variables else variables["params"]


def split_variables(variables) -> tuple[Any, dict]:
    """``(params, other collections)`` of a variables dict (or bare params)."""
    variables, _ = as_variables(variables)
    return variables["params"], {k: v for k, v in variables.items() if k != "params"}


def shape_mismatches(a, b) -> list[tuple[Path, Any, Any]]:
    """``[(path, shape in a, shape in b), ...]`` (sorted) where the two pytrees' leaves differ
    in shape or exist in one only (``None`` for the missing side)."""
    sa = {p: tuple(np.shape(x)) for p, x in leaves_with_paths(a)}
    sb = {p: tuple(np.shape(x)) for p, x in leaves_with_paths(b)}
    return [(p, sa.get(p), sb.get(p)) for p in sorted(set(sa) | set(sb)) if sa.get(p) != sb.get(p)]


def to_host(tree):
    """Every leaf as a NumPy array on this host.

    A global array that spans several processes is read from this process's copy when it is
    replicated (the parameters of a data-parallel run) and gathered otherwise.
    """

    def leaf(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            if x.sharding.is_fully_replicated:
                return np.asarray(x.addressable_data(0))
            return np.asarray(multihost_utils.process_allgather(x, tiled=True))
        return np.asarray(jax.device_get(x))

    return jax.tree.map(leaf, tree)
