"""A Linen module as JSON and back, so a saved model can be rebuilt in a fresh process.

``module_spec(m)`` records the module's class (``"package.module:QualName"``) and every
constructor field that differs from its default; values are JSON scalars, tuples/lists,
nested modules, or importable objects (activation functions, dtypes, classes) recorded by
name. Anything that cannot be named (a lambda, a closure, a class defined in ``__main__``) is
a clear ``ValueError`` at save time, never a silently different model at load time.

``module_from_spec`` is the inverse, and it treats the record as untrusted data: every name
it holds is checked against the trusted packages (:data:`DEFAULT_TRUST` plus the caller's
``trust``) *before* anything is imported; a resolved class must be a Linen or NNX module and
a reference a function, class or dtype; the only code it calls is the module constructors,
with JSON values. Loading a file therefore runs no code the file chooses (the rule
``torch.load(weights_only=True)`` and ``trust_remote_code=False`` follow).
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import re
import types
from collections.abc import Iterable
from typing import Any

import flax.linen as nn
import numpy as np
from flax import nnx

__all__ = [
    "DEFAULT_TRUST",
    "module_spec",
    "module_from_spec",
    "check_record",
    "check_trusted",
    "is_trusted",
]

_SKIP = ("parent", "name")

#: Packages whose names a saved model may use without the caller's consent: jaxprune's own
#: models and Flax / JAX / NumPy layers, activations, initializers and dtypes.
DEFAULT_TRUST = ("jaxprune", "flax", "jax", "numpy", "ml_dtypes")

#: Parts of the default packages that run tools or jobs, never trusted by default.
_NOT_BY_DEFAULT = (
    "jaxprune.cli",
    "jaxprune.workflows",
    "numpy.distutils",
    "numpy.f2py",
    "numpy.testing",
    "jax.tools",
)

_DOTTED = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*\Z")
_KINDS = ("module", "tuple", "list", "dict", "ref")


# ----------------------------------------------------------------------------- trust


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def is_trusted(module: str, trust: Iterable[str] = ()) -> bool:
    """Whether the Python module ``module`` lies in a trusted package (``trust`` or the
    defaults, minus the default packages' tool modules)."""
    if any(_within(module, p) for p in trust):
        return True
    return any(_within(module, p) for p in DEFAULT_TRUST) and not any(
        _within(module, p) for p in _NOT_BY_DEFAULT
    )


def _split(name) -> tuple[str, list[str]]:
    """``"pkg.mod:Outer.Inner"`` -> ``("pkg.mod", ["Outer", "Inner"])``; malformed names and
    private/dunder attribute parts are refused."""
    if not isinstance(name, str) or name.count(":") != 1:
        raise ValueError(
            f"malformed name {name!r} in the saved model (expected 'package.module:Name')"
        )
    module, qualname = name.split(":")
    parts = qualname.split(".")
    if not (_DOTTED.match(module) and _DOTTED.match(qualname)) or any(
        p.startswith("__") for p in parts
    ):
        raise ValueError(
            f"malformed name {name!r} in the saved model (expected 'package.module:Name')"
        )
    return module, parts


def check_trusted(name: str, trust: Iterable[str] = ()) -> None:
    """``ValueError`` naming ``name`` and how to allow it unless its module is trusted."""
    module, _ = _split(name)
    if not is_trusted(module, trust):
        top = module.split(".")[0]
        raise ValueError(
            f"the saved model names {name!r}, which is not trusted (only "
            f"{', '.join(DEFAULT_TRUST)} names load by default): if you trust "
            f"the package {top!r}, pass trust=('{top}',) to load_model (CLI: "
            f"--trust {top}), or pass like=<the dense module>"
        )


def check_record(spec, trust: Iterable[str] = ()) -> None:
    """Check a module record before anything is imported: its shape, and that every class
    and reference name in it (nested ones included) is trusted. Imports nothing."""
    if not isinstance(spec, dict) or not isinstance(spec.get("class"), str):
        raise ValueError(f"malformed module record in the saved model: {str(spec)[:80]!r}")
    check_trusted(spec["class"], trust)
    fields = spec.get("fields", {})
    if (
        set(spec) - {"class", "fields", "name"}
        or not isinstance(fields, dict)
        or not isinstance(spec.get("name", ""), str)
    ):
        raise ValueError(f"malformed module record for {spec['class']!r} in the saved model")
    for key, value in fields.items():
        if not key.isidentifier() or key in _SKIP or key.startswith("__"):
            raise ValueError(
                f"the saved model gives {spec['class']!r} a field {key!r}, "
                "which no module constructor takes"
            )
        _check_value(value, trust)


def _check_value(v, trust) -> None:
    if v is None or isinstance(v, (bool, int, float, str)):
        return
    if not isinstance(v, dict) or len(v) != 1 or next(iter(v)) not in _KINDS:
        raise ValueError(f"malformed field value in the saved model: {str(v)[:80]!r}")
    ((kind, body),) = v.items()
    if kind == "module":
        check_record(body, trust)
    elif kind == "ref":
        check_trusted(body, trust)
    elif kind == "dict" and isinstance(body, dict):
        for item in body.values():
            _check_value(item, trust)
    elif kind in ("tuple", "list") and isinstance(body, list):
        for item in body:
            _check_value(item, trust)
    else:
        raise ValueError(f"malformed field value in the saved model: {str(v)[:80]!r}")


# ----------------------------------------------------------------------------- resolving


def _owner(obj) -> str | None:
    return obj.__name__ if isinstance(obj, types.ModuleType) else getattr(obj, "__module__", None)


def _resolve(name: str, trust: Iterable[str] = ()):
    """The object ``name`` names; every module passed through on the way and the object's
    own module must be trusted (so ``trusted.module:os.system`` is refused)."""
    check_trusted(name, trust)
    module, parts = _split(name)
    obj = importlib.import_module(module)
    for part in parts:
        obj = getattr(obj, part)
        owner = _owner(obj)
        if isinstance(owner, str) and not is_trusted(owner, trust):
            raise ValueError(
                f"the saved model names {name!r}, which reaches {part!r} of "
                f"the untrusted module {owner!r}"
            )
    return obj


def _is_function_class_or_dtype(obj) -> bool:
    if isinstance(obj, (type, np.dtype)) or inspect.isroutine(obj):
        return True
    # jax.custom_jvp / jit wrappers (jax.nn.relu, jnp.tanh) wrap a plain function
    return callable(obj) and inspect.isfunction(inspect.unwrap(obj))


def _resolve_ref(name: str, trust):
    obj = _resolve(name, trust)
    if not _is_function_class_or_dtype(obj):
        raise ValueError(
            f"the saved model's reference {name!r} is a {type(obj).__name__}, "
            "not a function, class or dtype"
        )
    return obj


def _resolve_class(name: str, trust):
    cls = _resolve(name, trust)
    if not (isinstance(cls, type) and issubclass(cls, (nn.Module, nnx.Module))):
        raise ValueError(f"the saved model's class {name!r} is not a Linen or NNX module")
    return cls


# ----------------------------------------------------------------------------- recording


def _reference(obj) -> str:
    """``"module:qualname"`` of an importable object, checked by importing it back."""
    module = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None)
    if module in (None, "__main__") or qualname is None or "<" in qualname:
        raise ValueError(
            f"{obj!r} cannot be recorded: it has no importable name (define it at "
            "module level in an importable file)"
        )
    name = f"{module}:{qualname}"
    try:
        found = _resolve(name, trust=(module,))
    except (ValueError, ImportError, AttributeError):
        found = None
    if found is not obj:
        raise ValueError(f"{obj!r} cannot be recorded: importing {name} gives another object")
    return name


def _value(v, where: str):
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if isinstance(v, (np.integer, np.floating, np.bool_)):
        return v.item()
    if isinstance(v, nn.Module):
        return {"module": module_spec(v)}
    if isinstance(v, (tuple, list)):
        return {
            "tuple" if isinstance(v, tuple) else "list": [
                _value(x, f"{where}[{i}]") for i, x in enumerate(v)
            ]
        }
    if isinstance(v, dict) and all(isinstance(k, str) for k in v):
        return {"dict": {k: _value(x, f"{where}.{k}") for k, x in v.items()}}
    try:
        return {"ref": _reference(v)}
    except (ValueError, ImportError, AttributeError) as err:
        raise ValueError(f"field {where}: {err}") from None


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


# ----------------------------------------------------------------------------- rebuilding


def _from_value(v, trust):
    if not isinstance(v, dict):
        return v
    ((kind, body),) = v.items()
    if kind == "module":
        return _build(body, trust)
    if kind in ("tuple", "list"):
        items = [_from_value(x, trust) for x in body]
        return tuple(items) if kind == "tuple" else items
    if kind == "dict":
        return {k: _from_value(x, trust) for k, x in body.items()}
    return _resolve_ref(body, trust)


def _build(spec: dict, trust) -> nn.Module | nnx.Module:
    try:
        cls = _resolve_class(spec["class"], trust)
    except (ImportError, AttributeError) as err:
        raise ValueError(
            f"cannot rebuild the saved model: class {spec['class']!r} is not "
            f"importable here ({err}); install or import the package that "
            "defines it"
        ) from None
    kwargs = {k: _from_value(v, trust) for k, v in spec.get("fields", {}).items()}
    if "name" in spec:
        kwargs["name"] = spec["name"]
    try:
        return cls(**kwargs)
    except TypeError as err:
        raise ValueError(
            f"cannot rebuild the saved {spec['class']!r} from its recorded fields: {err}"
        ) from None


def module_from_spec(spec: dict[str, Any], trust: Iterable[str] = ()) -> nn.Module | nnx.Module:
    """Inverse of :func:`module_spec`. Every name in ``spec`` is checked against the trusted
    packages (:data:`DEFAULT_TRUST` and ``trust``) before anything is imported; an untrusted
    or malformed one is a one-line ``ValueError``."""
    trust = tuple(trust)
    check_record(spec, trust)
    return _build(spec, trust)
