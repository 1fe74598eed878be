"""Per-primitive rules of the channel tracer: ``RULES[primitive name] -> rule``.

A rule is ``rule(tracer, eqn, ins, in_shapes, out_shapes) -> list[_Info] | None``: it maps the
labels of the equation's inputs (which axes carry which channel group) to labels of its
outputs, using the tracer's label algebra (``_elementwise``, ``_map_axes``, ``_reshape``,
``_freeze``, ``_opaque``; ``_dot_general``/``_conv`` record producers and consumers). Returning
``None`` means "not understood": the tracer then freezes every group the equation touches.
Supporting a new primitive is one entry here (plus a test in ``tests/test_structure.py``).
"""
from __future__ import annotations

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


def _dot_general(tracer, eqn, ins, in_shapes, out_shapes):
    return tracer._dot_general(eqn, ins[0], ins[1])


def _conv(tracer, eqn, ins, in_shapes, out_shapes):
    return tracer._conv(eqn, ins[0], ins[1])


def _elementwise(tracer, eqn, ins, in_shapes, out_shapes):
    if len(eqn.outvars) != 1:
        return None
    return [tracer._elementwise(ins, in_shapes, out_shapes[0])]


def _broadcast_in_dim(tracer, eqn, ins, in_shapes, out_shapes):
    dims = eqn.params["broadcast_dimensions"]
    amap = {a: dims[a] for a in range(len(in_shapes[0]))
            if in_shapes[0][a] == out_shapes[0][dims[a]]}
    return [tracer._map_axes(ins[0], amap)]


def _reshape(tracer, eqn, ins, in_shapes, out_shapes):
    return [tracer._reshape(ins[0], in_shapes[0], out_shapes[0])]


def _squeeze(tracer, eqn, ins, in_shapes, out_shapes):
    dims = {d % len(in_shapes[0]) for d in eqn.params["dimensions"]}
    keep = [a for a in range(len(in_shapes[0])) if a not in dims]
    return [tracer._map_axes(ins[0], {a: k for k, a in enumerate(keep)})]


def _transpose(tracer, eqn, ins, in_shapes, out_shapes):
    perm = eqn.params["permutation"]
    return [tracer._map_axes(ins[0], {p: k for k, p in enumerate(perm)})]


def _reduction(tracer, eqn, ins, in_shapes, out_shapes):
    """Reduced axes drop their labels (a channel axis reduced away freezes its group)."""
    axes = set(eqn.params["axes"])
    keep = [a for a in range(len(in_shapes[0])) if a not in axes]
    return [tracer._map_axes(ins[0], {a: k for k, a in enumerate(keep)})]


def _windowed(tracer, eqn, ins, in_shapes, out_shapes):
    """Pooling / cumulative ops: labels pass unless the window spans the channel axis."""
    info = ins[0]
    dims = eqn.params.get("window_dimensions")
    strides = eqn.params.get("window_strides")
    for ax, (gid, _, _) in info.chan.items():
        if dims is None or dims[ax] != 1 or strides[ax] != 1:
            tracer.frozen.setdefault(gid, f"{eqn.primitive.name} mixes channels")
    return [_Info(chan=dict(info.chan))] + [_Info()] * (len(eqn.outvars) - 1)


def _pad(tracer, eqn, ins, in_shapes, out_shapes):
    cfg = eqn.params["padding_config"]
    info = ins[0]
    out = _Info(chan=dict(info.chan))
    for ax, (gid, _, _) in info.chan.items():
        if tuple(cfg[ax]) != (0, 0, 0):
            tracer.frozen.setdefault(gid, "padding along the channel axis")
            # the padded axis indexes other channels than the input's group: label it with a
            # fresh frozen pseudo-group of the new size (not the old group)
            out.chan[ax] = tracer._opaque(
                [n if a == ax else 1 for a, n in enumerate(out_shapes[0])],
                "merged with a value padded along its channel axis").chan[ax]
    return [out]


RULES = {
    "dot_general": _dot_general,
    "conv_general_dilated": _conv,
    "broadcast_in_dim": _broadcast_in_dim,
    "reshape": _reshape,
    "expand_dims": _reshape,
    "squeeze": _squeeze,
    "transpose": _transpose,
    "pad": _pad,
    **{name: _elementwise for name in _ELEMENTWISE},
    **{name: _reduction for name in _REDUCTIONS},
    **{name: _windowed for name in _WINDOWED},
}
