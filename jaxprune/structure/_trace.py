"""The jaxpr walker and the entry points that build a :class:`Structure`.

:class:`Tracer` runs through the equations of ``jax.make_jaxpr(apply)``, dispatching each one
to ``RULES[primitive name]`` (:mod:`jaxprune.structure._rules`), and keeps the union-find of
channel groups with their producers, members and consumers.

A parameter used at several call sites (a module called twice, a recurrent kernel) is one
set of arrays: every axis of it is *bound* to the groups it indexes (:meth:`Tracer.bind`),
and a second call site that binds it to other groups ties them (or freezes them when their
layouts differ). A kernel's output axis produces one group however often it is called.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core as jcore

from jaxprune._flax import apply_inference
from jaxprune._tree import Path, get_path, leaves_with_paths, params_of
from jaxprune.structure._groups import ArraySlot, ChannelGroup, Structure
from jaxprune.structure._labels import Seg, _Info, _UnionFind
from jaxprune.structure._layers import dense_chain
from jaxprune.structure._rules import RULES


class Tracer:
    """Walks a jaxpr, propagating channel labels (:class:`_Info`) equation by equation with
    ``rules[primitive name]`` and collecting each group's producers, members and consumers.

    Group ids are union-find nodes: an element-wise merge of two labelled axes unions their
    groups. ``frozen[g]`` records why a group may not be pruned (the first reason wins);
    ``output`` holds the groups that reach the network output.
    """

    def __init__(self, leaf_paths: Sequence[Path], leaf_shapes: Sequence[tuple[int, ...]],
                 rules: Mapping[str, Callable] = RULES):
        self.leaf_paths = list(leaf_paths)
        self.leaf_shapes = list(leaf_shapes)
        self.rules = rules
        self.uf = _UnionFind()
        self.group_size: list[int] = []
        self.producers: list[list[ArraySlot]] = []
        self.members: list[set[ArraySlot]] = []
        self.consumers: list[list[ArraySlot]] = []
        self.frozen: dict[int, str] = {}
        self.output: set[int] = set()
        self.added: set[int] = set()  # groups merged with another by an element-wise op
        self.bound: dict[tuple[int, int], tuple] = {}     # (leaf, axis) -> segments
        self.produced: dict[tuple[int, int], tuple] = {}  # (leaf, axis) -> its group's label
        self.kernel_positions: dict[Path, int] = {}  # output positions per kernel (x batch)

    # -- bookkeeping used by the rules ------------------------------------------------------
    def new_group(self, size: int, producer: ArraySlot | None = None) -> int:
        """A fresh group of ``size`` channels created by ``producer`` (None: a pseudo-group)."""
        gid = self.uf.new()
        self.group_size.append(int(size))
        self.producers.append([] if producer is None else [producer])
        self.members.append(set())
        self.consumers.append([])
        return gid

    def merge(self, a: int, b: int, residual: bool = False) -> None:
        """Tie groups ``a`` and ``b``; ``residual``: by an element-wise op (a residual add),
        not by a shared parameter or the batch axes of an attention-like product."""
        if residual and self.uf.find(a) != self.uf.find(b):
            self.added.update((a, b))
        self.uf.union(a, b)

    def freeze_group(self, gid: int, why: str) -> None:
        self.frozen.setdefault(gid, why)

    def freeze(self, info: _Info, why: str) -> None:
        for segs in info.chan.values():
            self.freeze_segs(segs, why)

    def freeze_segs(self, segs, why: str) -> None:
        for s in segs:
            self.freeze_group(s.gid, why)

    def layout(self, seg: Seg) -> tuple:
        """What two segments must share to be merged: group size and layout."""
        return (self.group_size[seg.gid], *seg[1:])

    def merge_segs(self, a, b, why: str, residual: bool = False) -> None:
        """Tie the groups of two labellings of one axis segment by segment (same layouts),
        else freeze all of them with ``why``; ``residual`` as in :meth:`merge`."""
        if [self.layout(s) for s in a] == [self.layout(s) for s in b]:
            for x, y in zip(a, b):
                self.merge(x.gid, y.gid, residual)
        else:
            self.freeze_segs((*a, *b), why)

    def bind(self, leaf: int, axis: int, segs, role: str) -> None:
        """Record that axis ``axis`` of parameter ``leaf`` is indexed by ``segs``, as a
        ``role`` ("member" or "consumer") slot of their groups. Binding the same axis again
        (another call site of a shared module) ties the groups, or freezes them when the
        layouts differ."""
        key = (leaf, axis)
        if key in self.bound:
            self.merge_segs(self.bound[key], segs,
                            "a shared parameter indexes differently laid-out channels "
                            "at two call sites")
        else:
            self.bound[key] = tuple(segs)
        for s in segs:
            if role == "member":
                self.members[s.gid].add(self.slot(leaf, axis, s))
            else:
                self.consumers[s.gid].append(self.slot(leaf, axis, s))

    def produce(self, leaf: int, axis: int) -> tuple[Seg]:
        """Label of the channels that kernel axis ``axis`` creates: one group per kernel axis,
        the same at every call site."""
        key = (leaf, axis)
        if key not in self.produced:
            size = self.leaf_shapes[leaf][axis]
            self.produced[key] = (Seg(self.new_group(size, ArraySlot(self.leaf_paths[leaf], axis)),
                                      1, 1, 0, size),)
        return self.produced[key]

    def count_use(self, leaf: int, out_shape, out_channels: int) -> None:
        """Add the output positions ``prod(out_shape) / out_channels`` of one kernel call."""
        path = self.leaf_paths[leaf]
        positions = math.prod(out_shape) // max(out_channels, 1)
        self.kernel_positions[path] = self.kernel_positions.get(path, 0) + positions

    def opaque(self, shape, why: str, axes=None) -> _Info:
        """Labels for a value the tracer cannot follow (the network input, the result of an
        unsupported op, a channel-padded value): every axis of size > 1 (of ``axes``, default
        all) gets a fresh *frozen* pseudo-group without producers. A channel group that is
        later merged with it element-wise (e.g. a residual add of a sliced/padded shortcut) is
        thereby frozen too, instead of being pruned as if the other operand did not index its
        channels."""
        out = _Info(act=True)
        for ax, n in enumerate(shape):
            if n > 1 and (axes is None or ax in axes):
                gid = self.new_group(n)
                self.frozen[gid] = why
                out.chan[ax] = (Seg(gid, 1, 1, 0, n),)
        return out

    def kernel_leaf(self, info: _Info, ndim: int):
        """Leaf index if ``info`` is a kernel parameter passed straight in, else None."""
        if len(info.porig) != 1 or info.act or info.chan:
            return None
        leaf, amap = info.porig[0]
        path = self.leaf_paths[leaf]
        if (path[-1] != "kernel" or len(self.leaf_shapes[leaf]) != ndim
                or any(amap.get(a) != a for a in range(ndim))):
            return None
        return leaf

    def slot(self, leaf: int, axis: int, seg: Seg) -> ArraySlot:
        """The :class:`ArraySlot` of ``seg`` on axis ``axis`` of parameter ``leaf``."""
        period = None if seg.period == self.group_size[seg.gid] else seg.period
        return ArraySlot(self.leaf_paths[leaf], axis, seg.outer, seg.inner, seg.offset, period)

    # -- the walk ---------------------------------------------------------------------------
    def run(self, jaxpr, in_infos: list[_Info]) -> list[_Info]:
        """Labels of ``jaxpr``'s outputs given those of its inputs."""
        env: dict[Any, _Info] = {}

        def read(v):
            if isinstance(v, jcore.Literal):
                return _Info()
            return env.get(v, _Info())

        for v, info in zip(jaxpr.invars, in_infos):
            env[v] = info
        for eqn in jaxpr.eqns:
            for v, info in zip(eqn.outvars, self.apply_rule(eqn, [read(v) for v in eqn.invars])):
                env[v] = info
        return [read(v) for v in jaxpr.outvars]

    def apply_rule(self, eqn, ins: list[_Info]) -> list[_Info]:
        """``rules[name](...)``; an op without a rule (or whose rule declines) freezes every
        group it touches and gives its outputs frozen pseudo-labels: conservative, never wrong."""
        name = eqn.primitive.name
        in_shapes = [_shape(v) for v in eqn.invars]
        out_shapes = [_shape(v) for v in eqn.outvars]
        rule = self.rules.get(name)
        outs = None if rule is None else rule(self, eqn, ins, in_shapes, out_shapes)
        if outs is not None:
            return outs
        for info in ins:
            self.freeze(info, f"unsupported op '{name}'")
        return [self.opaque(shape, f"merged with the output of unsupported op '{name}'")
                for shape in out_shapes]

    # -- result -----------------------------------------------------------------------------
    def groups(self) -> list[ChannelGroup]:
        """One :class:`ChannelGroup` per union-find class with a producer; it is prunable
        unless frozen, reaching the output, or read by no layer, and ``residual`` when an
        element-wise op merged it with another group. It is named after its first producer's
        module (``module:axis`` when that kernel creates several groups)."""
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
            prod_axes = {(s.path, s.axis) for s in producers}
            members = sorted((m for m in members if (m.path, m.axis) not in prod_axes),
                             key=lambda s: (s.path, s.axis, s.offset))
            name = "/".join(producers[0].path[1:-1])
            leaf = self.leaf_paths.index(producers[0].path)
            if sum(k[0] == leaf for k in self.produced) > 1:  # e.g. DenseGeneral((H, D))
                name += f":{producers[0].axis}"
            size = self.group_size[next(g for g in gids if self.producers[g])]
            result.append(ChannelGroup(
                name=name, size=size, producers=tuple(producers),
                members=tuple(members), consumers=tuple(dict.fromkeys(consumers)),
                prunable=not reason, reason=reason,
                residual=any(g in self.added for g in gids)))
        return result


def _shape(v) -> tuple[int, ...]:
    return tuple(getattr(v.aval, "shape", ()))


def trace_groups(apply_fn: Callable, variables: Any, example_input: jax.Array) -> Structure:
    """Structure of ``apply_fn(variables, x)`` found by tracing its jaxpr.

    ``variables`` is the full variables dict (``{'params': ..., 'batch_stats': ...}``);
    ``apply_fn`` must run the network in inference mode.
    """
    flat = leaves_with_paths(variables)
    paths = [p for p, _ in flat]
    leaves = [leaf for _, leaf in flat]
    treedef = jax.tree_util.tree_structure(variables)

    def flat_apply(flat, x):
        return apply_fn(jax.tree_util.tree_unflatten(treedef, flat), x)

    closed = jax.make_jaxpr(flat_apply)(leaves, example_input)
    tracer = Tracer(paths, [tuple(np.shape(l)) for l in leaves])
    in_infos = [_Info(porig=((k, {a: a for a in range(np.ndim(l))}),))
                for k, l in enumerate(leaves)]
    # the example input indexes no prunable channels, but a group merged with it element-wise
    # (a residual add of the raw input) must not be pruned: label it with frozen pseudo-groups
    in_infos.append(tracer.opaque(tuple(example_input.shape), "merged with the network input"))
    outs = tracer.run(closed.jaxpr, in_infos)
    for info in outs:
        for segs in info.chan.values():
            tracer.output.update(s.gid for s in segs)
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
