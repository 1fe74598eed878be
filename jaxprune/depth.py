"""Depth pruning: remove the ``k`` least important residual blocks (or branches) whole.

A residual branch is an ``x + f(x)`` in the model's jaxpr
(:func:`jaxprune.structure.residual_branches`); zeroing the few parameters that produce
``f``'s output (its *zero set*: the last kernel and bias, or the scale and bias of a
BatchNorm right before the add) turns it into the identity, ``x + 0 = x``. The default
``unit="block"`` removes whole blocks: all branches whose parameters live under one
submodule at the first level where the branches' module paths differ (a decoder block's
attention and MLP branches together; a ResNet basic block); ``unit="branch"`` scores and
removes single branches. A branch followed by an element-wise op (ResNet's
``relu(x + f(x))``) becomes ``relu(x)``, which is ``x`` when the block's input is already
non-negative (it is the previous block's ReLU output); every form below is checked against the
masked network on one batch, so a case where this fails is reported as ``"masked"``.

Scores (smaller = removed first):

* ``"block_influence"`` (ShortGPT's BI): ``BI = 1 - E[cos(x, y)]``, ``x`` the unit's input (the
  skip operand of its first branch), ``y`` its output (the sum of its last branch), cosine
  along the feature axis (the last one, as Flax lays out Dense and Conv outputs), averaged over
  every other position of every example of ``data``. It runs one jitted forward per batch of
  ``batch_size`` examples that returns only the per-unit sums of ``1 - cos``, so memory is
  that of one forward.
* ``"norm"`` (data-free): ``sqrt(sum_b ||W_b||_F^2 / d_b)``, ``W_b`` the zero set of each
  branch ``b`` of the unit and ``d_b`` its output's feature count (the last axis). For a last
  layer ``f = h W + b`` with inputs ``h`` of unit variance and uncorrelated features (what the
  norm in front of a pre-norm branch, or the BatchNorm at the end of a ResNet branch, aims
  at), ``E||f||^2 = ||W||_F^2 + ||b||^2``; for a BatchNorm at the end, ``E||f||^2 =
  ||scale||^2 + ||bias||^2``. Divided by ``d`` it is the mean square per feature of what the
  branch adds to a residual stream that is itself of order 1 per feature, so blocks of stages
  with different widths compare, and no data is needed.

The smaller network comes in one of three ``form``\\s, the first that reproduces the masked
network on a check batch:

* ``"rebuilt"``: the module with fewer blocks: integer fields equal to the number of repeated
  sibling blocks (``num_layers``, ``depth``) are reduced, per-stage count tuples
  (``num_blocks=(3, 3, 3)``) lose the removed blocks from their stages and per-block tuples
  (``widths``) lose the removed blocks' entries; the kept blocks' variables are renumbered in
  call order. ``result.model(module)`` gives that module.
* ``"skipped"``: a :class:`Skipped` wrapper whose removed block submodules return their input
  without running; their variables are gone from ``params``.
* ``"masked"``: ``params`` is the masked network; the removed branches' parameters are still
  there (counted in ``report["params_after"]`` and in ``report["params_dead"]``).

An NNX module is rebuilt as a copy without the removed blocks (list entries deleted,
``block_{i}``-like attributes reassigned in call order, an integer attribute equal to the
block count lowered), else masked.

>>> import flax.linen as nn, jax, jax.numpy as jnp
>>> class Block(nn.Module):
...     @nn.compact
...     def __call__(self, x):
...         return x + nn.Dense(x.shape[-1])(nn.relu(nn.Dense(8)(nn.LayerNorm()(x))))
>>> class Net(nn.Module):
...     num_layers: int = 3
...     @nn.compact
...     def __call__(self, x):
...         for i in range(self.num_layers):
...             x = Block(name=f"block_{i}")(x)
...         return nn.Dense(2, name="head")(x)
>>> net = Net(); v = net.init(jax.random.key(0), jnp.ones((1, 4)))
>>> r = prune_depth(v, 1, model=net, input_shape=(4,), score="norm")
>>> r.form, r.model(net).num_layers, len(r.params["params"])
('rebuilt', 2, 3)
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
from collections.abc import Mapping, MutableSequence, Sequence
from typing import Any

import flax
import flax.errors
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxprune import _flax, _nnx
from jaxprune._tree import (
    Path,
    as_variables,
    leaves_with_paths,
    map_with_paths,
    restore_form,
    shape_mismatches,
)
from jaxprune.geometry import cheap_jit
from jaxprune.rebuild import Resized
from jaxprune.structure import Program, Residuals, flatten_program, residual_branches

__all__ = ["DepthResult", "Skipped", "prune_depth", "SCORES", "UNITS"]

SCORES = ("block_influence", "norm")
UNITS = ("block", "branch")
FORMS = ("rebuilt", "skipped", "masked")


@dataclasses.dataclass(frozen=True)
class Unit:
    """What is removed as one: ``branches`` (indices into the residual branches, call order)
    and ``path``, the submodule holding exactly their variables (None when there is none)."""

    name: str
    branches: tuple[int, ...]
    path: Path | None


@dataclasses.dataclass(frozen=True)
class DepthResult:
    """``params``: the smaller network's variables (caller's form: bare params or the
    variables dict); ``masked``: the input's shapes with the removed branches' outputs
    zeroed; ``removed``: unit names (lowest score first); ``scores``: every unit's score;
    ``units``: unit -> its branch names; ``form``: ``"rebuilt"``, ``"skipped"`` or
    ``"masked"``; ``fields``: the changed module fields (rebuilt); ``report``: parameter
    counts before and after (``params_after`` counts what ``params`` holds)."""

    params: Any
    masked: Any
    removed: tuple[str, ...]
    scores: dict[str, float]
    units: dict[str, tuple[str, ...]]
    form: str
    score: str
    fields: dict
    report: dict
    skipped: tuple[Path, ...] = ()
    nnx_module: Any = dataclasses.field(default=None, repr=False)

    def model(self, module=None):
        """The module ``params`` runs with: ``module.clone(**fields)`` (rebuilt), a
        :class:`Skipped` ``module`` (skipped) or ``module`` itself (masked); for an NNX input
        (no argument), a copy of it holding ``params``."""
        if self.nnx_module is not None:
            return _nnx.with_variables(self.nnx_module, self.params)
        if module is None:
            raise ValueError("pass the dense Linen module: result.model(module)")
        if self.form == "rebuilt":
            return module.clone(**self.fields)
        if self.form == "skipped":
            return Skipped(_flax.hashable(module), paths=self.skipped)
        return module


class Skipped(Resized):
    """``module`` whose submodules at ``paths`` (relative to it) return their first argument
    instead of running, so they create and read no variables (a :class:`Resized`: layers in
    ``sizes`` get their fields as there)."""

    paths: tuple = ()

    def __call__(self, *args, **kwargs):
        skip = {tuple(p) for p in self.paths}
        root = len(_flax.scope_path(self.scope))

        def interceptor(next_fun, call_args, call_kwargs, context):
            layer = context.module
            if (
                context.method_name == "__call__"
                and call_args
                and layer.scope is not None
                and _flax.scope_path(layer.scope)[root:] in skip
            ):
                return call_args[0]
            return next_fun(*call_args, **call_kwargs)

        with nn.intercept_methods(interceptor):
            return super().__call__(*args, **kwargs)


def prune_depth(
    variables,
    k: int,
    *,
    model=None,
    example_inputs=None,
    input_shape=None,
    data=None,
    score: str = "block_influence",
    unit: str = "block",
    apply_kwargs: Mapping | None = None,
    batch_size: int = 64,
) -> DepthResult:
    """Remove the ``k`` residual units with the lowest ``score`` (module docstring).

    ``variables``: params, the variables dict, or an ``nnx.Module`` (then no ``model``;
    ``result.model()`` is a new NNX module, the input is untouched: ``"rebuilt"`` without the
    removed blocks when they are entries of a list or numbered attributes, else
    ``"masked"``). The model is traced on ``example_inputs`` (an array, a tuple of
    positional or a dict of keyword inputs), else on ``data``, else on float32 inputs of
    ``input_shape``. ``data``: the calibration batch for ``"block_influence"`` (an ``(N,
    ...)`` array or the forms of ``example_inputs``), run ``batch_size`` examples at a time.
    ``k = 0`` removes nothing; ``k`` must be below the number of units.
    """
    if score not in SCORES:
        raise ValueError(f"score must be one of {SCORES}, got {score!r}")
    if unit not in UNITS:
        raise ValueError(f"unit must be one of {UNITS}, got {unit!r}")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
        raise ValueError(f"k (blocks to remove) must be a non-negative int, got {k!r}")
    if (
        isinstance(batch_size, bool)
        or not isinstance(batch_size, (int, np.integer))
        or batch_size < 1
    ):
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if score == "block_influence" and data is None:
        raise ValueError(
            "score='block_influence' needs data= (a calibration batch); score='norm' needs none"
        )
    nnx_module = None
    if _nnx.is_module(variables):
        if model is not None:
            raise ValueError(
                "an NNX module is the model itself: pass it as the first argument and no model="
            )
        nnx_module, variables = variables, _nnx.variables_of(variables)
        model = _nnx.as_linen(nnx_module)
    if model is None:
        raise ValueError("prune_depth needs model= (the Flax module of the params)")
    variables, was_variables = as_variables(variables)
    kwargs = _flax.inference_kwargs(model, apply_kwargs)
    batch = None if data is None else _example(data, "data")
    spec = _spec(example_inputs, input_shape, batch)

    treedef = jax.tree_util.tree_structure(spec)
    try:
        residuals = residual_branches(
            _applier(model, _frozen(kwargs), treedef), variables, spec.zeros(2).arrays
        )
    except (
        flax.errors.ScopeParamShapeError,
        flax.errors.ScopeParamNotFoundError,
        flax.errors.ScopeCollectionNotFound,
    ) as err:
        raise ValueError(f"model= does not match the params: {_flax.first_line(err)}") from None
    branches = residuals.branches
    units = _units(residuals, variables, unit)
    if not units:
        raise ValueError(
            f"{type(model).__name__} has no residual branch x + f(x) whose "
            "output a zeroed parameter silences: nothing to remove"
        )
    if k >= len(units):
        raise ValueError(
            f"k={k} must be smaller than the number of residual {unit}s "
            f"({len(units)}: {', '.join(u.name for u in units)})"
        )
    if score == "norm":
        values = _norm_scores(variables, residuals, units)
    else:
        assert batch is not None  # score='block_influence' was refused above without data
        values = _influence(
            residuals, units, model, kwargs, variables, spec, batch, int(batch_size)
        )
    order = sorted(range(len(units)), key=lambda i: (values[i], i))
    removed = [units[i] for i in order[:k]]
    zero = {p for u in removed for b in u.branches for p in branches[b].zero}
    masked = map_with_paths(lambda p, x: jnp.zeros_like(x) if p in zero else x, variables)
    check = batch.take(0, 2) if batch is not None else _check_inputs(spec)
    form, small, fields, skipped, nnx_module = _smaller(
        model, nnx_module, variables, masked, residuals, removed, spec, kwargs, check
    )
    return DepthResult(
        params=restore_form(small, was_variables),
        masked=restore_form(masked, was_variables),
        removed=tuple(u.name for u in removed),
        scores={u.name: float(values[i]) for i, u in enumerate(units)},
        units={u.name: tuple(branches[b].name for b in u.branches) for u in units},
        form=form,
        score=score,
        fields=fields,
        report=_report(variables, small, residuals, removed, form),
        skipped=skipped,
        nnx_module=nnx_module,
    )


def _smaller(model, nnx_module, variables, masked, residuals, removed, spec, kwargs, check):
    """``(form, variables, fields, skipped paths, nnx module)`` of the first form that
    reproduces ``masked`` on ``check`` (module docstring)."""
    if removed and nnx_module is not None:
        built = _rebuilt_nnx(
            nnx_module, variables, masked, residuals, removed, model, kwargs, check
        )
        if built is not None:
            return "rebuilt", _nnx.variables_of(built[1]), built[0], (), built[1]
    elif removed:
        built = _rebuilt(model, variables, masked, residuals, removed, spec, kwargs, check)
        if built is not None:
            return "rebuilt", built[1], built[0], (), None
        found = _skipped(model, variables, masked, removed, spec, kwargs, check)
        if found is not None:
            return "skipped", found[1], {}, found[0], None
    return "masked", masked, {}, (), nnx_module


# --------------------------------------------------------------------------------------------
# inputs
# --------------------------------------------------------------------------------------------
def _example(value, what: str) -> _flax.Example:
    ex = jax.tree.map(np.asarray, _flax.Example.of(value))
    if ex.batch == 0:
        raise ValueError(f"{what} must hold at least one example")
    for a in ex.arrays:
        if a.dtype.kind in "fc" and not np.all(np.isfinite(a)):
            raise ValueError(f"{what} contains NaN or inf")
    return ex


def _spec(example_inputs, input_shape, batch) -> _flax.Example:
    """The abstract inputs (one example) the model is traced on."""
    if example_inputs is not None:
        return _example(example_inputs, "example_inputs").abstract(1)
    if batch is not None:
        return batch.abstract(1)
    if input_shape is None:
        raise ValueError("pass example_inputs=, input_shape= (one example, no batch axis) or data=")
    return _flax.as_example(tuple(input_shape))


def _check_inputs(spec: _flax.Example) -> _flax.Example:
    """Two examples to compare forms on: standard normal floats, zeros of other dtypes."""
    keys = iter(jax.random.split(jax.random.key(0), len(spec.arrays)))

    def fill(a):
        shape = (2, *a.shape[1:])
        if np.dtype(a.dtype).kind in "fc":
            return jax.random.normal(next(keys), shape, a.dtype)
        return jnp.zeros(shape, a.dtype)

    return jax.tree.map(fill, spec)


# --------------------------------------------------------------------------------------------
# units and scores
# --------------------------------------------------------------------------------------------
def _units(residuals: Residuals, variables, unit: str) -> list[Unit]:
    """Branches grouped into removable units, in call order (module docstring)."""
    branches = residuals.branches
    keys: dict[Any, list[int]] = {}
    if unit == "branch":
        for i, b in enumerate(branches):
            keys[b.name] = [i]
    else:
        depth = len(_common_prefix([b.module for b in branches]))
        for i, b in enumerate(branches):
            key = b.module[: depth + 1] if len(b.module) > depth else b.name
            keys.setdefault(key, []).append(i)
    all_paths = {p for p, _ in leaves_with_paths(variables)}
    units = []
    for key, idx in keys.items():
        owned = {p for i in idx for p in branches[i].params}
        module = key if isinstance(key, tuple) else _common_prefix([p[1:-1] for p in owned])
        under = {p for p in all_paths if p[1 : 1 + len(module)] == module}
        path = module if module and under == owned else None
        name = "/".join(key) if isinstance(key, tuple) else key
        units.append(Unit(name, tuple(idx), path))
    return units


def _common_prefix(paths: Sequence[Path]) -> Path:
    if not paths:
        return ()
    n = min(map(len, paths))
    for i in range(n):
        if len({p[i] for p in paths}) > 1:
            return tuple(paths[0][:i])
    return tuple(paths[0][:n])


def _norm_scores(variables, residuals: Residuals, units: Sequence[Unit]) -> np.ndarray:
    """``sqrt(sum_b ||W_b||^2 / d_b)`` over the branches ``b`` of each unit (zero sets
    ``W_b``, output features ``d_b``)."""
    leaves = dict(leaves_with_paths(variables))
    prog = residuals.program
    out = []
    for u in units:
        total = 0.0
        for b in (residuals.branches[i] for i in u.branches):
            features = prog.avals[prog.eqns[b.add].outs[0]].shape[-1]
            total += (
                sum(float(jnp.sum(jnp.square(leaves[p].astype(jnp.float32)))) for p in b.zero)
                / features
            )
        out.append(math.sqrt(total))
    return np.asarray(out)


def _influence(
    residuals: Residuals,
    units: Sequence[Unit],
    model,
    kwargs,
    variables,
    spec,
    batch: _flax.Example,
    batch_size: int,
) -> np.ndarray:
    """Block influence of each unit over ``batch`` (module docstring), one jitted forward per
    ``batch_size`` examples returning only the sums of ``1 - cos``."""
    branches = residuals.branches
    taps = []
    for u in units:
        first, last = branches[u.branches[0]], branches[u.branches[-1]]
        taps += [(first.add, first.skip), (last.add, -1)]
    static = (
        _flax.hashable(model),
        _frozen(kwargs),
        jax.tree_util.tree_structure(spec),
        tuple(taps),
    )
    sums, counts = np.zeros(len(units)), np.zeros(len(units))
    for start in range(0, batch.batch, batch_size):
        part = jax.tree.map(jnp.asarray, batch.take(start, start + batch_size))
        s, n = jax.device_get(_influence_sums(*static, variables, part.arrays))
        sums += np.asarray(s, np.float64)
        counts += np.asarray(n, np.float64)
    return sums / counts


def _applier(model, kwargs, treedef):
    """``apply_fn(variables, *input arrays)`` of ``model`` in inference mode."""

    def apply_fn(v, *xs):
        return _flax.apply_inference(
            model, v, jax.tree_util.tree_unflatten(treedef, list(xs)), dict(kwargs)
        )

    return apply_fn


def _frozen(kwargs: Mapping) -> tuple:
    return tuple(sorted(kwargs.items()))


@functools.partial(cheap_jit, static_argnums=(0, 1, 2, 3))
def _influence_sums(model, kwargs, treedef, taps, variables, arrays):
    prog = flatten_program(_applier(model, kwargs, treedef), variables, arrays)
    if any(
        e >= len(prog.eqns) or prog.eqns[e].primitive.name not in ("add", "add_any")
        for e, _ in taps
    ):
        raise ValueError(
            "the model's computation depends on the batch size; pass data whose "
            "size is a multiple of batch_size"
        )
    leaves = [leaf for _, leaf in leaves_with_paths(variables)]
    return _cos_sums(prog.run(leaves, arrays, taps))


def _cos_sums(values):
    """``(sum of 1 - cos(x, y), positions)`` per pair ``(x, y)``, cosine over the last axis."""
    out, n = [], []
    for x, y in zip(values[::2], values[1::2]):
        x, y = x.astype(jnp.float32), y.astype(jnp.float32)
        xx, yy = jnp.sum(x * x, -1), jnp.sum(y * y, -1)
        den = jnp.sqrt(xx * yy)
        cos = jnp.where(
            den > 0,
            jnp.sum(x * y, -1) / jnp.where(den > 0, den, 1.0),
            jnp.where((xx == 0) & (yy == 0), 1.0, 0.0),
        )
        out.append(jnp.sum(1.0 - cos))
        n.append(cos.size)
    return jnp.stack(out), jnp.asarray(n)


# --------------------------------------------------------------------------------------------
# the smaller network
# --------------------------------------------------------------------------------------------
def _same_outputs(a, b) -> bool:
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    if len(la) != len(lb):
        return False
    for x, y in zip(la, lb):
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        scale = max(float(np.max(np.abs(y), initial=0.0)), 1.0)
        if x.shape != y.shape or not np.allclose(x, y, rtol=1e-4, atol=1e-5 * scale):
            return False
    return True


def _matches(module, small, model, masked, spec, kwargs, check) -> bool:
    """``module.init`` creates ``small``'s shapes and ``module.apply(small)`` equals
    ``model.apply(masked)`` on ``check``."""
    try:
        shapes = _flax.abstract_init(module, spec, **kwargs)
        if shape_mismatches(shapes, small):
            return False
        return _same_outputs(
            _apply(_flax.hashable(module), _frozen(kwargs), small, check),
            _apply(_flax.hashable(model), _frozen(kwargs), masked, check),
        )
    except Exception:  # a candidate the module's own code rejects is no rebuild
        return False


@functools.partial(cheap_jit, static_argnums=(0, 1))
def _apply(module, kwargs, variables, x):
    return _flax.apply_inference(module, variables, x, dict(kwargs))


def _siblings(variables, parent: Path, removed: Sequence[Unit]) -> list[str]:
    """Names under ``parent`` that look like the removed units' names (digits varying)."""
    # callers pass only units with a path
    patterns = {re.sub(r"\d+", r"\\d+", re.escape(u.path[-1])) for u in removed}  # pyright: ignore[reportOptionalSubscript]
    tree = variables["params"]
    for key in parent:
        tree = tree[key]
    return [n for n in tree if any(re.fullmatch(p, n) for p in patterns)]


def _call_order(prog: Program, parent: Path, names: Sequence[str]) -> list[str]:
    """``names`` (submodules under ``parent``) ordered by the first use of their variables
    in ``prog``."""
    first: dict[str, int] = {}
    for e_idx, e in enumerate(prog.eqns):
        for r in e.ins:
            if isinstance(r, int) and r < prog.n_leaves:
                path = prog.paths[r][1:]
                if path[: len(parent)] == parent and len(path) > len(parent):
                    first.setdefault(path[len(parent)], e_idx)
    return sorted(names, key=lambda n: first.get(n, 1 << 60))


def _field_options(model, n: int, positions: Sequence[int]) -> list[dict]:
    """Candidate field changes for removing the blocks at ``positions`` (call order) of
    ``n``: each count field with every per-block tuple reduced, then alone."""
    counts, per_block = [], {}
    for f in dataclasses.fields(model):
        if not f.init or f.name in ("parent", "name"):
            continue
        value = getattr(model, f.name)
        if isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value == n:
            counts.append({f.name: int(value) - len(positions)})
        elif isinstance(value, (tuple, list)) and value:
            if (
                all(
                    isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 0
                    for v in value
                )
                and sum(value) == n
                and len(value) < n
            ):
                stages = np.searchsorted(np.cumsum(value), positions, side="right")
                new = list(value)
                for s in stages:
                    new[s] -= 1
                counts.append({f.name: type(value)(new)})
            if len(value) % n == 0:
                m = len(value) // n
                drop = {p * m + j for p in positions for j in range(m)}
                per_block[f.name] = type(value)(v for i, v in enumerate(value) if i not in drop)
    options = []
    for c in counts:
        rest = {name: v for name, v in per_block.items() if name not in c}
        if rest:
            options.append({**c, **rest})
        options.append(c)
    return options


def _rebuilt(model: nn.Module, variables, masked, residuals, removed, spec, kwargs, check):
    """``(fields, variables)`` of the module with fewer blocks, or None (module docstring)."""
    if any(u.path is None for u in removed) or not dataclasses.is_dataclass(model):
        return None
    parents = {u.path[:-1] for u in removed}
    if len(parents) != 1:
        return None
    parent = parents.pop()
    treedef = jax.tree_util.tree_structure(spec)
    old = _call_order(residuals.program, parent, _siblings(variables, parent, removed))
    gone = {u.path[-1] for u in removed}
    if not gone <= set(old):
        return None
    positions = [i for i, n in enumerate(old) if n in gone]
    kept = [n for n in old if n not in gone]
    for fields in _field_options(model, len(old), positions):
        try:
            module = model.clone(**fields)
            shapes = _flax.abstract_init(module, spec, **kwargs)
            prog = flatten_program(
                _applier(module, _frozen(kwargs), treedef), shapes, spec.zeros(2).arrays
            )
            new = _call_order(prog, parent, _siblings(shapes, parent, removed))
        except Exception:  # the module's own checks refuse these fields
            continue
        if len(new) != len(kept):
            continue
        small = _renamed(variables, parent, old, dict(zip(new, kept)))
        if _matches(module, small, model, masked, spec, kwargs, check):
            return fields, small
    return None


def _rebuilt_nnx(module, variables, masked, residuals, removed, linen, kwargs, check):
    """``(attribute changed, smaller nnx module)``: a copy of ``module`` without the removed
    blocks (list entries deleted; ``block_{i}``-like attributes reassigned in call order),
    one integer attribute equal to the block count lowered (each tried, then none), checked
    against the masked network; or None."""
    if any(u.path is None for u in removed):
        return None
    parents = {u.path[:-1] for u in removed}
    if len(parents) != 1:
        return None
    parent = parents.pop()
    old = _call_order(residuals.program, parent, _siblings(variables, parent, removed))
    gone = {u.path[-1] for u in removed}
    if not gone <= set(old):
        return None
    kept = [n for n in old if n not in gone]
    expected = _apply(_flax.hashable(linen), _frozen(kwargs), masked, check)
    counts = [
        name
        for name, value in vars(module).items()
        if isinstance(value, (int, np.integer))
        and not isinstance(value, bool)
        and value == len(old)
    ]
    for count in (*counts, None):
        copy = _nnx.with_variables(module, masked)
        owner = copy
        for key in parent:
            owner = owner[int(key)] if isinstance(owner, MutableSequence) else getattr(owner, key)
        if isinstance(owner, MutableSequence):
            for index in sorted((int(n) for n in gone), reverse=True):
                del owner[index]
        else:
            blocks = [getattr(owner, n) for n in kept]
            for n in old:
                delattr(owner, n)
            for n, block in zip(old, blocks):
                setattr(owner, n, block)
        changed = {} if count is None else _reduce_count(copy, count, len(gone))
        try:
            small = _nnx.variables_of(copy)
            out = _apply(_flax.hashable(_nnx.as_linen(copy)), _frozen(kwargs), small, check)
        except Exception:  # the module's own code refuses the smaller copy
            continue
        if _same_outputs(out, expected):
            return changed, copy
    return None


def _reduce_count(module, name: str, k: int) -> dict:
    """Attribute ``name`` of ``module`` lowered by ``k`` (and in its ``init_args`` record, when
    it keeps one); returns ``{name: new value}``."""
    value = getattr(module, name) - k
    setattr(module, name, value)
    record = getattr(module, "init_args", None)
    if isinstance(record, tuple):
        module.init_args = tuple((key, value if key == name else v) for key, v in record)
    return {name: value}


def _renamed(variables, parent: Path, old: Sequence[str], mapping: Mapping[str, str]):
    """``variables`` with the submodules ``old`` under ``parent`` replaced by ``{new: the old
    submodule it takes}`` in every collection."""
    out = {}
    for coll, tree in variables.items():
        out[coll] = _renamed_tree(tree, parent, set(old), mapping)
    return out


def _renamed_tree(tree, parent: Path, old: set, mapping: Mapping[str, str]):
    if not isinstance(tree, Mapping):
        return tree
    if parent:
        return {
            k: (_renamed_tree(v, parent[1:], old, mapping) if k == parent[0] else v)
            for k, v in tree.items()
        }
    out = {k: v for k, v in tree.items() if k not in old}
    out.update({new: tree[src] for new, src in mapping.items() if src in tree})
    return out


def _skipped(model, variables, masked, removed, spec, kwargs, check):
    """``(paths, variables)`` of :class:`Skipped`, or None when its outputs differ."""
    if any(u.path is None for u in removed):
        return None
    paths = tuple(u.path for u in removed)
    small = {coll: _without(tree, paths) for coll, tree in variables.items()}
    small = {coll: tree for coll, tree in small.items() if tree or coll == "params"}
    module = Skipped(_flax.hashable(model), paths=paths)
    if _matches(module, small, model, masked, spec, kwargs, check):
        return paths, small
    return None


def _without(tree, paths: Sequence[Path]):
    out = {}
    for k, v in tree.items():
        inner = [p[1:] for p in paths if p[0] == k]
        if any(not p for p in inner):
            continue
        out[k] = _without(v, inner) if inner and isinstance(v, Mapping) else v
    return out


def _report(dense, small, residuals: Residuals, removed: Sequence[Unit], form: str) -> dict:
    """Parameter counts (the ``params`` collection) before and after, honestly: the
    removed branches' parameters count after unless they left the pytree."""

    def count(tree):
        return int(sum(np.size(x) for p, x in leaves_with_paths(tree) if p[0] == "params"))

    before, after = count(dense), count(small)
    dead = {
        p
        for u in removed
        for b in u.branches
        for p in residuals.branches[b].params
        if p[0] == "params"
    }
    leaves = dict(leaves_with_paths(dense))
    n_dead = int(sum(np.size(leaves[p]) for p in dead))
    return {
        "form": form,
        "params_before": before,
        "params_after": after,
        "params_removed_branches": n_dead,
        "params_dead": n_dead if form == "masked" else 0,
        "ratio": 1.0 - after / before if before else 0.0,
        "units_removed": len(removed),
    }
