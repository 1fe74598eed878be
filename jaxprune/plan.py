"""The validated plan of one :func:`jaxprune.prune` call.

:func:`build` checks every argument (one ``ValueError`` each, before any work), converts an
NNX module to its Linen twin, computes the inference keyword arguments once and resolves the
method, its options, the key, the data and the input shape; :class:`Plan` is the frozen
result the pipeline's branches read. Two small config objects group keywords that belong
together: :class:`Refit` (``reconstruct=``, ``ridge=``, ``recalibrate_bn=``) and
:class:`Certificate` (``certificate=``).

    >>> import jaxprune
    >>> jaxprune.Refit(ridge=1e-2)
    Refit(method='lstsq', ridge=0.01, recalibrate_bn=False)
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxprune import _flax, _nnx, methods
from jaxprune._tree import as_variables, leaves_with_paths
from jaxprune.selection import ALLOCATIONS, SAMPLINGS, UNITS

__all__ = [
    "Certificate",
    "Plan",
    "REFIT_METHODS",
    "Refit",
    "build",
    "configured_method",
    "model_input_shape",
]

REFIT_METHODS = ("lstsq",)


@dataclasses.dataclass(frozen=True)
class Refit:
    """Refit every consumer of a pruned channel group on ``data=`` after pruning.

    ``method="lstsq"``: ridge least squares of the consumer's dense pre-activations,
    ``W = argmin ‖A_small W − Z_dense‖² + ridge·tr(AᵀA)/d·‖W‖²``
    (:func:`jaxprune.reconstruct.refit`); ``ridge``: the relative ridge (≥ 0);
    ``recalibrate_bn``: re-estimate BatchNorm statistics on ``data`` afterwards.

    >>> Refit(ridge=0.0).ridge
    0.0
    """

    method: str = "lstsq"
    ridge: float = 1e-3
    recalibrate_bn: bool = False

    def __post_init__(self):
        if self.method not in REFIT_METHODS:
            raise ValueError(f"unknown reconstruct mode {self.method!r}; use 'lstsq' or None")
        if (
            isinstance(self.ridge, bool)
            or not isinstance(self.ridge, numbers.Real)
            or not self.ridge >= 0
        ):
            raise ValueError(f"ridge must be a number >= 0, got {self.ridge!r}")
        if not isinstance(self.recalibrate_bn, bool):
            raise ValueError(f"recalibrate_bn must be a bool, got {self.recalibrate_bn!r}")


@dataclasses.dataclass(frozen=True)
class Certificate:
    """Add ``report["certificate"]`` to a structured prune (:func:`jaxprune.bounds.certify`:
    per group its rank, μ(P) and the ε of the draws made; with ``observed`` and ``data=`` the
    consumers' observed errors too). ``seed``: the seed of μ(P)'s query search.

    >>> Certificate().observed
    True
    """

    observed: bool = True
    seed: int = 0

    def __post_init__(self):
        if not isinstance(self.observed, bool):
            raise ValueError(f"Certificate.observed must be a bool, got {self.observed!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, numbers.Integral):
            raise ValueError(f"Certificate.seed must be an int, got {self.seed!r}")


@dataclasses.dataclass(frozen=True)
class Plan:
    """Everything one prune needs, checked (see :func:`build`).

    ``variables``: the dense variables dict that is pruned, ``score_variables``: the one the
    method scores (they differ after a ``prepare`` phase), ``wrapped``: whether ``params``
    came without its ``{'params': ...}`` wrapper. ``model``: the Linen module or ``None`` (an
    NNX input: its Linen twin, and ``nnx_module`` the input). ``data``: the checked batch for
    the refit and the certificate; ``method_data``: the same when the method reads data, else
    ``None``.
    """

    method: methods.Method
    variables: dict
    score_variables: dict
    wrapped: bool
    key: jax.Array
    ratio: Any
    unit: str
    sampling: str
    allocation: str
    leave: tuple
    min_width: int
    max_ratio: float
    round_to: int
    prune_residual: bool
    prune_output: bool
    model: Any = None
    nnx_module: Any = None
    input_shape: Any = None
    apply_kwargs: dict | None = None
    rules: Mapping | None = None
    data: Any = None
    method_data: Any = None
    epsilon: float | None = None
    refit: Refit | None = None
    certificate: Certificate | None = None
    on_phase: Callable | None = None

    @property
    def kind(self) -> str:
        """``"channels"`` or ``"weights"``: which branch of the pipeline runs."""
        return self.method.kind


def build(
    params,
    key,
    ratio,
    *,
    method,
    model,
    input_shape,
    unit,
    sampling,
    allocation,
    leave,
    min_width,
    max_ratio,
    round_to,
    prune_residual,
    prune_output,
    data,
    apply_kwargs,
    reconstruct,
    ridge,
    recalibrate_bn,
    epsilon,
    certificate,
    on_phase,
    example_inputs,
    rules,
    options,
) -> Plan:
    """The :class:`Plan` of a :func:`jaxprune.prune` call (its arguments, same meaning);
    every argument error is raised here, before any work."""
    meth = configured_method(method, options)
    ratio = _target(ratio, epsilon, meth)
    _check_choices(meth, unit, allocation, min_width, round_to, prune_output)
    sampling = _sampling(meth, sampling)
    if meth.needs_data and data is None:
        raise ValueError(
            f"method {meth.name!r} is data-informed: pass data= (a small batch of "
            "inputs, e.g. from the validation split)"
        )
    data, input_shape = _check_data(data, input_shape, example_inputs)
    nnx_module = None
    if _nnx.is_module(params):
        _check_nnx(model, input_shape)
        nnx_module, params, model = params, _nnx.variables_of(params), _nnx.as_linen(params)
    if model is not None:
        apply_kwargs = _flax.inference_kwargs(model, apply_kwargs)
        input_shape = model_input_shape(model, input_shape)
    refit = _refit(reconstruct, ridge, recalibrate_bn, meth, model, data)
    reads_data = data is not None and (meth.needs_data or meth.uses_data)
    _check_model_needs(meth, model, data, reads_data)
    variables, wrapped = as_variables(params)
    _check_arrays(variables)
    return Plan(
        method=meth,
        variables=variables,
        score_variables=variables,
        wrapped=wrapped,
        key=_as_key(key),
        ratio=ratio,
        unit=unit,
        sampling=sampling,
        allocation=allocation,
        leave=(leave,) if isinstance(leave, str) else tuple(leave),
        min_width=int(min_width),
        max_ratio=_max_ratio(max_ratio, ratio),
        round_to=int(round_to),
        prune_residual=prune_residual,
        prune_output=prune_output,
        model=model,
        nnx_module=nnx_module,
        input_shape=input_shape,
        apply_kwargs=apply_kwargs,
        rules=rules,
        data=data,
        method_data=data if reads_data else None,
        epsilon=epsilon,
        refit=refit,
        certificate=_certificate(certificate),
        on_phase=on_phase,
    )


def configured_method(method, options: Mapping) -> methods.Method:
    """A configured method from ``method=`` (a name or a configured method) and the flat
    ``**options`` of :func:`jaxprune.prune`."""
    if isinstance(method, methods.Method):
        if options:
            raise ValueError(
                f"options {sorted(options)} go to the method's constructor "
                f"(jaxprune.methods.{method.name}(...)), not to prune, when "
                "method= is a configured method"
            )
        return method
    if not isinstance(method, str):
        raise ValueError(
            f"method must be a method name ({', '.join(methods.names())}) or a "
            f"configured method such as jaxprune.methods.coreset(), got "
            f"{type(method).__name__}"
        )
    return methods.get(method).configure(options)


def _sampling(meth, sampling) -> str:
    """``sampling`` (default: the method's own), one the method defines."""
    sampling = sampling or meth.sampling
    if sampling not in SAMPLINGS:
        raise ValueError(f"unknown sampling {sampling!r}; use one of {SAMPLINGS}")
    defined = (
        meth.samplings if meth.kind == "channels" or meth.select is not None else ("deterministic",)
    )
    if sampling not in defined:
        allowed = " or ".join(f"sampling={s!r}" for s in defined)
        raise ValueError(f"method {meth.name!r} defines {allowed}, not {sampling!r}")
    return sampling


def _target(ratio, epsilon, meth):
    """``ratio`` checked; ``{}`` for epsilon-first pruning (the widths come from ε)."""
    if epsilon is None:
        return _check_ratio(ratio)
    if ratio is not None or meth.kind != "channels":
        raise ValueError(
            "epsilon= sets the widths of a structured method: pass ratio=None "
            f"(method {meth.name!r})"
        )
    return {}


def _check_choices(meth, unit, allocation, min_width, round_to, prune_output) -> None:
    if unit not in UNITS:
        raise ValueError(f"unit must be one of {UNITS}, got {unit!r}")
    if int(min_width) < 1:
        raise ValueError("min_width must be >= 1: a layer may not end up with zero width")
    if isinstance(round_to, bool) or not isinstance(round_to, numbers.Integral) or round_to < 1:
        raise ValueError(f"round_to must be a positive integer, got {round_to!r}")
    if allocation not in ALLOCATIONS:
        raise ValueError(f"allocation must be one of {ALLOCATIONS}, got {allocation!r}")
    if not isinstance(prune_output, bool):
        raise ValueError(f"prune_output must be a bool, got {prune_output!r}")
    if meth.kind == "channels" and prune_output:
        raise ValueError(
            f"prune_output applies to weight methods; {meth.name!r} removes "
            "channels, and channels that reach the output are never pruned"
        )
    if meth.kind == "weights" and unit != "params":
        raise ValueError(
            f"method {meth.name!r} prunes individual weights: ratio counts kernel "
            f"entries (unit='params'); unit={unit!r} is not supported (it removes "
            "no neuron and no FLOP of a dense kernel)"
        )


def _check_model_needs(meth, model, data, reads_data) -> None:
    """The arguments that only work together with ``model=``."""
    if model is not None:
        return
    if isinstance(data, _flax.Example):
        raise ValueError(
            "data given as token ids or several inputs runs through the model: "
            "pass model= (the Flax module) as well"
        )
    if reads_data and meth.kind == "channels":
        raise ValueError(
            f"method {meth.name!r} reads the layers' inputs on data=: pass model= "
            "(the Flax module) as well"
        )
    if meth.prepare is not None:
        raise ValueError(f"method {meth.name!r} trains before it prunes: pass model=")


def _certificate(certificate) -> Certificate | None:
    if isinstance(certificate, Certificate):
        return certificate
    if not isinstance(certificate, bool):
        raise ValueError(
            f"certificate must be a bool or a jaxprune.Certificate, got {certificate!r}"
        )
    return Certificate() if certificate else None


def _refit(reconstruct, ridge, recalibrate_bn, meth, model, data) -> Refit | None:
    """``reconstruct=`` as a :class:`Refit` (a mode name with the flat ``ridge=`` /
    ``recalibrate_bn=``, or a Refit), checked against the method, model and data."""
    if reconstruct is None:
        if recalibrate_bn:
            raise ValueError("recalibrate_bn=True goes with reconstruct='lstsq'")
        return None
    if isinstance(reconstruct, Refit):
        if ridge is not None or recalibrate_bn is not None:
            raise ValueError(
                "reconstruct=Refit(...) holds ridge and recalibrate_bn: pass them "
                "to Refit, not to prune"
            )
        refit = reconstruct
    else:
        refit = Refit(
            reconstruct,
            *(() if ridge is None else (ridge,)),
            **({} if recalibrate_bn is None else {"recalibrate_bn": recalibrate_bn}),
        )
    if data is None:
        raise ValueError(
            "reconstruct='lstsq' refits the layers on data=: pass a small batch "
            "of inputs (N, *input_shape), e.g. from the validation split"
        )
    if meth.kind != "channels" or model is None:
        raise ValueError(
            "reconstruct='lstsq' needs a structured method and the Linen model= "
            f"(method {meth.name!r}, model={type(model).__name__})"
        )
    return refit


def _check_nnx(model, input_shape) -> None:
    """An NNX module is pruned as its own model (:func:`jaxprune._nnx.as_linen`), with every
    method and option; it needs the input shape."""
    if model is not None:
        raise ValueError(
            "an NNX module is the model itself: pass it as the first argument and no model="
        )
    if input_shape is None:
        raise ValueError(
            "pass input_shape= (one example, no batch axis), example_inputs= or "
            "data= with an NNX module"
        )


# --------------------------------------------------------------------------------------------
# Scalars, keys, arrays, data
# --------------------------------------------------------------------------------------------
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
            raise ValueError(
                f"{name} has dtype {arr.dtype}: pruning needs floating-point "
                "weights (re-weighted kernels cannot be stored in integers); "
                "cast the params to float32 first"
            )
        if arr.dtype.kind in "fc" and not np.all(np.isfinite(arr)):
            raise ValueError(f"non-finite (NaN/inf) values in {name}; pruning needs finite weights")
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
        raise ValueError(
            f"data must be a non-empty batch (N, *input_shape), got shape {data.shape}"
        )
    if not np.all(np.isfinite(data)):
        raise ValueError("data contains NaN or inf")
    if example is not None:
        return data, example.abstract(1)
    if input_shape is None:
        return data, data.shape[1:]
    if tuple(input_shape) != data.shape[1:]:
        raise ValueError(
            f"data has per-example shape {data.shape[1:]} but input_shape is {tuple(input_shape)}"
        )
    return data, input_shape


def _keeps_dtype(data, example) -> bool:
    """True when ``data`` goes to the model as it is (an Example): a tuple/dict of inputs, an
    integer or bool array (token ids), or any array that is not floating point when
    ``example_inputs`` is given. uint8 images without ``example_inputs`` are read as float32."""
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
        raise ValueError(
            f"input_shape {tuple(input_shape)} does not match the first example "
            f"input's per-example shape {first}; pass one of them"
        )
    return ex


def _as_key(key):
    """``key`` as a JAX PRNG key: an int seed becomes ``jax.random.key(seed)``."""
    if isinstance(key, numbers.Integral) and not isinstance(key, bool):
        return jax.random.key(int(key))
    if isinstance(key, jax.Array) and jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return key
    if isinstance(key, (jax.Array, np.ndarray)) and key.dtype == np.uint32 and key.shape == (2,):
        return jnp.asarray(key)  # a raw key (jax.random.PRNGKey), also as a NumPy copy
    raise ValueError(
        f"key must be a JAX PRNG key (jax.random.key(seed)) or an int seed, got "
        f"{type(key).__name__}"
    )


def model_input_shape(model, input_shape):
    """The per-example input spec of ``model``: ``input_shape`` when given, else the model's
    ``input_shape`` attribute, else :func:`jaxprune._flax.default_input_shape` (the model
    registry's answer)."""
    if isinstance(input_shape, _flax.Example):
        return input_shape
    if input_shape is not None:
        return tuple(input_shape)
    shape = getattr(model, "input_shape", None) or _flax.default_input_shape(model)
    if shape is not None:
        return tuple(shape)
    raise ValueError(
        f"cannot infer the input shape of {type(model).__name__}; pass "
        "input_shape=(H, W, C) (or (features,)), without the batch axis"
    )
