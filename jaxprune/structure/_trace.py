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
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core as jcore

from jaxprune._flax import apply_inference, as_example
from jaxprune._tree import Path, get_path, leaves_with_paths, params_of
from jaxprune.structure._groups import ArraySlot, ChannelGroup, Structure
from jaxprune.structure._labels import Layout, Seg, _Info, _UnionFind, product_layouts
from jaxprune.structure._layers import dense_chain
from jaxprune.structure._rules import RULES


class Tracer:
    """Walks a jaxpr, propagating channel labels (:class:`_Info`) equation by equation with
    ``rules[primitive name]`` and collecting each group's producers, members and consumers.

    Group ids are union-find nodes: an element-wise merge of two labelled axes unions their
    groups. ``frozen[g]`` records why a group may not be pruned (the first reason wins);
    ``output`` holds the groups that reach the network output.
    """

    def __init__(
        self,
        leaf_paths: Sequence[Path],
        leaf_shapes: Sequence[tuple[int, ...]],
        rules: Mapping[str, Callable] = RULES,
    ):
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
        self.bound: dict[tuple[int, int], tuple] = {}  # (leaf, axis) -> segments
        self.produced: dict[tuple[int, int], tuple] = {}  # (leaf, axis) -> its group's label
        self.kernel_positions: dict[Path, int] = {}  # output positions per kernel (x batch)
        self.layer_params = _layer_params(self.leaf_paths)
        # (child, parent, Layout, split id): a channel axis split into blocks or windows
        self.links: list[tuple[int, int, Layout, int]] = []
        self.splits = 0
        self.tied_splits: set[int] = set()
        self.batch: set[int] = set()  # groups on a batch axis of an attention-like product
        self.refined: dict[tuple, int] = {}  # (class, layouts) -> the part tied by refine()

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

    def merge_segs(self, a, b, why: str, residual: bool = False, refine: bool = False) -> None:
        """Tie the groups of two labellings of one axis segment by segment (same layouts),
        else freeze all of them with ``why``; ``residual`` as in :meth:`merge`; ``refine``:
        a plain label meeting a laid-out one is split to match it (:meth:`refine`)."""
        if [self.layout(s) for s in a] == [self.layout(s) for s in b]:
            for x, y in zip(a, b):
                self.merge(x.gid, y.gid, residual)
        elif not (
            refine
            and len(a) == len(b) == 1
            and (self.refine(a[0], b[0]) or self.refine(b[0], a[0]))
        ):
            self.freeze_segs((*a, *b), why)

    def split_group(
        self, seg: Seg, layouts: Sequence[Layout], tied: bool = False
    ) -> tuple[Seg, ...]:
        """Fresh groups, one per :class:`Layout` over the channels of ``seg``'s group, that
        take over its arrays (:meth:`groups`): a reshape ``(H·D) -> (H, D)`` gives a group of
        H heads (blocks of D channels) and one of D, a split along channels one window per
        piece. ``tied``: the parts are prunable only if they end up in one group. Returns
        their plain labels."""
        self.splits += 1
        if tied:
            self.tied_splits.add(self.splits)
        out = []
        for lay in layouts:
            child = self.new_group(lay.size)
            self.links.append((child, seg.gid, lay, self.splits))
            out.append(Seg(child, 1, 1, 0, lay.size))
        return tuple(out)

    def refine(self, a: Seg, b: Seg) -> bool:
        """Tie a plain label ``a`` of ``n`` channels with a laid-out label ``b`` (``outer ·
        size · inner = n``, e.g. one key head repeated for ``inner`` query heads) by splitting
        ``a``'s group into the product ``(outer, size, inner)`` and tying the middle factor
        with ``b``'s group; the other factors (the query heads sharing a key head) are
        frozen. False when the two are not of that form."""
        n = self.group_size[a.gid]
        if a[1:] != (1, 1, 0, n) or b.offset != 0 or b.period != self.group_size[b.gid]:
            return False
        if b.outer * b.period * b.inner != n or (b.outer, b.inner) == (1, 1):
            return False
        layouts = product_layouts([b.outer, b.period, b.inner])
        key = (self.uf.find(a.gid), tuple(layouts))
        if key in self.refined:  # split this way before (the keys, now the values): reuse
            self.merge(self.refined[key], b.gid)
            return True
        kept = [lay for k, lay in enumerate(layouts) if lay.size > 1 or k == 1]
        children = self.split_group(a, kept)
        for lay, child in zip(kept, children):
            if lay is layouts[1]:
                self.merge(child.gid, b.gid)
                self.batch.add(child.gid)
                self.refined[key] = child.gid
            else:
                self.freeze_group(
                    child.gid,
                    "query heads that share a key/value head (whole KV groups are pruned)",
                )
        return True

    def bind(self, leaf: int, axis: int, segs, role: str) -> None:
        """Record that axis ``axis`` of parameter ``leaf`` is indexed by ``segs``, as a
        ``role`` ("member" or "consumer") slot of their groups. Binding the same axis again
        (another call site of a shared module) ties the groups, or freezes them when the
        layouts differ."""
        key = (leaf, axis)
        if key in self.bound:
            self.merge_segs(
                self.bound[key],
                segs,
                "a shared parameter indexes differently laid-out channels at two call sites",
            )
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
            self.produced[key] = (
                Seg(self.new_group(size, ArraySlot(self.leaf_paths[leaf], axis)), 1, 1, 0, size),
            )
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
        if (
            path[-1] != "kernel"
            or len(self.leaf_shapes[leaf]) != ndim
            or any(amap.get(a) != a for a in range(ndim))
        ):
            return None
        return leaf

    def param_axes(self, info: _Info, ndim: int) -> tuple[int, dict[int, int]] | None:
        """``(leaf, {value axis: parameter axis})`` if ``info`` is a whole kernel passed in,
        maybe transposed or cast (:attr:`layer_params`), else None."""
        if len(info.porig) != 1 or info.act or info.chan:
            return None
        leaf, amap = info.porig[0]
        if (
            leaf not in self.layer_params
            or len(self.leaf_shapes[leaf]) != ndim
            or sorted(amap.values()) != list(range(ndim))
        ):
            return None
        return leaf, {v: p for p, v in amap.items()}

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
        return [
            self.opaque(shape, f"merged with the output of unsupported op '{name}'")
            for shape in out_shapes
        ]

    # -- result -----------------------------------------------------------------------------
    def _classes(self) -> dict[int, _Class]:
        """Every union-find class with its own arrays, reason and residual flag."""
        classes: dict[int, _Class] = {}
        for gid in range(len(self.group_size)):
            c = classes.setdefault(self.uf.find(gid), _Class(self.group_size[gid]))
            c.gids.append(gid)
            c.producers += self.producers[gid]
            c.consumers += self.consumers[gid]
            c.members |= self.members[gid]
            if not c.reason:
                c.reason = self.frozen.get(gid) or (
                    "channels reach the network output" if gid in self.output else ""
                )
            c.residual |= gid in self.added
        return classes

    def _hand_down(self, classes: dict[int, _Class]) -> None:
        """Give the arrays of every split class to the classes split off it (a class split
        twice in different ways, or tied with its own part, is frozen), recursively from the
        first parent, so each final class holds all arrays its channels index."""
        parents: dict[int, list] = {}
        splits: dict[int, set] = {}
        for child, parent, lay, split in self.links:
            c, p = self.uf.find(child), self.uf.find(parent)
            parents.setdefault(c, []).append((p, lay))
            splits.setdefault(p, set()).add(split)
        for p, ids in splits.items():
            classes[p].split = True
            if len(ids) > 1:
                classes[p].reason = classes[p].reason or "channels split in two different ways"
        done: set[int] = set()

        def resolve(root, seen=()):
            if root in done:
                return
            if root in seen:
                classes[root].reason = classes[root].reason or "a split tied with its own part"
                return
            c = classes[root]
            for p, lay in parents.get(root, ()):
                resolve(p, (*seen, root))
                c.inherit(classes[p], lay)
            done.add(root)

        for root in list(classes):
            resolve(root)
        self._check_parts(classes)

    def _check_parts(self, classes: dict[int, _Class]) -> None:
        """Freeze the parts of splits whose pruning the model's code may not follow: a part
        of a reshape-split channel axis that is not a batch axis of an attention-like
        product (heads are; a hidden layer reshaped and merged back is left whole), and the
        pieces of a ``split`` along channels unless every piece keeps the same prunable
        groups (``jnp.split(x, n)`` cuts equal pieces)."""
        children: dict[int, set] = {}
        for child, parent, _, _ in self.links:
            children.setdefault(self.uf.find(parent), set()).add(self.uf.find(child))

        def leaves(root, seen=()):
            if not classes[root].split or root in seen:
                return {root}
            return set().union(*(leaves(c, (*seen, root)) for c in children[root]))

        for child, _, _, split in self.links:
            c = classes[self.uf.find(child)]
            if split not in self.tied_splits and not c.split and not self.batch & set(c.gids):
                c.reason = c.reason or (
                    "reshape splits a channel axis (its parts are pruned "
                    "only as heads: batch axes of an attention-like "
                    "product)"
                )
        for split in self.tied_splits:
            pieces = [self.uf.find(c) for c, _, _, k in self.links if k == split]
            free = [{d for d in leaves(p) if not classes[d].reason} for p in pieces]
            if any(f != free[0] for f in free):
                for d in set().union(*free):
                    classes[d].reason = (
                        "split cuts a channel axis into pieces not tied to "
                        "each other (they must keep equal widths)"
                    )

    def groups(self) -> list[ChannelGroup]:
        """One :class:`ChannelGroup` per union-find class with a producer (split classes
        hand their arrays to their parts, :meth:`_hand_down`); it is prunable unless frozen,
        reaching the output, or read by no layer, and ``residual`` when an element-wise op
        merged it with another group. It is named after its first producer's module
        (``module:axis`` when that kernel creates several groups; ``#k`` tells apart parts
        of one split that stay separate)."""
        classes = self._classes()
        self._hand_down(classes)
        result, names = [], {}
        for _root, c in sorted(classes.items()):
            if c.split or not c.producers:
                continue  # handed down, or only pseudo-groups (input / untracked values)
            reason = c.reason or ("" if c.consumers else "no layer reads these channels")
            prod_axes = {(s.path, s.axis) for s in c.producers}
            members = sorted(
                (m for m in c.members if (m.path, m.axis) not in prod_axes),
                key=lambda s: (s.path, s.axis, s.offset),
            )
            name = "/".join(c.producers[0].path[1:-1])
            leaf = self.leaf_paths.index(c.producers[0].path)
            if sum(k[0] == leaf for k in self.produced) > 1:  # e.g. DenseGeneral((H, D))
                name += f":{c.producers[0].axis}"
            names[name] = names.get(name, 0) + 1
            if names[name] > 1:
                name += f"#{names[name] - 1}"
            result.append(
                ChannelGroup(
                    name=name,
                    size=c.size,
                    producers=tuple(dict.fromkeys(c.producers)),
                    members=tuple(members),
                    consumers=tuple(dict.fromkeys(c.consumers)),
                    prunable=not reason,
                    reason=reason,
                    residual=c.residual,
                )
            )
        return result


class _Class:
    """A union-find class of groups while :meth:`Tracer.groups` assembles it."""

    def __init__(self, size: int):
        self.size = size
        self.gids: list[int] = []
        self.producers: list[ArraySlot] = []
        self.members: set[ArraySlot] = set()
        self.consumers: list[ArraySlot] = []
        self.reason = ""
        self.residual = False
        self.split = False  # its channels were split into other classes

    def inherit(self, parent: _Class, lay: Layout) -> None:
        """Take ``parent``'s arrays at layout ``lay`` (this class is a part of it), and its
        reason to be left whole."""
        slots = {
            "producers": parent.producers,
            "members": parent.members,
            "consumers": parent.consumers,
        }
        for role, parent_slots in slots.items():
            for slot in parent_slots:
                new = compose(slot, parent.size, lay)
                if new is None:
                    self.reason = self.reason or "a split of a laid-out channel axis"
                elif role == "members":
                    self.members.add(new)
                else:
                    getattr(self, role).append(new)
        self.reason = self.reason or parent.reason
        self.residual |= parent.residual


def compose(slot: ArraySlot, parent_size: int, lay: Layout) -> ArraySlot | None:
    """``slot`` (an array axis indexed by a parent group of ``parent_size`` channels) as the
    slot of the part at layout ``lay``; None when it is not one outer/period/inner layout."""
    period = parent_size if slot.period is None else slot.period
    if period % lay.inner or slot.offset % lay.inner:
        return None
    inner = slot.inner * lay.inner
    if lay.outer == 1:
        outer, period, offset = slot.outer, period // lay.inner, slot.offset // lay.inner
    elif slot.offset == 0 and period == lay.outer * lay.period * lay.inner:
        outer, period, offset = slot.outer * lay.outer, lay.period, 0
    else:
        return None
    offset += lay.offset
    return ArraySlot(
        slot.path,
        slot.axis,
        outer,
        inner,
        offset,
        None if (period, offset) == (lay.size, 0) else period,
    )


def _layer_params(paths: Sequence[Path]) -> set[int]:
    """Indices of the parameters a ``dot_general`` may read as a kernel: every ``'kernel'``,
    and any parameter of a layer that holds no sub-layer (a custom einsum layer's ``w``,
    an attention's own ``q``/``k``/``v``), whose shape follows the layer's fields. A
    parameter of a module that also holds sub-layers is a constant (its shape may be
    written in the code, beyond what a rebuild can change)."""
    modules = {p[:-1] for p in paths if p[0] == "params"}
    parents = {m[:k] for m in modules for k in range(1, len(m))}
    return {
        k
        for k, p in enumerate(paths)
        if p[0] == "params" and (p[-1] == "kernel" or p[:-1] not in parents)
    }


def _shape(v) -> tuple[int, ...]:
    return tuple(getattr(v.aval, "shape", ()))


def trace_groups(
    apply_fn: Callable, variables: Any, example_input, rules: Mapping[str, Callable] | None = None
) -> Structure:
    """Structure of ``apply_fn(variables, x)`` found by tracing its jaxpr.

    ``variables`` is the full variables dict (``{'params': ..., 'batch_stats': ...}``);
    ``apply_fn`` must run the network in inference mode. ``example_input``: an array, or an
    :class:`~jaxprune._flax.Example` (several inputs of any dtype), passed to ``apply_fn``
    as it is; only its shapes and dtypes matter. ``rules``: extra or replacing
    per-primitive rules for this trace (:func:`~jaxprune.structure.register_rule`).
    """
    tracer, _ = walk(apply_fn, variables, example_input, {**RULES, **(rules or {})})
    batch = np.shape(jax.tree_util.tree_leaves(example_input)[0])[0]
    return Structure(
        groups=tuple(tracer.groups()),
        shapes=dict(zip(tracer.leaf_paths, map(tuple, tracer.leaf_shapes))),
        kernel_positions={p: n // batch for p, n in tracer.kernel_positions.items()},
    )


def walk(
    apply_fn: Callable, variables: Any, example_input, rules: Mapping[str, Callable]
) -> tuple[Tracer, Any]:
    """``(tracer, closed jaxpr)``: a :class:`Tracer` with exactly ``rules`` run over the
    jaxpr of ``apply_fn(variables, x)`` (its leaves first, then the input arrays), the
    groups reaching the output marked; :func:`trace_groups` collects its groups. An
    opt-in tracing mode (:mod:`jaxprune.hidden`) passes its own rules and reads the
    tracer's bookkeeping afterwards."""
    flat = leaves_with_paths(variables)
    paths = [p for p, _ in flat]
    leaves = [leaf for _, leaf in flat]
    treedef = jax.tree_util.tree_structure(variables)

    def flat_apply(flat, x):
        return apply_fn(jax.tree_util.tree_unflatten(treedef, flat), x)

    closed = jax.make_jaxpr(flat_apply)(leaves, example_input)
    tracer = Tracer(paths, [tuple(np.shape(l)) for l in leaves], rules)
    in_infos = [
        _Info(porig=((k, {a: a for a in range(np.ndim(l))}),)) for k, l in enumerate(leaves)
    ]
    # the example input indexes no prunable channels, but a group merged with it element-wise
    # (a residual add of the raw input) must not be pruned: label it with frozen pseudo-groups
    inputs = jax.tree_util.tree_leaves(example_input)
    in_infos += [tracer.opaque(tuple(np.shape(x)), "merged with the network input") for x in inputs]
    outs = tracer.run(closed.jaxpr, in_infos)
    for info in outs:
        for segs in info.chan.values():
            tracer.output.update(s.gid for s in segs)
    return tracer, closed


def from_model(model, variables, input_shape) -> Structure:
    """Structure of a Flax linen ``model`` (inference mode) for inputs of ``input_shape``
    (float32, no batch axis) or an :class:`~jaxprune._flax.Example` (inputs of any dtype).

    A batch of 2 is traced so the batch axis never coincides with a size-1 channel axis.

    >>> import jax, jax.numpy as jnp
    >>> from jaxprune.models import LeNet300100
    >>> model = LeNet300100(widths=(32, 16))
    >>> variables = model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))
    >>> struct = from_model(model, variables, (28, 28, 1))
    >>> [(g.name, g.size, g.prunable) for g in struct.groups]
    [('dense_0', 32, True), ('dense_1', 16, True), ('head', 10, False)]
    """
    x = as_example(input_shape).zeros(2)
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
