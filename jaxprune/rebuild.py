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

import copy as copy_module
import dataclasses
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import numpy as np

from jaxprune._flax import (
    Held,
    abstract_init,
    first_line,
    hashable,
    inference_kwargs,
    module_path,
    scope_path,
    trace_kernel_calls,
)
from jaxprune._nnx import submodules, variables_of, with_variables
from jaxprune._tree import Path, get_path, leaves_with_paths, shape_mismatches

__all__ = ["Resized", "clone_widths", "smaller", "smaller_module", "smaller_nnx"]


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
    raise ValueError(
        f"cannot rebuild {type(layer).__name__}: its kernel shrank {dense} -> "
        f"{small} but it has no `features` or `shape` field; pass "
        "fields={path: {field: value}} to result.model()"
    )


def _pinned_fields(parent: nn.Module, path: Path, dense_params) -> dict:
    """Sizes an attention module derives from its input when left ``None``
    (``qkv_features``, ``out_features``): pinned to their dense values, so that pruning the
    channels it reads does not change them (its heads are resized through its q/k/v layers)."""
    if not isinstance(getattr(parent, "num_heads", None), int):
        return {}
    own = _own(dense_params, path)
    pinned = {}
    if getattr(parent, "qkv_features", 0) is None and "query" in own:
        pinned["qkv_features"] = int(np.prod(np.shape(own["query"]["kernel"])[1:]))
    if getattr(parent, "out_features", 0) is None and "out" in own:
        pinned["out_features"] = int(np.shape(own["out"]["kernel"])[-1])
    return pinned


def _shapes(tree) -> dict[Path, tuple]:
    return {p: tuple(np.shape(x)) for p, x in leaves_with_paths(tree)}


def smaller_module(
    module: nn.Module,
    dense_variables,
    small_variables,
    input_shape,
    *,
    apply_kwargs: Mapping | None = None,
    fields: Mapping[str, Mapping[str, Any]] | None = None,
    groups=(),
    widths: Mapping[str, int] | None = None,
) -> Resized:
    """A :class:`Resized` ``module`` whose ``init`` creates exactly ``small_variables``' shapes.

    ``dense_variables``: the variables ``module`` was pruned from (arrays or
    ``ShapeDtypeStruct``); one abstract inference call finds every module. Kernel layers get
    their ``features`` (or ``shape``, :func:`_new_fields`); the user's own modules that own
    no parameter themselves (attention, MLP and model modules that compose layers) and the
    config objects in their fields get the counts that changed (:func:`_count_fields`: e.g.
    ``num_heads`` from the pruned head ``groups`` and their ``widths``).
    ``fields``: extra ``{'a/b/layer': {field: value}}`` (``''``: the top module) for layers
    whose size lives where jaxprune cannot see it (checked like the rest). Raises
    ``ValueError`` naming the arrays when the rebuilt module would create other shapes than
    the pruned ones. ``input_shape``: a shape or an :class:`~jaxprune._flax.Example`.
    """
    base, sizes = module, {}
    if isinstance(module, Resized):  # pruned before: start from its sizes
        base = module.module
        sizes = {tuple(p): dict(f) for p, f in module.sizes}
    modules: dict[Path, nn.Module] = {}

    def record(layer, _x, _out):
        modules.setdefault(module_path(layer), layer)

    trace_kernel_calls(
        module, dense_variables, input_shape, record, apply_kwargs, every_module=True
    )
    dense, small = dense_variables["params"], small_variables["params"]
    changes = _Changes(dense, small, groups, widths or {})
    counts: dict[Path, dict] = {}
    for path, layer in modules.items():
        own = _own(dense, path)
        new = _pinned_fields(layer, path, dense)
        if "kernel" in own:
            new.update(
                _new_fields(
                    layer, np.shape(own["kernel"]), np.shape(get_path(small, path + ("kernel",)))
                )
            )
        elif not type(layer).__module__.startswith("flax."):
            new.update(_shape_field(layer, path, dense, small))
            if all(isinstance(v, Mapping) for v in own.values()):
                counts[path] = _count_fields(layer, changes.at(path), new)
        if new:
            sizes.setdefault(path, {}).update(new)
    extra = {tuple(p for p in name.split("/") if p): dict(f) for name, f in (fields or {}).items()}
    plain = Resized(_as_hashable(base), _merged(sizes, extra))
    guessed = Resized(plain.module, _merged(counts, sizes, extra))
    if guessed.sizes != plain.sizes:  # the counts are a guess: kept when the shapes agree
        try:
            _check_shapes(guessed, small_variables, input_shape, apply_kwargs)
            return guessed
        except ValueError:
            pass
    _check_shapes(plain, small_variables, input_shape, apply_kwargs)
    return plain


def smaller(
    module: nn.Module,
    dense_variables,
    small_variables,
    input_shape,
    *,
    groups,
    widths: Mapping[str, int],
    apply_kwargs: Mapping | None = None,
    fields: Mapping[str, Mapping[str, Any]] | None = None,
) -> nn.Module:
    """The smaller Linen module of a channel prune: a module with a ``widths`` field and
    ``prunable_layers()`` (jaxprune's models) as :func:`clone_widths`, any other as
    :func:`smaller_module`."""
    if hasattr(module, "widths") and hasattr(module, "prunable_layers"):
        return clone_widths(module, groups, widths)
    return smaller_module(
        module,
        dense_variables,
        small_variables,
        input_shape,
        apply_kwargs=apply_kwargs,
        fields=fields,
        groups=groups,
        widths=widths,
    )


def clone_widths(module: nn.Module, groups, widths: Mapping[str, int]) -> nn.Module:
    """``module.clone(widths=new)``, ``new[i]`` the pruned width of the group whose producer
    is ``module.prunable_layers()[i]`` (the old width when it was not pruned); the fields of
    ``module.tied_width_layers()`` (``{field: layers}``, an int or a tuple per field) follow
    their layers' widths the same way."""
    by_module = {}
    for g in groups:
        if g.name in widths:
            for m in g.producer_modules:
                by_module[m] = widths[g.name]
    layers = tuple(module.prunable_layers())
    small = module.clone(
        widths=tuple(by_module.get(layer, w) for layer, w in zip(layers, module.widths))
    )
    tied = getattr(module, "tied_width_layers", None)
    if tied is None:
        return small
    updates = {}
    for field, field_layers in tied().items():
        current = getattr(module, field)
        if isinstance(current, int):
            updates[field] = by_module.get(field_layers[0], current)
        else:
            updates[field] = tuple(
                by_module.get(layer, w) for layer, w in zip(field_layers, current)
            )
    return small.clone(**updates)


def _merged(*tables) -> tuple:
    """``Resized.sizes`` of the field tables ``{path: {field: value}}``, later ones winning."""
    out: dict[Path, dict] = {}
    for table in tables:
        for path, f in table.items():
            out.setdefault(path, {}).update(f)
    return tuple(
        sorted(((p, tuple(sorted(f.items()))) for p, f in out.items() if f), key=lambda pf: pf[0])
    )


def _own(params, path: Path) -> Mapping:
    """The parameters of the module at ``path`` (``{}`` for a module that has none)."""
    for key in path:
        params = params.get(key, {}) if isinstance(params, Mapping) else {}
    return params if isinstance(params, Mapping) else {}


def _as_hashable(module: nn.Module) -> nn.Module:
    """``module`` with list fields as tuples when that makes it hashable, else as it is."""
    held = hashable(module)
    return module if isinstance(held, Held) else held


class _Changes:
    """The sizes pruning changed under each module path: every parameter axis (dense size ->
    pruned size) and every channel group with an array there (its size -> its width)."""

    def __init__(self, dense, small, groups, widths):
        self.axes = [
            (p, a, b) for (p, a), (_, b) in zip(leaves_with_paths(dense), leaves_with_paths(small))
        ]
        self.groups = [
            (
                {s.path[1:-1] for s in (*g.producers, *g.members, *g.consumers)},
                g.size,
                widths.get(g.name, g.size),
            )
            for g in groups
        ]

    def at(self, path: Path) -> dict[int, int]:
        """``{old: new}`` for the sizes changed under ``path`` whose new value is unique
        there (an old size that maps to several values, or also stays, is left out)."""
        seen: dict[int, set] = {}
        n = len(path)
        for p, a, b in self.axes:
            if p[:n] == path:
                for old, new in zip(np.shape(a), np.shape(b)):
                    seen.setdefault(int(old), set()).add(int(new))
        for modules, old, new in self.groups:
            if any(m[:n] == path for m in modules):
                seen.setdefault(int(old), set()).add(int(new))
        return {old: new.pop() for old, new in seen.items() if len(new) == 1 and old not in new}


def _shape_field(layer: nn.Module, path: Path, dense, small) -> dict:
    """``{'shape': pruned shape}`` for a layer that creates its one parameter from a
    ``shape`` field (a custom einsum layer), when that parameter shrank."""
    own = _own(dense, path)
    shape = getattr(layer, "shape", None)
    if not isinstance(shape, (tuple, list)):
        return {}
    for name, arr in own.items():
        if not isinstance(arr, Mapping) and tuple(np.shape(arr)) == tuple(shape):
            new = tuple(np.shape(get_path(small, path + (name,))))
            return {} if new == tuple(shape) else {"shape": new}
    return {}


def _count_fields(layer: nn.Module, changes: Mapping[int, int], taken) -> dict:
    """Integer fields of ``layer`` (and integer attributes/items of a config object or dict
    it holds) whose value is a size pruning changed under the layer (``changes``): their
    new value (``num_heads`` 8 -> 5 when the layer's head group keeps 5). Config objects
    are copied, never changed in place."""
    new = {}
    ints = {}
    for f in dataclasses.fields(layer):
        if not f.init or f.name in ("parent", "name") or f.name in taken:
            continue
        value = getattr(layer, f.name)
        updated = _counted(value, changes)
        if updated is not value:
            new[f.name] = updated
        elif isinstance(value, int) and not isinstance(value, bool) and value > 1:
            ints[f.name] = value
    new.update(_product_counts(ints, changes))
    return new


def _product_counts(ints: Mapping[str, int], changes: Mapping[int, int]) -> dict:
    """Counts seen only as a product with another, unchanged field: ``num_heads`` when the
    pruned size is ``num_heads · head_dim`` (heads behind a reshape, GQA's ``jnp.repeat``):
    ``a = changes[a · b] / b`` for the fields ``b`` that divide it, kept when every such ``b``
    agrees (a wrong guess is caught by the shape check of the rebuilt module)."""
    out = {}
    for a, va in ints.items():
        guesses = {
            changes[va * vb] // vb
            for b, vb in ints.items()
            if b != a and va * vb in changes and changes[va * vb] % vb == 0
        }
        if len(guesses) == 1:
            out[a] = guesses.pop()
    return out


def _counted(value, changes: Mapping[int, int]):
    """``value`` with the counts in ``changes`` replaced (an int, or a copy of a dict / a
    plain config object with such int entries); ``value`` itself when nothing changes."""
    if isinstance(value, int) and not isinstance(value, bool):
        return changes.get(value, value)
    if isinstance(value, Mapping):
        items = {
            k: _counted(v, changes)
            for k, v in value.items()
            if isinstance(v, int) and not isinstance(v, bool)
        }
        items = {k: v for k, v in items.items() if v != value[k]}
        return {**value, **items} if items else value
    attrs = getattr(value, "__dict__", None)
    if attrs is None or isinstance(value, (nn.Module, type)) or callable(value):
        return value
    items = {
        k: changes[v]
        for k, v in attrs.items()
        if isinstance(v, int) and not isinstance(v, bool) and v in changes
    }
    if not items:
        return value
    copy = copy_module.copy(value)
    for k, v in items.items():
        setattr(copy, k, v)
    return copy


def _check_shapes(small: Resized, small_variables, input_shape, apply_kwargs) -> None:
    kwargs = inference_kwargs(small, apply_kwargs)
    hint = (
        "a layer takes its size from a field jaxprune cannot see: pass "
        "fields={'path/to/layer': {field: value}} ('' for the top module)"
    )
    try:
        created = abstract_init(small, input_shape, **kwargs)
    except Exception as err:  # noqa: BLE001 - any failure of the user's code, reported whole
        raise ValueError(
            f"the rebuilt {type(small.module).__name__} fails to initialise "
            f"({type(err).__name__}: {first_line(err)}); {hint}"
        ) from err
    bad = shape_mismatches(created, small_variables)
    if bad:
        listed = "; ".join(f"{'/'.join(p)}: builds {a}, pruned {b}" for p, a, b in bad[:6])
        raise ValueError(
            f"the rebuilt {type(small.module).__name__} does not create the pruned "
            f"shapes ({listed}); {hint}"
        )


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
            new["out_features"] = tuple(kernel[len(kernel) - n_out :])
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
            new["in_features"] = tuple(kernel[end - len(din) : end])
    for name in ("scale", "mean", "bias"):
        if (
            name in small
            and kernel is None
            and isinstance(getattr(layer, "num_features", None), int)
        ):
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
    if query is None or len(query) != 3 or not isinstance(getattr(layer, "num_heads", None), int):
        return {}
    key = nested.get("key", {}).get("kernel")
    out = nested.get("out", {}).get("kernel")
    values = {
        "num_heads": query[1],
        "head_dim": query[2],
        "qkv_features": query[1] * query[2],
        "in_features": query[0],
    }
    if key is not None and len(key) == 3:
        values.update(num_kv_heads=key[1], in_kv_features=key[0])
    if out is not None:
        values["out_features"] = out[-1]
    return {k: int(v) for k, v in values.items() if isinstance(getattr(layer, k, None), int)}


def smaller_nnx(module, small_variables, groups=(), widths: Mapping[str, int] | None = None):
    """A copy of the NNX ``module`` holding ``small_variables`` (a variables dict with the
    pruned shapes, arrays or ``ShapeDtypeStruct``), every layer's size attributes made
    consistent with its arrays (:func:`_nnx_fields`); a module that owns no parameter itself
    (an attention or block written by the user) gets the integer attributes that counted
    what pruning changed (:func:`_counted`: ``num_heads`` from the pruned head ``groups``
    and their ``widths``). The input module is not changed."""
    dense = _shapes(variables_of(module))
    new = with_variables(module, small_variables)
    shapes = _shapes(small_variables)
    changes = _Changes(_tree_of(dense)["params"], _tree_of(shapes)["params"], groups, widths or {})
    for path, layer in submodules(new):
        own = {p[-1]: s for p, s in shapes.items() if p[1:-1] == path}
        nested: dict = {}  # child name -> its arrays (an attention's query/key/value/out)
        for p, s in shapes.items():
            if len(p) == len(path) + 3 and p[1:-2] == path:
                nested.setdefault(p[-2], {})[p[-1]] = s
        for name, value in _nnx_fields(layer, own, nested).items():
            setattr(layer, name, value)
        if not own and not type(layer).__module__.startswith("flax."):
            at = changes.at(path)
            for name, value in list(vars(layer).items()):
                updated = _counted(value, at) if isinstance(value, int) else value
                if updated is not value:
                    setattr(layer, name, updated)
    return new


def _tree_of(shapes: Mapping[Path, tuple]) -> dict:
    """``{path: shape}`` as a nested dict of ``ShapeDtypeStruct`` leaves."""
    tree: dict = {}
    for path, shape in shapes.items():
        node = tree
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = jax.ShapeDtypeStruct(shape, np.float32)
    return tree
