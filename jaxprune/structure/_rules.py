"""Per-primitive rules of the channel tracer: ``RULES[primitive name] -> rule``.

A rule is ``rule(tracer, eqn, ins, in_shapes, out_shapes) -> list[_Info] | None``: it maps the
labels of the equation's inputs (``ins[k].chan``: axis -> segments) to labels of its outputs,
using the tracer's bookkeeping (:class:`jaxprune.structure._trace.Tracer`: ``new_group``,
``merge_segs``, ``freeze``, ``bind``, ``produce``, ``opaque``). Returning ``None`` means "not
understood": the tracer then freezes every group the equation touches. Supporting a new
primitive is one entry in :data:`RULES` plus one test in ``tests/test_structure_rules.py``.

Layouts. A segment ``Seg(g, outer, inner, offset, period)`` on an axis of
``outer · period · inner`` entries says that channel ``c`` of group ``g`` owns the entries
``(o · period + offset + c) · inner + i``; a plain channel axis is one segment with
``offset = 0, period = size_g``, a concatenation along the channel axis gives one segment
per operand. A reshape that merges a labelled axis with its neighbours multiplies ``outer``
by the product of the merged axes before it and ``inner`` by the product of those after it.

Splits. A reshape that splits a channel axis into ``(A1, ..., An)`` (``(H·D) -> (H, D)``:
heads) splits its group into one group per factor (:meth:`Tracer.split_group`): the heads
are a group of H blocks of D channels, head_dim a group of D channels repeated H times, and
the arrays of the parent (the Dense kernel's output axis, its bias, the kernels that read the
unsplit value) are handed to both with those layouts. What happens downstream decides which
part is prunable: an attention product ties the heads of q, k and v and freezes head_dim,
which it contracts. A ``split`` of a channel axis gives one
group per piece (a window of the parent's channels), prunable when the pieces are tied
again: fused qkv head by head by the attention, SwiGLU's fused gate/up by their product.

Grouped-query attention. The query heads reshaped to ``(kv_heads, group)`` split into a
KV-group part, tied to the key/value heads by the scores' batch axis, and a within-group
part that the product with the (shared) key head mixes: it is frozen. So whole KV groups are
pruned (a key/value head with its query heads), never single query heads: every group keeps
its ``group`` query heads, the smaller model keeps ``num_heads = group · num_kv_heads``
(``num_heads % num_kv_heads == 0``), the query-to-key/value sharing it was trained with, and a
smaller KV cache. Keys repeated to the query heads (``jnp.repeat``) meet the query heads'
plain label on a batch axis and are tied the same way (:meth:`Tracer.refine`).

Rules never leave an activation's channel axis unlabelled: what they cannot follow gets
frozen pseudo-labels (``tracer.opaque``), so a bias added to it is never taken for a bare
parameter and no group merged with it can be pruned.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from typing import Any

from jaxprune.structure._labels import Layout, _Info, product_layouts

_ELEMENTWISE = {
    "add",
    "sub",
    "mul",
    "div",
    "max",
    "min",
    "pow",
    "neg",
    "exp",
    "exp2",
    "log",
    "log1p",
    "tanh",
    "logistic",
    "rsqrt",
    "sqrt",
    "abs",
    "sign",
    "integer_pow",
    "erf",
    "erfc",
    "convert_element_type",
    "copy",
    "copy_p",
    "select_n",
    "square",
    "expm1",
    "sin",
    "cos",
    "stop_gradient",
    "reduce_precision",
    "clamp",
    "nextafter",
    "atan2",
    "rem",
    "floor",
    "ceil",
    "round",
    "is_finite",
    "not",
    "and",
    "or",
    "gt",
    "ge",
    "lt",
    "le",
    "eq",
    "ne",
    "cbrt",
}
_ADDITIVE = {"add", "sub", "add_any"}
_REDUCTIONS = {
    "reduce_sum",
    "reduce_max",
    "reduce_min",
    "reduce_prod",
    "argmax",
    "argmin",
    "reduce_and",
    "reduce_or",
}
_WINDOWED = {
    "reduce_window_max",
    "reduce_window_sum",
    "reduce_window_min",
    "reduce_window",
    "cumsum",
    "cummax",
}
# call-like primitives whose sub-jaxpr maps its invars/outvars one-to-one onto the equation's
_CALLS = {
    "jit",
    "pjit",
    "closed_call",
    "call",
    "core_call",
    "remat2",
    "checkpoint",
    "custom_jvp_call",
    "custom_jvp_call_jaxpr",
    "custom_vjp_call",
    "custom_vjp_call_jaxpr",
}


# -- label algebra ----------------------------------------------------------------------------
def map_axes(tracer, info: _Info, amap: dict[int, int]) -> _Info:
    """Relabel axes by ``amap`` (input axis -> output axis); unmapped labels freeze (a
    LayerNorm/RMSNorm statistic reduces the channel axis: every channel is normalised by
    all of them, so none can go)."""
    out = _Info(act=info.act)
    for ax, segs in info.chan.items():
        if ax in amap:
            out.chan[amap[ax]] = segs
        else:
            tracer.freeze_segs(segs, "channel axis removed")
    out.porig = tuple(
        (leaf, {p: amap[v] for p, v in m.items() if v in amap}) for leaf, m in info.porig
    )
    return out


def untracked(tracer, info: _Info, out: _Info, axes, shape, why: str) -> _Info:
    """Give axes ``axes`` of ``out`` (derived from ``info``) frozen pseudo-labels when ``info``
    is not a plain constant: an activation or a parameter whose channels the tracer lost
    there must freeze any group it is later merged with, never pass as untouched."""
    if info.act or info.chan or info.porig:
        out.chan.update(tracer.opaque(shape, why, axes=set(axes)).chan)
    return out


def reshape_labels(tracer, info: _Info, old: tuple[int, ...], new: tuple[int, ...]) -> _Info:
    """Split the reshape ``old -> new`` into blocks of equal product; a block that merges
    several input axes into one output axis keeps each labelled axis as a layout
    (``outer·before``, ``inner·after``); a block that splits a labelled axis freezes it."""
    out = _Info(act=info.act)
    i = j = 0
    porig_map: dict[int, int] = {}
    lost: list[int] = []  # output axes of blocks that are not 1:1 (parameter axes lost there)
    while i < len(old) or j < len(new):
        bi, bj = [i], [j]
        pi = old[i] if i < len(old) else 1
        pj = new[j] if j < len(new) else 1
        i, j = i + 1, j + 1
        while pi != pj:
            if pi < pj and i < len(old):
                pi *= old[i]
                bi.append(i)
                i += 1
            elif j < len(new):
                pj *= new[j]
                bj.append(j)
                j += 1
            else:
                break
        bi = [a for a in bi if a < len(old)]
        bj = [b for b in bj if b < len(new)]
        big_i = [a for a in bi if old[a] != 1]
        big_j = [b for b in bj if new[b] != 1]
        if len(big_i) == 1 and len(big_j) == 1:
            porig_map[big_i[0]] = big_j[0]
        else:
            lost += big_j
        for a in bi:
            if a not in info.chan or old[a] == 1:
                continue
            segs = info.chan[a]
            if len(big_j) == 1:  # merge (or identity): labelled axis becomes a layout
                before = math.prod(old[b] for b in big_i if b < a)
                after = math.prod(old[b] for b in big_i if b > a)
                out.chan[big_j[0]] = out.chan.get(big_j[0], ()) + tuple(
                    s._replace(outer=s.outer * before, inner=s.inner * after) for s in segs
                )
            elif len(big_i) == 1 and plain(tracer, segs, old[a]):  # (H·D) -> (H, D)
                parts = tracer.split_group(segs[0], product_layouts([new[b] for b in big_j]))
                for b, part in zip(big_j, parts):
                    out.chan[b] = (part,)
            elif len(big_i) == 1 and all(s[1:3] == (1, 1) for s in segs):
                tracer.freeze_segs(segs, "reshape splits a concatenated channel axis")
            else:
                tracer.freeze_segs(segs, "unsupported reshape")
    out.porig = tuple(
        (leaf, {p: porig_map[v] for p, v in m.items() if v in porig_map}) for leaf, m in info.porig
    )
    if info.porig and not info.act:
        untracked(
            tracer,
            _Info(porig=info.porig),
            out,
            [b for b in lost if b not in out.chan],
            new,
            "merged with a reshaped parameter",
        )
    return out


def combine(tracer, ins, in_shapes, out_shape, skip=None, additive: bool = False) -> _Info:
    """Labels of an op whose operands line up axis by axis with its output (element-wise
    ops; a concatenation, except along its axis ``skip``). Labels on the same axis merge
    their groups segment by segment; ``additive`` (an ``add``/``sub``: a residual add ties
    producers) marks the merged group residual, a product (a SwiGLU gate) does not;
    parameter-derived operands (``porig``) aligned with a labelled axis are bound to its
    groups as members (bias, BN); an activation that carries no label on a labelled axis
    freezes it (its channels are not tracked)."""
    out = _Info(act=any(info.act for info in ins))
    rank = len(out_shape)

    def aligned(shape, ax):
        return len(shape) == rank and shape[ax] == out_shape[ax]

    for info, shape in zip(ins, in_shapes):
        for ax, segs in info.chan.items():
            if ax == skip:
                continue
            if not aligned(shape, ax):
                tracer.freeze_segs(segs, "implicit broadcast of a channel axis")
            elif ax in out.chan:
                tracer.merge_segs(
                    out.chan[ax], segs, "incompatible element-wise merge", residual=additive
                )
            else:
                out.chan[ax] = segs
    for info, shape in zip(ins, in_shapes):
        for ax, segs in out.chan.items():
            if info.act and ax not in info.chan and ax not in info.uniform and aligned(shape, ax):
                tracer.freeze_segs(segs, "merged with a value whose channels are not tracked")
    out.uniform = frozenset(
        ax
        for ax in range(rank)
        if ax not in out.chan
        and all(
            len(shape) != rank
            or shape[ax] == 1
            or ax in info.uniform
            or not (info.act or info.chan)
            for info, shape in zip(ins, in_shapes)
        )
    )
    if out.chan:
        for info, shape in zip(ins, in_shapes):
            for leaf, amap in info.porig:
                for pax, vax in amap.items():
                    if vax in out.chan and aligned(shape, vax):
                        tracer.bind(leaf, pax, out.chan[vax], "member")
    elif not out.act:  # a value computed from parameters only (e.g. scale * rsqrt(var + eps))
        out.porig = tuple(
            o for info, shape in zip(ins, in_shapes) if len(shape) == rank for o in info.porig
        )
    return out


def cut(tracer, info: _Info, axes, out_shape, why: str, merged_why: str) -> _Info:
    """Labels of ``info`` cut (sliced, padded) along ``axes``: labels on the other axes pass;
    a cut channel axis freezes its groups (``why``) and gets frozen pseudo-labels
    (``merged_why``: it cannot be merged with a prunable group), as does a cut parameter
    axis."""
    cut_axes = set(axes)
    out = _Info(
        chan={a: s for a, s in info.chan.items() if a not in cut_axes},
        act=info.act,
        porig=tuple(
            (leaf, {p: v for p, v in m.items() if v not in cut_axes}) for leaf, m in info.porig
        ),
    )
    for ax in cut_axes & set(info.chan):
        tracer.freeze_segs(info.chan[ax], why)
    lost = [a for a in cut_axes if a in info.chan or any(a in m.values() for _, m in info.porig)]
    return untracked(tracer, info, out, lost, out_shape, merged_why)


# -- rules ------------------------------------------------------------------------------------
def elementwise(tracer, eqn, ins, in_shapes, out_shapes):
    """Same-rank operands (size-1 axes broadcast): :func:`combine`; scalars carry nothing.
    Only an ``add``/``sub`` makes the groups it ties residual."""
    if len(eqn.outvars) != 1:
        return None
    return [
        combine(tracer, ins, in_shapes, out_shapes[0], additive=eqn.primitive.name in _ADDITIVE)
    ]


def broadcast_in_dim(tracer, eqn, ins, in_shapes, out_shapes):
    """Input axis ``a`` becomes output axis ``broadcast_dimensions[a]`` (if not stretched);
    new and stretched axes are ``uniform`` (the value does not vary along them)."""
    dims = eqn.params["broadcast_dimensions"]
    amap = {
        a: dims[a] for a in range(len(in_shapes[0])) if in_shapes[0][a] == out_shapes[0][dims[a]]
    }
    out = map_axes(tracer, ins[0], amap)
    kept = {amap[a] for a in amap if a in ins[0].uniform}
    out.uniform = frozenset(kept | (set(range(len(out_shapes[0]))) - set(amap.values())))
    return [out]


def reshape(tracer, eqn, ins, in_shapes, out_shapes):
    return [reshape_labels(tracer, ins[0], in_shapes[0], out_shapes[0])]


def squeeze(tracer, eqn, ins, in_shapes, out_shapes):
    dims = {d % len(in_shapes[0]) for d in eqn.params["dimensions"]}
    keep = [a for a in range(len(in_shapes[0])) if a not in dims]
    return [map_axes(tracer, ins[0], {a: k for k, a in enumerate(keep)})]


def transpose(tracer, eqn, ins, in_shapes, out_shapes):
    """Output axis ``k`` is input axis ``permutation[k]``."""
    perm = eqn.params["permutation"]
    return [map_axes(tracer, ins[0], {p: k for k, p in enumerate(perm)})]


def reduction(tracer, eqn, ins, in_shapes, out_shapes):
    """Reduced axes drop their labels (a channel axis reduced away freezes its group)."""
    axes = set(eqn.params["axes"])
    keep = [a for a in range(len(in_shapes[0])) if a not in axes]
    return [map_axes(tracer, ins[0], {a: k for k, a in enumerate(keep)})]


def windowed(tracer, eqn, ins, in_shapes, out_shapes):
    """Pooling / cumulative ops: labels pass unless the window spans the channel axis."""
    info = ins[0]
    dims = eqn.params.get("window_dimensions")
    strides = eqn.params.get("window_strides")
    for ax, segs in info.chan.items():
        if dims is None:  # cumulative op along ``axis``
            mixes = eqn.params.get("axis", ax) == ax
        else:
            mixes = dims[ax] != 1 or strides[ax] != 1
        if mixes:
            tracer.freeze_segs(segs, f"{eqn.primitive.name} mixes channels")
    out = _Info(chan=dict(info.chan), act=info.act)
    return [out] + [
        tracer.opaque(s, f"merged with an output of {eqn.primitive.name}") for s in out_shapes[1:]
    ]


def pad(tracer, eqn, ins, in_shapes, out_shapes):
    """Padding along a channel axis freezes the group; the padded axis indexes other channels
    than the input's group, so it gets a fresh frozen pseudo-group of the new size."""
    cfg = eqn.params["padding_config"]
    padded = [ax for ax in range(len(cfg)) if tuple(cfg[ax]) != (0, 0, 0)]
    return [
        cut(
            tracer,
            ins[0],
            padded,
            out_shapes[0],
            "padded along the channel axis",
            "merged with a value padded along its channel axis",
        )
    ]


def plain(tracer, segs, n: int) -> bool:
    """True when ``segs`` label an axis of ``n`` entries with one whole group, unlaid-out."""
    return len(segs) == 1 and segs[0][1:] == (1, 1, 0, n) and tracer.group_size[segs[0].gid] == n


def slice_(tracer, eqn, ins, in_shapes, out_shapes):
    """``slice`` / ``dynamic_slice``: an axis is cut unless the whole of it is taken."""
    shape = in_shapes[0]
    if eqn.primitive.name == "slice":
        strides = eqn.params["strides"] or (1,) * len(shape)
        spans = zip(eqn.params["start_indices"], eqn.params["limit_indices"], strides)
        whole = [tuple(s) == (0, n, 1) for s, n in zip(spans, shape)]
    else:
        whole = [k == n for k, n in zip(eqn.params["slice_sizes"], shape)]
    axes = [a for a, w in enumerate(whole) if not w]
    name = eqn.primitive.name
    return [
        cut(
            tracer,
            ins[0],
            axes,
            out_shapes[0],
            f"{name} cuts a channel axis",
            f"merged with a value cut by {name}",
        )
    ]


def split(tracer, eqn, ins, in_shapes, out_shapes):
    """Every output is a cut of the input along ``axis``; along a plain channel axis each
    piece is a part of its group (:func:`pieces`)."""
    axis = eqn.params["axis"]
    ends = list(itertools.accumulate(s[axis] for s in out_shapes))
    spans = list(zip([0, *ends[:-1]], ends))
    out = pieces(tracer, ins[0], [axis], axis, in_shapes[0][axis], spans, out_shapes, "split")
    if out is not None:
        return out
    return [
        cut(
            tracer,
            ins[0],
            [axis],
            s,
            "split cuts a channel axis",
            "merged with a value cut by split",
        )
        for s in out_shapes
    ]


def pieces(tracer, info: _Info, axes, axis: int, n: int, spans, out_shapes, name: str):
    """Outputs of cutting ``axes`` of ``info``'s value where ``axis`` (a plain channel axis
    of ``n`` entries) is cut to ``spans`` (``(start, stop)`` per output): the piece of
    ``axis`` is a part of the group (:meth:`Tracer.split_group` with ``tied=True``: the
    pieces stay prunable only when tied to each other, so that they keep equal widths and
    ``jnp.split(x, n)`` still cuts the smaller value where it cut the dense one), the other
    axes are cut as :func:`cut` does. None when ``axis`` is not one plain group."""
    segs = info.chan.get(axis, ())
    if not plain(tracer, segs, n):
        return None
    parts = tracer.split_group(
        segs[0], [Layout(stop - start, 1, n, start, 1) for start, stop in spans], tied=True
    )
    rest = _Info(
        chan={a: s for a, s in info.chan.items() if a != axis}, act=info.act, porig=info.porig
    )
    outs = []
    for part, shape in zip(parts, out_shapes):
        out = cut(
            tracer,
            rest,
            axes,
            shape,
            f"{name} cuts a channel axis",
            f"merged with a value cut by {name}",
        )
        out.chan[axis] = (part,)
        outs.append(out)
    return outs


def concatenate(tracer, eqn, ins, in_shapes, out_shapes):
    """Other axes merge as in :func:`combine`; along the concatenated axis each operand's
    segments move to its offset (a layout with ``outer > 1`` or an offset that is not a
    multiple of ``inner`` freezes the axis)."""
    dim = eqn.params["dimension"]
    out_shape = out_shapes[0]
    out = combine(tracer, ins, in_shapes, out_shape, skip=dim)
    if out.porig:  # concatenated parameters: their channels are not followed
        out = untracked(
            tracer,
            out,
            _Info(),
            range(len(out_shape)),
            out_shape,
            "merged with concatenated parameters",
        )
    n = out_shape[dim]
    shifts = [0, *itertools.accumulate(s[dim] for s in in_shapes)]
    segs = [
        s._replace(offset=s.offset + shift // s.inner, period=n // s.inner)
        for info, shift in zip(ins, shifts)
        for s in info.chan.get(dim, ())
        if s.outer == 1 and shift % s.inner == 0 and n % s.inner == 0
    ]
    labelled = [s for info in ins for s in info.chan.get(dim, ())]
    if len(segs) != len(labelled):
        tracer.freeze_segs(labelled, "concatenation of a flattened channel layout")
        out.chan.update(
            tracer.opaque(
                out_shape, "merged with a concatenation of a flattened channel layout", axes={dim}
            ).chan
        )
    elif segs:
        out.chan[dim] = tuple(segs)
    # operands the tracer lost track of (parameters, activations without labels) keep their
    # part of the axis untracked: nothing prunes it, and no group is merged into it
    return [out]


def activation_product(tracer, eqn, ins, in_shapes, out_shapes):
    """A ``dot_general`` of two activations (attention scores ``q·kᵀ``, ``weights @ v``).

    Entry ``(b, i, j)`` of the output only combines entries of the operands at the same
    batch index ``b``: labels on matching batch axes are tied (the head axis of q, k and v
    becomes one group: a whole head is removed from all of them, and the output's batch axis
    carries the tied label). The contracting and free axes are mixed by the product: their
    groups freeze (q/k/v ``head_dim``), and the output's free axes get frozen pseudo-labels."""
    lhs, rhs = ins
    (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
    why = (
        "mixed by a dot_general that is not input @ kernel (an attention-like product of "
        "two activations)"
    )
    out = _Info(act=True)
    for k, (a, b) in enumerate(zip(lb, rb)):
        ls, rs = lhs.chan.get(a, ()), rhs.chan.get(b, ())
        tracer.batch.update(s.gid for s in (*ls, *rs))
        if ls and rs:
            tracer.merge_segs(
                ls, rs, "differently laid-out batch axes of an attention-like product", refine=True
            )  # e.g. a key head repeated (GQA)
            out.chan[k] = ls
        elif (ls and b in rhs.uniform) or (rs and a in lhs.uniform):  # e.g. one key head
            out.chan[k] = ls or rs  # broadcast to every query head
        elif ls or rs:  # the other operand's channels on this axis are not tracked
            tracer.freeze_segs(
                (*ls, *rs),
                "batch axis of an attention-like product with a "
                "value whose channels are not tracked",
            )
            out.chan[k] = ls or rs
    for info, batch in ((lhs, lb), (rhs, rb)):
        for ax, segs in info.chan.items():
            if ax not in batch:
                tracer.freeze_segs(segs, why)
    free = len(out_shapes[0]) - len(lb)
    rest = tracer.opaque(
        out_shapes[0], f"merged with a value {why}", axes=set(range(len(lb), len(lb) + free))
    )
    out.chan.update(rest.chan)
    return [out]


def dot_general(tracer, eqn, ins, in_shapes, out_shapes):
    """``x @ W`` with a parameter ``W`` on either side, of any rank and name, its axes in any
    order (``nn.Dense``, ``DenseGeneral``, ``nn.Einsum``, a custom einsum layer's ``w``, a
    tied embedding's transpose): recognised by what it contracts (:func:`kernel_product`).
    A product of two activations is :func:`activation_product`; any other contraction
    freezes its operands."""
    (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
    if not (lb or rb):
        for side, contract, other in ((1, rc, lc), (0, lc, rc)):
            kernel = tracer.param_axes(ins[side], len(in_shapes[side]))
            if kernel is not None:
                leaf, axes = kernel
                return [
                    kernel_product(
                        tracer,
                        ins[1 - side],
                        in_shapes[1 - side],
                        other,
                        leaf,
                        axes,
                        contract,
                        side == 0,
                        out_shapes[0],
                    )
                ]
    lhs, rhs = ins
    if lhs.act and rhs.act:
        return activation_product(tracer, eqn, ins, in_shapes, out_shapes)
    why = "dot_general that is not input @ kernel"
    tracer.freeze(lhs, why)
    tracer.freeze(rhs, why)
    return [tracer.opaque(out_shapes[0], f"merged with the output of a {why}")]


def kernel_product(
    tracer,
    x: _Info,
    x_shape,
    x_contract,
    leaf: int,
    axes: dict,
    k_contract,
    kernel_first: bool,
    out_shape,
) -> _Info:
    """Labels of ``x · W`` (no batch axes) for the parameter ``leaf`` whose value axis ``v``
    is its axis ``axes[v]``: each labelled contracting axis of ``x`` is read by the matching
    kernel axis (a consumer, with its layout); labels on ``x``'s free axes pass; each free
    kernel axis creates a group on its output axis (the output is ``(x free, W free)``, or
    ``(W free, x free)`` when ``W`` is the left operand)."""
    k_rank = len(axes)
    x_free = [a for a in range(len(x_shape)) if a not in x_contract]
    k_free = [v for v in range(k_rank) if v not in k_contract]
    x_at = len(k_free) if kernel_first else 0
    k_at = 0 if kernel_first else len(x_free)
    out = _Info(act=True)
    for xa, kv in zip(x_contract, k_contract):
        tracer.bind(leaf, axes[kv], x.chan.get(xa, ()), "consumer")
    for ax, segs in x.chan.items():
        if ax in x_free:
            out.chan[x_at + x_free.index(ax)] = segs
    for k, v in enumerate(k_free):
        out.chan[k_at + k] = tracer.produce(leaf, axes[v])
    shape = tracer.leaf_shapes[leaf]
    tracer.count_use(leaf, out_shape, math.prod(shape[axes[v]] for v in k_free))
    return out


def conv(tracer, eqn, ins, in_shapes, out_shapes):
    """Convolution with a parameter kernel. Ungrouped: the input's feature axis is read by
    the kernel's input-feature axis and its output-feature axis creates a new group.
    Depthwise (``feature_group_count`` = input features, ``m`` outputs each): output feature
    ``f·m + j`` is computed from input feature ``f`` alone, so the output carries the input's
    groups with ``inner·m`` and the kernel's output-feature axis is a member of them. Other
    grouped convolutions and channels on spatial axes freeze."""
    lhs, rhs = ins
    dn = eqn.params["dimension_numbers"]
    leaf = tracer.kernel_leaf(rhs, len(in_shapes[1]))
    groups = eqn.params["feature_group_count"]
    feat, kin, kout = dn.lhs_spec[1], dn.rhs_spec[1], dn.rhs_spec[0]
    c_in = in_shapes[0][feat]
    kshape = None if leaf is None else tracer.leaf_shapes[leaf]
    if leaf is None or eqn.params["batch_group_count"] != 1:
        why = "non-parameter convolution"
    elif groups != 1 and (groups != c_in or kshape[kin] != 1):  # pyright: ignore[reportOptionalSubscript]  (leaf is set)
        why = "grouped convolution (1 < groups < input channels)"
    else:
        why = ""
    if why:
        tracer.freeze(lhs, why)
        tracer.freeze(rhs, why)
        return [tracer.opaque(out_shapes[0], f"merged with the output of a {why}")]
    for ax in lhs.chan:
        if ax != feat:
            tracer.freeze(lhs, "channels on a spatial/batch axis of a convolution")
    out = _Info(act=True)
    assert kshape is not None  # a convolution without a parameter kernel returned above
    c_out = kshape[kout]
    tracer.count_use(leaf, out_shapes[0], c_out)
    if groups == 1:
        tracer.bind(leaf, kin, lhs.chan.get(feat, ()), "consumer")
        out.chan[dn.out_spec[1]] = tracer.produce(leaf, kout)
        return [out]
    m = c_out // c_in
    segs = (
        lhs.chan.get(feat)
        or tracer.opaque((c_in,), "depthwise convolution of an untracked value").chan[0]
    )
    segs = tuple(s._replace(inner=s.inner * m) for s in segs)
    tracer.bind(leaf, kout, segs, "member")
    out.chan[dn.out_spec[1]] = segs
    return [out]


def call(tracer, eqn, ins, in_shapes, out_shapes):
    """A call of a sub-jaxpr (``jit``, ``remat``, ``custom_jvp``/``custom_vjp``): walk it with
    the equation's input labels; outputs it does not produce are untracked."""
    sub = None
    for key in ("jaxpr", "call_jaxpr", "fun_jaxpr"):
        if eqn.params.get(key) is not None:
            sub = eqn.params[key]
            sub = getattr(sub, "jaxpr", sub)
            break
    if sub is None:
        return None
    outs = tracer.run(sub, ins)[: len(eqn.outvars)]
    return outs + [
        tracer.opaque(s, f"merged with an output of {eqn.primitive.name}")
        for s in out_shapes[len(outs) :]
    ]


def gather(tracer, eqn, ins, in_shapes, out_shapes):
    """An embedding lookup (``jnp.take`` / indexing of a parameter table at token ids):
    the features it produces are the residual stream's, which the tracer does not follow
    into the table: frozen pseudo-labels. A gather of an activation is not understood."""
    if ins[0].act or ins[0].chan:
        return None
    return [
        tracer.opaque(
            out_shapes[0],
            "merged with an embedding lookup (the residual stream of a token model is kept whole)",
        )
    ]


def constant(tracer, eqn, ins, in_shapes, out_shapes):
    """``iota`` (``jnp.arange``, causal masks): a constant, no channels."""
    return [_Info() for _ in out_shapes]


RULES: dict[str, Callable[..., Any]] = {
    "iota": constant,
    "gather": gather,
    "dot_general": dot_general,
    "conv_general_dilated": conv,
    "broadcast_in_dim": broadcast_in_dim,
    "reshape": reshape,
    "expand_dims": reshape,
    "squeeze": squeeze,
    "transpose": transpose,
    "pad": pad,
    "slice": slice_,
    "dynamic_slice": slice_,
    "split": split,
    "concatenate": concatenate,
    **{name: elementwise for name in _ELEMENTWISE},
    **{name: reduction for name in _REDUCTIONS},
    **{name: windowed for name in _WINDOWED},
    **{name: call for name in _CALLS},
}


def register_rule(primitive: str, rule) -> None:
    """Teach the tracer a primitive, for every later trace: ``RULES[primitive] = rule``.

    The contract: ``rule(tracer, eqn, ins, in_shapes, out_shapes)`` gets the jaxpr
    equation, the labels of its inputs (``ins[k].chan``: axis -> segments of channel
    groups; ``ins[k].act``: depends on the network input) and the shapes, and returns one
    ``_Info`` per output, or ``None`` for "not understood" (every group the equation
    touches is then frozen). It must label every channel axis of an activation output
    (``tracer.opaque(shape, why)`` for what it cannot follow) and may tie groups
    (``tracer.merge_segs``), freeze them (``tracer.freeze``) or bind parameter axes to them
    (``tracer.bind``). Example, a custom element-wise primitive::

        from jaxprune.structure import register_rule
        from jaxprune.structure._rules import elementwise
        register_rule("my_gelu", elementwise)

    ``prune(..., rules={primitive: rule})`` does the same for one call.
    """
    if not isinstance(primitive, str) or not callable(rule):
        raise ValueError(
            f"register_rule takes a primitive name and a callable rule, got {primitive!r}, {rule!r}"
        )
    RULES[primitive] = rule
