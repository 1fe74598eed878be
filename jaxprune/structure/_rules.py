"""Per-primitive rules of the channel tracer: ``RULES[primitive name] -> rule``.

A rule is ``rule(tracer, eqn, ins, in_shapes, out_shapes) -> list[_Info] | None``: it maps the
labels of the equation's inputs (``ins[k].chan``: axis -> (group, outer, inner)) to labels of
its outputs, using the tracer's bookkeeping (:class:`jaxprune.structure._trace.Tracer`:
``new_group``, ``merge``, ``freeze``, ``add_member``, ``add_consumer``, ``opaque``). Returning
``None`` means "not understood": the tracer then freezes every group the equation touches.
Supporting a new primitive is one entry in :data:`RULES` plus one test in
``tests/test_structure_rules.py``.

Layouts. A label ``(g, outer, inner)`` on an axis of ``outer · size_g · inner`` entries says
that channel ``c`` of group ``g`` owns the entries ``(o · size_g + c) · inner + i``; a reshape
that merges a labelled axis with its neighbours multiplies ``outer`` by the product of the
merged axes before it and ``inner`` by the product of those after it.
"""
from __future__ import annotations

import math

from jaxprune.structure._labels import _Info

_ELEMENTWISE = {
    "add", "sub", "mul", "div", "max", "min", "pow", "neg", "exp", "exp2", "log", "log1p",
    "tanh", "logistic", "rsqrt", "sqrt", "abs", "sign", "integer_pow", "erf", "erfc",
    "convert_element_type", "copy", "copy_p", "select_n", "square", "expm1", "sin", "cos",
    "stop_gradient", "reduce_precision", "clamp", "nextafter", "atan2", "rem", "floor", "ceil",
    "round", "is_finite", "not", "and", "or", "gt", "ge", "lt", "le", "eq", "ne", "cbrt",
}
_REDUCTIONS = {"reduce_sum", "reduce_max", "reduce_min", "reduce_prod", "argmax", "argmin",
               "reduce_and", "reduce_or"}
_WINDOWED = {"reduce_window_max", "reduce_window_sum", "reduce_window_min", "reduce_window",
             "cumsum", "cummax"}
# call-like primitives whose sub-jaxpr maps its invars/outvars one-to-one onto the equation's
_CALLS = {"jit", "pjit", "closed_call", "call", "core_call", "remat2", "checkpoint",
          "custom_jvp_call", "custom_jvp_call_jaxpr", "custom_vjp_call", "custom_vjp_call_jaxpr"}


# -- label algebra ----------------------------------------------------------------------------
def map_axes(tracer, info: _Info, amap: dict[int, int]) -> _Info:
    """Relabel axes by ``amap`` (input axis -> output axis); unmapped labels freeze."""
    out = _Info()
    for ax, lab in info.chan.items():
        if ax in amap:
            out.chan[amap[ax]] = lab
        else:
            tracer.freeze_group(lab[0], "channel axis removed")
    out.porig = tuple((leaf, {p: amap[v] for p, v in m.items() if v in amap})
                      for leaf, m in info.porig)
    return out


def reshape_labels(tracer, info: _Info, old: tuple[int, ...], new: tuple[int, ...]) -> _Info:
    """Split the reshape ``old -> new`` into blocks of equal product; a block that merges
    several input axes into one output axis keeps a labelled axis as a layout
    (``outer·before``, ``inner·after``); a block that splits a labelled axis freezes it."""
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
                tracer.freeze_group(gid, "reshape splits a channel axis")
            else:
                tracer.freeze_group(gid, "unsupported reshape")
    out.porig = tuple((leaf, {p: porig_map[v] for p, v in m.items() if v in porig_map})
                      for leaf, m in info.porig)
    return out


# -- rules ------------------------------------------------------------------------------------
def elementwise(tracer, eqn, ins, in_shapes, out_shapes):
    """Same-rank operands (size-1 axes broadcast); labels on the same axis merge their groups
    (a residual add ties producers); scalars carry nothing. Parameter-derived operands
    (``porig``) aligned with a labelled axis become members of its group (bias, BN)."""
    if len(eqn.outvars) != 1:
        return None
    out_shape = out_shapes[0]
    out = _Info()
    rank = len(out_shape)

    def aligned(shape, ax):
        return len(shape) == rank and shape[ax] == out_shape[ax]

    for info, shape in zip(ins, in_shapes):
        for ax, lab in info.chan.items():
            if not aligned(shape, ax):
                tracer.freeze_group(lab[0], "implicit broadcast of a channel axis")
            elif ax in out.chan:
                g0, o0, i0 = out.chan[ax]
                if (o0, i0) != lab[1:]:
                    tracer.freeze_group(g0, "incompatible element-wise merge")
                    tracer.freeze_group(lab[0], "incompatible element-wise merge")
                tracer.merge(g0, lab[0])
            else:
                out.chan[ax] = lab
    if out.chan:
        for info, shape in zip(ins, in_shapes):
            for leaf, amap in info.porig:
                for pax, vax in amap.items():
                    if vax in out.chan and aligned(shape, vax):
                        gid, o, i = out.chan[vax]
                        tracer.add_member(gid, tracer.slot(leaf, pax, o, i))
        return [out]
    out.porig = tuple(o for info, shape in zip(ins, in_shapes) if len(shape) == rank
                      for o in info.porig)
    return [out]


def broadcast_in_dim(tracer, eqn, ins, in_shapes, out_shapes):
    """Input axis ``a`` becomes output axis ``broadcast_dimensions[a]`` (if not stretched)."""
    dims = eqn.params["broadcast_dimensions"]
    amap = {a: dims[a] for a in range(len(in_shapes[0]))
            if in_shapes[0][a] == out_shapes[0][dims[a]]}
    return [map_axes(tracer, ins[0], amap)]


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
    for ax, (gid, _, _) in info.chan.items():
        if dims is None or dims[ax] != 1 or strides[ax] != 1:
            tracer.freeze_group(gid, f"{eqn.primitive.name} mixes channels")
    return [_Info(chan=dict(info.chan))] + [_Info()] * (len(eqn.outvars) - 1)


def pad(tracer, eqn, ins, in_shapes, out_shapes):
    """Padding along a channel axis freezes the group; the padded axis indexes other channels
    than the input's group, so it gets a fresh frozen pseudo-group of the new size."""
    cfg = eqn.params["padding_config"]
    info = ins[0]
    out = _Info(chan=dict(info.chan))
    for ax, (gid, _, _) in info.chan.items():
        if tuple(cfg[ax]) != (0, 0, 0):
            tracer.freeze_group(gid, "padding along the channel axis")
            out.chan[ax] = tracer.opaque(
                [n if a == ax else 1 for a, n in enumerate(out_shapes[0])],
                "merged with a value padded along its channel axis").chan[ax]
    return [out]


def dot_general(tracer, eqn, ins, in_shapes, out_shapes):
    """``x @ kernel`` (kernel ``(in, out)`` a parameter): the channels on ``x``'s contracting
    axis are read by kernel axis 0 (a consumer, with their layout); kernel axis 1 creates a
    new group on the last output axis. Any other contraction freezes its operands."""
    lhs, rhs = ins[0], ins[1]
    (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
    leaf = tracer.kernel_leaf(rhs, 2)
    if leaf is None or lb or rb or len(lc) != 1 or tuple(rc) != (0,):
        tracer.freeze(lhs, "dot_general that is not input @ kernel")
        tracer.freeze(rhs, "dot_general that is not input @ kernel")
        return [_Info()]
    kshape = tracer.leaf_shapes[leaf]
    out = _Info()
    for ax, (gid, o, inn) in lhs.chan.items():
        if ax == lc[0]:
            tracer.add_consumer(gid, tracer.slot(leaf, 0, o, inn))
        else:
            tracer.freeze(lhs, "channels on a non-contracting axis of a dense layer")
    tracer.count_use(leaf, out_shapes[0], kshape[1])
    out.chan[len(out_shapes[0]) - 1] = (tracer.new_group(kshape[1], tracer.slot(leaf, 1)), 1, 1)
    return [out]


def conv(tracer, eqn, ins, in_shapes, out_shapes):
    """Ungrouped convolution with a parameter kernel: the input's feature axis (plain layout)
    is read by the kernel's input-feature axis; its output-feature axis creates a new group.
    Grouped/depthwise convolutions and channels on spatial axes freeze."""
    lhs, rhs = ins[0], ins[1]
    dn = eqn.params["dimension_numbers"]
    leaf = tracer.kernel_leaf(rhs, 4)
    if (leaf is None or eqn.params["feature_group_count"] != 1
            or eqn.params["batch_group_count"] != 1):
        tracer.freeze(lhs, "grouped/depthwise or non-parameter convolution")
        tracer.freeze(rhs, "grouped/depthwise or non-parameter convolution")
        return [_Info()]
    out = _Info()
    for ax, (gid, o, inn) in lhs.chan.items():
        if ax == dn.lhs_spec[1] and o == 1 and inn == 1:
            tracer.add_consumer(gid, tracer.slot(leaf, dn.rhs_spec[1]))
        else:
            tracer.freeze(lhs, "channels on a spatial/batch axis of a convolution")
    size = tracer.leaf_shapes[leaf][dn.rhs_spec[0]]
    tracer.count_use(leaf, out_shapes[0], size)
    out.chan[dn.out_spec[1]] = (tracer.new_group(size, tracer.slot(leaf, dn.rhs_spec[0])), 1, 1)
    return [out]


def call(tracer, eqn, ins, in_shapes, out_shapes):
    """A call of a sub-jaxpr (``jit``, ``remat``, ``custom_jvp``/``custom_vjp``): walk it with
    the equation's input labels; outputs it does not produce carry nothing."""
    sub = None
    for key in ("jaxpr", "call_jaxpr", "fun_jaxpr"):
        if eqn.params.get(key) is not None:
            sub = eqn.params[key]
            sub = getattr(sub, "jaxpr", sub)
            break
    if sub is None:
        return None
    outs = tracer.run(sub, ins)[: len(eqn.outvars)]
    return outs + [_Info()] * max(0, len(eqn.outvars) - len(sub.outvars))


RULES = {
    "dot_general": dot_general,
    "conv_general_dilated": conv,
    "broadcast_in_dim": broadcast_in_dim,
    "reshape": reshape,
    "expand_dims": reshape,
    "squeeze": squeeze,
    "transpose": transpose,
    "pad": pad,
    **{name: elementwise for name in _ELEMENTWISE},
    **{name: reduction for name in _REDUCTIONS},
    **{name: windowed for name in _WINDOWED},
    **{name: call for name in _CALLS},
}
