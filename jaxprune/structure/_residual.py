"""Residual branches found in a model's jaxpr: every ``add(x, f(x))`` whose one operand ``x``
is an ancestor of the other, ``f(x)``, through parametrised operations.

The jaxpr of ``apply_fn(variables, inputs)`` is flattened (``jit``, ``custom_jvp``, ``remat``
and the other call primitives are inlined) into one list of equations, :class:`Program`,
which can also be evaluated (:meth:`Program.run`) to read values at chosen equations. For each
add of two activations of the same shape where one operand ``x`` is an ancestor of the other
``y``, the *branch* is the set of equations between them (ancestors of ``y`` that are not
ancestors of ``x``); it owns the parameters that only its equations read. Its *zero set* is a
smallest set of owned floating-point leaves whose zeroing makes ``y`` exactly 0, so that the
add returns ``x``: it is found backwards from ``y`` with ``dot_general``, ``conv``, ``mul``
zero when any operand is, ``div`` when its numerator is, and adds, subtractions, ``max``,
reshapes, broadcasts, transposes, ``tanh`` and the other zero-preserving operations when all
their operands are (``gelu`` and ``silu`` are products). A branch whose output has no zero set
(e.g. one ending in ``sigmoid``) is not reported; nor is a branch inside another one.

>>> import flax.linen as nn, jax, jax.numpy as jnp
>>> class Net(nn.Module):
...     @nn.compact
...     def __call__(self, x):
...         return x + nn.Dense(4, name="f")(nn.relu(nn.Dense(8, name="g")(x)))
>>> net = Net(); v = net.init(jax.random.key(0), jnp.ones((1, 4)))
>>> [b.zero for b in residual_branches(net.apply, v, (jnp.ones((2, 4)),)).branches]
[(('params', 'f', 'bias'), ('params', 'f', 'kernel'))]
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
from jax.extend import core as jcore

from jaxprune._tree import Path, leaves_with_paths
from jaxprune.structure._rules import _CALLS

# zero when every (data) operand is zero
_ALL = {
    "add",
    "add_any",
    "sub",
    "max",
    "min",
    "neg",
    "reshape",
    "broadcast_in_dim",
    "transpose",
    "convert_element_type",
    "squeeze",
    "expand_dims",
    "reduce_sum",
    "copy",
    "copy_p",
    "concatenate",
    "pad",
    "slice",
    "reduce_max",
    "reduce_min",
    "cumsum",
    "sin",
    "tanh",
    "sinh",
    "asinh",
    "atanh",
    "arctan",
    "atan",
    "asin",
    "tan",
    "erf",
    "abs",
    "sign",
    "integer_pow",
    "sqrt",
    "cbrt",
    "reduce_precision",
    "rev",
    "real",
    "imag",
    "square",
    "optimization_barrier",
}
# zero when any operand is zero
_ANY = {"mul", "dot_general", "conv_general_dilated"}
# zero when their first operand is (the others are indices or divisors)
_FIRST = {"div", "dynamic_slice", "gather", "select_and_gather_add"}


@dataclasses.dataclass(frozen=True)
class _Eqn:
    """One flattened equation: operands are value ids (ints) or :class:`_Const`."""

    primitive: Any
    ins: tuple
    outs: tuple[int, ...]
    params: dict


@dataclasses.dataclass(frozen=True)
class _Const:
    value: Any


@dataclasses.dataclass
class Program:
    """A flattened jaxpr: ids ``0..n_leaves-1`` are the variables' leaves (``paths``), the
    next ``n_inputs`` the input arrays, every equation output a fresh id."""

    eqns: list[_Eqn]
    paths: list[Path]
    n_inputs: int
    outs: tuple
    producer: dict[int, int]
    avals: dict[int, Any]

    @property
    def n_leaves(self) -> int:
        return len(self.paths)

    def run(
        self,
        leaves: Sequence,
        inputs: Sequence,
        taps: Sequence[tuple[int, int]] = (),
        stop: int | None = None,
    ) -> list:
        """Evaluate (traceable) and return the value of operand ``k`` of equation ``e`` for
        each tap ``(e, k)`` (``k = -1``: its first output); ``stop``: last equation to run."""
        env: dict[int, Any] = dict(enumerate([*leaves, *inputs]))
        read = lambda r: r.value if isinstance(r, _Const) else env[r]
        last = max([e for e, _ in taps], default=len(self.eqns) - 1) if stop is None else stop
        for eqn in self.eqns[: last + 1]:
            outs = eqn.primitive.bind(*map(read, eqn.ins), **eqn.params)
            outs = outs if eqn.primitive.multiple_results else [outs]
            env.update(zip(eqn.outs, outs))
        return [read(self.eqns[e].outs[0] if k < 0 else self.eqns[e].ins[k]) for e, k in taps]


def flatten_program(apply_fn: Callable, variables, inputs: Sequence) -> Program:
    """:class:`Program` of ``apply_fn(variables, *inputs)`` (arrays or ShapeDtypeStructs)."""
    flat = leaves_with_paths(variables)
    treedef = jax.tree_util.tree_structure(variables)
    leaves = [leaf for _, leaf in flat]

    def fn(leaves, *xs):
        return apply_fn(jax.tree_util.tree_unflatten(treedef, leaves), *xs)

    closed = jax.make_jaxpr(fn)(leaves, *inputs)
    eqns: list[_Eqn] = []
    avals: dict[int, Any] = {}
    counter = [0]

    def fresh(var) -> int:
        counter[0] += 1
        avals[counter[0] - 1] = var.aval
        return counter[0] - 1

    def walk(jaxpr, in_refs, consts=()):
        env = dict(zip(jaxpr.invars, in_refs))
        env.update({v: _Const(c) for v, c in zip(jaxpr.constvars, consts)})
        read = lambda v: _Const(v.val) if isinstance(v, jcore.Literal) else env[v]
        for eqn in jaxpr.eqns:
            ins = [read(v) for v in eqn.invars]
            sub = _sub_jaxpr(eqn)
            if sub is not None:
                inner = getattr(sub, "jaxpr", sub)
                outs = walk(inner, ins, getattr(sub, "consts", ()))
                env.update(zip(eqn.outvars, outs))
                continue
            outs = tuple(fresh(v) for v in eqn.outvars)
            env.update(zip(eqn.outvars, outs))
            eqns.append(_Eqn(eqn.primitive, tuple(ins), outs, dict(eqn.params)))
        return [read(v) for v in jaxpr.outvars]

    in_vars = closed.jaxpr.invars
    refs = [fresh(v) for v in in_vars]
    outs = walk(closed.jaxpr, refs, closed.consts)
    producer = {o: k for k, e in enumerate(eqns) for o in e.outs}
    return Program(
        eqns, [p for p, _ in flat], len(in_vars) - len(leaves), tuple(outs), producer, avals
    )


def _sub_jaxpr(eqn):
    if eqn.primitive.name not in _CALLS:
        return None
    for key in ("jaxpr", "call_jaxpr", "fun_jaxpr"):
        if eqn.params.get(key) is not None:
            return eqn.params[key]
    return None


@dataclasses.dataclass(frozen=True)
class ResidualBranch:
    """``x + f(x)`` at equation ``add`` of the :class:`Program` (``x`` its operand ``skip``):
    ``params`` the variables paths only ``f`` reads, ``zero`` those whose zeroing makes ``f``
    exactly 0, ``module`` the common module path of ``params``, ``name`` a readable label."""

    name: str
    module: Path
    params: tuple[Path, ...]
    zero: tuple[Path, ...]
    add: int
    skip: int


@dataclasses.dataclass
class Residuals:
    """The residual branches of a model, in call order, and its flattened program."""

    program: Program
    branches: tuple[ResidualBranch, ...]


def residual_branches(apply_fn: Callable, variables, inputs: Sequence) -> Residuals:
    """Residual branches of ``apply_fn(variables, *inputs)`` (module docstring)."""
    prog = flatten_program(apply_fn, variables, inputs)
    n_leaves = prog.n_leaves
    acts = _activations(prog)
    readers: dict[int, set[int]] = {}
    for k, e in enumerate(prog.eqns):
        for r in e.ins:
            if isinstance(r, int) and r < n_leaves:
                readers.setdefault(r, set()).add(k)
    found = []
    for k, e in enumerate(prog.eqns):
        if e.primitive.name not in ("add", "add_any") or len(e.ins) != 2:
            continue
        if not all(isinstance(r, int) and r in acts for r in e.ins):
            continue
        shapes = {tuple(prog.avals[r].shape) for r in (*e.ins, e.outs[0])}
        if len(shapes) != 1:
            continue
        for skip in (0, 1):
            x, y = e.ins[skip], e.ins[1 - skip]
            outer = _ancestors(prog, [x])
            if y in outer:
                continue
            inner = _ancestors(prog, [y], stop=outer)
            branch_eqns = {prog.producer[i] for i in inner if i in prog.producer}
            if not any(x in prog.eqns[j].ins for j in branch_eqns):
                continue  # y does not read x
            owned = {leaf for leaf, used in readers.items() if used <= branch_eqns}
            zero = _zero_set(prog, y, inner, owned, acts)
            if owned and zero is not None:
                found.append((k, skip, branch_eqns, owned, zero[1]))
            break
    nested = set()
    for a in found:
        for b in found:
            if a is not b and a[0] in b[2]:
                nested.add(a[0])
    kept = [f for f in found if f[0] not in nested]
    modules = [_common([prog.paths[i][1:-1] for i in f[3]]) for f in kept]
    names = _names(prog, modules, [f[3] for f in kept], readers)
    branches = tuple(
        ResidualBranch(
            name=name,
            module=module,
            params=tuple(sorted(prog.paths[i] for i in owned)),
            zero=tuple(sorted(prog.paths[i] for i in zero)),
            add=k,
            skip=skip,
        )
        for name, module, (k, skip, _, owned, zero) in zip(names, modules, kept)
    )
    return Residuals(prog, branches)


def _activations(prog: Program) -> set[int]:
    """Ids whose value depends on an input array."""
    acts = set(range(prog.n_leaves, prog.n_leaves + prog.n_inputs))
    for e in prog.eqns:
        if any(isinstance(r, int) and r in acts for r in e.ins):
            acts.update(e.outs)
    return acts


def _ancestors(prog: Program, start, stop: set[int] | frozenset[int] = frozenset()) -> set[int]:
    """Ids ``start`` is computed from (inclusive), not walking past ids in ``stop``."""
    seen, todo = set(), [s for s in start if s not in stop]
    while todo:
        r = todo.pop()
        if r in seen:
            continue
        seen.add(r)
        if r in prog.producer:
            todo.extend(
                i
                for i in prog.eqns[prog.producer[r]].ins
                if isinstance(i, int) and i not in seen and i not in stop
            )
    return seen


def _zero_set(prog: Program, y: int, inner: set[int], owned: set[int], acts: set[int]):
    """``(cost, leaves)``: owned float leaves whose zeroing makes ``y`` exactly 0 (fewest
    leaves outside ``params`` first, then fewest leaves), or None."""
    memo: dict[int, Any] = {}

    def cost(leaves):
        return (sum(prog.paths[i][0] != "params" for i in leaves), len(leaves))

    def union(parts):
        if any(p is None for p in parts):
            return None
        leaves = frozenset().union(*(p[1] for p in parts))
        return cost(leaves), leaves

    def zero(r):
        if isinstance(r, _Const):
            return ((0, 0), frozenset()) if not np.any(np.asarray(r.value)) else None
        if r < prog.n_leaves:
            dtype = np.dtype(prog.avals[r].dtype)
            return (cost({r}), frozenset({r})) if r in owned and dtype.kind in "fc" else None
        if r not in inner or r not in prog.producer:
            return None
        if r not in memo:
            memo[r] = None  # cycles cannot occur; guards re-entry while computing
            e = prog.eqns[prog.producer[r]]
            name = e.primitive.name
            if name in _ANY:
                ops = sorted(e.ins, key=lambda i: isinstance(i, int) and i in acts)
                options = [z for z in map(zero, ops) if z is not None]
                memo[r] = min(options, key=lambda z: z[0]) if options else None
            elif name in _FIRST:
                memo[r] = zero(e.ins[0])
            elif name == "select_n":
                memo[r] = union([zero(i) for i in e.ins[1:]])
            elif name in _ALL:
                memo[r] = union([zero(i) for i in e.ins])
        return memo[r]

    return zero(y)


def _common(paths: Sequence[Path]) -> Path:
    if not paths:
        return ()
    first = paths[0]
    n = 0
    while n < len(first) and all(len(p) > n and p[n] == first[n] for p in paths):
        n += 1
    return tuple(first[:n])


def _names(prog: Program, modules, owned_sets, readers) -> list[str]:
    """A unique label per branch: its module path, then the submodules it owns in order of
    first use when there are several (``block_0/ln_0+attn``), as deep as needed to tell
    branches apart (``norms/0+fcs/0``)."""
    longest = max((len(prog.paths[i]) for owned in owned_sets for i in owned), default=1)
    for depth in range(1, longest + 1):
        names = [_name(prog, m, o, readers, depth) for m, o in zip(modules, owned_sets)]
        if len(set(names)) == len(names):
            break
    return names


def _name(prog: Program, module: Path, owned: set[int], readers, depth: int) -> str:
    first_use: dict[str, int] = {}
    for i in owned:
        path = prog.paths[i][1:-1]
        if len(path) > len(module):
            key = "/".join(path[len(module) : len(module) + depth])
            first_use[key] = min(first_use.get(key, 1 << 60), min(readers[i]))
    parts = sorted(first_use, key=first_use.get)  # pyright: ignore[reportCallIssue, reportArgumentType]  (every key is present)
    base = "/".join(module)
    if len(parts) > 1:
        return f"{base}/{'+'.join(parts)}" if base else "+".join(parts)
    return base or "+".join(parts) or "branch"
