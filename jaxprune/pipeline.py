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

import contextlib
import dataclasses
import functools
import numbers
import time
import warnings
from typing import Any, Mapping

import flax
import jax
import jax.numpy as jnp
import numpy as np

from jaxprune import (_flax, _nnx, bounds, metrics, methods, models, rebuild, selection,
                      structure, surgery, views)
from jaxprune import reconstruct as reconstruct_lib
from jaxprune._tree import as_variables, get_path, leaves_with_paths, map_with_paths, restore_form
from jaxprune.selection import ALLOCATIONS, SAMPLINGS, UNITS


@dataclasses.dataclass(frozen=True)
class PruneResult:
    """What :func:`prune` returns; every field has a meaning for both kinds of method.

    ``params``: the pruned pytree, same structure as the input (a variables dict stays a
    variables dict; an NNX module gives its variables dict). Channels: smaller arrays;
    weights: the input's shapes, pruned entries 0.
    ``widths``: per pruned unit, its output units left (channels: the new width of the group;
    weights: the neurons/filters of the layer that keep at least one weight).
    ``kept``: channels: sorted kept channel indices per group; weights: the bool mask of kept
    kernel entries per layer. ``scales``: the re-weights applied (channels: per kept channel,
    multiplied into the consumers; weights: per kernel entry). ``sensitivities``: the method's
    scores per unit. ``groups``: the units the network was cut into (channel groups / kernel
    layers). ``report``: counts and ratios. ``kind``: ``"channels"`` or ``"weights"``.
    NNX input: ``module`` is the pruned module and ``masked`` the input's shapes holding the
    pruned network; for weights both are the masked module (two copies).
    """
    params: Any
    widths: dict
    kept: dict
    scales: dict
    sensitivities: dict
    groups: tuple
    report: dict
    kind: str = "channels"
    weight_mask: Any = dataclasses.field(default=None, repr=False)
    dense_shapes: Any = dataclasses.field(default=None, repr=False)
    dense_variables: Any = dataclasses.field(default=None, repr=False)
    input_shape: tuple | None = None
    apply_kwargs: dict | None = None
    nnx_module: Any = dataclasses.field(default=None, repr=False)

    @functools.cached_property
    def module(self):
        """NNX input: the pruned ``nnx.Module`` (a new object; the input is untouched).
        Channels: the smaller module, its layers' ``in_features``/``out_features``/
        ``num_features`` set to the pruned sizes; weights: the input's shapes holding
        ``result.params`` (pruned entries exactly 0)."""
        if self.nnx_module is None:
            raise AttributeError("result.module is for NNX modules; for Linen use "
                                 "result.model(module)")
        if self.kind == "weights":
            return _nnx.with_variables(self.nnx_module, self.params)
        return rebuild.smaller_nnx(self.nnx_module, self.params, self.groups, self.widths)

    @functools.cached_property
    def mask(self):
        """0/1 float32 pytree shaped like the *input's* ``'params'``: the entries the pruned
        network still uses (weights: the kept kernel entries, ones elsewhere; channels: zeros
        on the removed channels of every producer, member and consumer array)."""
        if self.kind == "weights":
            return self.weight_mask
        ones = jax.tree.map(lambda s: np.ones(s.shape, np.float32), self.dense_shapes)
        return surgery.mask(ones, self.groups, self.kept)["params"]

    @functools.cached_property
    def masked(self):
        """The pruned network at the original shapes, as a variables dict: ``result.params``
        placed back at the kept channels, zeros at the removed ones (weights: the pruned
        entries zeroed). ``model.apply(result.masked, x)`` equals
        ``result.model(model).apply(result.params, x)``. NNX input: the masked module."""
        if self.kind == "weights":
            dense = as_variables(self.params)[0]
        else:
            dense = surgery.expand(as_variables(self.params)[0], self.dense_variables,
                                   self.groups, self.kept)
        return dense if self.nnx_module is None else _nnx.with_variables(self.nnx_module, dense)

    def model(self, module, *, input_shape=None, fields=None):
        """The smaller Flax module that ``result.params`` fit.

        jaxprune's own models (a ``widths`` field and ``prunable_layers()``) come back as
        ``module.clone(widths=...)``; any other Linen module as a
        :class:`jaxprune.rebuild.Resized` wrapper that builds each layer whose output shrank
        with its new ``features`` (keyed by module path), so ``small.init`` creates exactly
        the pruned shapes. ``fields``: ``{'path/to/layer': {field: value}}`` for layers whose
        size lives in another field. Weight pruning keeps the shapes: ``module`` is returned.
        """
        if _nnx.is_module(module):
            return self.module
        if self.kind == "weights":
            return module
        if hasattr(module, "widths") and hasattr(module, "prunable_layers"):
            return self._clone_widths(module)
        shape = input_shape or self.input_shape or _input_shape(module, None)
        return rebuild.smaller_module(module, self.dense_shapes, as_variables(self.params)[0],
                                      shape, apply_kwargs=self.apply_kwargs, fields=fields,
                                      groups=self.groups, widths=self.widths)

    def _clone_widths(self, module):
        by_module = {}
        for g in self.groups:
            if g.name in self.widths:
                for m in g.producer_modules:
                    by_module[m] = self.widths[g.name]
        layers = tuple(module.prunable_layers())
        new = tuple(by_module.get(layer, w) for layer, w in zip(layers, module.widths))
        small = module.clone(widths=new)
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
class PruneWarning(UserWarning):
    """The pruned network differs from what was asked (a ratio out of reach, layers at their
    minimum width); the message names the groups and why."""


def _as_ratio(r, what) -> float:
    """A Python, NumPy or JAX real scalar in [0, 1) as a float."""
    arr = np.asarray(r) if not isinstance(r, (str, bytes)) else None
    if arr is None or arr.ndim != 0 or arr.dtype.kind not in "fiu" or isinstance(r, bool):
        raise ValueError(f"{what} must be a number in [0, 1), got {r!r}")
    value = float(arr)
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{what} must be a number in [0, 1), got {value!r}")
    return value


def _max_ratio(max_ratio, ratio) -> float:
    """The per-group cap: ``max_ratio`` in [0, 1], or by default ``max(0.9, (1 + r) / 2)``
    for a float target ``r`` (a group keeps at least 10 % of its channels, or half of what
    the target leaves when that is less: at r = 0.9, 5 %)."""
    if max_ratio is None:
        target = ratio if isinstance(ratio, float) else 0.0
        return max(0.9, (1.0 + target) / 2)
    return 1.0 if max_ratio == 1 else _as_ratio(max_ratio, "max_ratio")


def _check_ratio(ratio):
    """``ratio`` as a float or a ``{name: float}`` dict (clear errors otherwise)."""
    if isinstance(ratio, Mapping):
        if not ratio:
            raise ValueError("a per-layer ratio dict must name at least one group")
        return {name: _as_ratio(r, f"ratio for group {name!r}") for name, r in ratio.items()}
    return _as_ratio(ratio, "ratio")


def _check_arrays(variables) -> None:
    for path, leaf in leaves_with_paths(variables):
        arr = np.asarray(leaf)
        name = "/".join(path)
        if path[0] == "params" and arr.dtype.kind not in "fc":
            raise ValueError(f"{name} has dtype {arr.dtype}: pruning needs floating-point "
                             "weights (re-weighted kernels cannot be stored in integers); "
                             "cast the params to float32 first")
        if arr.dtype.kind in "fc" and not np.all(np.isfinite(arr)):
            raise ValueError(f"non-finite (NaN/inf) values in {name}; "
                             "pruning needs finite weights")
        if arr.size == 0:
            raise ValueError(f"empty array at {name}")


def _check_data(data, input_shape, example_inputs=None):
    """``(data, input spec)``, consistent with each other.

    ``data``: ``None``, a float host array (N, *input_shape), or an
    :class:`~jaxprune._flax.Example` when it is given as a tuple/dict of inputs or as an
    array that is not floating point (token ids keep their dtype). The input spec is what
    the model is traced on: an Example (from ``example_inputs``, else from ``data`` when
    that is an Example) or the per-example shape."""
    example = None if example_inputs is None else _check_example(example_inputs, input_shape)
    if data is None:
        return None, input_shape if example is None else example.abstract(1)
    if _keeps_dtype(data, example):
        data = _check_example(data, None)
        return data, (data if example is None else example).abstract(1)
    data = np.asarray(data)
    if data.ndim < 2 or data.shape[0] == 0:
        raise ValueError(f"data must be a non-empty batch (N, *input_shape), got shape "
                         f"{data.shape}")
    if not np.all(np.isfinite(data)):
        raise ValueError("data contains NaN or inf")
    if example is not None:
        return data, example.abstract(1)
    if input_shape is None:
        return data, data.shape[1:]
    if tuple(input_shape) != data.shape[1:]:
        raise ValueError(f"data has per-example shape {data.shape[1:]} but input_shape is "
                         f"{tuple(input_shape)}")
    return data, input_shape


def _keeps_dtype(data, example) -> bool:
    """True when ``data`` goes to the model as it is (an Example): a tuple/dict of inputs, an
    integer or bool array (token ids), or any array that is not floating point when
    ``example_inputs`` is given. uint8 images without ``example_inputs`` are read as float32,
    as before."""
    if isinstance(data, (Mapping, tuple, list, _flax.Example)):
        return True
    dtype = np.asarray(data).dtype
    if example is not None:
        return dtype.kind not in "fc"
    return dtype.kind in "iub" and dtype != np.uint8


def _check_example(inputs, input_shape) -> _flax.Example:
    """``inputs`` (an array, a tuple of positional inputs, a dict of keyword inputs) as an
    Example of host arrays with one batch size, finite where floating point."""
    ex = jax.tree.map(np.asarray, _flax.Example.of(inputs))
    if ex.batch == 0:
        raise ValueError("example inputs / data must hold at least one example")
    for a in ex.arrays:
        if a.dtype.kind in "fc" and not np.all(np.isfinite(a)):
            raise ValueError("example inputs / data contain NaN or inf")
    first = ex.arrays[0].shape[1:]
    if input_shape is not None and tuple(input_shape) != first:
        raise ValueError(f"input_shape {tuple(input_shape)} does not match the first example "
                         f"input's per-example shape {first}; pass one of them")
    return ex


def _as_key(key):
    """``key`` as a JAX PRNG key: an int seed becomes ``jax.random.key(seed)``."""
    if isinstance(key, numbers.Integral) and not isinstance(key, bool):
        return jax.random.key(int(key))
    if isinstance(key, jax.Array) and jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return key
    if isinstance(key, (jax.Array, np.ndarray)) and key.dtype == np.uint32 and key.shape == (2,):
        return jnp.asarray(key)  # a raw key (jax.random.PRNGKey), also as a NumPy copy
    raise ValueError(f"key must be a JAX PRNG key (jax.random.key(seed)) or an int seed, got "
                     f"{type(key).__name__}")


def _structure_of_model(model, variables, input_shape, apply_kwargs, rules):
    """:func:`_structure`, with a ``model=`` that does not fit the params reported in one
    line naming the parameter (Flax's own error says which path and shapes differ)."""
    try:
        return _structure(model, variables, input_shape, apply_kwargs, rules)
    except (flax.errors.ScopeParamShapeError, flax.errors.ScopeParamNotFoundError,
            flax.errors.ScopeCollectionNotFound) as err:
        raise ValueError(f"model= does not match the params: {_flax.first_line(err)}") \
            from None


def _input_shape(model, input_shape):
    if isinstance(input_shape, _flax.Example):
        return input_shape
    if input_shape is not None:
        return tuple(input_shape)
    shape = getattr(model, "input_shape", None)
    if shape is not None:
        return tuple(shape)
    try:
        return tuple(models.default_input_shape(models.model_config(model)["name"]))
    except TypeError:  # not a registered jaxprune model
        pass
    raise ValueError(f"cannot infer the input shape of {type(model).__name__}; pass "
                     "input_shape=(H, W, C) (or (features,)), without the batch axis")


PHASES = ("prepare", "structure", "views", "scores", "allocation", "selection", "surgery",
          "reconstruct")


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


def _shapes(tree):
    """Shapes and dtypes of every leaf (no copy of device arrays to the host)."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), getattr(x, "dtype", None)
                                                       or np.asarray(x).dtype), tree)


# --------------------------------------------------------------------------------------------
# The entry point
# --------------------------------------------------------------------------------------------
def prune(params, key, ratio, *, method: str = "coreset", model=None, input_shape=None,
          unit: str = "params", sampling: str | None = None, allocation: str = "bound",
          leave=(), min_width: int = 1, max_ratio: float | None = None, round_to: int = 1,
          prune_residual: bool = False,
          prune_output: bool = False, data=None, apply_kwargs=None,
          reconstruct: str | None = None, ridge: float = 1e-3, recalibrate_bn: bool = False,
          epsilon: float | None = None, certificate: bool = False, on_phase=None,
          example_inputs=None, rules=None, **options) -> PruneResult:
    """Prune ``params`` with a registered method so that ``ratio`` of ``unit`` is removed.

    Args:
      params: trained params, or the full variables dict (``{'params', 'batch_stats'}``), or
        a Flax NNX module: its own model (no ``model=``; ``input_shape``,
        ``example_inputs`` or ``data`` is needed), run through :func:`jaxprune._nnx.as_linen` wherever a Linen model is, so
        every method and option works alike; ``result.module`` is the pruned module and
        ``result.params`` its variables as a dict.
      key: a JAX PRNG key, or an int seed (``jax.random.key(seed)``); selection and JL
        projections are random (fixed key, same result).
      ratio: float in [0, 1), or ``{unit name: fraction}`` (a channel group's or a kernel
        layer's name) to prune only the named units.
      method: a registered method (``jaxprune.methods.names()``).
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
      reconstruct: ``"lstsq"`` refits every consumer of a pruned group on ``data`` by ridge
        least squares (:func:`jaxprune.reconstruct.refit`; structured methods);
        ``ridge``: its relative ridge; ``recalibrate_bn``: re-estimate BatchNorm statistics
        on ``data`` afterwards. The report's ``"reconstruct"`` has each layer's relative
        pre-activation error before and after.
      epsilon: epsilon-first structured pruning — widths from Theorem 2.6 of the main paper
        for this ε (:func:`jaxprune.bounds.group_epsilon_ratios`; pass ``ratio=None``); a
        ``ValueError`` names a group whose μ(P) = ∞ (no finite sample size exists).
      certificate: add ``report["certificate"]`` (:func:`jaxprune.bounds.certify`: rank,
        μ(P), the ε of the draws made, and with ``data`` the observed consumer errors). Off by
        default: μ(P) costs an LP and a query search per group.
      apply_kwargs: keyword arguments of the model's inference call (``{'train': False}``);
        default: found from its ``__call__`` signature (``train``, ``training``,
        ``is_training``, ``deterministic``, ``use_running_average``). NNX: the module runs in
        ``eval()`` mode, and these are extra keyword arguments of its call.
      on_phase: ``on_phase(name)`` -> a context manager wrapped around each phase of
        :data:`PHASES` (benchmarks; :func:`phase_timer` records wall times).
      **options: the method's options (``jaxprune.methods.get(method).options()``).
    """
    meth = methods.get(method)
    routed = meth.route(options)
    if epsilon is not None:
        if ratio is not None or meth.kind != "channels":
            raise ValueError("epsilon= sets the widths of a structured method: pass ratio=None "
                             f"(method {method!r})")
        ratio = {}
    else:
        ratio = _check_ratio(ratio)
    if unit not in UNITS:
        raise ValueError(f"unit must be one of {UNITS}, got {unit!r}")
    if int(min_width) < 1:
        raise ValueError("min_width must be >= 1: a layer may not end up with zero width")
    max_ratio = _max_ratio(max_ratio, ratio)
    if isinstance(round_to, bool) or not isinstance(round_to, numbers.Integral) or round_to < 1:
        raise ValueError(f"round_to must be a positive integer, got {round_to!r}")
    if model is not None:
        apply_kwargs = _flax.inference_kwargs(model, apply_kwargs)
    if allocation not in ALLOCATIONS:
        raise ValueError(f"allocation must be one of {ALLOCATIONS}, got {allocation!r}")
    if not isinstance(prune_output, bool):
        raise ValueError(f"prune_output must be a bool, got {prune_output!r}")
    sampling = sampling or meth.sampling
    if sampling not in SAMPLINGS:
        raise ValueError(f"unknown sampling {sampling!r}; use one of {SAMPLINGS}")
    if meth.needs_data and data is None:
        raise ValueError(f"method {method!r} is data-informed: pass data= (a small batch of "
                         "inputs, e.g. from the validation split)")
    data, input_shape = _check_data(data, input_shape, example_inputs)
    reads_data = data is not None and (meth.needs_data or meth.uses_data)
    nnx_module = None
    if _nnx.is_module(params):
        _check_nnx(model, input_shape)
        nnx_module, params = params, _nnx.variables_of(params)
        model = _nnx.as_linen(nnx_module)
        apply_kwargs = _flax.inference_kwargs(model, apply_kwargs)
    _check_reconstruct(reconstruct, ridge, recalibrate_bn, meth, model, data)
    if isinstance(data, _flax.Example) and model is None:
        raise ValueError("data given as token ids or several inputs runs through the model: "
                         "pass model= (the Flax module) as well")
    if reads_data and model is None and meth.kind == "channels":
        raise ValueError(f"method {method!r} reads the layers' inputs on data=: pass model= "
                         "(the Flax module) as well")
    leave = (leave,) if isinstance(leave, str) else tuple(leave)
    variables, wrapped = as_variables(params)
    _check_arrays(variables)
    key = _as_key(key)
    score_vars = variables
    if meth.prepare is not None:
        if model is None:
            raise ValueError(f"method {method!r} trains before it prunes: pass model=")
        with _phase(on_phase, "prepare"):
            variables, score_vars = meth.prepare(model, variables, **routed["prepare"])
        variables, _ = as_variables(variables)
        score_vars, _ = as_variables(score_vars)

    run = _prune_channels if meth.kind == "channels" else _prune_weights
    result = run(meth, variables, score_vars, wrapped, key, ratio, routed, model=model,
               input_shape=input_shape, unit=unit, sampling=sampling, allocation=allocation,
               leave=leave, min_width=int(min_width), max_ratio=max_ratio,
               round_to=int(round_to),
               prune_residual=prune_residual, prune_output=prune_output,
               data=data if reads_data else None, apply_kwargs=apply_kwargs,
               epsilon=epsilon, on_phase=on_phase, rules=rules)
    if epsilon is not None:
        result = dataclasses.replace(result, report={**result.report, "epsilon": epsilon})
    if certificate and result.kind == "channels":
        cert = bounds.certify(result, model=model, data=data if model is not None else None)
        result = dataclasses.replace(result, report={**result.report, "certificate": cert})
    if nnx_module is not None:
        result = dataclasses.replace(result, nnx_module=nnx_module)
    if reconstruct is not None and result.kept:
        result = _refit(result, model, data, ridge, recalibrate_bn, on_phase)
    return result


def _check_reconstruct(reconstruct, ridge, recalibrate_bn, meth, model, data) -> None:
    if reconstruct is None:
        if recalibrate_bn:
            raise ValueError("recalibrate_bn=True goes with reconstruct='lstsq'")
        return
    if reconstruct != "lstsq":
        raise ValueError(f"unknown reconstruct mode {reconstruct!r}; use 'lstsq' or None")
    if data is None:
        raise ValueError("reconstruct='lstsq' refits the layers on data=: pass a small batch "
                         "of inputs (N, *input_shape), e.g. from the validation split")
    if isinstance(data, _flax.Example):
        raise ValueError("reconstruct='lstsq' refits on one float input array (N, "
                         "*input_shape); data given as token ids or several inputs is not "
                         "supported by the refit")
    if meth.kind != "channels" or model is None:
        raise ValueError("reconstruct='lstsq' needs a structured method and the Linen model= "
                         f"(method {meth.name!r}, model={type(model).__name__})")
    if isinstance(ridge, bool) or not isinstance(ridge, numbers.Real) or ridge < 0:
        raise ValueError(f"ridge must be a number >= 0, got {ridge!r}")


def _refit(result, model, data, ridge, recalibrate_bn, on_phase):
    """``result`` with every consumer of a pruned group refit on ``data``."""
    small = result.model(model) if result.nnx_module is None else _nnx.as_linen(result.module)
    with _phase(on_phase, "reconstruct"):
        params, rep = reconstruct_lib.refit(
            model, result.dense_variables, small, result.params,
            reconstruct_lib.consumer_paths(result.groups, result.kept), data, ridge=ridge,
            apply_kwargs=result.apply_kwargs, recalibrate_bn=recalibrate_bn,
            groups=result.groups, kept=result.kept)
    return dataclasses.replace(result, params=params,
                               report={**result.report, "reconstruct": rep})


def _check_nnx(model, input_shape) -> None:
    """An NNX module is pruned as its own model (:func:`jaxprune._nnx.as_linen`), with every
    method and option; it needs the input shape."""
    if model is not None:
        raise ValueError("an NNX module is the model itself: pass it as the first argument "
                         "and no model=")
    if input_shape is None:
        raise ValueError("pass input_shape= (one example, no batch axis), example_inputs= or "
                         "data= with an NNX module")


def _method_info(meth, unit_names, views_, routed) -> dict | None:
    if meth.info is None:
        return None
    values = meth.info(views_, **routed["info"])
    return {k: dict(zip(unit_names, v)) for k, v in values.items()}


# --------------------------------------------------------------------------------------------
# Channels: traced groups -> widths -> kept channels -> smaller arrays
# --------------------------------------------------------------------------------------------
def _structure(model, variables, input_shape, apply_kwargs, rules=None):
    """``(structure, per-example input shape)`` of the network, traced in inference mode."""
    if model is None:
        struct, _ = structure.from_params(variables)
        first = struct.groups[0].producers[0] if struct.groups else None
        return struct, (None if first is None else (struct.shapes[first.path][0],))
    shape = _input_shape(model, input_shape)
    x = _flax.as_example(shape).zeros(2)
    return structure.trace_groups(
        lambda v, inp: _flax.apply_inference(model, v, inp, apply_kwargs), variables, x,
        rules), shape


def _prune_channels(meth, variables, score_vars, wrapped, key, ratio, routed, *, model,
                    input_shape, unit, sampling, allocation, leave, min_width, max_ratio,
                    round_to, prune_residual, prune_output, data, apply_kwargs, epsilon,
                    on_phase, rules=None) -> PruneResult:
    if prune_output:
        raise ValueError(f"prune_output applies to weight methods; {meth.name!r} removes "
                         "channels, and channels that reach the output are never pruned")
    with _phase(on_phase, "structure"):
        struct, input_shape = _structure_of_model(model, variables, input_shape, apply_kwargs,
                                                  rules)
    groups = selection.prunable_groups(struct, leave, prune_residual,
                                       None if epsilon is not None else ratio, allow_empty=True)
    if epsilon is not None and groups:
        ratio = bounds.group_epsilon_ratios(score_vars, groups, epsilon)
    if not groups:  # nothing can be cut: the network comes back whole, and the warning says why
        report = _channel_report(struct, groups, {}, ratio, unit, meth.name, sampling, {},
                                 min_width, max_ratio)
        return PruneResult(params=restore_form(variables, wrapped), widths={}, kept={},
                           scales={}, sensitivities={}, groups=struct.groups, report=report,
                           kind="channels", dense_shapes=_shapes(variables),
                           dense_variables=variables, input_shape=input_shape,
                           apply_kwargs=apply_kwargs)
    score_key, select_key = methods.split_keys(key, 2)  # one program for every count
    with _phase(on_phase, "views"):
        group_views = views.channel_views(score_vars, groups, model, data, apply_kwargs)
    with _phase(on_phase, "scores"):
        scores = meth.score(score_key, group_views, **routed["score"])
        sens = {g.name: np.asarray(s) for g, s in zip(groups, scores)}
    info = _method_info(meth, [g.name for g in groups], group_views, routed)
    del group_views  # captured activations are not needed past scoring
    with _phase(on_phase, "allocation"):
        widths = selection.allocate_widths(struct, groups, ratio, unit, min_width, sens,
                                           allocation, round_to, max_ratio)
    kept, scales, draws = {}, {}, {}
    with _phase(on_phase, "selection"):
        for g, k in zip(groups, methods.split_keys(select_key, len(groups))):
            kept[g.name], scales[g.name], draws[g.name] = selection.select(
                k, sens[g.name], widths[g.name], sampling)
    with _phase(on_phase, "surgery"):
        small = jax.block_until_ready(surgery.shrink(variables, struct.groups, kept, scales))
    report = _channel_report(struct, groups, widths, ratio, unit, meth.name, sampling, draws,
                             min_width, max_ratio)
    if info is not None:
        report["method_info"] = info
    return PruneResult(params=restore_form(small, wrapped), widths=widths, kept=kept,
                       scales=scales, sensitivities=sens, groups=struct.groups, report=report,
                       kind="channels", dense_shapes=_shapes(variables),
                       dense_variables=variables, input_shape=input_shape,
                       apply_kwargs=apply_kwargs)


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


def _channel_report(struct, groups, widths, ratio, unit, method, sampling, draws,
                    min_width, max_ratio=1.0) -> dict:
    achieved = {u: selection.removed_fraction(struct, groups, widths, u) for u in UNITS}
    report = {
        "method": method, "kind": "channels", "sampling": sampling, "unit": unit,
        "target_ratio": ratio if not isinstance(ratio, Mapping) else dict(ratio),
        "achieved_ratio": achieved[unit],
        "ratios": {"params_model": achieved["params"], "neurons": achieved["neurons"],
                   "flops": achieved["flops"],
                   "params_prunable": selection.removed_fraction(struct, groups, widths,
                                                                 "params_prunable")},
        "params_before": struct.count_params(), "params_after": struct.count_params(widths),
        "flops_before": 2 * struct.count_macs(), "flops_after": 2 * struct.count_macs(widths),
        "neurons": {g.name: [g.size, widths[g.name]] for g in groups},
        "frozen": {g.name: _why_whole(g) for g in struct.groups if g.name not in widths},
        "draws": draws,
    }
    low = selection.min_widths(groups, min_width, max_ratio)
    capped = sorted(g.name for g in groups if widths[g.name] == low[g.name] > min_width)
    if not isinstance(ratio, Mapping) and abs(achieved[unit] - ratio) > 0.01:
        cap = (f"; at the per-group cap max_ratio={max_ratio}: {', '.join(capped)}"
               if capped else "")
        warnings.warn(f"achieved {unit} ratio {achieved[unit]:.4f} of the whole model is more "
                      f"than 1% from the target {ratio} (integer widths, min_width, the "
                      f"max_ratio={max_ratio} cap per group, or channels that cannot be "
                      f"pruned). Not pruned: {_frozen_summary(struct, groups)}{cap}",
                      PruneWarning, stacklevel=4)
    report["capped"] = capped
    floor = sorted(g.name for g in groups if widths[g.name] <= min_width < g.size)
    if floor and not isinstance(ratio, Mapping):
        warnings.warn(f"layers cut to min_width={min_width}: {', '.join(floor)}; the ratio "
                      "asks more of them than they can give", PruneWarning, stacklevel=4)
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
            raise ValueError(f"ratio names unknown or non-prunable layers {unknown}; prunable: "
                             f"{[layer.name for layer in prunable]} (the output layer "
                             f"{names[-1]!r} needs prune_output=True)")
        prunable = [layer for layer in prunable if layer.name in ratio]
    if not prunable:
        raise ValueError(f"no prunable kernel: the output layer {names[-1]!r} is kept dense and "
                         f"the others ({names[:-1]}) were left alone")
    return prunable


def _top_k_per_layer(key, scores, views_, keep, sampling) -> list:
    """Default weight selection: the ``keep_l`` largest scores of each layer."""
    del key, views_
    if sampling != "deterministic":
        raise ValueError(f"this method keeps the top scores per layer (sampling="
                         f"'deterministic'); sampling={sampling!r} is not defined for it")
    return [methods.Selection(selection.top_k_mask(s, k), None, np.asarray(s))
            for s, k in zip(scores, keep)]


def _prune_weights(meth, variables, score_vars, wrapped, key, ratio, routed, *, model,
                   input_shape, unit, sampling, allocation, leave, min_width, max_ratio,
                   round_to, prune_residual, prune_output, data, apply_kwargs, epsilon,
                   on_phase, rules=None) -> PruneResult:
    """Unstructured pruning. ``ratio`` is the fraction of the prunable kernels' entries
    removed; every kernel gets the same sparsity: ``R = round(ratio·N)`` entries are removed
    in total, split by largest-remainder rounding (:func:`jaxprune.selection.layer_budgets`).
    ``allocation="bound"`` has no weight-level counterpart and falls back to this split (the
    report records ``allocation: "uniform"``)."""
    del score_vars, min_width, max_ratio, round_to, prune_residual, epsilon, rules
    if unit != "params":
        raise ValueError(f"method {meth.name!r} prunes individual weights: ratio counts kernel "
                         f"entries (unit='params'); unit={unit!r} is not supported (it removes "
                         "no neuron and no FLOP of a dense kernel)")
    with _phase(on_phase, "structure"):
        if model is None:
            layers = structure.kernel_layers(variables)
        else:
            input_shape = _input_shape(model, input_shape)
            layers = structure.kernel_layers(variables, model, input_shape, apply_kwargs)
    prunable = _prunable_layers(layers, ratio, leave, prune_output)
    with _phase(on_phase, "views"):
        layer_views = views.weight_views(variables, layers, prunable, model, data, apply_kwargs)
    kernels = [v.kernel for v in layer_views]
    sizes = [k.size for k in kernels]
    if isinstance(ratio, Mapping):
        keep = [selection.layer_budgets([n], float(ratio[layer.name]))[0]
                for layer, n in zip(prunable, sizes)]
    else:
        keep = selection.layer_budgets(sizes, float(ratio))
    with _phase(on_phase, "scores"):
        scores = meth.score(key, layer_views, **routed["score"])
    with _phase(on_phase, "selection"):
        select = meth.select or _top_k_per_layer
        chosen = select(key, scores, layer_views, keep, sampling, **routed["select"])
    if len(chosen) != len(prunable):
        raise RuntimeError(f"method {meth.name!r} returned {len(chosen)} selections for "
                           f"{len(prunable)} layers")
    with _phase(on_phase, "surgery"):
        pruned, mask, kept, scales = _apply_selections(meth.name, variables, prunable, kernels,
                                                       chosen)
    report = _weight_report(meth.name, sampling, ratio, allocation, prunable, kernels, chosen,
                            variables, pruned, leave, layers[-1].name, prune_output)
    widths = {layer.name: int(np.count_nonzero(k.reshape(-1, k.shape[-1]).any(axis=0)))
              for layer, k in zip(prunable, kept.values())}
    return PruneResult(params=restore_form(pruned, wrapped), widths=widths, kept=kept,
                       scales=scales, groups=tuple(layers), report=report,
                       sensitivities={layer.name: np.asarray(sel.scores)
                                      for layer, sel in zip(prunable, chosen)},
                       kind="weights", weight_mask=mask, dense_shapes=_shapes(variables),
                       input_shape=input_shape, apply_kwargs=apply_kwargs)


def _apply_selections(name, variables, prunable, kernels, chosen):
    new_kernels, kernel_masks, kept, scales = {}, {}, {}, {}
    for layer, k, sel in zip(prunable, kernels, chosen):
        keep = np.asarray(sel.keep, bool)
        if keep.shape != k.shape:
            raise RuntimeError(f"method {name!r}: keep mask of {layer.name} has shape "
                               f"{keep.shape}, kernel {k.shape}")
        scale = np.ones(k.shape, k.dtype) if sel.scale is None else np.asarray(sel.scale, k.dtype)
        new_kernels[layer.path] = jnp.asarray(np.where(keep, k * scale, 0).astype(k.dtype))
        kernel_masks[layer.path[1:]] = keep.astype(np.float32)
        kept[layer.name], scales[layer.name] = keep, np.where(keep, scale, 0)
    pruned = map_with_paths(lambda p, leaf: new_kernels.get(p, leaf), variables)
    mask = map_with_paths(lambda p, leaf: kernel_masks.get(p, np.ones(np.shape(leaf), np.float32)),
                          variables["params"])
    return pruned, mask, kept, scales


def _weight_report(method, sampling, ratio, allocation, prunable, kernels, chosen, variables,
                   pruned, leave, output, prune_output) -> dict:
    total = sum(k.size for k in kernels)
    kept = [int(np.count_nonzero(s.keep)) for s in chosen]
    zeros = sum(int(k.size - np.count_nonzero(get_path(pruned, layer.path)))
                for layer, k in zip(prunable, kernels))
    achieved = 1.0 - sum(kept) / total
    params_before = metrics.param_count(variables)
    nonzero = metrics.nonzero_count(pruned)
    draws = {layer.name: s.draws for layer, s in zip(prunable, chosen) if s.draws is not None}
    report = {
        "method": method, "kind": "weights", "sampling": sampling, "unit": "params",
        "allocation": "uniform", "allocation_requested": allocation,
        "target_ratio": dict(ratio) if isinstance(ratio, Mapping) else ratio,
        "achieved_ratio": achieved,                       # kernel entries removed by the mask
        "kernel_sparsity": zeros / total,                 # zero entries of the pruned kernels
        "prunable_params": total, "prunable_kept": sum(kept),
        "ratios": {"params_prunable": achieved, "params_model": 1.0 - nonzero / params_before},
        "params_before": params_before, "params_after": params_before,
        "nonzero_params_before": metrics.nonzero_count(variables), "nonzero_params": nonzero,
        "layers": {layer.name: {"size": int(k.size), "kept": n, "sparsity": 1.0 - n / k.size}
                   for layer, k, n in zip(prunable, kernels, kept)},
        "dense_layers": [*leave, *([] if prune_output else [output])],
        "draws": draws,
    }
    if not isinstance(ratio, Mapping) and abs(achieved - float(ratio)) > 0.01:
        warnings.warn(f"achieved weight sparsity {achieved:.4f} is more than 1% from the target "
                      f"{ratio} (integer counts / minimum kept weights per layer bind)",
                      PruneWarning, stacklevel=4)
    return report
