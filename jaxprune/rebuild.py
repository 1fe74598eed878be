"""The smaller Linen module for pruned variables, whoever wrote the module.

Pruning changes array shapes, and a Flax layer creates its arrays from its fields (a Dense's
kernel is ``(in, features)``; its input size comes from the input). So a smaller network needs
only the layers whose *output* shrank rebuilt with their new ``features``. :class:`Resized`
does that for any module without touching its code: it shares the wrapped module's scope (the
variables keep their paths) and, through :func:`flax.linen.intercept_methods`, sets the fields
of the layer at each recorded path before that layer runs. :func:`smaller_module` finds which
fields change by comparing the pruned kernels with the layers that own them.
"""
from __future__ import annotations

from typing import Any, Mapping

import flax.linen as nn
import numpy as np

from jaxprune._nnx import submodules, with_variables
from jaxprune._flax import (abstract_init, first_line, hashable, inference_kwargs, module_path,
                            scope_path, trace_kernel_calls)
from jaxprune._tree import Path, get_path, leaves_with_paths, shape_mismatches

__all__ = ["Resized", "smaller_module", "smaller_nnx"]


class Resized(nn.Module):
    """``module`` with the fields of some of its layers replaced.

    ``sizes``: ``((layer path, ((field, value), ...)), ...)``, paths relative to ``module``
    (the params paths, ``('block_0', 'conv_1')``). Parameters live where ``module`` puts them,
    so ``Resized(m, sizes).apply(variables, x)`` takes variables of ``m``'s layout.
    """
    module: nn.Module
    sizes: tuple = ()

    @property
    def wrapped_module(self) -> nn.Module:
        return self.module

    def setup(self):
        nn.share_scope(self, self.module)

    def __call__(self, *args, **kwargs):
        table = {tuple(path): fields for path, fields in self.sizes}
        root = len(scope_path(self.scope))

        def interceptor(next_fun, call_args, call_kwargs, context):
            layer = context.module
            fields = table.get(scope_path(layer.scope)[root:]) if layer.scope else None
            if fields:
                for name, value in fields:  # a bound layer is a fresh clone per apply
                    object.__setattr__(layer, name, value)
            return next_fun(*call_args, **call_kwargs)

        with nn.intercept_methods(interceptor):
            return self.module(*args, **kwargs)


def _new_fields(layer: nn.Module, dense_kernel, small_kernel) -> dict:
    """The fields of ``layer`` that make it create ``small_kernel`` instead of ``dense_kernel``:
    ``features`` (int: the kernel's last axis; tuple of n: its last n axes) or, for layers
    described by their kernel ``shape`` (``nn.Einsum``), the new shape."""
    dense, small = tuple(dense_kernel), tuple(small_kernel)
    features = getattr(layer, "features", None)
    if isinstance(features, int):
        if small[-1] == dense[-1]:
            return {}
        new = {"features": small[-1]}
        groups = getattr(layer, "feature_group_count", 1)
        if groups > 1:  # a depthwise conv keeps one group per (kept) input channel
            new["feature_group_count"] = groups * small[-1] // dense[-1]
        return new
    if isinstance(features, tuple):
        n = len(features)
        return {} if small[-n:] == dense[-n:] else {"features": small[-n:]}
    if dense == small:
        return {}
    if tuple(getattr(layer, "shape", ()) or ()) == dense:
        return {"shape": small}
    raise ValueError(f"cannot rebuild {type(layer).__name__}: its kernel shrank {dense} -> "
                     f"{small} but it has no `features` or `shape` field; pass "
                     "fields={path: {field: value}} to result.model()")


def _pinned_fields(parent: nn.Module, path: Path, dense_params) -> dict:
    """Sizes an attention module derives from its input when left ``None``
    (``qkv_features``, ``out_features``): pinned to their dense values, so that pruning the
    channels it reads does not change them (its heads are resized through its q/k/v layers)."""
    if not isinstance(getattr(parent, "num_heads", None), int):
        return {}
    own = get_path(dense_params, path) if path else dense_params
    pinned = {}
    if getattr(parent, "qkv_features", 0) is None and "query" in own:
        pinned["qkv_features"] = int(np.prod(np.shape(own["query"]["kernel"])[1:]))
    if getattr(parent, "out_features", 0) is None and "out" in own:
        pinned["out_features"] = int(np.shape(own["out"]["kernel"])[-1])
    return pinned


def _shapes(tree) -> dict[Path, tuple]:
    return {p: tuple(np.shape(x)) for p, x in leaves_with_paths(tree)}


def smaller_module(module: nn.Module, dense_variables, small_variables, input_shape, *,
                   apply_kwargs: Mapping | None = None,
                   fields: Mapping[str, Mapping[str, Any]] | None = None) -> Resized:
    """A :class:`Resized` ``module`` whose ``init`` creates exactly ``small_variables``' shapes.

    ``dense_variables``: the variables ``module`` was pruned from (arrays or
    ``ShapeDtypeStruct``); one abstract inference call finds every kernel-bearing layer.
    ``fields``: extra ``{'a/b/layer': {field: value}}`` (``''``: the top module) for layers
    whose size lives in a field that is not ``features`` (checked like the rest). Raises
    ``ValueError`` naming the arrays when the rebuilt module would create other shapes than
    the pruned ones.
    """
    base, sizes = module, {}
    if isinstance(module, Resized):  # pruned before: start from its sizes
        base = module.module
        sizes = {tuple(p): dict(f) for p, f in module.sizes}
    layers: dict[Path, nn.Module] = {}
    parents: dict[Path, nn.Module] = {}

    def record(layer, _x, _out):
        layers[module_path(layer)] = layer
        if isinstance(layer.parent, nn.Module):
            parents[module_path(layer.parent)] = layer.parent

    trace_kernel_calls(module, dense_variables, input_shape, record, apply_kwargs)
    for path, parent in parents.items():
        pinned = _pinned_fields(parent, path, dense_variables["params"])
        if pinned:
            sizes.setdefault(path, {}).update(pinned)
    for path, layer in layers.items():
        dense = np.shape(get_path(dense_variables["params"], path + ("kernel",)))
        small = np.shape(get_path(small_variables["params"], path + ("kernel",)))
        new = _new_fields(layer, dense, small)
        if new:
            sizes.setdefault(path, {}).update(new)
    for name, extra in (fields or {}).items():
        sizes.setdefault(tuple(p for p in name.split("/") if p), {}).update(extra)
    table = tuple(sorted((p, tuple(sorted(f.items()))) for p, f in sizes.items() if f))
    small = Resized(hashable(base), table)
    _check_shapes(small, small_variables, input_shape, apply_kwargs)
    return small


def _check_shapes(small: Resized, small_variables, input_shape, apply_kwargs) -> None:
    kwargs = inference_kwargs(small, apply_kwargs)
    hint = ("a layer takes its size from a field jaxprune cannot see: pass "
            "fields={'path/to/layer': {field: value}} ('' for the top module)")
    try:
        created = abstract_init(small, input_shape, **kwargs)
    except Exception as err:  # noqa: BLE001 - any failure of the user's code, reported whole
        raise ValueError(f"the rebuilt {type(small.module).__name__} fails to initialise "
                         f"({type(err).__name__}: {first_line(err)}); {hint}") from err
    bad = shape_mismatches(created, small_variables)
    if bad:
        listed = "; ".join(f"{'/'.join(p)}: builds {a}, pruned {b}" for p, a, b in bad[:6])
        raise ValueError(f"the rebuilt {type(small.module).__name__} does not create the pruned "
                         f"shapes ({listed}); {hint}")


def _nnx_fields(layer, small: Mapping[str, tuple], nested: Mapping | None = None) -> dict:
    """The size attributes of one NNX layer for its pruned arrays ``small`` (name -> shape):
    ``in_features``/``out_features`` from the kernel (a conv's input from its kernel and
    groups; a depthwise conv keeps one group per kept channel; a ``LinearGeneral``'s tuples
    from the kernel's ``(*batch, *in, *out)`` axes), ``num_features`` of norms from their
    scale or statistics, and the head counts of an attention (:func:`_attention_fields`)
    from its children's arrays ``nested`` (child name -> name -> shape)."""
    new = {}
    kernel = small.get("kernel")
    if kernel is not None:
        out = getattr(layer, "out_features", None)
        n_out = 1
        if isinstance(out, int):
            new["out_features"] = kernel[-1]
        elif isinstance(out, tuple):
            n_out = len(out)
            new["out_features"] = tuple(kernel[len(kernel) - n_out:])
        groups = getattr(layer, "feature_group_count", 1)
        din = getattr(layer, "in_features", None)
        if isinstance(din, int):
            if len(kernel) == 2:
                new["in_features"] = kernel[0]
            elif groups > 1 and groups == layer.in_features:  # depthwise
                multiplier = layer.out_features // layer.in_features
                new["in_features"] = new["feature_group_count"] = kernel[-1] // multiplier
            else:
                new["in_features"] = kernel[-2] * groups
        elif isinstance(din, tuple):
            end = len(kernel) - n_out
            new["in_features"] = tuple(kernel[end - len(din):end])
    for name in ("scale", "mean", "bias"):
        if name in small and kernel is None and isinstance(getattr(layer, "num_features", None),
                                                           int):
            new["num_features"] = small[name][-1]
            break
    if kernel is None:
        new.update(_attention_fields(layer, nested or {}))
    return new


def _attention_fields(layer, nested: Mapping) -> dict:
    """``num_heads``, ``num_kv_heads``, ``head_dim``, ``qkv_features``, ``in_features``,
    ``in_kv_features``, ``out_features`` (those the layer has as int attributes) of an
    attention whose ``query``/``key``/``out`` children hold ``(in, heads, head_dim)`` /
    ``(in, kv_heads, head_dim)`` / ``(heads, head_dim, out)`` kernels."""
    query = nested.get("query", {}).get("kernel")
    if query is None or len(query) != 3 or not isinstance(getattr(layer, "num_heads", None),
                                                          int):
        return {}
    key = nested.get("key", {}).get("kernel")
    out = nested.get("out", {}).get("kernel")
    values = {"num_heads": query[1], "head_dim": query[2], "qkv_features": query[1] * query[2],
              "in_features": query[0]}
    if key is not None and len(key) == 3:
        values.update(num_kv_heads=key[1], in_kv_features=key[0])
    if out is not None:
        values["out_features"] = out[-1]
    return {k: int(v) for k, v in values.items() if isinstance(getattr(layer, k, None), int)}


def smaller_nnx(module, small_variables):
    """A copy of the NNX ``module`` holding ``small_variables`` (a variables dict with the
    pruned shapes, arrays or ``ShapeDtypeStruct``), every layer's size attributes made
    consistent with its arrays (:func:`_nnx_fields`). The input module is not changed."""
    new = with_variables(module, small_variables)
    shapes = _shapes(small_variables)
    for path, layer in submodules(new):
        own = {p[-1]: s for p, s in shapes.items() if p[1:-1] == path}
        nested: dict = {}  # child name -> its arrays (an attention's query/key/value/out)
        for p, s in shapes.items():
            if len(p) == len(path) + 3 and p[1:-2] == path:
                nested.setdefault(p[-2], {})[p[-1]] = s
        for name, value in _nnx_fields(layer, own, nested).items():
            setattr(layer, name, value)
    return new
