"""Hidden size (opt-in, approximate): remove channels of a token model's residual stream.

The residual stream of a language model is every value ``x`` the blocks read and add to:
the embedding lookup, each ``x + branch(x)``, the input of the final norm. Its channels live
in the embedding table(s) (the feature axis of every table a ``gather`` reads, positional
tables too), every branch's output projection (*producers*), every kernel that reads the
stream (q/k/v, gate/up, the head, a tied embedding's ``attend``: *consumers*) and the norms'
scales and biases (*members*). :func:`prune_hidden` finds them by tracing the model with
:func:`hidden_rules`, an opt-in mode of the channel tracer in which

* a ``gather`` from a whole parameter table labels its output's feature axis with a group
  that the table produces (by default a lookup freezes the stream);
* a ``reduce_sum`` over a channel axis (a norm's mean or mean of squares) does not freeze
  the channels it sums;
* a parameter multiplied by such a statistic (``scale * rsqrt(var + eps)``) is carried to
  the next merge with the stream and bound there as a member (a norm scale).

Nothing is matched by name or size. The result is an approximation: an RMSNorm/LayerNorm
averages over the channels it sees, so removing some changes every kept channel's
normalisation. With ``e_n = (1/d) Σ_c x_{n,c}²`` the norm input's mean square at position
``n`` and ``ρ_n`` the removed channels' share of it, RMSNorm's output on a kept channel
changes by ``sqrt(d / (d' (1 - ρ_n)))^-1``; ``rescale_norms=True`` multiplies every norm
scale by ``f = sqrt(d (1 - ρ̄) / d')`` (``ρ̄`` averaged over calibration positions and
norms), which is exact up to ``ε`` when the removed channels are zero and a first-order
correction otherwise (LayerNorm: of its second moment; its mean shifts too). The report
gives the error that remains on the calibration data; distillation from the dense model
(``jaxprune finetune --teacher``) recovers it.

Score of stream channel ``c`` (lowest removed first), over the stream's states ``T`` (every
stream value read by something other than another merge into the stream: the inputs of the
norms) and their positions ``n``::

    s_c = (1/|T|) Σ_t mean_n  x_{t,n,c}² / e_{t,n}        (0 where e_{t,n} = 0)

so ``Σ_c s_c = d`` and ``ρ̄ = (1/d) Σ_{c removed} s_c``. Statistics are gathered one batch
at a time by a jitted evaluation of the model's jaxpr that returns only the sums.

>>> import jax, numpy as np
>>> from jaxprune.models.lm import LM
>>> lm = LM(dim=32, num_layers=2, num_heads=4, num_kv_heads=2, mlp_dim=64, max_len=16)
>>> tokens = np.random.default_rng(0).integers(0, 256, (8, 16)).astype(np.int32)
>>> v = lm.init(jax.random.key(0), tokens[:1])
>>> r = prune_hidden(v, 0.25, model=lm, data=tokens)
>>> r.width, r.report["approximate"], r.model().apply(r.params, tokens).shape
((32, 24), True, (8, 16, 256))
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core as jcore

from jaxprune import _flax, _nnx, rebuild, surgery
from jaxprune._tree import as_variables, leaves_with_paths, map_with_paths, restore_form
from jaxprune.geometry import cheap_jit
from jaxprune.structure import (
    ELEMENTWISE,
    RULES,
    ChannelGroup,
    Info,
    combine,
    gather,
    plain,
    reduction,
    sub_jaxpr,
    walk,
)

__all__ = ["HiddenResult", "Stream", "hidden_rules", "prune_hidden", "stream"]

NOTE = (
    "approximate: the norms' statistics are taken over fewer channels, so the pruned "
    "model differs from the dense one even where the removed channels were small; "
    "recover with distillation from the dense model"
)


# --------------------------------------------------------------------------------------------
# the opt-in tracing mode
# --------------------------------------------------------------------------------------------
class _Watch:
    """What the hidden-mode rules saw: tables the lookups read (``(leaf, table axis, output
    axis)``), norm scales (``(leaf, axis)``), and the stream's states: the output of an
    equation numbered ``ordinal`` (pre-order over the jaxpr, call bodies inlined) labelled
    by group ``gid`` on ``axis`` (counted from the end)."""

    def __init__(self):
        self.count = 0
        self.tables: list[tuple[int, int, int]] = []
        self.scales: set[tuple[int, int]] = set()
        self.states: dict[int, tuple] = {}  # id(info) -> (info, ordinal, gid, axis)
        self.read: set[int] = set()  # ordinals of states read by a non-merge


class _Rules(dict):
    """The rule table of one hidden-mode trace: every equation (with or without a rule)
    is numbered and watched by :meth:`visit`."""

    def __init__(self, rules: Mapping, watch: _Watch):
        super().__init__(rules)
        self.watch = watch

    def get(self, name, default=None):
        return functools.partial(self.visit, dict.get(self, name))

    def visit(self, rule, tracer, eqn, ins, in_shapes, out_shapes):
        w = self.watch
        ordinal = w.count
        w.count += 1
        merge = _merged_axis(tracer, eqn, ins)
        if merge is None:
            w.read.update(w.states[id(i)][1] for i in ins if id(i) in w.states)
        tables = len(w.tables)
        outs = None if rule is None else rule(tracer, eqn, ins, in_shapes, out_shapes)
        if outs is None:
            return None
        axis = merge if len(w.tables) == tables else w.tables[-1][2]
        segs = () if axis is None or len(outs) != 1 else outs[0].chan.get(axis, ())
        if plain(tracer, segs, out_shapes[0][axis] if segs else 0):
            # plain() holds only for one segment, so segs is non-empty and axis is set
            w.states[id(outs[0])] = (outs[0], ordinal, segs[0].gid, axis - len(out_shapes[0]))  # pyright: ignore[reportGeneralTypeIssues, reportOptionalOperand]
        return outs


def _merged_axis(tracer, eqn, ins):
    """The axis along which an ``add`` merges two activations labelled with channel groups
    (not the frozen pseudo-labels of batch or position axes), else None."""
    if eqn.primitive.name not in ("add", "add_any") or len(ins) != 2:
        return None
    a, b = ins
    live = [
        ax
        for ax in a.chan
        if a.act
        and b.act
        and ax in b.chan
        and not any(s.gid in tracer.frozen for s in (*a.chan[ax], *b.chan[ax]))
    ]
    return live[-1] if live else None


def hidden_rules(watch: _Watch | None = None) -> _Rules:
    """The tracer's rules in hidden mode (module docstring): ``gather``, ``reduce_sum`` and
    the element-wise rules replaced; ``watch`` collects what :func:`stream` needs."""
    watch = _Watch() if watch is None else watch

    def lookup(tracer, eqn, ins, in_shapes, out_shapes):
        """Rows of a whole parameter table: the one feature axis taken whole is a group
        the table produces; anything else as the default rule."""
        table, rank = ins[0], len(in_shapes[0])
        whole = (
            len(table.porig) == 1
            and not table.act
            and not table.chan
            and sorted(table.porig[0][1].values()) == list(range(rank))
        )
        dn = eqn.params["dimension_numbers"]
        dropped = set(dn.collapsed_slice_dims) | set(getattr(dn, "operand_batching_dims", ()))
        kept = [a for a in range(rank) if a not in dropped]
        full = [
            k
            for k, a in enumerate(kept)
            if eqn.params["slice_sizes"][a] == in_shapes[0][a] and in_shapes[0][a] > 1
        ]
        if not whole or len(full) != 1 or len(kept) != len(dn.offset_dims):
            return gather(tracer, eqn, ins, in_shapes, out_shapes)
        leaf, amap = table.porig[0]
        value_axis = kept[full[0]]
        param_axis = {v: p for p, v in amap.items()}[value_axis]
        out_axis = dn.offset_dims[full[0]]
        out = tracer.opaque(
            out_shapes[0],
            "merged with the batch or position axes of an embedding lookup",
            axes=set(range(len(out_shapes[0]))) - {out_axis},
        )
        out.chan[out_axis] = tracer.produce(leaf, param_axis)
        watch.tables.append((leaf, param_axis, out_axis))
        return [out]

    def statistic(tracer, eqn, ins, in_shapes, out_shapes):
        """A sum over channel axes (a norm's mean or mean square) drops their labels
        without freezing the groups."""
        axes = set(eqn.params["axes"])
        info = ins[0]
        kept = Info(
            chan={a: s for a, s in info.chan.items() if a not in axes},
            porig=info.porig,
            act=info.act,
            uniform=info.uniform,
        )
        return reduction(tracer, eqn, [kept], in_shapes, out_shapes)

    def elementwise(tracer, eqn, ins, in_shapes, out_shapes):
        """As the default rule, and an activation output carries parameter axes to its
        next merge (:func:`_carried`)."""
        if len(eqn.outvars) != 1:
            return None
        out = combine(tracer, ins, in_shapes, out_shapes[0])
        if out.act:
            out.porig = _carried(eqn, ins, in_shapes, out_shapes[0], out, watch)
        return [out]

    rules = {
        **RULES,
        "gather": lookup,
        "reduce_sum": statistic,
        **{name: elementwise for name in ELEMENTWISE},
    }
    return _Rules(rules, watch)


def _carried(eqn, ins, in_shapes, out_shape, out: Info, watch: _Watch) -> tuple:
    """Parameter axes that an activation output carries to its next merge: those already
    carried by an operand, and a parameter multiplied by a statistic broadcast along the
    axis (``scale * rsqrt(var + eps)``, recorded as a norm scale)."""
    rank = len(out_shape)
    stat_axes = {
        ax
        for info, shape in zip(ins, in_shapes)
        if info.act and len(shape) == rank
        for ax in range(rank)
        if shape[ax] == 1 and ax not in info.chan
    }
    carried = []
    for info, shape in zip(ins, in_shapes):
        if len(shape) != rank:
            continue
        for leaf, amap in info.porig:
            axes = {
                p: v for p, v in amap.items() if v not in out.chan and shape[v] == out_shape[v] > 1
            }
            if not axes:
                continue
            if info.act:
                carried.append((leaf, axes))
            elif eqn.primitive.name == "mul" and set(axes.values()) <= stat_axes:
                carried.append((leaf, axes))
                watch.scales.update((leaf, p) for p in axes)
    return tuple(carried)


# --------------------------------------------------------------------------------------------
# the stream
# --------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Stream:
    """The residual stream(s) of a traced model: ``groups`` (each with every slot), the
    stream's states ``taps`` (``(ordinal, channel axis from the end, group index)``), the
    norm-scale members ``scales`` (paths and axes), and the jaxpr's primitive sequence
    ``program`` the ordinals refer to."""

    groups: tuple[ChannelGroup, ...]
    taps: tuple[tuple[int, int, int], ...]
    scales: tuple[tuple[tuple, int], ...]
    program: tuple[str, ...]


def stream(apply_fn, variables, example) -> Stream:
    """The residual stream of ``apply_fn(variables, example)`` (an
    :class:`~jaxprune._flax.Example`) in hidden mode: the groups that an embedding table's
    feature axis produces. Raises ``ValueError`` when there is none or it cannot be pruned."""
    watch = _Watch()
    tracer, closed = walk(apply_fn, variables, example, hidden_rules(watch))
    groups = tracer.groups()
    tables = {(tracer.leaf_paths[leaf], axis) for leaf, axis, _ in watch.tables}
    found = [g for g in groups if any((s.path, s.axis) in tables for s in g.producers)]
    if not found:
        raise ValueError(
            "no residual stream found: the model looks up no parameter table "
            "(an embedding) whose features the blocks add to"
        )
    bad = [g for g in found if not g.prunable]
    if bad:
        raise ValueError(f"the residual stream {bad[0].name!r} cannot be pruned: {bad[0].reason}")
    index = {}  # union-find root of a table's group -> its stream's index in ``found``
    for leaf, axis, _ in watch.tables:
        slot = (tracer.leaf_paths[leaf], axis)
        index[tracer.uf.find(tracer.produced[(leaf, axis)][0].gid)] = next(
            k for k, g in enumerate(found) if slot in {(s.path, s.axis) for s in g.producers}
        )
    taps = sorted(
        {
            (ordinal, axis, index[tracer.uf.find(gid)])
            for _, ordinal, gid, axis in watch.states.values()
            if ordinal in watch.read and tracer.uf.find(gid) in index
        }
    )
    members = {(s.path, s.axis) for g in found for s in g.members}
    scales = tuple(
        sorted(
            (tracer.leaf_paths[leaf], axis)
            for leaf, axis in watch.scales
            if (tracer.leaf_paths[leaf], axis) in members
        )
    )
    return Stream(tuple(found), tuple(taps), scales, _program(closed.jaxpr))


def _program(jaxpr) -> tuple[str, ...]:
    """Primitive names in the order the tracer numbers equations."""
    names = []
    for eqn in jaxpr.eqns:
        names.append(eqn.primitive.name)
        sub = sub_jaxpr(eqn)
        if sub is not None:
            names += _program(getattr(sub, "jaxpr", sub))
    return tuple(names)


def _evaluate(jaxpr, consts, args, wanted: set, found: dict, counter: list) -> list:
    """Run ``jaxpr`` (traceable), storing in ``found[k]`` the first output of equation ``k``
    (numbered as :func:`_program`) for ``k`` in ``wanted``."""
    env = dict(zip(jaxpr.constvars, consts))
    env.update(zip(jaxpr.invars, args))

    def read(v):
        return v.val if isinstance(v, jcore.Literal) else env[v]

    for eqn in jaxpr.eqns:
        k = counter[0]
        counter[0] += 1
        ins = [read(v) for v in eqn.invars]
        sub = sub_jaxpr(eqn)
        if sub is not None:
            outs = _evaluate(
                getattr(sub, "jaxpr", sub), getattr(sub, "consts", ()), ins, wanted, found, counter
            )
        else:
            outs = eqn.primitive.bind(*ins, **eqn.params)
            outs = outs if eqn.primitive.multiple_results else [outs]
        if k in wanted:
            found[k] = outs[0]
        env.update(zip(eqn.outvars, outs))
    return [read(v) for v in jaxpr.outvars]


def _share_sums(values, axes) -> list:
    """Per tap: ``(Σ_n x_{n,c}² / e_n, positions)`` with ``e_n`` the mean square over the
    channel axis."""
    out = []
    for x, axis in zip(values, axes):
        sq = jnp.moveaxis(jnp.square(x.astype(jnp.float32)), axis, -1)
        sq = sq.reshape(-1, sq.shape[-1])
        e = jnp.mean(sq, axis=-1, keepdims=True)
        share = jnp.where(e > 0, sq / jnp.where(e > 0, e, 1.0), 0.0)
        out.append((jnp.sum(share, axis=0), jnp.float32(sq.shape[0])))
    return out


def _scores(apply_fn, variables, batches, info: Stream) -> list[np.ndarray]:
    """``s_c`` of every stream group (module docstring), one jitted pass per batch."""
    leaves = [leaf for _, leaf in leaves_with_paths(variables)]
    treedef = jax.tree_util.tree_structure(variables)
    ordinals = [t[0] for t in info.taps]
    axes = [t[1] for t in info.taps]
    compiled = {}
    sums = [np.zeros(info.groups[g].size) for *_, g in info.taps]
    counts = np.zeros(len(info.taps))
    for batch in batches:
        key = tuple((a.shape, str(a.dtype)) for a in batch.arrays)
        if key not in compiled:
            closed = jax.make_jaxpr(
                lambda lv, x: apply_fn(jax.tree_util.tree_unflatten(treedef, lv), x)
            )(leaves, batch)
            if _program(closed.jaxpr) != info.program:
                raise ValueError(
                    "the model's computation depends on the batch size; pass "
                    "data whose size is a multiple of batch_size"
                )

            def run(lv, arrays, closed=closed):
                found: dict = {}
                _evaluate(closed.jaxpr, closed.consts, [*lv, *arrays], set(ordinals), found, [0])
                return _share_sums([found[k] for k in ordinals], axes)

            compiled[key] = cheap_jit(run)
        for k, (s, n) in enumerate(jax.device_get(compiled[key](leaves, batch.arrays))):
            sums[k] += np.asarray(s, np.float64)
            counts[k] += float(n)
    out = []
    for g in range(len(info.groups)):
        own = [sums[k] / counts[k] for k, t in enumerate(info.taps) if t[2] == g]
        if not own:
            raise ValueError(
                f"the residual stream {info.groups[g].name!r} is never read by a "
                "norm or a layer: nothing to score it on"
            )
        out.append(np.mean(own, axis=0))
    return out


# --------------------------------------------------------------------------------------------
# the entry point
# --------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class HiddenResult:
    """``params``: the smaller variables (caller's form); ``kept``/``scores``: per stream
    group, the kept channel indices (sorted) and every channel's score; ``groups``: the
    stream groups with all their slots; ``width``: ``(d, d')``; ``scale``: the factor the
    norm scales were multiplied by (1 without ``rescale_norms``); ``report``: sizes, the
    approximation error on the calibration data (``kl``: mean KL(dense ‖ pruned) per
    position over the output's last axis, nats; ``relative_error``: ``‖y − ŷ‖² / ‖y‖²``;
    with labels, ``bits_per_byte`` before and after) and ``"approximate": True``."""

    params: Any
    kept: dict[str, np.ndarray]
    scores: dict[str, np.ndarray]
    groups: tuple[ChannelGroup, ...]
    width: tuple[int, int]
    scale: float
    report: dict
    module: Any = dataclasses.field(default=None, repr=False)
    nnx_module: Any = dataclasses.field(default=None, repr=False)

    def model(self, module=None):
        """The module ``params`` runs with: the rebuilt Linen module (a
        :class:`~jaxprune.rebuild.Resized` of the dense one, which ``module``, if given,
        must equal), or, for an NNX input, a copy of it holding ``params``."""
        if module is not None and self.module is not None and module != self.module.module:
            raise ValueError(
                "result.model(module) takes the dense module that was pruned "
                f"({type(self.module.module).__name__}), or nothing"
            )
        if self.nnx_module is not None:
            return rebuild.smaller_nnx(
                self.nnx_module,
                self.params,
                self.groups,
                {g.name: self.width[1] for g in self.groups},
            )
        return self.module


def prune_hidden(
    variables,
    ratio: float,
    *,
    model=None,
    data=None,
    labels=None,
    example_inputs=None,
    batch_size: int = 16,
    rescale_norms: bool = True,
    round_to: int = 1,
    fields: Mapping | None = None,
    apply_kwargs: Mapping | None = None,
) -> HiddenResult:
    """Remove the lowest-scoring ``ratio`` of a token model's residual-stream channels
    (module docstring: opt-in and approximate).

    ``variables``: params, the variables dict, or an ``nnx.Module`` (then no ``model``).
    ``ratio`` in ``[0, 1)``: ``floor(ratio · d)`` channels go, more if needed to make ``d'``
    a multiple of ``round_to`` (a model that derives head sizes from ``d`` may need one:
    the Linen ``LM`` needs ``d' = num_heads × an even head_dim``). ``data``: calibration
    inputs (``(N, L)`` token ids, or the forms ``example_inputs`` takes), run
    ``batch_size`` at a time; ``labels``: optional next-token targets shaped like the
    output without its last axis, for the bits-per-byte change. ``rescale_norms``: multiply
    the norm scales by ``f`` (module docstring). ``example_inputs``: what the model is
    traced on when not ``data``'s forms; ``apply_kwargs``: its inference call's keyword
    arguments (default: found from its signature). ``fields``:
    ``{'path/to/module': {field: value}}`` for sizes the rebuilt module cannot infer
    (:func:`jaxprune.rebuild.smaller_module`); every other integer field of the model's
    own modules keeps its dense value.
    """
    if (
        isinstance(ratio, bool)
        or not isinstance(ratio, (int, float, np.floating, np.integer))
        or not 0 <= float(ratio) < 1
    ):
        raise ValueError(f"ratio must be a number in [0, 1), got {ratio!r}")
    for name, value in (("batch_size", batch_size), ("round_to", round_to)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if data is None:
        raise ValueError(
            "prune_hidden needs data= (calibration inputs, e.g. token windows "
            "(N, L)): the stream channels are scored on activations"
        )
    nnx_module = variables if _nnx.is_module(variables) else None
    if nnx_module is not None:
        if model is not None:
            raise ValueError("pass an NNX module alone: it is its own model (no model=)")
        variables, model = _nnx.variables_of(nnx_module), _nnx.as_linen(nnx_module)
    elif model is None:
        raise ValueError("prune_hidden needs model= (the Flax module of the variables)")
    variables, was_variables = as_variables(variables)
    batch = _inputs(data, "data")
    spec = (
        _inputs(example_inputs, "example_inputs").abstract(1)
        if example_inputs is not None
        else batch.abstract(1)
    )
    kwargs = _flax.inference_kwargs(model, apply_kwargs)
    target = None if labels is None else np.asarray(labels)
    if target is not None and (target.shape[:1] != (batch.batch,) or target.dtype.kind not in "iu"):
        raise ValueError(
            f"labels must be integer targets with one row per example of data "
            f"({batch.batch}), got {target.dtype}{list(target.shape)}"
        )

    def apply_fn(v, x):
        return _flax.apply_inference(model, v, x, kwargs)

    info = stream(apply_fn, variables, spec.zeros(2))
    size = int(batch_size)
    scores = _scores(apply_fn, variables, _chunks(batch, size), info)
    d = info.groups[0].size
    if any(g.size != d for g in info.groups):
        raise ValueError(
            f"the model has residual streams of different widths "
            f"({[g.size for g in info.groups]}): prune them one at a time"
        )
    width = d - int(math.floor(float(ratio) * d + 1e-9))
    width = max(round_to, width - width % round_to) if d >= round_to else d
    kept = {
        g.name: np.sort(np.argsort(-s, kind="stable")[:width]) for g, s in zip(info.groups, scores)
    }
    removed_share = float(
        np.mean([np.sum(np.delete(s, kept[g.name])) / d for g, s in zip(info.groups, scores)])
    )
    small = surgery.shrink(variables, info.groups, kept)
    factor = 1.0
    if rescale_norms and width < d and info.scales:
        factor = math.sqrt(d * max(1.0 - removed_share, 0.0) / width) or 1.0
        scaled = {p for p, _ in info.scales}
        small = map_with_paths(
            lambda p, x: x * jnp.asarray(factor, x.dtype) if p in scaled else x, small
        )
    module = None
    if nnx_module is None:
        module = _rebuilt(model, variables, small, spec, kwargs, info, width, fields)
        small_apply = functools.partial(_flax.apply_inference, module, apply_kwargs=kwargs)
    else:
        pruned = rebuild.smaller_nnx(
            nnx_module, small, info.groups, {g.name: width for g in info.groups}
        )
        small_apply = functools.partial(
            _flax.apply_inference, _nnx.as_linen(pruned), apply_kwargs=kwargs
        )
    error = _error(apply_fn, small_apply, variables, small, batch, target, size)
    count = lambda tree: int(sum(np.size(x) for _, x in leaves_with_paths(tree["params"])))
    report = {
        "approximate": True,
        "note": NOTE,
        "groups": [g.name for g in info.groups],
        "width_before": d,
        "width_after": width,
        "removed": d - width,
        "params_before": count(variables),
        "params_after": count(small),
        "removed_share": removed_share,
        "norm_scale_factor": factor,
        "norm_scales": ["/".join(p[1:]) for p, _ in info.scales],
        **error,
    }
    return HiddenResult(
        params=restore_form(small, was_variables),
        kept=kept,
        scores={g.name: s for g, s in zip(info.groups, scores)},
        groups=info.groups,
        width=(d, width),
        scale=factor,
        report=report,
        module=module,
        nnx_module=nnx_module,
    )


def _inputs(value, what: str) -> _flax.Example:
    ex = jax.tree.map(np.asarray, _flax.Example.of(value))
    if ex.batch == 0:
        raise ValueError(f"{what} must hold at least one example")
    return ex


def _chunks(batch: _flax.Example, size: int):
    for start in range(0, batch.batch, size):
        yield jax.tree.map(jnp.asarray, batch.take(start, start + size))


def _rebuilt(model, dense, small, spec, kwargs, info: Stream, width: int, fields):
    """The Linen module of ``small``: :func:`jaxprune.rebuild.smaller_module` with every
    integer field of the model's own modules at its dense value (e.g. a block that derives
    ``head_dim`` from its input's width keeps the dense one) except the *width fields*
    (:func:`_width_fields`), which get ``width``; ``fields`` on top."""
    d = info.groups[0].size
    pinned: dict[str, dict] = {}
    candidates: list[tuple[str, str]] = []

    def record(layer, _x, _out):
        if type(layer).__module__.startswith("flax."):
            return
        name = "/".join(_flax.module_path(layer))
        for f in dataclasses.fields(layer):
            value = getattr(layer, f.name, None)
            if (
                f.init
                and f.name not in ("parent", "name")
                and isinstance(value, int)
                and not isinstance(value, bool)
            ):
                pinned.setdefault(name, {})[f.name] = value
                if value == d:
                    candidates.append((name, f.name))

    _flax.trace_kernel_calls(model, dense, spec, record, kwargs, every_module=True)
    chosen = _width_fields(model, dense, spec, kwargs, info, pinned, candidates)
    for name, field in candidates if chosen is None else ():
        del pinned[name][field]  # left to smaller_module's count of what changed
    for name, field in chosen or ():
        pinned[name][field] = width
    for name, extra in (fields or {}).items():
        pinned.setdefault(name, {}).update(extra)
    try:
        return rebuild.smaller_module(
            model,
            dense,
            small,
            spec,
            apply_kwargs=kwargs,
            fields=pinned,
            groups=info.groups,
            widths={g.name: width for g in info.groups},
        )
    except ValueError as err:
        raise ValueError(
            f"cannot rebuild {type(model).__name__} with a residual stream of "
            f"{width} channels: {_flax.first_line(err)} (a model may accept only "
            "some widths: pass round_to=, or fields= for sizes it derives)"
        ) from None


def _width_fields(model, dense, spec, kwargs, info: Stream, pinned, candidates):
    """The fields among ``candidates`` (integer fields equal to the stream's width ``d``)
    that set it: with them at ``2d`` and every other field at its dense value, the model
    creates its parameters with exactly the stream's axes doubled. Found by dropping the
    candidates one by one from the set (a ``max_len`` that happens to equal ``d`` changes
    no parameter and is dropped). None when even all of them do not do it."""
    d = info.groups[0].size
    stream_axes = {
        (s.path, s.axis) for g in info.groups for s in (*g.producers, *g.members, *g.consumers)
    }
    shapes = {p: np.shape(x) for p, x in leaves_with_paths(dense)}

    def widens(chosen) -> bool:
        table = {name: dict(f) for name, f in pinned.items()}
        for name, field in chosen:
            table[name][field] = 2 * d
        sizes = tuple(
            sorted(
                (tuple(p for p in name.split("/") if p), tuple(sorted(f.items())))
                for name, f in table.items()
            )
        )
        try:
            made = _flax.abstract_init(rebuild.Resized(model, sizes), spec, **kwargs)
        except Exception:  # noqa: BLE001 - a probe the model rejects does not widen it
            return False
        changed = {
            (p, a)
            for p, x in leaves_with_paths(made)
            if p in shapes
            for a, (n, m) in enumerate(zip(shapes[p], np.shape(x)))
            if n != m
        }
        return changed == {(p, a) for p, a in stream_axes if p[0] == "params"} and all(
            np.shape(x)[a] == 2 * d
            for p, x in leaves_with_paths(made)
            for a in range(np.ndim(x))
            if (p, a) in changed
        )

    chosen = list(candidates)
    if not chosen or not widens(chosen):
        return None
    for c in list(chosen):
        if widens([x for x in chosen if x != c]):
            chosen.remove(c)
    return chosen


def _error(dense_apply, small_apply, dense, small, batch, target, size: int) -> dict:
    """The pruned model's error on ``batch``, one jitted pass per ``size`` examples."""

    @cheap_jit
    def sums(dv, sv, x, y):
        a = dense_apply(dv, x).astype(jnp.float32)
        b = small_apply(sv, x).astype(jnp.float32)
        la, lb = jax.nn.log_softmax(a, -1), jax.nn.log_softmax(b, -1)
        out = {
            "kl": jnp.sum(jnp.exp(la) * (la - lb)),
            "positions": la[..., 0].size,
            "diff": jnp.sum(jnp.square(a - b)),
            "norm": jnp.sum(jnp.square(a)),
        }
        if y is not None:
            if y.shape != a.shape[:-1]:
                raise ValueError(
                    f"labels of shape {list(y.shape)} do not match the output "
                    f"{list(a.shape)} without its last axis"
                )
            pick = lambda lp: -jnp.sum(jnp.take_along_axis(lp, y[..., None], -1))
            out.update(ce_dense=pick(la), ce_small=pick(lb))
        return out

    total: dict = {}
    for start in range(0, batch.batch, size):
        x = jax.tree.map(jnp.asarray, batch.take(start, start + size))
        y = None if target is None else jnp.asarray(target[start : start + size])
        for k, v in jax.device_get(sums(dense, small, x, y)).items():
            total[k] = total.get(k, 0.0) + float(v)
    out = {
        "kl": total["kl"] / total["positions"],
        "relative_error": total["diff"] / max(total["norm"], 1e-30),
    }
    if target is not None:
        dense_bpb = total["ce_dense"] / total["positions"] / math.log(2)
        small_bpb = total["ce_small"] / total["positions"] / math.log(2)
        out.update(
            bits_per_byte_dense=dense_bpb,
            bits_per_byte=small_bpb,
            bits_per_byte_change=small_bpb - dense_bpb,
        )
    return out
