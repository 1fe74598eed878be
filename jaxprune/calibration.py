"""Calibration statistics of the layers' inputs, gathered in bounded memory, and FLAP's bias
compensation.

A consumer layer reads features ``f`` (a Dense row, a ``(heads, head_dim)`` entry of an
einsum out-projection, a conv input channel). Over every row ``n`` it reads on ``data`` (an
example's token, pixel or patch position) the statistics of feature ``f`` are::

    count N,   mean μ_f = Σ_n X_nf / N,   M2_f = Σ_n (X_nf − μ_f)²
    Var_f = M2_f / N,   ‖X_f‖₂ = sqrt(M2_f + N μ_f²),   Gram G = Σ_n X_n X_nᵀ (optional)

:func:`input_statistics` runs the model on one batch at a time, captures the inputs of the
requested kernel modules *inside one jitted forward* and returns only their per-batch
``(count, mean, M2[, G])``; batches are merged on the host in float64 by Chan et al.'s
pairwise update (``δ = μ_b − μ_a``, ``M2 = M2_a + M2_b + δ² N_a N_b / N``), so the
activations of the model on the whole of ``data`` are never held, only one batch's forward
pass (params + one batch's activations, which XLA frees as the reductions consume them).
:func:`from_inputs` gives the same statistics from activations held whole (what the
all-at-once path, :func:`jaxprune._flax.kernel_inputs`, captures).

Memory. The forward returns sums only, so each block's activations die once the next block
has read them and XLA reuses their buffers: the live activations are one block's whatever the
depth (:func:`planned_memory` reads XLA's plan; a test checks it does not grow with the
number of blocks). On a 4-block byte-level decoder (d_model 256, 8 heads, SwiGLU 1024,
15.5 MiB of params, 64 windows of 256 bytes, 8 per batch;
``experiments/results/bench/calibration_memory.md``) the compiled streaming run grew the
resident set by 70 MiB, against about 64 MiB for one batch's block activations; holding
every layer's input at once grew it by 926 MiB.

Feature layout. :func:`feature_axes` says which kernel axes a module's input features
correspond to: a Dense (``nn.Dense``, ``nnx.Linear``) or a linear einsum (``nn.DenseGeneral``,
``nnx.LinearGeneral``, ``nn.Einsum``/``nnx.Einsum`` of the form ``"…i,ik->…k"``) contracts
its input's trailing axes with the kernel's leading axes; a conv's features are its input
channels (kernel axis ``-2``), pooled over every position.

Example::

    >>> import flax.linen as nn, jax, numpy as np
    >>> from jaxprune import calibration
    >>> model = nn.Dense(3)
    >>> x = np.random.default_rng(0).normal(size=(10, 4)).astype(np.float32)
    >>> v = model.init(jax.random.key(0), x)
    >>> stats = calibration.input_statistics(model, v, x, [()], batch_size=4)[()]
    >>> bool(np.allclose(stats.mean, x.mean(0), atol=1e-6))
    True
"""

from __future__ import annotations

import dataclasses
import functools
import re
import warnings
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxprune import _nnx, surgery
from jaxprune._flax import (
    Example,
    apply_inference,
    hashable,
    inference_kwargs,
    kernel_calls,
    kernel_modules,
    module_path,
)
from jaxprune._tree import Path, as_variables, get_path, map_with_paths, restore_form

__all__ = [
    "ChannelStats",
    "bias_compensation",
    "compensate",
    "feature_axes",
    "from_inputs",
    "input_statistics",
    "planned_memory",
    "PlannedMemory",
    "channel_sum",
    "kernel_feature_sum",
]

_HIGHEST = jax.lax.Precision.HIGHEST


class ChannelStats(NamedTuple):
    """Statistics of one module's input features (module docstring).

    ``count``: rows read (float); ``mean``, ``m2``: (F,) float64 over the ``F`` flattened
    features; ``gram``: (F, F) ``Σ_n X_n X_nᵀ`` or None; ``shape``: the features' shape
    (the input's trailing axes, e.g. ``(heads, head_dim)``); ``axis``: the kernel axis the
    first feature axis is (:func:`feature_axes`: 0 for a Dense/einsum, ``ndim − 2`` for a
    conv)."""

    count: float
    mean: np.ndarray
    m2: np.ndarray
    gram: np.ndarray | None
    shape: tuple
    axis: int = 0

    @property
    def variance(self) -> np.ndarray:
        """``Var_f = M2_f / N`` (population variance), feature-shaped."""
        return (self.m2 / max(self.count, 1.0)).reshape(self.shape)

    @property
    def norm(self) -> np.ndarray:
        """``‖X_f‖₂ = sqrt(Σ_n X_nf²)``, feature-shaped."""
        return np.sqrt(np.maximum(self.m2 + self.count * self.mean**2, 0.0)).reshape(self.shape)

    @property
    def means(self) -> np.ndarray:
        """``μ_f``, feature-shaped."""
        return self.mean.reshape(self.shape)


def merge(a: ChannelStats | None, b: ChannelStats) -> ChannelStats:
    """The statistics of the rows of ``a`` and ``b`` together (Chan et al.'s pairwise update)."""
    if a is None or a.count == 0:
        return b
    if b.count == 0:
        return a
    n = a.count + b.count
    delta = b.mean - a.mean
    mean = a.mean + delta * (b.count / n)
    m2 = a.m2 + b.m2 + delta * delta * (a.count * b.count / n)
    gram = None if a.gram is None else a.gram + b.gram
    return ChannelStats(n, mean, m2, gram, a.shape, a.axis)


def from_inputs(inputs, features: int = 1, gram: bool = False, axis: int = 0) -> ChannelStats:
    """The statistics of inputs held whole: ``inputs`` (N, ..., *F) with ``features`` trailing
    feature axes, kernel axis ``axis`` first (float64 on the host)."""
    x = np.asarray(inputs, np.float64)
    shape = tuple(x.shape[x.ndim - features :])
    rows = x.reshape(-1, int(np.prod(shape, dtype=int)))
    mean = rows.mean(axis=0)
    m2 = np.sum((rows - mean) ** 2, axis=0)
    return ChannelStats(
        float(rows.shape[0]), mean, m2, rows.T @ rows if gram else None, shape, int(axis)
    )


# --------------------------------------------------------------------------------------------
# Which kernel axes a module's input features are
# --------------------------------------------------------------------------------------------
_EINSUM = re.compile(r"^([a-zA-Z.]*),([a-zA-Z]+)->([a-zA-Z.]*)$")


def _einsum_contracted(spec: str) -> int | None:
    """Contracted axes of a linear einsum ``"<batch><in>,<in><out>-><batch><out>"``, else
    None."""
    m = _EINSUM.match(spec.replace(" ", ""))
    if m is None:
        return None
    lhs, rhs, out = m.groups()
    for c in range(1, len(rhs)):
        contracted, kept = rhs[:c], rhs[c:]
        if (
            lhs.endswith(contracted)
            and out.endswith(kept)
            and lhs[: len(lhs) - c] == out[: len(out) - len(kept)]
            and not set(lhs[: len(lhs) - c]) & set(rhs)
        ):
            return c
    return None


def _layer(module):
    """The layer a module computes: an NNX layer run as Linen (:mod:`jaxprune._nnx`) is
    looked through."""
    return getattr(getattr(module, "ref", None), "layer", module)


def _is_conv(module) -> bool:
    return isinstance(_layer(module), (nn.Conv, nnx.Conv))


def declared_contraction(module) -> int | None:
    """Contracted kernel axes a module declares (Dense 1, DenseGeneral ``len(axis)``, an
    einsum by its string), looking through NNX layers run as Linen; None: not declared (a
    conv, a layer of another kind)."""
    layer = _layer(module)
    if _is_conv(layer):
        return None
    if isinstance(layer, nn.Dense):
        return 1
    if isinstance(layer, nn.DenseGeneral):
        if tuple(np.atleast_1d(layer.batch_dims)):
            return None
        return len(np.atleast_1d(layer.axis))
    spec = getattr(layer, "einsum_str", None)
    if isinstance(spec, str):
        return _einsum_contracted(spec)
    if getattr(layer, "batch_axis", None):
        return None
    in_features = getattr(layer, "in_features", None)
    if in_features is not None and getattr(layer, "kernel", None) is not None:
        return len(np.atleast_1d(in_features))
    return None


def feature_axes(kernel_shape, input_shape, module=None) -> tuple[int, int]:
    """``(first kernel axis, number of feature axes)`` of a module's input features.

    A conv (``nn.Conv``, ``nnx.Conv``): ``(ndim − 2, 1)`` (its input channels). Otherwise the
    input's last ``c`` axes are the kernel's first ``c`` (``(0, c)``), ``c`` as the module
    declares it (:func:`declared_contraction`); without a module, the one ``c`` the shapes
    admit. Anything else is a ``ValueError``.
    """
    kernel_shape, input_shape = tuple(kernel_shape), tuple(input_shape)
    nd = len(kernel_shape)
    if _is_conv(module):
        if input_shape[-1:] != kernel_shape[-2:-1]:
            raise ValueError(
                f"conv kernel {kernel_shape} does not read input {input_shape} "
                "channel by channel (grouped convolutions are not supported)"
            )
        return nd - 2, 1
    declared = declared_contraction(module)
    fits = [c for c in range(1, nd) if input_shape[-c:] == kernel_shape[:c]]
    if declared is not None and declared in fits:
        return 0, declared
    if module is None and len(fits) == 1:
        return 0, fits[0]
    name = type(_layer(module)).__name__
    raise ValueError(
        f"cannot tell which axes of the {name} kernel {kernel_shape} read its "
        f"input {input_shape} (a linear layer contracts the input's last axes "
        "with the kernel's first ones)"
    )


def kernel_feature_sum(kernel, first: int, count: int, power: int):
    """``Σ |W|^power`` over every kernel axis but the feature axes ``[first, first+count)``
    (the window of a conv, the outputs) -> feature-shaped."""
    w = jnp.abs(jnp.asarray(kernel, jnp.float32)) ** power
    axes = tuple(a for a in range(w.ndim) if not first <= a < first + count)
    return jnp.sum(w, axis=axes)


def channel_sum(values, slot, size: int, first: int):
    """``Σ_{f owned by j} values_f`` (size,) of feature-shaped ``values`` (the features are the
    kernel's axes from ``first`` on; ``slot`` indexes the kernel)."""
    local = dataclasses.replace(slot, axis=slot.axis - first)
    view, _ = surgery.split_channels(values, local, size)
    view = jnp.moveaxis(view, local.axis + 1, 0)
    return jnp.sum(view.reshape(size, -1), axis=1)


# --------------------------------------------------------------------------------------------
# Streaming statistics
# --------------------------------------------------------------------------------------------
def _batch_impl(model, kwargs, wanted, gram, variables, inputs, mask):
    """``{path: (count, mean, M2[, G])}`` of one batch; ``wanted``: ``((path, features),
    ...)``; examples whose ``mask`` is 0 (padding) are left out."""
    captured = {}
    paths = {p for p, _ in wanted}

    def record(module, x, _out):
        path = module_path(module)
        if path in paths:
            captured[path] = x

    with kernel_calls(record):
        apply_inference(model, variables, inputs, dict(kwargs))
    out = {}
    for path, features in wanted:
        if path not in captured:
            raise ValueError(f"the module {'/'.join(path)} was not called with an input")
        x = jnp.asarray(captured[path], jnp.float32)
        feats = int(np.prod(x.shape[x.ndim - features :], dtype=int))
        x = x.reshape(mask.shape[0], -1, feats)
        keep = jnp.broadcast_to(mask[:, None, None] > 0, x.shape[:2] + (1,))
        x = jnp.where(keep, x, 0.0).reshape(-1, feats)
        w = keep.reshape(-1, 1).astype(jnp.float32)
        n = jnp.sum(w)
        mean = jnp.sum(x, axis=0) / jnp.maximum(n, 1.0)
        m2 = jnp.sum(w * (x - mean) ** 2, axis=0)
        g = jnp.dot(x.T, x, precision=_HIGHEST) if gram else None
        out[path] = (n, mean, m2, g)
    return out


_batch = jax.jit(_batch_impl, static_argnums=(0, 1, 2, 3))


def batches(data, batch_size: int):
    """``(inputs, mask)`` per batch, every batch of one size (the last zero-padded and its
    padding masked out) so that the forward compiles once."""
    ex = data if isinstance(data, Example) else Example((np.asarray(data, np.float32),))
    total = ex.batch
    size = min(int(batch_size), total)
    for start in range(0, total, size):
        part = jax.tree.map(np.asarray, ex.take(start, start + size))
        got = part.batch
        mask = np.zeros(size, np.float32)
        mask[:got] = 1.0
        if got < size:
            part = jax.tree.map(
                lambda a, got=got: np.concatenate(
                    [a, np.zeros((size - got, *a.shape[1:]), a.dtype)]
                ),
                part,
            )
        yield jax.tree.map(jnp.asarray, part), jnp.asarray(mask)


class _Plan(NamedTuple):
    """What one statistics forward needs: its static arguments, the wanted ``(path, feature
    axes)``, each path's input shape and ``(first kernel axis, feature axes)``."""

    static: tuple
    wanted: tuple
    shapes: dict
    features: dict


def _plan(model, variables, data, paths, apply_kwargs, gram, features) -> _Plan:
    paths = tuple(dict.fromkeys(tuple(p) for p in paths))
    kwargs = inference_kwargs(model, apply_kwargs)
    spec = data.abstract(1) if isinstance(data, Example) else tuple(np.shape(data)[1:])
    shapes = input_shapes(model, variables, spec, kwargs)
    unknown = [p for p in paths if p not in shapes]
    if unknown:
        raise ValueError(
            f"no kernel module {'/'.join(unknown[0])} is called by {type(model).__name__}"
        )
    features = dict(features or {})
    if any(p not in features for p in paths):
        modules = kernel_modules(model, variables, spec, kwargs)
        for p in paths:
            if p not in features:
                kernel = np.shape(get_path(variables, ("params", *p, "kernel")))
                features[p] = feature_axes(kernel, shapes[p], modules.get(p))
    wanted = tuple((p, int(features[p][1])) for p in paths)
    static = (hashable(model), tuple(sorted(kwargs.items())), wanted, bool(gram))
    return _Plan(static, wanted, shapes, features)


def _check_batch_size(batch_size) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")


def input_statistics(
    model,
    variables,
    data,
    paths: Iterable,
    *,
    batch_size: int = 32,
    apply_kwargs: Mapping | None = None,
    gram: bool = False,
    features: Mapping | None = None,
) -> dict[Path, ChannelStats]:
    """``{module path: ChannelStats}`` of what each module of ``paths`` reads on ``data``,
    one jitted forward per ``batch_size`` examples (module docstring).

    ``data``: (N, *input_shape) float, or an :class:`~jaxprune._flax.Example` (token ids,
    several inputs). ``paths``: module paths (``('block_0', 'mlp')``) of kernel modules.
    ``features``: ``{path: (first kernel axis, feature axes)}``; default
    :func:`feature_axes`. A
    module called several times gets its last call's input, as
    :func:`jaxprune._flax.kernel_inputs`.
    """
    _check_batch_size(batch_size)
    variables, _ = as_variables(variables)
    plan = _plan(model, variables, data, paths, apply_kwargs, gram, features)
    total: dict[Path, ChannelStats] = {}
    for inputs, mask in batches(data, batch_size):
        part = jax.device_get(_batch(*plan.static, variables, inputs, mask))
        for p, f in plan.wanted:
            n, mean, m2, g = part[p]
            stats = ChannelStats(
                float(n),
                np.asarray(mean, np.float64),
                np.asarray(m2, np.float64),
                None if g is None else np.asarray(g, np.float64),
                plan.shapes[p][len(plan.shapes[p]) - f :],
                int(plan.features[p][0]),
            )
            total[p] = merge(total.get(p), stats)
    return total


class PlannedMemory(NamedTuple):
    """Bytes XLA plans for one statistics forward (``compiled.memory_analysis()``):
    ``arguments`` (the variables and one batch), ``temp`` (the most intermediate values
    live at once: the activations), ``output`` (the per-batch sums)."""

    arguments: int
    temp: int
    output: int


def planned_memory(
    model,
    variables,
    data,
    paths: Iterable,
    *,
    batch_size: int = 32,
    apply_kwargs: Mapping | None = None,
    gram: bool = False,
) -> PlannedMemory:
    """The memory :func:`input_statistics` needs per batch, as XLA's buffer assignment plans
    it (nothing is run).

    The forward returns only per-batch sums, so each block's activations are dead once the
    next block has read them and their buffers are reused: ``temp`` stays one block's
    activations however deep the model is (``tests/test_calibration.py`` checks it), and the
    peak is ``arguments + temp + output`` — the dense variables, one batch and one block's
    activations.

    Example::

        >>> import flax.linen as nn, jax, numpy as np
        >>> from jaxprune import calibration
        >>> x = np.ones((8, 4), np.float32)
        >>> model = nn.Dense(3)
        >>> mem = calibration.planned_memory(model, model.init(jax.random.key(0), x), x, [()])
        >>> mem.arguments >= 4 * (4 * 3 + 3)
        True
    """
    _check_batch_size(batch_size)
    variables, _ = as_variables(variables)
    plan = _plan(model, variables, data, paths, apply_kwargs, gram, None)
    inputs, mask = next(iter(batches(data, batch_size)))
    stats = _batch.lower(*plan.static, variables, inputs, mask).compile().memory_analysis()
    if stats is None:
        raise ValueError(f"the {jax.default_backend()} backend gives no memory analysis")
    return PlannedMemory(
        int(stats.argument_size_in_bytes),
        int(stats.temp_size_in_bytes),
        int(stats.output_size_in_bytes),
    )


def input_shapes(model, variables, spec, kwargs) -> dict[Path, tuple]:
    """``{module path: its input's shape}`` of every kernel module (abstract trace)."""
    found = {}

    def record(module, x, _out):
        found[module_path(module)] = tuple(np.shape(x))

    def run(v, inp):
        with kernel_calls(record):
            return apply_inference(model, v, inp, kwargs)

    jax.eval_shape(
        run,
        variables,
        spec if isinstance(spec, Example) else jax.ShapeDtypeStruct((1, *spec), jnp.float32),
    )
    return found


def as_data(data):
    """``data`` as the model takes it: an :class:`~jaxprune._flax.Example` for a tuple/dict of
    inputs or a non-float array (token ids keep their dtype), else a float32 array."""
    if isinstance(data, (Example, Mapping, tuple, list)):
        return Example.of(data)
    arr = np.asarray(data)
    if arr.dtype.kind not in "fc":
        return Example.of(arr)
    return arr.astype(np.float32)


# --------------------------------------------------------------------------------------------
# FLAP's bias compensation
# --------------------------------------------------------------------------------------------
def _removed_features(kernel_shape, stats: ChannelStats, slots_removed) -> np.ndarray:
    """Feature-shaped 0/1 mask of the features whose channel was removed; ``slots_removed``:
    ``[(slot, size, removed channel indices)]`` of every group pruning this consumer."""
    mask = np.zeros(stats.shape, bool)
    for slot, size, gone in slots_removed:
        along = np.zeros(kernel_shape[slot.axis], bool)
        along[slot.entries(size)[gone].ravel()] = True
        local = slot.axis - stats.axis
        shape = [1] * len(stats.shape)
        shape[local] = -1
        mask |= along.reshape(shape)
    return mask


def mean_contribution(kernel, stats: ChannelStats, removed) -> np.ndarray:
    """``Σ_{f removed} μ_f W[f, :]``, the removed features' mean contribution to the layer's
    outputs (output-shaped: ``kernel.shape[axis + len(features):]``; a conv's window is
    summed, exact away from zero-padded borders). FLAP (An et al. 2024), Eq. (5)."""
    kernel = np.asarray(kernel, np.float64)
    w = kernel.sum(axis=tuple(range(stats.axis)))  # (*features, *out)
    count = len(stats.shape)
    mu = np.where(removed, stats.means, 0.0)
    return np.tensordot(mu, w, axes=(tuple(range(count)), tuple(range(count))))


def _nested(flat: Mapping[Path, Any]) -> dict:
    out: dict = {}
    for path, value in flat.items():
        node = out
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
    return out


def bias_compensation(
    dense_variables, small_variables, groups, kept, stats: Mapping[Path, ChannelStats]
) -> tuple[Any, dict]:
    """Add to each consumer's bias the mean contribution of the channels it no longer reads.

    FLAP (An et al. 2024, Eq. (5)): for a consumer ``y = W x + b`` whose input features
    ``f ∈ R`` were removed, ``b' = b + Σ_{f ∈ R} W[f, :] μ_f`` with ``μ_f`` the mean of
    feature ``f`` over the calibration data (``stats``: :func:`input_statistics` of the dense
    network, keyed by the consumer's module path), so the pruned layer's output keeps its
    mean on ``data``. A consumer that lost outputs too gets the entries of those it kept.

    Returns ``(small variables, report)``; ``report``: ``{"compensated": {layer: ‖Δb‖₂},
    "skipped": {layer: why}}``. A consumer without a bias (``use_bias=False``) cannot hold
    the shift: it is skipped, named in the report and in a warning.

    Example::

        >>> small, rep = bias_compensation(dense, result.params, result.groups,
        ...                                result.kept, input_statistics(model, dense, x,
        ...                                [s.path[1:-1] for g in result.groups
        ...                                 for s in g.consumers]))  # doctest: +SKIP
    """
    dense, _ = as_variables(dense_variables)
    small, wrapped = as_variables(small_variables)
    removed: dict[Path, list] = {}
    for g in groups:
        if g.name not in kept or len(kept[g.name]) >= g.size:
            continue
        gone = np.setdiff1d(np.arange(g.size), np.asarray(kept[g.name], int))
        for slot in g.consumers:
            removed.setdefault(tuple(slot.path), []).append((slot, g.size, gone))
    deltas, report = {}, {"compensated": {}, "skipped": {}}
    for kpath, slots in removed.items():
        name = "/".join(kpath[1:-1])
        bias_path = (*kpath[:-1], "bias")
        module = get_path(dense, kpath[:-1])
        if kpath[1:-1] not in stats:
            raise ValueError(f"bias_compensation: no statistics for the consumer {name}")
        st = stats[kpath[1:-1]]
        kernel = np.asarray(module["kernel"])
        out_shape = kernel.shape[st.axis + len(st.shape) :]
        if "bias" not in module:
            report["skipped"][name] = "no bias (use_bias=False) to hold the mean contribution"
            continue
        if tuple(np.shape(module["bias"])) != tuple(out_shape):
            report["skipped"][name] = (
                f"bias shape {np.shape(module['bias'])} is not the output shape {tuple(out_shape)}"
            )
            continue
        delta = mean_contribution(kernel, st, _removed_features(kernel.shape, st, slots))
        deltas[bias_path] = delta.astype(np.asarray(module["bias"]).dtype)
        report["compensated"][name] = float(np.linalg.norm(delta))
    if report["skipped"]:
        warnings.warn(
            "bias compensation skipped for "
            + "; ".join(f"{k} ({v})" for k, v in report["skipped"].items()),
            UserWarning,
            stacklevel=2,
        )
    if deltas:
        shrunk = surgery.shrink(_nested(deltas), groups, kept)
        flat = {p: get_path(shrunk, p) for p in deltas}
        small = map_with_paths(
            lambda p, leaf: (
                leaf + jnp.asarray(flat[p], jnp.asarray(leaf).dtype) if p in flat else leaf
            ),
            small,
        )
    return restore_form(small, wrapped), report


def compensate(result, model, data, *, batch_size: int = 32, apply_kwargs: Mapping | None = None):
    """``result`` (a :class:`jaxprune.PruneResult` of a channel method) with FLAP's bias
    compensation applied (:func:`bias_compensation`; statistics of the dense network on
    ``data`` by :func:`input_statistics`); its report gets ``"bias_compensation"``.

    Example::

        >>> res = jaxprune.prune(v, 0, 0.5, method="flap", model=model, data=x)  # doctest: +SKIP
        >>> res = calibration.compensate(res, model, x)                          # doctest: +SKIP
    """
    if result.kind != "channels":
        raise ValueError("bias compensation applies to structured (channel) pruning results")
    if model is None and result.nnx_module is not None:
        model = _nnx.as_linen(result.nnx_module)
    if model is None:
        raise ValueError("bias compensation runs the dense model on data: pass model=")
    pruned = [
        g for g in result.groups if g.name in result.kept and len(result.kept[g.name]) < g.size
    ]
    paths = [tuple(s.path[1:-1]) for g in pruned for s in g.consumers]
    stats = input_statistics(
        model,
        result.dense_variables,
        as_data(data),
        paths,
        batch_size=batch_size,
        apply_kwargs=apply_kwargs if apply_kwargs is not None else result.apply_kwargs,
    )
    params, rep = bias_compensation(
        result.dense_variables, result.params, result.groups, result.kept, stats
    )
    return dataclasses.replace(
        result, params=params, report={**result.report, "bias_compensation": rep}
    )


def statistics_of(reader) -> ChannelStats:
    """The :class:`ChannelStats` of a :class:`~jaxprune.methods.LayerInput`: its ``inputs``
    when they are statistics already (the streaming path), else reduced from the activations
    it holds (:func:`from_inputs`, features by :func:`feature_axes`)."""
    if isinstance(reader.inputs, ChannelStats):
        return reader.inputs
    kernel = np.shape(reader.kernel)
    first, count = feature_axes(kernel, np.shape(reader.inputs), reader.module)
    return from_inputs(reader.inputs, count, axis=first)


def consumer_channel_sum(
    stats: ChannelStats, kernel, slot, size: int, per_feature: str, power: int
):
    """``Σ_{f owned by j} stat_f · Σ_{w ∈ W[f]} |w|^power`` (size,) for one consumer:
    ``per_feature``: ``"norm"`` (``‖X_f‖₂``) or ``"variance"`` (``Var_f``); ``W[f]``: the
    kernel entries reading feature ``f`` (every output, every conv window offset)."""
    first, count = stats.axis, len(stats.shape)
    kernel = np.asarray(kernel)
    if kernel.shape[first : first + count] != tuple(stats.shape):
        raise ValueError(
            f"kernel {kernel.shape} does not read features of shape "
            f"{tuple(stats.shape)} at axis {first}"
        )
    if not first <= slot.axis < first + count:
        raise ValueError(
            f"the group's channels sit on kernel axis {slot.axis}, not on the "
            f"input axes {first}..{first + count - 1} of {'/'.join(slot.path)}"
        )
    values = stats.norm if per_feature == "norm" else stats.variance
    return _weighted_channel_sum(
        jnp.asarray(kernel, jnp.float32),
        jnp.asarray(values, jnp.float32),
        slot=slot,
        size=int(size),
        first=first,
        count=count,
        power=int(power),
    )


@functools.partial(jax.jit, static_argnames=("slot", "size", "first", "count", "power"))
def _weighted_channel_sum(kernel, values, *, slot, size, first, count, power):
    return channel_sum(values * kernel_feature_sum(kernel, first, count, power), slot, size, first)
