"""A Linen module as JSON and back, so a saved model can be rebuilt in a fresh process.

``module_spec(m)`` records the module's class (``"package.module:QualName"``) and every
constructor field that differs from its default; values are JSON scalars, tuples/lists,
nested modules, or importable objects (activation functions, dtypes, classes) recorded by
name. ``module_from_spec`` imports the class and calls it with the fields. Anything that
cannot be named (a lambda, a closure, a class defined in ``__main__``) is a clear
``ValueError`` at save time, never a silently different model at load time.
"""
from __future__ import annotations

import dataclasses
import importlib
from typing import Any

import flax.linen as nn
import numpy as np

_SKIP = ("parent", "name")


def _reference(obj) -> str:
    """``"module:qualname"`` of an importable object, checked by importing it back."""
    module = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None)
    if module in (None, "__main__") or qualname is None or "<" in qualname:
        raise ValueError(f"{obj!r} cannot be recorded: it has no importable name (define it at "
                         "module level in an importable file)")
    name = f"{module}:{qualname}"
    if _resolve(name) is not obj:
        raise ValueError(f"{obj!r} cannot be recorded: importing {name} gives another object")
    return name


def _resolve(name: str):
    module, _, qualname = name.partition(":")
    obj = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def _value(v, where: str):
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if isinstance(v, (np.integer, np.floating, np.bool_)):
        return v.item()
    if isinstance(v, nn.Module):
        return {"module": module_spec(v)}
    if isinstance(v, (tuple, list)):
        return {"tuple" if isinstance(v, tuple) else "list":
                [_value(x, f"{where}[{i}]") for i, x in enumerate(v)]}
    if isinstance(v, dict) and all(isinstance(k, str) for k in v):
        return {"dict": {k: _value(x, f"{where}.{k}") for k, x in v.items()}}
    try:
        return {"ref": _reference(v)}
    except (ValueError, ImportError, AttributeError) as err:
        raise ValueError(f"field {where}: {err}") from None


def _from_value(v):
    if not isinstance(v, dict):
        return v
    (kind, body), = v.items()
    if kind == "module":
        return module_from_spec(body)
    if kind in ("tuple", "list"):
        items = [_from_value(x) for x in body]
        return tuple(items) if kind == "tuple" else items
    if kind == "dict":
        return {k: _from_value(x) for k, x in body.items()}
    return _resolve(body)


def _is_default(field: dataclasses.Field, value) -> bool:
    if field.default is dataclasses.MISSING:
        return False
    try:
        return bool(value is field.default or value == field.default)
    except Exception:  # arrays and the like compare element-wise: record them
        return False


def module_spec(module: nn.Module) -> dict[str, Any]:
    """``{"class": "pkg.mod:Name", "fields": {...}}`` for an unbound Linen module."""
    cls = type(module)
    fields = {}
    for f in dataclasses.fields(module):
        if not f.init or f.name in _SKIP:
            continue
        value = getattr(module, f.name)
        if not _is_default(f, value):
            fields[f.name] = _value(value, f"{cls.__name__}.{f.name}")
    spec = {"class": _reference(cls), "fields": fields}
    if module.name is not None:
        spec["name"] = module.name
    return spec


def module_from_spec(spec: dict[str, Any]) -> nn.Module:
    """Inverse of :func:`module_spec`."""
    try:
        cls = _resolve(spec["class"])
    except (ImportError, AttributeError, KeyError) as err:
        raise ValueError(f"cannot rebuild the saved model: class {spec.get('class')!r} is not "
                         f"importable here ({err}); install or import the package that "
                         "defines it") from None
    kwargs = {k: _from_value(v) for k, v in spec.get("fields", {}).items()}
    if "name" in spec:
        kwargs["name"] = spec["name"]
    return cls(**kwargs)
