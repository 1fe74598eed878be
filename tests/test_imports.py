"""The package's imports flow one way: parse every module (module level and inside functions)
and fail on a cycle, on an import against the declared layer order, on a function-level
import of a jaxprune module, or on a private name taken from outside its own subpackage."""
import ast
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1] / "jaxprune"

# Bottom to top: a module may import only from its own layer's package or from lower layers.
LAYERS = [
    ("jaxprune._tree", "jaxprune._flax", "jaxprune._nnx", "jaxprune._spec", "jaxprune.cache",
     "jaxprune.distributed", "jaxprune._signals"),
    ("jaxprune.geometry",),
    ("jaxprune.coreset",),
    ("jaxprune.data", "jaxprune.corpus", "jaxprune.models", "jaxprune.gates", "jaxprune.metrics"),
    ("jaxprune.structure",),
    ("jaxprune.surgery", "jaxprune.rebuild"),
    ("jaxprune.selection", "jaxprune.calibration", "jaxprune.depth", "jaxprune.hidden"),
    ("jaxprune.optim",),
    ("jaxprune.reconstruct",),
    ("jaxprune.checkpoint", "jaxprune.runs"),
    ("jaxprune.train",),
    ("jaxprune.methods",),
    ("jaxprune.views",),
    ("jaxprune.bounds",),
    ("jaxprune.plan",),
    ("jaxprune.results",),
    ("jaxprune.pipeline",),
    ("jaxprune.workflows",),
    ("jaxprune.export",),
    ("jaxprune.cli", "jaxprune.__main__"),
]


def _module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _is_package(name: str) -> bool:
    return MODULES.get(name, pathlib.Path()).name == "__init__.py"


def _resolve(name: str, level: int, current: str) -> str:
    if level:
        base = current.split(".")
        if not _is_package(current):
            base = base[:-1]
        base = base[: len(base) - (level - 1)]
        name = ".".join(base + ([name] if name else []))
    return name


def _imports(name: str, source: str | None = None):
    """``(imported jaxprune module, imported names, inside a function?)`` per import."""
    tree = ast.parse(MODULES[name].read_text() if source is None else source)
    out = []

    def visit(node, in_function):
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                       ast.Lambda))
            if isinstance(child, ast.Import):
                for alias in child.names:
                    if alias.name.startswith("jaxprune"):
                        out.append((alias.name, (), in_function))
            elif isinstance(child, ast.ImportFrom):
                target = _resolve(child.module or "", child.level, name)
                if not target.startswith("jaxprune"):
                    continue
                names = tuple(a.name for a in child.names)
                subs = [f"{target}.{n}" for n in names if f"{target}.{n}" in MODULES]
                if subs:  # `from jaxprune import coreset`: imports the submodule
                    out.extend((s, (), in_function) for s in subs)
                    rest = tuple(n for n in names if f"{target}.{n}" not in MODULES)
                    if rest:
                        out.append((target, rest, in_function))
                else:
                    out.append((target, names, in_function))
            visit(child, nested)

    visit(tree, False)
    return out


def _layer(name: str) -> int | None:
    best = None
    for i, prefixes in enumerate(LAYERS):
        for p in prefixes:
            if name == p or name.startswith(p + "."):
                best = i
    return best


def _package_of(name: str) -> str:
    """The layer prefix a module belongs to (its subpackage, or the module itself)."""
    for prefixes in LAYERS:
        for p in prefixes:
            if name == p or name.startswith(p + "."):
                return p
    return name


def test_every_module_has_a_layer():
    missing = [m for m in MODULES if m != "jaxprune" and _layer(m) is None]
    assert not missing, f"modules without a declared layer: {missing}"


def test_imports_follow_the_layer_order():
    bad = []
    for name in MODULES:
        if name == "jaxprune":  # the package root re-exports the public API
            continue
        for target, _, _ in _imports(name):
            if target == "jaxprune":  # the root re-exports the pipeline's names
                target = "jaxprune.pipeline"
            lt, ln = _layer(target), _layer(name)
            if ln is None:  # reported by test_every_module_has_a_layer
                continue
            if lt is None or (lt > ln) or (lt == ln and _package_of(target) != _package_of(name)
                                           and len(LAYERS[ln]) == 1):
                bad.append(f"{name} (layer {ln}) imports {target} (layer {lt})")
    assert not bad, "\n".join(bad)


def test_no_function_level_imports_of_the_package():
    bad = [f"{name} imports {target} inside a function"
           for name in MODULES for target, _, inner in _imports(name) if inner]
    assert not bad, "\n".join(bad)


def test_no_private_names_across_subpackages():
    bad = []
    for name in MODULES:
        for target, names, _ in _imports(name):
            own = _package_of(name) == _package_of(target)
            private_module = any(part.startswith("_") and part != "__init__"
                                 for part in target.split(".")[1:])
            if not own and private_module and _package_of(target) != target:
                bad.append(f"{name} imports the private module {target}")
            if not own and any(n.startswith("_") for n in names):
                bad.append(f"{name} imports private {[n for n in names if n.startswith('_')]} "
                           f"from {target}")
    assert not bad, "\n".join(bad)


def test_no_import_cycles():
    graph = {name: {t for t, _, _ in _imports(name) if t in MODULES and t != "jaxprune"}
             for name in MODULES}
    state: dict[str, int] = {}
    cycles = []

    def walk(node, stack):
        state[node] = 1
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                walk(nxt, stack + [nxt])
        state[node] = 2

    for node in graph:
        if node not in state:
            walk(node, [node])
    assert not cycles, f"import cycles: {cycles}"


@pytest.mark.parametrize("code, inner", [
    ("from jaxprune.pipeline import prune\n", False),
    ("def f():\n    from jaxprune import train\n", True),
])
def test_the_checker_sees_imports(code, inner):
    """The parser finds module-level and function-level imports (the checks can fail)."""
    found = _imports("jaxprune.geometry", source=code)
    assert [(t, f) for t, _, f in found] == [(found[0][0], inner)]
    assert _layer(found[0][0]) > _layer("jaxprune.geometry")


OPTIONAL = ("tensorflow_datasets", "matplotlib", "PIL", "tensorflow")


@pytest.mark.parametrize("module", ["jaxprune", "jaxprune.cli"])
def test_importing_the_library_loads_no_optional_extra(module):
    """TFDS (``[data]``) and matplotlib (``[plots]``) load only where a function needs them."""
    code = (f"import sys, {module}\n"
            f"print(' '.join(sorted({{m.split('.')[0] for m in sys.modules}} & {set(OPTIONAL)!r})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=300)
    assert out.stdout.split() == []


def test_the_library_never_imports_the_experiments():
    """``experiments`` is an importable package beside the library, never a dependency of it
    (the wheel holds only ``jaxprune``)."""
    offenders = []
    for path in sorted(ROOT.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level
                     else [])
            offenders += [f"{path.relative_to(ROOT.parent)}: {n}" for n in names
                          if n.split(".")[0] in ("experiments", "common", "bounds_lab")]
    assert not offenders, offenders
