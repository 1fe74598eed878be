"""``prune(params, key, ratio)``: one pipeline for every registered method.

    variables ─► [method.prepare] ─► units (traced channel groups | kernel layers) ─► views
              ─► method.score ─► budgets ─► selection ─► surgery (smaller arrays | masks) ─► report

Structured methods (``kind="channels"``) remove neurons/filters: the result is a smaller
network. Weight methods (``kind="weights"``) zero individual kernel entries: the result keeps
the input's shapes and is fine-tuned with ``result.mask`` held fixed. The two kinds differ only
in their units (channel groups vs kernels), their budgets and their surgery.

Units. ``ratio`` is the fraction to remove, counted in ``unit``: ``"params"`` (default) —
parameters of the arrays the prunable groups live in (for LeNet-300-100 that is every FC
parameter, the unit of the main paper's Table 1); ``"neurons"`` — channels of the prunable
groups; ``"flops"`` — multiply-accumulates of the whole network. Weight methods count kernel
entries (``unit="params"`` only). The report gives every unit plus the whole-model ratio.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import functools
import time
import warnings
from collections.abc import Mapping

import flax
import flax.errors
import jax
import jax.numpy as jnp
import numpy as np

from jaxprune import _flax, _nnx, bounds, metrics, selection, structure, surgery, views
from jaxprune import depth as depth_lib
from jaxprune import plan as plan_lib
from jaxprune import reconstruct as reconstruct_lib
from jaxprune._tree import as_variables, get_path, map_with_paths, restore_form
from jaxprune.methods import Selection, split_keys
from jaxprune.plan import Certificate, Plan, Refit
from jaxprune.results import ChannelResult, PruneResult, PruneWarning, WeightResult
from jaxprune.selection import UNITS

__all__ = [
    "PHASES",
    "Certificate",
    "ChannelResult",
    "PruneResult",
    "PruneWarning",
    "Refit",
    "WeightResult",
    "phase_timer",
    "prune",
]

PHASES = (
    "prepare",
    "structure",
    "views",
    "scores",
    "allocation",
    "selection",
    "surgery",
    "reconstruct",
)


def _phase(on_phase, name):
    """The caller's context manager for phase ``name`` (see :func:`phase_timer`)."""
    return contextlib.nullcontext() if on_phase is None else on_phase(name)


def phase_timer(timings: dict):
    """An ``on_phase`` hook for :func:`prune` that adds each phase's wall time [s] to
    ``timings[phase]``; a benchmark may pass its own hook (CPU time, compile events)."""

    @contextlib.contextmanager
    def on_phase(name):
        start = time.perf_counter()
        try:
            yield
        finally:
            timings[name] = timings.get(name, 0.0) + time.perf_counter() - start

    return on_phase


# --------------------------------------------------------------------------------------------
# The entry point: plan -> prepare -> branch -> post-steps
# --------------------------------------------------------------------------------------------
def prune(
    params,
    key,
    ratio,
    *,
    method="coreset",
    model=None,
    input_shape=None,
    unit: str = "params",
    sampling: str | None = None,
    allocation: str = "bound",
    leave=(),
    min_width: int = 1,
    max_ratio: float | None = None,
    round_to: int = 1,
    prune_residual: bool = False,
    prune_output: bool = False,
    data=None,
    apply_kwargs=None,
    reconstruct: str | Refit | None = None,
    ridge: float | None = None,
    recalibrate_bn: bool | None = None,
    epsilon: float | None = None,
    certificate: bool | Certificate = False,
    on_phase=None,
    example_inputs=None,
    rules=None,
    depth: int | None = None,
    depth_score: str = "block_influence",
    **options,
) -> PruneResult:
    """Prune ``params`` with a registered method so that ``ratio`` of ``unit`` is removed.

    Args:
      params: trained params, or the full variables dict (``{'params', 'batch_stats'}``), or
        a Flax NNX module: its own model (no ``model=``; ``input_shape``, ``example_inputs``
        or ``data`` is needed), run through :func:`jaxprune._nnx.as_linen` wherever a Linen
        model is, so every method and option works alike; ``result.module`` is the pruned module and
        ``result.params`` its variables as a dict.
      key: a JAX PRNG key, or an int seed (``jax.random.key(seed)``); selection and JL
        projections are random (fixed key, same result).
      ratio: float in [0, 1), or ``{unit name: fraction}`` (a channel group's or a kernel
        layer's name) to prune only the named units.
      method: a configured method (``jaxprune.methods.coreset(projection_dim=5)``), or the
        name of a registered one (``jaxprune.methods.names()``) with its options as
        ``**options``; both give the same result.
      model: the Flax module (needed for anything but a plain Dense chain); its jaxpr is
        traced to find the channel groups. ``input_shape``: per-example input shape of a
        float input.
      rules: ``{primitive name: rule}`` teaching the structure tracer primitives it does not
        know, for this call (the contract: :func:`jaxprune.structure.register_rule`).
      example_inputs: what the model is traced on when its input is not one float array: an
        array of any dtype (e.g. int32 token ids, batch first), a tuple of positional
        inputs (``None`` allowed) or a dict of keyword inputs (``model.apply(v, *args,
        **kwargs)``); only shapes and dtypes matter.
      unit: ``"params"`` | ``"neurons"`` | ``"flops"`` — what ``ratio`` counts.
      sampling: ``"sparsity_first"`` (re-weighted) or ``"deterministic"`` (top-k); default:
        the method's own.
      allocation: how a float ratio is split over groups: ``"bound"`` (balance the sampling
        error bounds, :func:`jaxprune.selection.allocate_widths`) or ``"uniform"``. Weight
        methods always give every kernel the same sparsity (the report says so).
      leave: unit names never pruned. min_width: channels a pruned group keeps at least.
      max_ratio: a float ``ratio`` removes at most this fraction of any one group's channels
        (like Torch-Pruning's ``max_pruning_ratio``), so that a whole-model target never cuts
        a layer to nothing; default ``max(0.9, (1 + ratio) / 2)`` (at least 10 % of a group
        kept, or half of what the target leaves, so a target every group can meet is
        reachable). When frozen groups and this cap
        put the target out of reach, a ``PruneWarning`` gives the achieved ratio and why. A
        ratio dict sets its groups' widths itself.
      round_to: widths are multiples of this (hardware-friendly shapes; a group smaller
        than it is left whole).
      prune_residual: also prune channel groups tied by residual adds (default: only the
        inner channels of residual blocks, as the coreset papers do).
      prune_output: weight methods only — also sparsify the output layer's kernel.
      data: a small batch of inputs ``S`` (N, *input_shape) for data-informed methods, or
        the forms of ``example_inputs`` with N examples (integer arrays keep their dtype).
      reconstruct: a :class:`jaxprune.Refit`, or ``"lstsq"`` with the flat ``ridge=`` (default
        1e-3) and ``recalibrate_bn=`` (default False): refit every consumer of a pruned group
        on ``data`` by ridge least squares (:func:`jaxprune.reconstruct.refit`; structured
        methods), then optionally re-estimate BatchNorm statistics on ``data``. The report's
        ``"reconstruct"`` has each layer's relative pre-activation error before and after.
      epsilon: epsilon-first structured pruning — widths from Theorem 2.6 of the main paper
        for this ε (:func:`jaxprune.bounds.group_epsilon_ratios`; pass ``ratio=None``); a
        ``ValueError`` names a group whose μ(P) = ∞ (no finite sample size exists).
      certificate: ``True`` or a :class:`jaxprune.Certificate`: add ``report["certificate"]``
        (:func:`jaxprune.bounds.certify`: rank, μ(P), the ε of the draws made, and with
        ``data`` the observed consumer errors). Off by default: μ(P) costs an LP and a query
        search per group.
      apply_kwargs: keyword arguments of the model's inference call (``{'train': False}``);
        default: found from its ``__call__`` signature (``train``, ``training``,
        ``is_training``, ``deterministic``, ``use_running_average``). NNX: the module runs in
        ``eval()`` mode, and these are extra keyword arguments of its call.
      depth: remove this many residual blocks whole instead of channels
        (:func:`jaxprune.depth.prune_depth`: decoder blocks, ResNet blocks; ``ratio`` must be
        0 — prune depth and width in two calls); returns a
        :class:`~jaxprune.depth.DepthResult` whose ``form`` says whether the module was
        rebuilt with fewer blocks, runs with the blocks skipped, or stays masked.
        ``depth_score``: ``"block_influence"`` (1 − cos between a block's input and output
        on ``data``) or ``"norm"`` (data-free).
      on_phase: ``on_phase(name)`` -> a context manager wrapped around each phase of
        :data:`PHASES` (benchmarks; :func:`phase_timer` records wall times).
      **options: with a method name, that method's options
        (``jaxprune.methods.get(method).options()``).

    Example, a bare Dense chain (no model needed), half of the hidden neurons by ℓ1 norm::

      >>> import jax.numpy as jnp, jaxprune
      >>> params = {"dense_0": {"kernel": jnp.ones((4, 8)), "bias": jnp.zeros(8)},
      ...           "dense_1": {"kernel": jnp.ones((8, 2)), "bias": jnp.zeros(2)}}
      >>> result = jaxprune.prune(params, 0, 0.5, method="l1_norm", unit="neurons")
      >>> result.widths, result.params["dense_1"]["kernel"].shape
      ({'dense_0': 4}, (4, 2))
    """
    if depth is not None:
        # a DepthResult (documented above); the annotation names the usual result
        return _prune_depth(  # pyright: ignore[reportReturnType]
            params,
            ratio,
            depth,
            depth_score,
            model=model,
            example_inputs=example_inputs,
            input_shape=input_shape,
            data=data,
            apply_kwargs=apply_kwargs,
        )
    plan = plan_lib.build(
        params,
        key,
        ratio,
        method=method,
        model=model,
        input_shape=input_shape,
        unit=unit,
        sampling=sampling,
        allocation=allocation,
        leave=leave,
        min_width=min_width,
        max_ratio=max_ratio,
        round_to=round_to,
        prune_residual=prune_residual,
        prune_output=prune_output,
        data=data,
        apply_kwargs=apply_kwargs,
        reconstruct=reconstruct,
        ridge=ridge,
        recalibrate_bn=recalibrate_bn,
        epsilon=epsilon,
        certificate=certificate,
        on_phase=on_phase,
        example_inputs=example_inputs,
        rules=rules,
        options=options,
    )
    plan = _prepare(plan)
    result = _prune_channels(plan) if plan.kind == "channels" else _prune_weights(plan)
    for step in POST_STEPS:
        result = step(plan, result)
    return result


def _prepare(plan: Plan) -> Plan:
    """The method's training phase, if it has one: new variables to shrink and to score."""
    if plan.method.prepare is None:
        return plan
    with _phase(plan.on_phase, "prepare"):
        variables, score_variables = plan.method.prepare(plan.model, plan.variables)
    return dataclasses.replace(
        plan, variables=as_variables(variables)[0], score_variables=as_variables(score_variables)[0]
    )


def _with_report(result: PruneResult, **entries) -> PruneResult:
    return dataclasses.replace(result, report={**result.report, **entries})


def _record_epsilon(plan: Plan, result: PruneResult) -> PruneResult:
    return result if plan.epsilon is None else _with_report(result, epsilon=plan.epsilon)


def _certify(plan: Plan, result: PruneResult) -> PruneResult:
    """``report["certificate"]`` (:func:`jaxprune.bounds.certify`) of a structured prune."""
    cert = plan.certificate
    if cert is None or result.kind != "channels":
        return result
    data = plan.data if cert.observed and plan.model is not None else None
    return _with_report(
        result, certificate=bounds.certify(result, model=plan.model, data=data, seed=cert.seed)
    )


def _after_selection(plan: Plan, result: PruneResult) -> PruneResult:
    """The method's own step on the pruned network (FLAP's bias compensation), if any."""
    # kind "channels" is a ChannelResult
    if plan.method.after_selection is None or result.kind != "channels" or not result.kept:  # pyright: ignore[reportAttributeAccessIssue]
        return result
    return plan.method.after_selection(result, plan.model, plan.data)


def _refit(plan: Plan, result: PruneResult) -> PruneResult:
    """``result`` with every consumer of a pruned group refit on ``data``."""
    # plan.build allows a refit only for channel methods, whose results are ChannelResults
    if plan.refit is None or not result.kept:  # pyright: ignore[reportAttributeAccessIssue]
        return result
    assert isinstance(result, ChannelResult)
    small = result.model(plan.model) if result.nnx_module is None else _nnx.as_linen(result.module)
    with _phase(plan.on_phase, "reconstruct"):
        params, rep = reconstruct_lib.refit(
            plan.model,
            result.dense_variables,
            # a Linen module: result.model of a Linen model, or the NNX one as Linen
            small,  # pyright: ignore[reportArgumentType]
            result.params,
            reconstruct_lib.consumer_paths(result.groups, result.kept),
            plan.data,
            ridge=plan.refit.ridge,
            apply_kwargs=result.apply_kwargs,
            recalibrate_bn=plan.refit.recalibrate_bn,
            groups=result.groups,
            kept=result.kept,
        )
    return dataclasses.replace(result, params=params, report={**result.report, "reconstruct": rep})


def _prune_depth(params, ratio, k, score, **inputs):
    """``prune(..., depth=k)``: :func:`jaxprune.depth.prune_depth` (no channels removed)."""
    if ratio not in (0, 0.0, None):
        raise ValueError(
            f"depth={k} removes whole blocks and ratio={ratio!r} channels: prune "
            "depth and width in two calls (ratio=0 with depth=)"
        )
    return depth_lib.prune_depth(params, k, score=score, **inputs)


# Run in order on every result; each takes the plan and the result and returns a result.
POST_STEPS = (_record_epsilon, _after_selection, _certify, _refit)


def _method_info(plan: Plan, unit_names, views_) -> dict | None:
    """``report["method_info"]``: the method's ``info(views)`` keyed by unit name."""
    if plan.method.info is None:
        return None
    values = plan.method.info(views_)
    return {k: dict(zip(unit_names, v)) for k, v in values.items()}


@contextlib.contextmanager
def _model_must_fit():
    """A ``model=`` that does not fit the params, reported in one line naming the parameter
    (Flax's own error says which path and shapes differ)."""
    try:
        yield
    except (
        flax.errors.ScopeParamShapeError,
        flax.errors.ScopeParamNotFoundError,
        flax.errors.ScopeCollectionNotFound,
    ) as err:
        raise ValueError(f"model= does not match the params: {_flax.first_line(err)}") from None


# --------------------------------------------------------------------------------------------
# Channels: traced groups -> widths -> kept channels -> smaller arrays
# --------------------------------------------------------------------------------------------
_TRACED: collections.OrderedDict = collections.OrderedDict()  # trace key -> Structure
_TRACED_MAX = 8


def _avals(tree) -> tuple:
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    return treedef, tuple((tuple(np.shape(x)), str(getattr(x, "dtype", type(x)))) for x in leaves)


def _trace_key(plan: Plan, x) -> tuple | None:
    """What the traced structure depends on: the module (Linen modules compare by their
    fields), its inference keywords, the variables' and inputs' trees with their leaves'
    shapes and dtypes, and the tracer's rules; ``None`` when a part is unhashable."""
    rules = {**structure.RULES, **(plan.rules or {})}
    key = (
        plan.model,
        tuple(sorted((plan.apply_kwargs or {}).items(), key=lambda kv: kv[0])),
        _avals(plan.variables),
        _avals(x),
        tuple(sorted(rules.items(), key=lambda kv: kv[0])),
    )
    try:
        hash(key)
    except TypeError:
        return None
    return key


def _structure(plan: Plan):
    """``(structure, per-example input shape)`` of the network, traced in inference mode.

    The structure depends only on the module and the shapes, so a second prune of
    same-shaped variables reuses it (the last ``_TRACED_MAX`` traces are kept)."""
    if plan.model is None:
        struct, _ = structure.from_params(plan.variables)
        first = struct.groups[0].producers[0] if struct.groups else None
        return struct, (None if first is None else (struct.shapes[first.path][0],))
    x = _flax.as_example(plan.input_shape).zeros(2)
    key = _trace_key(plan, x)
    if key is not None and key in _TRACED:
        _TRACED.move_to_end(key)
        return _TRACED[key], plan.input_shape
    with _model_must_fit():
        struct = structure.trace_groups(
            lambda v, inp: _flax.apply_inference(plan.model, v, inp, plan.apply_kwargs),
            plan.variables,
            x,
            plan.rules,
        )
    if key is not None:
        _TRACED[key] = struct
        while len(_TRACED) > _TRACED_MAX:
            _TRACED.popitem(last=False)
    return struct, plan.input_shape


def _prune_channels(plan: Plan) -> ChannelResult:
    with _phase(plan.on_phase, "structure"):
        struct, input_shape = _structure(plan)
    ratio = plan.ratio
    groups = selection.prunable_groups(
        struct,
        plan.leave,
        plan.prune_residual,
        None if plan.epsilon is not None else ratio,
        allow_empty=True,
    )
    if plan.epsilon is not None and groups:
        ratio = bounds.group_epsilon_ratios(plan.score_variables, groups, plan.epsilon)
    result = functools.partial(
        ChannelResult,
        groups=struct.groups,
        dense_variables=plan.variables,
        input_shape=input_shape,
        apply_kwargs=plan.apply_kwargs,
        nnx_module=plan.nnx_module,
    )
    if not groups:  # nothing can be cut: the network comes back whole, and the warning says why
        report = _channel_report(plan, struct, groups, {}, ratio, {})
        return result(
            params=restore_form(plan.variables, plan.wrapped),
            widths={},
            kept={},
            scales={},
            sensitivities={},
            report=report,
        )
    score_key, select_key = split_keys(plan.key, 2)  # one program for every count
    with _phase(plan.on_phase, "views"):
        group_views = views.channel_views(
            plan.score_variables,
            groups,
            plan.model,
            plan.method_data,
            plan.apply_kwargs,
            statistics=plan.method.statistics,
            batch_size=getattr(plan.method, "batch_size", 32),
        )
    with _phase(plan.on_phase, "scores"):
        scores = plan.method.score(score_key, group_views)
        sens = {g.name: np.asarray(s) for g, s in zip(groups, scores)}
    info = _method_info(plan, [g.name for g in groups], group_views)
    del group_views  # captured activations are not needed past scoring
    with _phase(plan.on_phase, "allocation"):
        widths = selection.allocate_widths(
            struct,
            groups,
            ratio,
            plan.unit,
            plan.min_width,
            sens,
            plan.allocation,
            plan.round_to,
            plan.max_ratio,
        )
    kept, scales, draws = {}, {}, {}
    with _phase(plan.on_phase, "selection"):
        for g, k in zip(groups, split_keys(select_key, len(groups))):
            kept[g.name], scales[g.name], draws[g.name] = selection.select(
                k, sens[g.name], widths[g.name], plan.sampling
            )
    with _phase(plan.on_phase, "surgery"):
        small = jax.block_until_ready(surgery.shrink(plan.variables, struct.groups, kept, scales))
    report = _channel_report(plan, struct, groups, widths, ratio, draws)
    if info is not None:
        report["method_info"] = info
    return result(
        params=restore_form(small, plan.wrapped),
        widths=widths,
        kept=kept,
        scales=scales,
        sensitivities=sens,
        report=report,
    )


def _why_whole(group) -> str:
    """Why a traced group was not pruned: its tracer reason, else a tie or ``leave=``."""
    if group.reason:
        return group.reason
    if group.residual:
        return "tied by a residual add (prune_residual=True prunes it)"
    return "left alone (leave= / not named in the ratio dict)"


def _frozen_summary(struct, groups, limit: int = 8) -> str:
    """``name (reason); ...`` for the groups that are not pruned."""
    pruned = {g.name for g in groups}
    left = [f"{g.name} ({_why_whole(g)})" for g in struct.groups if g.name not in pruned]
    more = f"; and {len(left) - limit} more" if len(left) > limit else ""
    return "; ".join(left[:limit]) + more if left else "none"


def _channel_report(plan: Plan, struct, groups, widths, ratio, draws) -> dict:
    unit, min_width, max_ratio = plan.unit, plan.min_width, plan.max_ratio
    achieved = {u: selection.removed_fraction(struct, groups, widths, u) for u in UNITS}
    report = {
        "method": plan.method.name,
        "kind": "channels",
        "sampling": plan.sampling,
        "unit": unit,
        "target_ratio": ratio if not isinstance(ratio, Mapping) else dict(ratio),
        "achieved_ratio": achieved[unit],
        "ratios": {
            "params_model": achieved["params"],
            "neurons": achieved["neurons"],
            "flops": achieved["flops"],
            "params_prunable": selection.removed_fraction(
                struct, groups, widths, "params_prunable"
            ),
        },
        "params_before": struct.count_params(),
        "params_after": struct.count_params(widths),
        "flops_before": 2 * struct.count_macs(),
        "flops_after": 2 * struct.count_macs(widths),
        "neurons": {g.name: [g.size, widths[g.name]] for g in groups},
        "frozen": {g.name: _why_whole(g) for g in struct.groups if g.name not in widths},
        "draws": draws,
    }
    low = selection.min_widths(groups, min_width, max_ratio)
    capped = sorted(g.name for g in groups if widths[g.name] == low[g.name] > min_width)
    if not isinstance(ratio, Mapping) and abs(achieved[unit] - ratio) > 0.01:
        cap = f"; at the per-group cap max_ratio={max_ratio}: {', '.join(capped)}" if capped else ""
        warnings.warn(
            f"achieved {unit} ratio {achieved[unit]:.4f} of the whole model is more "
            f"than 1% from the target {ratio} (integer widths, min_width, the "
            f"max_ratio={max_ratio} cap per group, or channels that cannot be "
            f"pruned). Not pruned: {_frozen_summary(struct, groups)}{cap}",
            PruneWarning,
            stacklevel=4,
        )
    report["capped"] = capped
    floor = sorted(g.name for g in groups if widths[g.name] <= min_width < g.size)
    if floor and not isinstance(ratio, Mapping):
        warnings.warn(
            f"layers cut to min_width={min_width}: {', '.join(floor)}; the ratio "
            "asks more of them than they can give",
            PruneWarning,
            stacklevel=4,
        )
    return report


# --------------------------------------------------------------------------------------------
# Weights: kernel layers -> per-layer budgets -> kept entries -> masked arrays
# --------------------------------------------------------------------------------------------
def _prunable_layers(layers, ratio, leave, prune_output) -> list:
    """Every kernel but the output layer's (the one called last) and the ``leave=`` ones;
    with a ratio dict, only the named layers."""
    names = [layer.name for layer in layers]
    unknown = sorted(set(leave) - set(names))
    if unknown:
        raise ValueError(f"leave= names unknown layers {unknown}; kernel layers: {names}")
    candidates = layers if prune_output else layers[:-1]
    prunable = [layer for layer in candidates if layer.name not in set(leave)]
    if isinstance(ratio, Mapping):
        unknown = sorted(set(ratio) - {layer.name for layer in prunable})
        if unknown:
            raise ValueError(
                f"ratio names unknown or non-prunable layers {unknown}; prunable: "
                f"{[layer.name for layer in prunable]} (the output layer "
                f"{names[-1]!r} needs prune_output=True)"
            )
        prunable = [layer for layer in prunable if layer.name in ratio]
    if not prunable:
        raise ValueError(
            f"no prunable kernel: the output layer {names[-1]!r} is kept dense and "
            f"the others ({names[:-1]}) were left alone"
        )
    return prunable


def _top_k_per_layer(scores, keep) -> list:
    """Default weight selection (``sampling="deterministic"``, checked by the plan): the
    ``keep_l`` largest scores of each layer."""
    return [
        Selection(selection.top_k_mask(s, k), None, np.asarray(s)) for s, k in zip(scores, keep)
    ]


def _prune_weights(plan: Plan) -> WeightResult:
    """Unstructured pruning. ``ratio`` is the fraction of the prunable kernels' entries
    removed; every kernel gets the same sparsity: ``R = round(ratio·N)`` entries are removed
    in total, split by largest-remainder rounding (:func:`jaxprune.selection.layer_budgets`).
    ``allocation="bound"`` has no weight-level counterpart and falls back to this split (the
    report records ``allocation: "uniform"``)."""
    meth, ratio, variables = plan.method, plan.ratio, plan.variables
    with _phase(plan.on_phase, "structure"), _model_must_fit():
        layers = (
            structure.kernel_layers(variables)
            if plan.model is None
            else structure.kernel_layers(variables, plan.model, plan.input_shape, plan.apply_kwargs)
        )
    prunable = _prunable_layers(layers, ratio, plan.leave, plan.prune_output)
    with _phase(plan.on_phase, "views"):
        layer_views = views.weight_views(
            variables, layers, prunable, plan.model, plan.method_data, plan.apply_kwargs
        )
    kernels = [v.kernel for v in layer_views]
    sizes = [k.size for k in kernels]
    if isinstance(ratio, Mapping):
        keep = [
            selection.layer_budgets([n], float(ratio[layer.name]))[0]
            for layer, n in zip(prunable, sizes)
        ]
    else:
        keep = selection.layer_budgets(sizes, float(ratio))
    with _phase(plan.on_phase, "scores"):
        scores = meth.score(plan.key, layer_views)
    with _phase(plan.on_phase, "selection"):
        chosen = (
            _top_k_per_layer(scores, keep)
            if meth.select is None
            else meth.select(plan.key, scores, layer_views, keep, plan.sampling)
        )
    if len(chosen) != len(prunable):
        raise RuntimeError(
            f"method {meth.name!r} returned {len(chosen)} selections for {len(prunable)} layers"
        )
    with _phase(plan.on_phase, "surgery"):
        pruned, mask, kept, scales = _apply_selections(
            meth.name, variables, prunable, kernels, chosen
        )
    report = _weight_report(
        meth.name,
        plan.sampling,
        ratio,
        plan.allocation,
        prunable,
        kernels,
        chosen,
        variables,
        pruned,
        plan.leave,
        layers[-1].name,
        plan.prune_output,
    )
    return WeightResult(
        params=restore_form(pruned, plan.wrapped),
        keep=kept,
        scales=scales,
        layers=tuple(layers),
        report=report,
        sensitivities={layer.name: np.asarray(sel.scores) for layer, sel in zip(prunable, chosen)},
        mask=mask,
        input_shape=plan.input_shape,
        apply_kwargs=plan.apply_kwargs,
        nnx_module=plan.nnx_module,
    )


def _apply_selections(name, variables, prunable, kernels, chosen):
    new_kernels, kernel_masks, kept, scales = {}, {}, {}, {}
    for layer, k, sel in zip(prunable, kernels, chosen):
        keep = np.asarray(sel.keep, bool)
        if keep.shape != k.shape:
            raise RuntimeError(
                f"method {name!r}: keep mask of {layer.name} has shape "
                f"{keep.shape}, kernel {k.shape}"
            )
        scale = np.ones(k.shape, k.dtype) if sel.scale is None else np.asarray(sel.scale, k.dtype)
        new_kernels[layer.path] = jnp.asarray(np.where(keep, k * scale, 0).astype(k.dtype))
        kernel_masks[layer.path[1:]] = keep.astype(np.float32)
        kept[layer.name], scales[layer.name] = keep, np.where(keep, scale, 0)
    pruned = map_with_paths(lambda p, leaf: new_kernels.get(p, leaf), variables)
    mask = map_with_paths(
        lambda p, leaf: kernel_masks.get(p, np.ones(np.shape(leaf), np.float32)),
        variables["params"],
    )
    return pruned, mask, kept, scales


def _weight_report(
    method,
    sampling,
    ratio,
    allocation,
    prunable,
    kernels,
    chosen,
    variables,
    pruned,
    leave,
    output,
    prune_output,
) -> dict:
    total = sum(k.size for k in kernels)
    kept = [int(np.count_nonzero(s.keep)) for s in chosen]
    zeros = sum(
        int(k.size - np.count_nonzero(get_path(pruned, layer.path)))
        for layer, k in zip(prunable, kernels)
    )
    achieved = 1.0 - sum(kept) / total
    params_before = metrics.param_count(variables)
    nonzero = metrics.nonzero_count(pruned)
    draws = {layer.name: s.draws for layer, s in zip(prunable, chosen) if s.draws is not None}
    report = {
        "method": method,
        "kind": "weights",
        "sampling": sampling,
        "unit": "params",
        "allocation": "uniform",
        "allocation_requested": allocation,
        "target_ratio": dict(ratio) if isinstance(ratio, Mapping) else ratio,
        "achieved_ratio": achieved,  # kernel entries removed by the mask
        "kernel_sparsity": zeros / total,  # zero entries of the pruned kernels
        "prunable_params": total,
        "prunable_kept": sum(kept),
        "ratios": {"params_prunable": achieved, "params_model": 1.0 - nonzero / params_before},
        "params_before": params_before,
        "params_after": params_before,
        "nonzero_params_before": metrics.nonzero_count(variables),
        "nonzero_params": nonzero,
        "layers": {
            layer.name: {"size": int(k.size), "kept": n, "sparsity": 1.0 - n / k.size}
            for layer, k, n in zip(prunable, kernels, kept)
        },
        "dense_layers": [*leave, *([] if prune_output else [output])],
        "draws": draws,
    }
    if not isinstance(ratio, Mapping) and abs(achieved - float(ratio)) > 0.01:
        warnings.warn(
            f"achieved weight sparsity {achieved:.4f} is more than 1% from the target "
            f"{ratio} (integer counts / minimum kept weights per layer bind)",
            PruneWarning,
            stacklevel=4,
        )
    return report
