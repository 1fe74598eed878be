"""``prune(params, key, ratio)``: structured pruning with any registered method, then surgery.

Data flow (DESIGN §2): variables -> structure (traced channel groups) -> per-layer widths for the
target ratio -> method scores per channel -> selection (sampling + re-weights) -> surgery.

Units. ``ratio`` is the fraction to remove, counted in ``unit``:
``"params"`` (default) — parameters of the arrays the prunable groups live in (for LeNet-300-100
that is every FC parameter, the unit of the main paper's Table 1); ``"neurons"`` — channels of the
prunable groups; ``"flops"`` — multiply-accumulates of the whole network. The report gives all
three plus the whole-model parameter ratio. A float ratio is split over layers by one common keep
fraction ``q`` (``width_g = round(q·C_g)``, bisection on ``q`` until the achieved ratio is closest
to the target); a dict ``{group: r}`` removes the fraction ``r`` of that group's channels.
"""
from __future__ import annotations

import dataclasses
import math
import numbers
import warnings
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from jaxprune import coreset, methods, structure, surgery
from jaxprune.methods import LayerInput, LayerView
from jaxprune.structure import ArraySlot, ChannelGroup, Structure

UNITS = ("params", "neurons", "flops")
ALLOCATIONS = ("bound", "uniform")
SAMPLINGS = ("sparsity_first", "deterministic")


@dataclasses.dataclass(frozen=True)
class PruneResult:
    """What :func:`prune` returns.

    ``params``: the smaller pytree, same structure as the input (a variables dict stays a
    variables dict, BatchNorm statistics included). ``widths``: new width per pruned group.
    ``kept``/``scales``: kept channel indices and the re-weights applied to their consumers.
    ``sensitivities``: the method's per-channel scores. ``report``: counts and ratios.
    ``mask``: for unstructured (``kind="weights"``) methods, the 0/1 pytree of kept weights
    (``params`` then has the input's shapes with pruned weights set to zero); else ``None``.
    """
    params: Any
    widths: dict
    kept: dict
    scales: dict
    sensitivities: dict
    groups: tuple
    report: dict
    mask: Any = None

    def model(self, module):
        """The smaller Flax module: ``module.clone(widths=...)`` for jaxprune-style models.

        Works for any module with a ``widths`` field and a ``prunable_layers()`` method naming
        the params path of the layer behind each width (see ``jaxprune.models``); other width
        fields follow ``tied_width_layers()`` when the module has it.
        """
        if not (hasattr(module, "widths") and hasattr(module, "prunable_layers")):
            raise TypeError(
                f"{type(module).__name__} has no `widths` field / `prunable_layers()` method, so "
                "the smaller module cannot be built automatically; build it with these widths: "
                f"{self.widths}")
        by_module = {}
        for g in self.groups:
            if g.name in self.widths:
                for m in g.producer_modules:
                    by_module[m] = self.widths[g.name]
        layers = tuple(module.prunable_layers())
        new = tuple(by_module.get(layer, w) for layer, w in zip(layers, module.widths))
        small = module.clone(widths=new)
        # widths outside `widths` (a ResNet's stem/stage widths), via `tied_width_layers()`:
        # {field: layers whose output width the field sets}
        tied = getattr(module, "tied_width_layers", None)
        if tied is None:
            return small
        updates = {}
        for field, field_layers in tied().items():
            current = getattr(module, field)
            if isinstance(current, int):
                updates[field] = by_module.get(field_layers[0], current)
            else:
                updates[field] = tuple(by_module.get(layer, w)
                                       for layer, w in zip(field_layers, current))
        return small.clone(**updates)


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------
def _check_ratio(ratio) -> None:
    def one(r, what):
        if isinstance(r, bool) or not isinstance(r, numbers.Real) or not (0.0 <= float(r) < 1.0):
            raise ValueError(f"{what} must be a number in [0, 1), got {r!r}")
    if isinstance(ratio, Mapping):
        if not ratio:
            raise ValueError("a per-layer ratio dict must name at least one group")
        for name, r in ratio.items():
            one(r, f"ratio for group {name!r}")
    else:
        one(ratio, "ratio")


def _check_finite(variables) -> None:
    for p, leaf in jax.tree_util.tree_flatten_with_path(variables)[0]:
        arr = np.asarray(leaf)
        if arr.dtype.kind in "fc" and not np.all(np.isfinite(arr)):
            raise ValueError(f"non-finite (NaN/inf) values in {'/'.join(structure.path_of(p))}; "
                             "pruning needs finite weights")
        if arr.size == 0:
            raise ValueError(f"empty array at {'/'.join(structure.path_of(p))}")


def _as_variables(params):
    if isinstance(params, Mapping) and "params" in params:
        return dict(params), True
    if not isinstance(params, Mapping) or not params:
        raise ValueError("params must be a non-empty (nested) dict of arrays, e.g. "
                         "variables['params'] or the full variables dict")
    return {"params": params}, False


def _input_shape(model, variables, input_shape):
    if input_shape is not None:
        return tuple(input_shape)
    shape = getattr(model, "input_shape", None)
    if shape is not None:
        return tuple(shape)
    try:
        from jaxprune import models
        return tuple(models.default_input_shape(models.model_config(model)["name"]))
    except Exception:  # not a registered model: fall through to a clear error
        pass
    raise ValueError(f"cannot infer the input shape of {type(model).__name__}; pass "
                     "input_shape=(H, W, C) (or (features,)), without the batch axis")


# --------------------------------------------------------------------------------------------
# Width allocation
# --------------------------------------------------------------------------------------------
def removed_fraction(struct: Structure, groups, widths: Mapping[str, int], unit: str) -> float:
    """Fraction removed, in ``unit``, when ``groups`` shrink to ``widths``."""
    if unit == "neurons":
        before = sum(g.size for g in groups)
        return 1.0 - sum(widths.get(g.name, g.size) for g in groups) / before
    if unit == "flops":
        return 1.0 - struct.count_macs(widths) / struct.count_macs()
    touched = {s.path for g in groups for s in (*g.producers, *g.members, *g.consumers)}
    return 1.0 - struct.count_params(widths, touched) / struct.count_params({}, touched)


def _cost(struct: Structure, groups, widths: Mapping[str, int], unit: str) -> dict:
    """Marginal cost of one channel of each group at ``widths``, in ``unit``."""
    def measure(w):
        if unit == "neurons":
            return sum(w.get(g.name, g.size) for g in groups)
        if unit == "flops":
            return struct.count_macs(w)
        return struct.count_params(w)
    here = measure(widths)
    return {g.name: max(here - measure({**widths, g.name: widths[g.name] - 1}), 1)
            for g in groups}


def _fit_scale(struct, groups, ratio, unit, width_at) -> dict:
    """Bisection on the monotone knob ``x ∈ [0, 1]`` of ``width_at(x)`` for ``ratio``."""
    lo, hi = 0.0, 1.0  # removed(width_at(lo)) >= ratio >= removed(width_at(hi))
    if removed_fraction(struct, groups, width_at(lo), unit) < ratio:
        return width_at(lo)  # the minimum widths are as far as we can go; the report says so
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if removed_fraction(struct, groups, width_at(mid), unit) >= ratio:
            lo = mid
        else:
            hi = mid
    return min((width_at(lo), width_at(hi)),
               key=lambda w: abs(removed_fraction(struct, groups, w, unit) - ratio))


def allocate_widths(struct: Structure, groups, ratio, unit: str = "params", min_width: int = 1,
                    scores: Mapping[str, Any] | None = None, allocation: str = "bound") -> dict:
    """Per-group widths for ``ratio``.

    ``allocation="uniform"``: one keep fraction ``q`` for every group, ``m_g = round(q·C_g)``.
    ``allocation="bound"``: balance the sensitivity-sampling error bounds. A group sampled
    ``m_g`` times has error ``ε_g ∝ sqrt(t_g / m_g)`` (``t_g`` = total sensitivity, measured
    as ``Σ_j s_j / max_j s_j`` so it is scale-free and equals ``C_g`` for uniform scores).
    Minimising ``Σ_g ε_g`` subject to ``Σ_g c_g m_g = budget`` (``c_g`` = cost of one
    channel in ``unit``) gives ``m_g ∝ t_g^{1/3} c_g^{-2/3}``. Costs depend on the
    neighbours' widths, so ``c_g`` is re-evaluated at the allocated widths (5 fixed-point
    rounds). Widths are clipped to ``[min_width, C_g]`` and the common scale is found by
    bisection so that the achieved ratio is closest to ``ratio``.
    """
    if isinstance(ratio, Mapping):
        names = {g.name: g for g in groups}
        unknown = set(ratio) - set(names)
        if unknown:
            raise ValueError(f"ratio names unknown or non-prunable groups {sorted(unknown)}; "
                             f"prunable: {sorted(names)}")
        widths = {}
        for name, r in ratio.items():
            k = names[name].size - int(math.floor(float(r) * names[name].size + 1e-9))
            if k < max(min_width, 1):
                raise ValueError(f"group {name!r} would end up with width {k} (< {max(min_width, 1)})")
            widths[name] = k
        return widths

    def clip(g, value):
        return int(min(g.size, max(min_width, round(value))))

    if allocation == "uniform" or scores is None:
        return _fit_scale(struct, groups, ratio, unit,
                          lambda q: {g.name: clip(g, q * g.size) for g in groups})
    total = {}
    for g in groups:
        s = np.asarray(scores[g.name], np.float64)
        total[g.name] = float(s.sum() / s.max()) if s.max() > 0 else float(g.size)
    widths = {g.name: g.size for g in groups}
    for _ in range(5):
        cost = _cost(struct, groups, {n: max(w, 2) for n, w in widths.items()}, unit)
        raw = {g.name: total[g.name] ** (1 / 3) * cost[g.name] ** (-2 / 3) for g in groups}
        low = min(raw[g.name] / g.size for g in groups)  # x = 1 keeps every channel
        widths = _fit_scale(struct, groups, ratio, unit,
                            lambda x: {g.name: clip(g, x * raw[g.name] / low) for g in groups})
    return widths


# --------------------------------------------------------------------------------------------
# Layer views (what a method sees)
# --------------------------------------------------------------------------------------------
def _get(tree, path):
    for k in path:
        tree = tree[k]
    return tree


def _channels_first(arr, slot: ArraySlot, size: int) -> np.ndarray:
    """(size, rest) view: channel axis first, everything else flattened (layout-aware)."""
    view, _ = surgery._split(np.asarray(arr), slot, size)
    return np.moveaxis(view, slot.axis + 1, 0).reshape(size, -1)


def kernel_modules(model, variables, data) -> dict:
    """``{params path of a kernel-bearing module: the module, unbound}`` (its configuration:
    a Conv's strides, padding, dilation), keyed like :func:`jaxprune.activations.layer_inputs`.
    Found by intercepting one abstract (``jax.eval_shape``) call on one example of ``data``."""
    import flax.linen as nn
    from jaxprune.activations import _has_kernel
    if not (isinstance(variables, Mapping) and "params" in variables):
        variables = {"params": variables}
    found = {}

    def interceptor(next_fun, args, kwargs, context):
        module = context.module
        if context.method_name == "__call__" and args and _has_kernel(module):
            found[tuple(module.scope.path)] = module.clone(parent=None)
        return next_fun(*args, **kwargs)

    def run(v, x):
        with nn.intercept_methods(interceptor):
            return model.apply(v, x, train=False)

    jax.eval_shape(run, variables, jnp.asarray(np.asarray(data)[:1], jnp.float32))
    return found


def _layer_inputs(variables, slots, inputs, modules) -> tuple:
    """One :class:`LayerInput` per slot: what the slot's kernel module reads on the data."""
    out = []
    for slot in slots:
        path = tuple(slot.path[1:-1])  # ("params", *module path, "kernel")
        if path not in inputs:
            raise ValueError(f"no captured input for the module {'/'.join(path)} (its kernel "
                             "is not applied by a module's __call__ with the input first)")
        out.append(LayerInput(inputs=inputs[path], kernel=np.asarray(_get(variables, slot.path)),
                              slot=slot, module=(modules or {}).get(path)))
    return tuple(out)


def layer_view(variables, group: ChannelGroup, inputs=None, modules=None) -> LayerView:
    """Points ``[W_j | b_j]`` and outgoing ``|w_kj|`` of one group (see :class:`LayerView`).

    ``inputs``: ``{module path: input on the data}`` from
    :func:`jaxprune.activations.layer_inputs` (``modules`` from :func:`kernel_modules`); when
    given, ``consumer_inputs``/``producer_inputs`` of the view are filled.
    """
    cols, is_bias = [], []
    for slot in group.producers:
        cols.append(_channels_first(_get(variables, slot.path), slot, group.size))
        is_bias.append(np.zeros(cols[-1].shape[1], bool))
        bias = slot.path[:-1] + ("bias",)
        for m in group.members:
            if m.path == bias:
                cols.append(_channels_first(_get(variables, m.path), m, group.size))
                is_bias.append(np.ones(cols[-1].shape[1], bool))
    out = []
    for slot in group.consumers:
        w = np.abs(np.asarray(_get(variables, slot.path)))
        view, _ = surgery._split(w, slot, group.size)
        ax = slot.axis + 1
        # keep the channel axis and the consumer's output axis (its last axis)
        reduce = tuple(a for a in range(view.ndim) if a not in (ax, view.ndim - 1))
        out.append(np.sum(view, axis=reduce))  # (C, K_consumer)
    extra = {}
    if inputs is not None:
        extra = dict(consumer_inputs=_layer_inputs(variables, group.consumers, inputs, modules),
                     producer_inputs=_layer_inputs(variables, group.producers, inputs, modules))
    return LayerView(points=jnp.asarray(np.concatenate(cols, axis=1), jnp.float32),
                     outgoing=jnp.asarray(np.concatenate(out, axis=1), jnp.float32),
                     is_bias=np.concatenate(is_bias), **extra)


# --------------------------------------------------------------------------------------------
# Selection
# --------------------------------------------------------------------------------------------
def select(key: jax.Array, scores: jax.Array, k: int, sampling: str):
    """Kept indices (sorted), re-weights for them, and the number of draws.

    ``sparsity_first``: i.i.d. draws ∝ score until ``k`` distinct channels; re-weight
    ``count_j·t/(m·s_j)`` (Alg. 2, line 14). Channels with zero score get a floor of
    ``1e-6·max(s)`` so that every target width is reachable. ``deterministic``: top-k, weight 1.
    """
    scores = jnp.asarray(scores, jnp.float32)
    n = scores.shape[0]
    if k >= n:
        return np.arange(n), np.ones(n, np.float32), 0
    if sampling == "deterministic":
        # host-side top-k (ties -> lower index, as coreset.top_k): no compile per (n, k)
        idx = np.sort(np.argsort(-np.asarray(scores), kind="stable")[:k])
        return idx, np.ones(k, np.float32), 0
    if sampling != "sparsity_first":
        raise ValueError(f"unknown sampling {sampling!r}; use one of {SAMPLINGS}")
    floor = 1e-6 * jnp.maximum(jnp.max(scores), 1e-30)
    s = jnp.maximum(scores, floor)
    n_budget = max(64 * n, 4096)
    try:
        counts, weights, m, _ = coreset.sample_until_distinct(key, s, k, max_draws=n_budget)
    except ValueError:  # heavy-tailed scores: collecting the last coupons takes long
        try:
            counts, weights, m, _ = coreset.sample_until_distinct(key, s, k,
                                                                  max_draws=256 * n_budget)
        except ValueError as err:
            raise ValueError(f"sparsity-first sampling could not reach {k} distinct channels of "
                             f"{n} within {256 * n_budget} draws; use sampling='deterministic' "
                             "or prune more") from err
    idx = np.flatnonzero(np.asarray(counts) > 0)
    return idx, np.asarray(weights)[idx].astype(np.float32), int(m)


# --------------------------------------------------------------------------------------------
# The entry point
# --------------------------------------------------------------------------------------------
def prune(params, key, ratio, *, method: str = "coreset", model=None, input_shape=None,
          unit: str = "params", sampling: str | None = None, allocation: str = "bound",
          leave=(), min_width: int = 1, prune_residual: bool = False, data=None,
          **method_options) -> PruneResult:
    """Prune neurons/filters of ``params`` so that ``ratio`` of ``unit`` is removed.

    Args:
      params: trained params, or the full variables dict (``{'params', 'batch_stats'}``).
      key: a JAX PRNG key (selection and JL projections are random; fixed key, same result).
      ratio: float in [0, 1), or ``{group name: fraction of its channels}``.
      method: a registered method (``jaxprune.methods.names()``).
      model: the Flax module (needed for anything but a plain Dense chain); its jaxpr is
        traced to find the channel groups. ``input_shape``: per-example input shape.
      unit: ``"params"`` | ``"neurons"`` | ``"flops"`` — what ``ratio`` counts.
      sampling: ``"sparsity_first"`` (re-weighted) or ``"deterministic"`` (top-k); default:
        the method's own.
      allocation: how a float ratio is split over layers: ``"bound"`` (balance the
        sampling error bounds given each layer's scores and channel cost, see
        :func:`allocate_widths`) or ``"uniform"`` (one keep fraction for all layers).
      leave: group names never pruned (the output layer is never pruned).
      min_width: minimum channels a pruned group keeps (>= 1).
      prune_residual: also prune channel groups tied by residual adds (default: only inner
        channels of residual blocks, as the coreset papers do).
      data: a small batch of inputs ``S`` (N, *input_shape) for data-informed methods
        (``sipp``, ``pfp``; ``Method.needs_data``), e.g. from the validation split.
      **method_options: passed to the method (coreset: ``projection``, ``projection_dim``,
        ``activation``).
    """
    _check_ratio(ratio)
    if unit not in UNITS:
        raise ValueError(f"unit must be one of {UNITS}, got {unit!r}")
    if int(min_width) < 1:
        raise ValueError("min_width must be >= 1: a layer may not end up with zero width")
    if allocation not in ALLOCATIONS:
        raise ValueError(f"allocation must be one of {ALLOCATIONS}, got {allocation!r}")
    meth = methods.get(method)
    sampling = sampling or meth.sampling
    if sampling not in SAMPLINGS:
        raise ValueError(f"unknown sampling {sampling!r}; use one of {SAMPLINGS}")
    if meth.needs_data and data is None:
        raise ValueError(f"method {method!r} is data-informed: pass data= (a small batch of "
                         "inputs, e.g. from the validation split)")
    if data is not None:
        data = np.asarray(data)
        if data.ndim < 2 or data.shape[0] == 0:
            raise ValueError(f"data must be a non-empty batch (N, *input_shape), got shape "
                             f"{data.shape}")
        if not np.all(np.isfinite(data)):
            raise ValueError("data contains NaN or inf")
        if input_shape is None:
            input_shape = data.shape[1:]
        elif tuple(input_shape) != data.shape[1:]:
            raise ValueError(f"data has per-example shape {data.shape[1:]} but input_shape is "
                             f"{tuple(input_shape)}")
    variables, wrapped = _as_variables(params)
    _check_finite(variables)
    score_vars = variables
    if meth.prepare is not None:  # data phase of the method (e.g. Frank-Wolfe training)
        if model is None:
            raise ValueError(f"method {method!r} trains before it prunes: pass model=")
        variables, score_vars, method_options = meth.prepare(model, variables, **method_options)
        variables, _ = _as_variables(variables)
        score_vars, _ = _as_variables(score_vars)
    if meth.kind == "weights":  # unstructured: a masked pytree of the same shapes
        from jaxprune import unstructured
        return unstructured.prune_weights(
            variables, wrapped, key, ratio, meth, model=model, input_shape=input_shape,
            unit=unit, sampling=sampling, allocation=allocation, leave=leave, data=data,
            **method_options)

    if model is None:
        struct, _ = structure.from_params(variables)
    else:
        struct = structure.from_model(model, variables, _input_shape(model, variables, input_shape))
    names = {g.name for g in struct.groups}
    unknown = set(leave) - names
    if unknown:
        raise ValueError(f"leave= names unknown groups {sorted(unknown)}; groups: {sorted(names)}")
    groups = [g for g in struct.groups if g.prunable and g.name not in set(leave)
              and (prune_residual or not g.residual)]
    if not groups:
        raise ValueError("no prunable channel group found (every group reaches the output, is "
                         "tied by a residual add, or was left alone)")
    if isinstance(ratio, Mapping):  # only the named groups are pruned (names checked below)
        groups = [g for g in groups if g.name in ratio] or groups

    score_key, select_key = jax.random.split(key)
    inputs = modules = None
    if meth.needs_data or (meth.uses_data and data is not None):
        if model is None:
            raise ValueError(f"method {method!r} reads the layers' inputs on data=: pass model= "
                             "(the Flax module) as well")
        from jaxprune.activations import layer_inputs
        inputs = layer_inputs(model, score_vars, data)
        modules = kernel_modules(model, score_vars, data)
    views = [layer_view(score_vars, g, inputs, modules) for g in groups]
    sens = {g.name: np.asarray(s) for g, s in
            zip(groups, meth.scores(score_key, views, **method_options))}
    info = meth.info(views, **method_options) if meth.info is not None else None
    del inputs, views  # the captured activations are not needed past scoring
    widths = allocate_widths(struct, groups, ratio, unit, int(min_width), sens, allocation)
    keys = jax.random.split(select_key, len(groups))
    kept, scales, draws = {}, {}, {}
    for g, k in zip(groups, keys):
        kept[g.name], scales[g.name], draws[g.name] = select(k, sens[g.name], widths[g.name],
                                                             sampling)
    small = surgery.shrink(variables, struct.groups, kept, scales)

    report = _report(struct, groups, widths, ratio, unit, method, sampling, draws)
    if info is not None:  # e.g. pvc: the β used per group
        report["method_info"] = {k: {g.name: v for g, v in zip(groups, values)}
                                 for k, values in info.items()}
    out = small if wrapped else small["params"]
    return PruneResult(params=out, widths=widths, kept=kept, scales=scales,
                       sensitivities=sens, groups=struct.groups, report=report)


def _report(struct, groups, widths, ratio, unit, method, sampling, draws) -> dict:
    achieved = {u: removed_fraction(struct, groups, widths, u) for u in UNITS}
    report = {
        "method": method, "sampling": sampling, "unit": unit,
        "target_ratio": ratio if not isinstance(ratio, Mapping) else dict(ratio),
        "achieved_ratio": achieved[unit],
        "ratios": {"params_prunable": achieved["params"], "neurons": achieved["neurons"],
                   "flops": achieved["flops"],
                   "params_model": 1.0 - struct.count_params(widths) / struct.count_params()},
        "params_before": struct.count_params(), "params_after": struct.count_params(widths),
        "flops_before": 2 * struct.count_macs(), "flops_after": 2 * struct.count_macs(widths),
        "neurons": {g.name: [g.size, widths[g.name]] for g in groups},
        "draws": draws,
    }
    if not isinstance(ratio, Mapping) and abs(achieved[unit] - ratio) > 0.01:
        warnings.warn(f"achieved {unit} ratio {achieved[unit]:.4f} is more than 1% from the "
                      f"target {ratio} (layer widths are integers / min_width binds)")
    return report
