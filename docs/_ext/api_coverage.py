"""Fail the build when a public name of jaxprune has no API page.

The public names are ``__all__`` of every public module (a module path with no part starting
with ``_``), or, for a module without ``__all__``, the functions and classes it defines whose
names do not start with ``_``. A name counts as documented when the API reference describes
it (an autosummary page, or an ``autofunction`` / ``autoclass`` / ``autodata`` entry) or
the same object under another public path (``jaxprune.prune`` documents
``jaxprune.pipeline.prune``); a public module in ``__all__`` is covered by its own names.
Each undocumented name is one Sphinx warning, so ``sphinx-build -W`` fails and
``--keep-going`` lists them all.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil

from sphinx.util import logging

logger = logging.getLogger(__name__)

PACKAGE = "jaxprune"


def public_modules(package: str = PACKAGE) -> list[str]:
    """Every importable module of ``package`` whose dotted path has no private part."""
    root = importlib.import_module(package)
    names = [package]
    for info in pkgutil.walk_packages(root.__path__, f"{package}."):
        if not any(part.startswith("_") for part in info.name.split(".")):
            names.append(info.name)
    return sorted(names)


def public_names(module_name: str) -> list[str]:
    """The names ``module_name`` makes public (see the module docstring)."""
    module = importlib.import_module(module_name)
    names = getattr(module, "__all__", None)
    if names is not None:
        return list(names)
    return sorted(
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and (inspect.isfunction(value) or inspect.isclass(value))
        and getattr(value, "__module__", None) == module_name
    )


def _resolve(dotted: str):
    """The object at ``dotted`` (``package.module.name``), or None."""
    module_name, _, attr = dotted.rpartition(".")
    while module_name:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            module_name, _, head = module_name.rpartition(".")
            attr = f"{head}.{attr}"
            continue
        obj = module
        for part in attr.split("."):
            obj = getattr(obj, part, None)
        return obj
    return None


def missing(documented: set[str]) -> list[str]:
    """The public names (``module.name``) with no page among ``documented`` dotted names."""
    have = {id(obj) for obj in map(_resolve, documented) if obj is not None}
    out = []
    modules = public_modules()
    for module_name in modules:
        module = importlib.import_module(module_name)
        for name in public_names(module_name):
            dotted = f"{module_name}.{name}"
            if dotted in documented:
                continue
            obj = getattr(module, name, None)
            if inspect.ismodule(obj) and obj.__name__ in modules:
                continue  # a public module: its names are checked
            if obj is None or id(obj) not in have:
                out.append(dotted)
    return out


def check(app, env) -> None:
    objects = env.get_domain("py").objects
    documented = {name for name, entry in objects.items() if entry.objtype != "module"}
    for dotted in missing(documented):
        logger.warning(
            "public name %s has no API page: add it to an autosummary list under docs/api/",
            dotted,
            type="api_coverage",
        )


def setup(app):
    app.connect("env-check-consistency", check)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
