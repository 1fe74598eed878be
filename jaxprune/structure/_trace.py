"""The jaxpr walker: propagates channel labels through the equations of ``model.apply``
using the per-primitive rules of :mod:`jaxprune.structure._rules`, then collects the groups."""
from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core as jcore

from jaxprune._flax import apply_inference
from jaxprune._tree import get_path, params_of, path_of
from jaxprune.structure._groups import ArraySlot, ChannelGroup, Path, Structure
from jaxprune.structure._labels import _Info, _UnionFind
from jaxprune.structure._layers import dense_chain
from jaxprune.structure._rules import RULES


class _Tracer:
    """Walks a jaxpr, propagating channel labels and collecting group slots."""

    def __init__(self, leaf_paths: Sequence[Path], leaf_shapes: Sequence[tuple[int, ...]]):
        self.leaf_paths = list(leaf_paths)
        self.leaf_shapes = list(leaf_shapes)
        self.uf = _UnionFind()
        self.group_size: list[int] = []
        self.producers: list[list[ArraySlot]] = []
        self.members: list[set[ArraySlot]] = []
        self.consumers: list[list[ArraySlot]] = []
        self.frozen: dict[int, str] = {}
        self.output: set[int] = set()
        self.kernel_positions: dict[Path, int] = {}  # output positions per kernel (x batch)

    def _count_use(self, leaf: int, out_shape, out_channels: int) -> None:
        path = self.leaf_paths[leaf]
        positions = math.prod(out_shape) // max(out_channels, 1)
        self.kernel_positions[path] = self.kernel_positions.get(path, 0) + positions

    # -- helpers ---------------------------------------------------------------------------
    def _new_group(self, size: int, producer: ArraySlot) -> int:
        gid = self.uf.new()
        self.group_size.append(size)
        self.producers.append([producer])
        self.members.append(set())
        self.consumers.append([])
        return gid

    def _opaque(self, shape, why: str) -> _Info:
        """Labels for a value the tracer cannot follow (the network input, the result of an
        unsupported op, a channel-padded value): every axis of size > 1 gets a fresh *frozen*
        pseudo-group without producers. A channel group that is later merged with it
        element-wise (e.g. a residual add of a sliced/padded shortcut) is thereby frozen too,
        instead of being pruned as if the other operand did not index its channels."""
        out = _Info()
        for ax, n in enumerate(shape):
            if n > 1:
                gid = self.uf.new()
                self.group_size.append(int(n))
                self.producers.append([])
                self.members.append(set())
                self.consumers.append([])
                self.frozen[gid] = why
                out.chan[ax] = (gid, 1, 1)
        return out

    def _freeze(self, info: _Info, why: str) -> None:
        for gid, _, _ in info.chan.values():
            self.frozen.setdefault(gid, why)

    def _kernel_leaf(self, info: _Info, ndim: int):
        """Leaf index if ``info`` is a kernel parameter passed straight in, else None."""
        if len(info.porig) != 1:
            return None
        leaf, amap = info.porig[0]
        path = self.leaf_paths[leaf]
        if (path[-1] != "kernel" or len(self.leaf_shapes[leaf]) != ndim
                or any(amap.get(a) != a for a in range(ndim))):
            return None
        return leaf

    def _slot(self, leaf: int, axis: int, outer: int = 1, inner: int = 1) -> ArraySlot:
        return ArraySlot(self.leaf_paths[leaf], axis, outer, inner)

    # -- label algebra used by the rules -------------------------------------------------------------------
    def _elementwise(self, ins: list[_Info], in_shapes, out_shape) -> _Info:
        """Same-rank operands (size-1 axes broadcast); scalars carry nothing."""
        out = _Info()
        rank = len(out_shape)

        def aligned(shape, ax):
            return len(shape) == rank and shape[ax] == out_shape[ax]

        for info, shape in zip(ins, in_shapes):
            for ax, lab in info.chan.items():
                if not aligned(shape, ax):
                    self.frozen.setdefault(lab[0], "implicit broadcast of a channel axis")
                elif ax in out.chan:
                    g0, o0, i0 = out.chan[ax]
                    if (o0, i0) != lab[1:]:
                        self.frozen.setdefault(g0, "incompatible element-wise merge")
                        self.frozen.setdefault(lab[0], "incompatible element-wise merge")
                    self.uf.union(g0, lab[0])
                else:
                    out.chan[ax] = lab
        if out.chan:
            for info, shape in zip(ins, in_shapes):
                for leaf, amap in info.porig:
                    for pax, vax in amap.items():
                        if vax in out.chan and aligned(shape, vax):
                            gid, o, i = out.chan[vax]
                            self.members[gid].add(self._slot(leaf, pax, o, i))
            return out
        out.porig = tuple(o for info, shape in zip(ins, in_shapes) if len(shape) == rank
                          for o in info.porig)
        return out

    def _map_axes(self, info: _Info, amap: dict[int, int]) -> _Info:
        """Relabel axes by ``amap`` (input axis -> output axis); unmapped labels freeze."""
        out = _Info()
        for ax, lab in info.chan.items():
            if ax in amap:
                out.chan[amap[ax]] = lab
            else:
                self.frozen.setdefault(lab[0], "channel axis removed")
        out.porig = tuple((leaf, {p: amap[v] for p, v in m.items() if v in amap})
                          for leaf, m in info.porig)
        return out

    def _reshape(self, info: _Info, old: tuple[int, ...], new: tuple[int, ...]) -> _Info:
        """Split the reshape into blocks of equal product; merge blocks keep a layout."""
        out = _Info()
        i = j = 0
        porig_map: dict[int, int] = {}
        while i < len(old) or j < len(new):
            bi, bj = [i], [j]
            pi = old[i] if i < len(old) else 1
            pj = new[j] if j < len(new) else 1
            i, j = i + 1, j + 1
            while pi != pj:
                if pi < pj and i < len(old):
                    pi *= old[i]; bi.append(i); i += 1
                elif j < len(new):
                    pj *= new[j]; bj.append(j); j += 1
                else:
                    break
            bi = [a for a in bi if a < len(old)]
            bj = [b for b in bj if b < len(new)]
            big_i = [a for a in bi if old[a] != 1]
            big_j = [b for b in bj if new[b] != 1]
            if len(big_i) == 1 and len(big_j) == 1:
                porig_map[big_i[0]] = big_j[0]
            for a in bi:
                if a not in info.chan:
                    continue
                gid, o, inn = info.chan[a]
                if old[a] == 1:
                    continue
                if len(big_j) == 1:  # merge (or identity): labelled axis becomes a layout
                    before = math.prod(old[b] for b in big_i if b < a)
                    after = math.prod(old[b] for b in big_i if b > a)
                    out.chan[big_j[0]] = (gid, o * before, inn * after)
                elif len(big_i) == 1 and o == 1 and inn == 1:
                    self.frozen.setdefault(gid, "reshape splits a channel axis")
                else:
                    self.frozen.setdefault(gid, "unsupported reshape")
        out.porig = tuple((leaf, {p: porig_map[v] for p, v in m.items() if v in porig_map})
                          for leaf, m in info.porig)
        return out

    def _dot_general(self, eqn, lhs: _Info, rhs: _Info) -> list[_Info]:
        (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
        leaf = self._kernel_leaf(rhs, 2)
        if leaf is None or lb or rb or len(lc) != 1 or tuple(rc) != (0,):
            self._freeze(lhs, "dot_general that is not input @ kernel")
            self._freeze(rhs, "dot_general that is not input @ kernel")
            return [_Info()]
        kshape = self.leaf_shapes[leaf]
        out = _Info()
        for ax, (gid, o, inn) in lhs.chan.items():
            if ax == lc[0]:
                self.consumers[gid].append(self._slot(leaf, 0, o, inn))
            else:
                self._freeze(lhs, "channels on a non-contracting axis of a dense layer")
        out_ndim = len(eqn.outvars[0].aval.shape)
        self._count_use(leaf, eqn.outvars[0].aval.shape, kshape[1])
        out.chan[out_ndim - 1] = (self._new_group(kshape[1], self._slot(leaf, 1)), 1, 1)
        return [out]

    def _conv(self, eqn, lhs: _Info, rhs: _Info) -> list[_Info]:
        dn = eqn.params["dimension_numbers"]
        leaf = self._kernel_leaf(rhs, 4)
        if (leaf is None or eqn.params["feature_group_count"] != 1
                or eqn.params["batch_group_count"] != 1):
            self._freeze(lhs, "grouped/depthwise or non-parameter convolution")
            self._freeze(rhs, "grouped/depthwise or non-parameter convolution")
            return [_Info()]
        out = _Info()
        for ax, (gid, o, inn) in lhs.chan.items():
            if ax == dn.lhs_spec[1] and o == 1 and inn == 1:
                self.consumers[gid].append(self._slot(leaf, dn.rhs_spec[1]))
            else:
                self._freeze(lhs, "channels on a spatial/batch axis of a convolution")
        size = self.leaf_shapes[leaf][dn.rhs_spec[0]]
        self._count_use(leaf, eqn.outvars[0].aval.shape, size)
        out.chan[dn.out_spec[1]] = (self._new_group(size, self._slot(leaf, dn.rhs_spec[0])), 1, 1)
        return [out]

    # -- the walk --------------------------------------------------------------------------
    def run(self, jaxpr, in_infos: list[_Info]) -> list[_Info]:
        env: dict[Any, _Info] = {}

        def read(v):
            if isinstance(v, jcore.Literal):
                return _Info()
            return env.get(v, _Info())

        for v, info in zip(jaxpr.invars, in_infos):
            env[v] = info
        for eqn in jaxpr.eqns:
            ins = [read(v) for v in eqn.invars]
            name = eqn.primitive.name
            in_shapes = [tuple(getattr(v.aval, "shape", ())) for v in eqn.invars]
            outs = self._eqn(eqn, name, ins, in_shapes)
            for v, info in zip(eqn.outvars, outs):
                env[v] = info
        return [read(v) for v in jaxpr.outvars]

    def _eqn(self, eqn, name: str, ins: list[_Info], in_shapes) -> list[_Info]:
        out_shapes = [tuple(getattr(v.aval, "shape", ())) for v in eqn.outvars]
        sub = _sub_jaxpr(eqn)
        if sub is not None:
            return self.run(sub, ins)[: len(eqn.outvars)] + [_Info()] * max(
                0, len(eqn.outvars) - len(sub.outvars))
        rule = RULES.get(name)
        outs = None if rule is None else rule(self, eqn, ins, in_shapes, out_shapes)
        if outs is not None:
            return outs
        # Unknown op: anything it touches is frozen (conservative, never wrong).
        for info in ins:
            self._freeze(info, f"unsupported op '{name}'")
        return [self._opaque(shape, f"merged with the output of unsupported op '{name}'")
                for shape in out_shapes]

    # -- result ----------------------------------------------------------------------------
    def groups(self) -> list[ChannelGroup]:
        roots: dict[int, list[int]] = {}
        for gid in range(len(self.group_size)):
            roots.setdefault(self.uf.find(gid), []).append(gid)
        result = []
        for root, gids in sorted(roots.items()):
            if not any(self.producers[g] for g in gids):
                continue  # only pseudo-groups (input / untracked values): nothing to prune
            producers, consumers, members = [], [], set()
            reason = ""
            for g in gids:
                producers += self.producers[g]
                consumers += self.consumers[g]
                members |= self.members[g]
                if g in self.frozen and not reason:
                    reason = self.frozen[g]
                if g in self.output and not reason:
                    reason = "channels reach the network output"
            if not consumers and not reason:
                reason = "no layer reads these channels"
            prod_paths = {s.path for s in producers}
            members = sorted((m for m in members if m.path not in prod_paths),
                             key=lambda s: s.path)
            name = "/".join(producers[0].path[1:-1])
            size = self.group_size[next(g for g in gids if self.producers[g])]
            result.append(ChannelGroup(
                name=name, size=size, producers=tuple(producers),
                members=tuple(members), consumers=tuple(dict.fromkeys(consumers)),
                prunable=not reason, reason=reason))
        return result


def _sub_jaxpr(eqn):
    for key in ("jaxpr", "call_jaxpr", "fun_jaxpr"):
        sub = eqn.params.get(key)
        if sub is not None:
            return getattr(sub, "jaxpr", sub)
    return None


def trace_groups(apply_fn: Callable, variables: Any, example_input: jax.Array) -> Structure:
    """Structure of ``apply_fn(variables, x)`` found by tracing its jaxpr.

    ``variables`` is the full variables dict (``{'params': ..., 'batch_stats': ...}``);
    ``apply_fn`` must run the network in inference mode.
    """
    leaves_with_path, treedef = jax.tree_util.tree_flatten_with_path(variables)
    paths = [path_of(p) for p, _ in leaves_with_path]
    leaves = [leaf for _, leaf in leaves_with_path]

    def flat_apply(flat, x):
        return apply_fn(jax.tree_util.tree_unflatten(treedef, flat), x)

    closed = jax.make_jaxpr(flat_apply)(leaves, example_input)
    tracer = _Tracer(paths, [tuple(np.shape(l)) for l in leaves])
    in_infos = [_Info(porig=((k, {a: a for a in range(np.ndim(l))}),))
                for k, l in enumerate(leaves)]
    # the example input indexes no prunable channels, but a group merged with it element-wise
    # (a residual add of the raw input) must not be pruned: label it with frozen pseudo-groups
    in_infos.append(tracer._opaque(tuple(example_input.shape),
                                   "merged with the network input"))
    outs = tracer.run(closed.jaxpr, in_infos)
    for info in outs:
        for gid, _, _ in info.chan.values():
            tracer.output.add(gid)
    batch = example_input.shape[0]
    return Structure(
        groups=tuple(tracer.groups()),
        shapes={p: tuple(np.shape(l)) for p, l in zip(paths, leaves)},
        kernel_positions={p: n // batch for p, n in tracer.kernel_positions.items()})


def from_model(model, variables, input_shape: Sequence[int]) -> Structure:
    """Structure of a Flax linen ``model`` (inference mode) for inputs of ``input_shape``.

    ``input_shape`` excludes the batch axis. A batch of 2 is traced so the batch axis never
    coincides with a size-1 channel axis.
    """
    x = jnp.zeros((2, *tuple(input_shape)), jnp.float32)
    return trace_groups(lambda v, inp: apply_inference(model, v, inp), variables, x)


def from_params(variables) -> tuple[Structure, Callable]:
    """Structure of a bare parameter pytree of a Dense chain (used when no model is given).

    Kernels are taken in the pytree's order and must chain (:func:`dense_chain`); each is
    followed by its bias (if any) and a ReLU. Returns the structure and the apply function.
    """
    kernels = dense_chain(variables)

    def apply(v, x):
        p = params_of(v)
        for n, (path, _) in enumerate(kernels):
            layer = get_path(p, path)
            x = x @ layer["kernel"]
            if "bias" in layer:
                x = x + layer["bias"]
            if n < len(kernels) - 1:
                x = jax.nn.relu(x)
        return x

    x = jnp.zeros((2, np.shape(kernels[0][1])[0]), jnp.float32)
    return trace_groups(apply, variables, x), apply
