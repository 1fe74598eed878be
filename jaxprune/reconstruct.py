"""Data-light reconstruction after structured pruning: refit the consumer layers by ridge
least squares so that the small network reproduces the dense network's pre-activations.

Removing channels changes what every *consumer* of a pruned group reads. :func:`refit` fits
each consumer kernel layer ``l`` (Dense, an ungrouped Conv through its im2col patches, or a
linear einsum -- ``nn.DenseGeneral``, ``nnx.LinearGeneral``, ``nn.Einsum``/``nnx.Einsum`` of
the form ``"…i,ik->…k"``, e.g. a ``(heads, head_dim, d_model)`` out-projection reading pruned
heads -- seen as the Dense layer ``(Π in axes, Π out axes)`` and reshaped back) anew on a
small batch ``data`` (N, *input_shape; token ids or a tuple/dict of inputs too)::

    W', b' = argmin_{W, b}  sum || X_small W + b - Y_dense ||^2  +  lam ||W||^2

``X_small``: the rows the *small* network feeds layer ``l`` (a Dense input row, or one patch of
a conv input per output position); ``Y_dense``: the *dense* network's pre-activations of ``l``
(its output, bias included) at the same rows, restricted to the output channels ``l`` kept.
The normal equations ``[X 1]^T [X 1]`` and ``[X 1]^T Y`` are accumulated in float32 over
chunks of ``data`` (and, for a conv, over sub-batches of its patches), so neither the data's
activations nor its patches are ever held whole; the solve is in float64 on the host.
``lam = ridge * trace(X^T X) / d`` (scale-free), and the bias is not penalised.

Order: the layers are refit one after the other in call (forward) order, and each fit uses
the inputs the small network *with every earlier layer already refit* produces. That is the
sequential variant on pruned inputs: a layer is fit to the inputs it will actually see, so it
absorbs what the earlier layers could not reproduce instead of passing it on -- errors do not
compound down the network. Fitting every layer on the dense network's inputs (the parallel
variant) would solve each layer for inputs the pruned network never produces, and the errors
of layer ``l`` would reach layer ``l+1`` uncorrected.

A consumer whose own output channels were pruned as well (a hidden layer between two pruned
groups) is fit to the dense outputs it kept; pass ``groups=``/``kept=`` (``result.groups``,
``result.kept``) for those. Skipped, with the reason in the report: kernel layers that are not
a Dense, an ungrouped Conv or a linear einsum (an einsum whose bias is not shaped like its
outputs too) and layers called more than once (shared weights). Memory: the normal
equations (``d x d`` and ``d x K`` float32, ``d`` = a row's features + 1), one chunk's
forward pass of both networks (a chunk holds at most 256 MiB of kernel-layer activations)
and one 64 MiB sub-batch of patches, whatever N.

After the refit, BatchNorm running statistics can be re-estimated on ``data``
(``recalibrate_bn=True``, :func:`recalibrate_batch_stats`). The refit targets the layers'
pre-BatchNorm outputs, so the dense statistics of the kept channels stay about right without
it; re-estimating them replaces the statistics the network was trained with by those of
``data``.
"""

from __future__ import annotations

import functools
import math
import numbers
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxprune import calibration
from jaxprune._flax import (
    Example,
    as_example,
    first_line,
    hashable,
    inference_kwargs,
    kernel_io,
    kernel_modules,
    module_path,
    trace_kernel_calls,
)
from jaxprune._tree import Path, as_variables, get_path, map_with_paths, restore_form
from jaxprune.calibration import batches
from jaxprune.structure import ConvSpec, kernel_layers

__all__ = ["consumer_paths", "recalibrate_batch_stats", "refit"]

# Elements of one sub-batch of patches ([X 1] rows x features) inside a chunk: 2^24 float32
# = 64 MiB, whatever the layer.
_PATCH_ELEMENTS = 1 << 24
# Bytes of kernel-layer activations (inputs and outputs of both networks) one chunk may hold:
# the chunk shrinks below ``chunk`` for models whose per-example activations are large.
_CHUNK_BYTES = 1 << 28
_HIGHEST = jax.lax.Precision.HIGHEST


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------
def _check_data(data):
    """``data`` as a float32 array (N, *input_shape), or as an :class:`Example` when it is
    token ids (a non-float array) or a tuple/dict of inputs."""
    if data is None:
        raise ValueError(
            "refit needs data=: a batch of inputs (N, *input_shape), e.g. a few "
            "thousand training images"
        )
    if isinstance(data, (Example, Mapping, tuple)) or (
        isinstance(data, (np.ndarray, jax.Array))
        and np.asarray(data).dtype.kind in "iub"
        and np.asarray(data).dtype != np.uint8
    ):
        return _check_example(data)
    try:
        arr = np.asarray(data)
    except Exception as err:  # ragged lists and the like
        raise ValueError(f"data must be an array (N, *input_shape): {err}") from None
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise ValueError(f"data must be a numeric array, got dtype {arr.dtype}")
    if arr.ndim < 2:
        raise ValueError(f"data must be a batch (N, *input_shape), got shape {arr.shape}")
    if arr.shape[0] == 0 or arr.size == 0:
        raise ValueError(f"data is empty (shape {arr.shape}): pass at least one example")
    arr = arr.astype(np.float32)
    if not np.all(np.isfinite(arr)):
        raise ValueError("data contains NaN or infinite values")
    return arr


def _check_example(data) -> Example:
    ex = jax.tree.map(np.asarray, Example.of(data))
    if ex.batch == 0:
        raise ValueError("data is empty: pass at least one example")
    for a in ex.arrays:
        if a.dtype.kind in "fc" and not np.all(np.isfinite(a)):
            raise ValueError("data contains NaN or infinite values")
    return ex


def _spec(images):
    """What the models are traced on: an Example's one-example abstract form, an array's
    per-example shape."""
    return images.abstract(1) if isinstance(images, Example) else images.shape[1:]


def _examples_in(images) -> int:
    return images.batch if isinstance(images, Example) else int(images.shape[0])


def _check_ridge(ridge) -> float:
    if (
        isinstance(ridge, bool)
        or not isinstance(ridge, numbers.Real)
        or not math.isfinite(float(ridge))
        or float(ridge) < 0
    ):
        raise ValueError(f"ridge must be a finite real >= 0, got {ridge!r}")
    return float(ridge)


def _check_chunk(chunk) -> int:
    if isinstance(chunk, bool) or not isinstance(chunk, numbers.Integral) or chunk < 1:
        raise ValueError(f"chunk must be a positive integer, got {chunk!r}")
    return int(chunk)


def _layers(model, variables, input_shape, kwargs, which: str):
    """``({kernel path: KernelLayer}, {kernel path: calls})`` in call order; a data shape the
    model cannot take is a ``ValueError``."""
    calls: dict[Path, int] = {}

    def count(module, _x, _out):
        path = ("params", *module_path(module), "kernel")
        calls[path] = calls.get(path, 0) + 1

    try:
        trace_kernel_calls(model, variables, input_shape, count, kwargs)
        layers = kernel_layers(variables, model, input_shape, kwargs)
    except ValueError:
        raise
    except Exception as err:  # shape mismatches surface as TypeError / flax errors
        raise ValueError(
            f"the {which} model {type(model).__name__} cannot run on data of per-example shape "
            f"{input_shape}: {type(err).__name__}: "
            f"{first_line(err)}"
        ) from None
    return {layer.path: layer for layer in layers}, calls


def _as_path(item) -> Path:
    if isinstance(item, str):
        return ("params", *item.split("/"), "kernel")
    try:
        path = tuple(str(p) for p in item)
    except TypeError:
        raise ValueError(f"consumers: {item!r} is not a kernel path") from None
    if path and path[0] != "params":
        path = ("params", *path)
    if path and path[-1] != "kernel":
        path = (*path, "kernel")
    return path


def _check_consumers(consumers, small_layers, dense_layers) -> set:
    if consumers is None or isinstance(consumers, (str, bytes)):
        raise ValueError(
            "consumers must be a collection of kernel paths "
            "(('params', ..., 'kernel'), ...) or '/'-joined layer names"
        )
    paths = {_as_path(c) for c in consumers}
    unknown = sorted(
        "/".join(p[1:-1]) for p in paths if p not in small_layers or p not in dense_layers
    )
    if unknown:
        raise ValueError(
            f"unknown layers in consumers: {unknown}; the kernel layers called "
            f"are {['/'.join(p[1:-1]) for p in small_layers]}"
        )
    return paths


def consumer_paths(groups, kept) -> set:
    """The kernel paths of the consumers of every group that lost channels (``kept``:
    ``{group name: kept channel indices}``, e.g. ``result.groups`` and ``result.kept``)."""
    return {
        slot.path
        for g in groups
        if g.name in kept and len(kept[g.name]) < g.size
        for slot in g.consumers
    }


def _kept_outputs(path: Path, dense_kernel: tuple, small_kernel: tuple, outputs: int, groups, kept):
    """Flat indices of the dense layer's outputs (its kernel's last ``outputs`` axes, row
    major) that the small layer still has."""
    dense_out, small_out = tuple(dense_kernel[-outputs:]), tuple(small_kernel[-outputs:])
    dense_width, small_width = math.prod(dense_out), math.prod(small_out)
    if dense_out == small_out:
        return np.arange(dense_width)
    name = "/".join(path[1:-1])
    if groups is None or kept is None:
        raise ValueError(
            f"layer {name} lost output channels ({dense_out} -> {small_out}): pass "
            "groups= and kept= (result.groups, result.kept) so its targets can be matched"
        )
    keep = np.ones(dense_out, bool)
    first = len(dense_kernel) - outputs
    for g in groups:
        if g.name not in kept:
            continue
        gone = np.setdiff1d(np.arange(g.size), np.asarray(kept[g.name], int))
        for slot in g.producers:
            if tuple(slot.path) == path and slot.axis >= first:
                index = [slice(None)] * outputs
                index[slot.axis - first] = slot.entries(g.size)[gone].ravel()
                keep[tuple(index)] = False
    index = np.flatnonzero(keep.ravel())
    if index.size != small_width:
        raise ValueError(
            f"layer {name}: groups/kept leave {index.size} of its "
            f"{dense_width} outputs, but its small kernel has {small_width}"
        )
    return index


# --------------------------------------------------------------------------------------------
# One pass over a chunk: the normal equations of the current layer, the error of the last one
# --------------------------------------------------------------------------------------------
def _patches(x, spec: ConvSpec | None):
    """Rows of one layer's input: Dense ``(e, ..., D) -> (e, T, D)``; Conv
    ``(e, *spatial, C) -> (e, P, C*prod(window))``, features in ``(C, *window)`` order."""
    if spec is None:
        return x.reshape(x.shape[0], -1, x.shape[-1])
    p = jax.lax.conv_general_dilated_patches(
        jnp.moveaxis(x, -1, 1),
        spec.window,
        spec.strides,
        spec.padding,
        lhs_dilation=spec.input_dilation,
        rhs_dilation=spec.kernel_dilation,
        precision=_HIGHEST,
    )
    p = jnp.moveaxis(p, 1, -1)
    return p.reshape(p.shape[0], -1, p.shape[-1])


def _examples(x, mask, spec: ConvSpec | None):
    """``x`` with its batch axes merged into one (a conv input may carry extra batch axes),
    and the mask repeated over them."""
    if spec is None:
        return x, mask
    keep = len(spec.window) + 1  # spatial axes and channels
    lead = int(np.prod(x.shape[1:-keep], dtype=int))  # extra batch axes after the first
    return x.reshape(-1, *x.shape[-keep:]), jnp.repeat(mask, lead)


def _normal_equations(x, y, mask, spec: ConvSpec | None, bias: bool):
    """``([X 1]^T [X 1], [X 1]^T Y)`` over the rows of one chunk, in sub-batches of examples
    whose patches hold at most :data:`_PATCH_ELEMENTS` numbers."""
    x, m = _examples(x, mask, spec)
    e_total = x.shape[0]
    y = y.reshape(e_total, -1, y.shape[-1])
    rows = y.shape[1]
    feats = int(np.prod(spec.window, dtype=int)) * x.shape[-1] if spec else x.shape[-1]
    d = feats + int(bias)
    e = max(1, min(e_total, _PATCH_ELEMENTS // max(1, rows * d)))
    steps = -(-e_total // e)
    pad = steps * e - e_total
    x = jnp.pad(x, ((0, pad),) + ((0, 0),) * (x.ndim - 1))
    y = jnp.pad(y, ((0, pad), (0, 0), (0, 0)))
    m = jnp.pad(m, (0, pad))

    def body(carry, part):
        g, b = carry
        xs, ys, ms = part
        a = _patches(xs, spec)
        if bias:
            a = jnp.concatenate([a, jnp.ones(a.shape[:-1] + (1,), a.dtype)], axis=-1)
        a = (a * ms[:, None, None]).reshape(-1, d)
        t = (ys * ms[:, None, None]).reshape(-1, ys.shape[-1])
        return (
            g + jnp.dot(a.T, a, precision=_HIGHEST),
            b + jnp.dot(a.T, t, precision=_HIGHEST),
        ), None

    init = (jnp.zeros((d, d), jnp.float32), jnp.zeros((d, y.shape[-1]), jnp.float32))
    parts = (
        x.reshape(steps, e, *x.shape[1:]),
        y.reshape(steps, e, *y.shape[1:]),
        m.reshape(steps, e),
    )
    (g, b), _ = jax.lax.scan(body, init, parts)
    return g, b


def _errors(yhat, y, mask):
    """``(sum ||yhat - y||^2, sum ||y||^2)`` over the examples the mask keeps."""
    n = mask.shape[0]
    diff = (yhat - y).reshape(n, -1)
    y = y.reshape(n, -1)
    return jnp.sum(mask[:, None] * diff * diff), jnp.sum(mask[:, None] * y * y)


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3, 4, 5))
def _chunk_stats(
    dense_model,
    dense_kw,
    small_model,
    small_kw,
    cur,
    measure,
    dense_vars,
    small_vars,
    images,
    mask,
    indices,
    cur_index,
    acc,
):
    """Adds one chunk to ``acc``. ``cur``: ``(kernel path, ConvSpec | None, has bias, input
    axes, output axes)`` of the layer being fit (its normal equations), or None; ``measure``:
    ``(kernel path, output axes)`` of the layers whose error against the dense network is
    summed. ``indices``, ``cur_index``: the kept (flat) outputs of those layers and of
    ``cur``. An einsum's input and output axes are flattened: it is fit as a Dense layer."""
    fits = measure + ((cur[0], cur[4]),) if cur else measure
    want = {p[1:-1] for p, _ in fits}
    dense = kernel_io(dense_model, dense_vars, images, paths=want, apply_kwargs=dict(dense_kw))
    small = kernel_io(small_model, small_vars, images, paths=want, apply_kwargs=dict(small_kw))
    acc = dict(acc)
    targets = {
        p: jnp.take(_flat(dense[p[1:-1]][1], outputs), index, axis=-1)
        for (p, outputs), index in zip(fits, indices + ((cur_index,) if cur else ()))
    }
    if cur is not None:
        path, spec, bias, inputs, _ = cur
        g, b = _normal_equations(
            _flat(small[path[1:-1]][0], inputs), targets[path], mask, spec, bias
        )
        acc.update(G=acc["G"] + g, B=acc["B"] + b)
    if measure:
        err, norm = zip(
            *(
                _errors(_flat(small[p[1:-1]][1], outputs), targets[p], mask)
                for p, outputs in measure
            )
        )
        acc.update(err=acc["err"] + jnp.stack(err), norm=acc["norm"] + jnp.stack(norm))
    return acc


def _flat(x, axes: int):
    """``x`` float32 with its last ``axes`` axes merged into one."""
    x = jnp.asarray(x, jnp.float32)
    return x.reshape(*x.shape[: x.ndim - axes], -1)


def _solve(g, b, ridge: float, bias: bool) -> np.ndarray:
    """Ridge solution of the normal equations (float64); the bias row is not penalised."""
    g = np.asarray(g, np.float64)
    b = np.asarray(b, np.float64)
    d = g.shape[0] - int(bias)
    lam = ridge * float(np.trace(g[:d, :d])) / max(d, 1)
    g[np.arange(d), np.arange(d)] += lam
    try:
        w = np.linalg.solve(g, b)
        if np.all(np.isfinite(w)):
            return w
    except np.linalg.LinAlgError:
        pass
    return np.linalg.lstsq(g, b, rcond=None)[0]  # singular (ridge 0, dead inputs): min-norm


# --------------------------------------------------------------------------------------------
# refit
# --------------------------------------------------------------------------------------------
def refit(
    model: nn.Module,
    dense_variables,
    small_model: nn.Module,
    small_variables,
    consumers: Iterable,
    data,
    *,
    ridge: float = 1e-3,
    apply_kwargs: Mapping | None = None,
    chunk: int = 512,
    recalibrate_bn: bool = False,
    groups=None,
    kept=None,
) -> tuple[Any, dict]:
    """Refit the consumer layers of a pruned network on ``data`` (module doc).

    Args:
      model, dense_variables: the dense (unpruned) Linen module and its variables.
      small_model, small_variables: the pruned module (``result.model(model)``) and its
        variables (``result.params``: a variables dict or bare params).
      consumers: kernel paths ``('params', ..., 'kernel')`` (or '/'-joined layer names) of the
        layers to refit -- the consumers of the pruned groups (:func:`consumer_paths`).
      data: inputs (N, *input_shape), float; or token ids (an integer array) or a tuple/dict
        of inputs (as ``prune(..., data=...)`` takes them); the fit uses every example.
      ridge: ``lam = ridge * trace(X^T X) / d``; 0 is ordinary least squares.
      apply_kwargs: keyword arguments of both models' inference call (default: found from
        their ``__call__`` signature).
      chunk: at most this many examples per forward pass (the normal equations are summed
        over chunks); fewer where the kernel layers' activations of ``chunk`` examples in both
        networks would exceed 256 MiB.
      recalibrate_bn: afterwards re-estimate the BatchNorm running statistics on ``data``
        (:func:`recalibrate_batch_stats`).
      groups, kept: ``result.groups`` and ``result.kept``; needed only for a consumer whose
        own output channels were pruned too (its targets are the dense outputs it kept).

    Returns:
      ``(new small variables, report)``, the variables in the form ``small_variables`` came
      in. ``report``: ``{"layers": {name: {"rel_err_before", "rel_err_after"}}, "skipped":
      {name: reason}, "ridge", "examples", "batch_stats"}``; ``rel_err = ||Yhat - Y||_F /
      ||Y||_F`` of the layer's pre-activations against the dense network's on ``data``
      (before: the pruned network as given; after: with this and every earlier layer refit).
      ``batch_stats``: the recalibrated BatchNorm layers (None unless ``recalibrate_bn``).
    """
    images = _check_data(data)
    ridge = _check_ridge(ridge)
    chunk = _check_chunk(chunk)
    if not isinstance(recalibrate_bn, bool):
        raise ValueError(f"recalibrate_bn must be a bool, got {recalibrate_bn!r}")
    dense_vars, _ = as_variables(dense_variables)
    small_vars, wrapped = as_variables(small_variables)
    dense_kw = inference_kwargs(model, apply_kwargs)
    small_kw = inference_kwargs(small_model, apply_kwargs)
    input_shape = _spec(images)
    dense_layers, dense_calls = _layers(model, dense_vars, input_shape, dense_kw, "dense")
    small_layers, small_calls = _layers(small_model, small_vars, input_shape, small_kw, "small")
    wanted = _check_consumers(consumers, small_layers, dense_layers)

    einsums = _einsum_axes(small_model, small_vars, input_shape, small_kw, small_layers, wanted)
    plan, skipped = _plan(
        wanted,
        small_layers,
        small_calls,
        dense_calls,
        small_vars,
        dense_vars,
        groups,
        kept,
        einsums,
    )
    statics = (
        hashable(model),
        tuple(sorted(dense_kw.items())),
        hashable(small_model),
        tuple(sorted(small_kw.items())),
    )
    chunk = min(
        chunk,
        _fitting_chunk(
            ((model, dense_vars, dense_kw), (small_model, small_vars, small_kw)), input_shape
        ),
    )
    small_vars, layers_report = _fit_in_order(
        statics, plan, dense_vars, small_vars, images, chunk, ridge
    )
    bn = None
    if recalibrate_bn:
        small_vars, bn = _recalibrate(small_model, small_vars, images, small_kw, chunk)
    report = {
        "layers": layers_report,
        "skipped": skipped,
        "ridge": ridge,
        "examples": _examples_in(images),
        "batch_stats": bn,
    }
    return restore_form(small_vars, wrapped), report


class _Fit(NamedTuple):
    """One layer to refit: its kernel path, its KernelLayer, whether it has a bias, the
    dense outputs it kept (flat indices), and how many of its kernel's leading axes read the
    input (``inputs``) and trailing axes make the output (``outputs``; 1 and 1 for a Dense or
    a conv's channels)."""

    path: Path
    layer: Any
    bias: bool
    index: np.ndarray
    inputs: int = 1
    outputs: int = 1


def _einsum_axes(model, variables, input_shape, kwargs, layers, wanted) -> dict:
    """``{kernel path: contracted kernel axes, or why it cannot be fit}`` of the wanted
    layers that are not Dense/Conv: a linear einsum (``nn.DenseGeneral``,
    ``nnx.LinearGeneral``, ``nn.Einsum``/``nnx.Einsum`` of the form ``"…i,ik->…k"``,
    :func:`jaxprune.calibration.feature_axes`) is fit as the Dense layer ``(Π in, Π out)``."""
    paths = [p for p in wanted if p in layers and layers[p].layer == "other"]
    if not paths:
        return {}
    modules = kernel_modules(model, variables, input_shape, kwargs)
    shapes = calibration.input_shapes(model, variables, input_shape, kwargs)
    out = {}
    for path in paths:
        module = modules.get(path[1:-1])
        why = f"not a Dense, ungrouped Conv or linear einsum layer: {layers[path].why}"
        if module is None or calibration.declared_contraction(module) is None:
            out[path] = why
            continue
        kernel = np.shape(get_path(variables, path))
        try:
            out[path] = calibration.feature_axes(kernel, shapes[path[1:-1]], module)[1]
        except ValueError as err:
            out[path] = str(err)
            continue
        bias = get_path(variables, path[:-1]).get("bias")
        if bias is not None and np.shape(bias) != kernel[out[path] :]:
            out[path] = (
                f"bias {np.shape(bias)} is not shaped like the outputs {kernel[out[path] :]}"
            )
    return out


def _plan(
    wanted, small_layers, small_calls, dense_calls, small_vars, dense_vars, groups, kept, einsums
) -> tuple[list[_Fit], dict]:
    """The consumers to refit, in call order, and ``{name: why}`` of those skipped."""
    plan, skipped = [], {}
    for path, layer in small_layers.items():
        if path not in wanted:
            continue
        small_bias = "bias" in get_path(small_vars, path[:-1])
        contracted = einsums.get(path, 1)
        if layer.layer not in ("dense", "conv") and not isinstance(contracted, int):
            skipped[layer.name] = contracted
        elif small_calls.get(path, 0) > 1 or dense_calls.get(path, 0) > 1:
            skipped[layer.name] = (
                f"called {small_calls.get(path)} times (shared weights): "
                "one kernel cannot be fit per call site"
            )
        elif small_bias and "bias" not in get_path(dense_vars, path[:-1]):
            skipped[layer.name] = "the small layer has a bias the dense one lacks"
        else:
            kernel = np.shape(get_path(small_vars, path))
            outputs = len(kernel) - contracted if layer.layer == "other" else 1
            index = _kept_outputs(
                path, np.shape(get_path(dense_vars, path)), kernel, outputs, groups, kept
            )
            plan.append(
                _Fit(
                    path,
                    layer,
                    small_bias,
                    index,
                    len(kernel) - outputs if layer.layer == "other" else 1,
                    outputs,
                )
            )
    return plan, skipped


def _fitting_chunk(models, input_shape) -> int:
    """The most examples whose kernel-layer inputs and outputs, in every network of
    ``models`` (``(module, variables, apply kwargs)``), fit in :data:`_CHUNK_BYTES`."""
    per_example = 0
    one = as_example(input_shape).abstract(1)
    for module, variables, kwargs in models:
        shapes = jax.eval_shape(
            lambda v, x, m=module, kw=kwargs: kernel_io(m, v, x, apply_kwargs=kw), variables, one
        )
        per_example += sum(4 * math.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(shapes))
    return max(1, _CHUNK_BYTES // max(per_example, 1))


def _chunks(images, chunk: int):
    """``(examples, mask)`` per chunk, every chunk of one size (the last zero-padded, its
    padding masked out) so each pass compiles once (:func:`jaxprune.calibration.batches`)."""
    return batches(images, chunk)


def _fit_in_order(
    statics, plan: list[_Fit], dense_vars, small_vars, images, chunk: int, ridge: float
) -> tuple[dict, dict]:
    """Refit the planned layers one after the other (module doc: sequential, on the pruned
    inputs). Pass 0 measures every planned layer as pruned and sums the first layer's normal
    equations; pass k solves layer k-1, and sums its error after the refit together with
    layer k's equations; a last pass measures the last layer."""
    report: dict[str, dict] = {}
    measure = tuple(plan)
    for step in range(len(plan) + 1):
        cur = plan[step] if step < len(plan) else None
        acc = {}
        if cur is not None:
            kernel = np.shape(get_path(small_vars, cur.path))
            d = math.prod(kernel[: len(kernel) - cur.outputs]) + int(cur.bias)
            acc.update(
                G=jnp.zeros((d, d), jnp.float32), B=jnp.zeros((d, len(cur.index)), jnp.float32)
            )
        if measure:
            acc.update(
                err=jnp.zeros(len(measure), jnp.float32), norm=jnp.zeros(len(measure), jnp.float32)
            )
        static_cur = (
            None if cur is None else (cur.path, cur.layer.conv, cur.bias, cur.inputs, cur.outputs)
        )
        static_measure = tuple((item.path, item.outputs) for item in measure)
        indices = tuple(jnp.asarray(item.index) for item in measure)
        cur_index = jnp.asarray(cur.index if cur else np.zeros(0, int))
        for part, mask in _chunks(images, chunk):
            acc = _chunk_stats(
                *statics,
                static_cur,
                static_measure,
                dense_vars,
                small_vars,
                part,
                mask,
                indices,
                cur_index,
                acc,
            )
        acc = jax.device_get(acc)
        key = "rel_err_before" if step == 0 else "rel_err_after"
        for item, err, norm in zip(measure, acc.get("err", ()), acc.get("norm", ())):
            report.setdefault(item.layer.name, {})[key] = _rel(err, norm)
        if cur is None:
            break
        small_vars = _updated(
            small_vars,
            cur.path,
            _solve(acc["G"], acc["B"], ridge, cur.bias),
            cur.bias,
            cur.layer.conv is not None,
        )
        measure = (cur,)
    return small_vars, report


def _rel(err, norm) -> float:
    err, norm = float(err), float(norm)
    return math.sqrt(max(err, 0.0) / norm) if norm > 0 else math.sqrt(max(err, 0.0))


def _updated(variables: dict, path: Path, w: np.ndarray, bias: bool, conv: bool) -> dict:
    """``variables`` with the kernel at ``path`` (and its bias) replaced by the solution ``w``
    (rows: the input features in patch order, then the bias; an einsum's flat ``(Π in,
    Π out)`` solution is its kernel in row-major order)."""
    kernel = get_path(variables, path)
    shape = np.shape(kernel)
    rows = w[:-1] if bias else w
    if conv:  # rows in (C, *window) order, the kernel is (*window, C, K)
        rows = np.moveaxis(rows.reshape(shape[-2], *shape[:-2], shape[-1]), 0, -2)
    new = {path: jnp.asarray(rows.reshape(shape), jnp.asarray(kernel).dtype)}
    if bias:
        old = get_path(variables, (*path[:-1], "bias"))
        new[(*path[:-1], "bias")] = jnp.asarray(
            w[-1].reshape(np.shape(old)), jnp.asarray(old).dtype
        )
    return map_with_paths(lambda p, leaf: new.get(p, leaf), variables)


# --------------------------------------------------------------------------------------------
# BatchNorm recalibration
# --------------------------------------------------------------------------------------------
def _bn_sums_impl(model, kwargs, variables, images):
    """``{BN module path: (sum x, sum x^2, count)}`` over one batch, every ``nn.BatchNorm``
    normalising with the batch's statistics (training mode of BatchNorm only)."""
    sums = {}

    def interceptor(next_fun, args, kw, context):
        module = context.module
        if (
            context.method_name != "__call__"
            or not isinstance(module, nn.BatchNorm)
            or module.is_initializing()
        ):
            return next_fun(*args, **kw)
        x = args[0]
        axes = module.axis if isinstance(module.axis, tuple) else (module.axis,)
        axes = {a % x.ndim for a in axes}
        red = tuple(i for i in range(x.ndim) if i not in axes)
        xf = jnp.asarray(x, jnp.float32)
        count = float(np.prod([x.shape[i] for i in red], dtype=np.float64))
        path = module_path(module)
        s1, s2, c = sums.get(path, (0.0, 0.0, 0.0))
        sums[path] = (s1 + jnp.sum(xf, red), s2 + jnp.sum(xf * xf, red), c + count)
        # a bound module is a fresh clone per apply: set the field, drop the call argument
        object.__setattr__(module, "use_running_average", False)
        kw = {k: v for k, v in kw.items() if k != "use_running_average"}
        return next_fun(x, **kw)

    with nn.intercept_methods(interceptor):
        args, call_kwargs = images.call() if isinstance(images, Example) else ((images,), {})
        model.apply(variables, *args, **call_kwargs, mutable=["batch_stats"], **dict(kwargs))
    return {p: (s1, s2, jnp.float32(c)) for p, (s1, s2, c) in sums.items()}


_bn_sums = jax.jit(_bn_sums_impl, static_argnums=(0, 1))


def _recalibrate(model, variables: dict, images, kwargs: dict, chunk: int):
    if "batch_stats" not in variables:
        return variables, []
    static, kw = hashable(model), tuple(sorted(kwargs.items()))
    total: dict[Path, list] = {}
    examples = images if isinstance(images, Example) else Example((images,))
    for start in range(0, examples.batch, chunk):
        part = jax.device_get(
            _bn_sums(
                static,
                kw,
                variables,
                jax.tree.map(jnp.asarray, examples.take(start, start + chunk)),
            )
        )
        for path, values in part.items():
            acc = total.setdefault(path, [0.0, 0.0, 0.0])
            for i, v in enumerate(values):
                acc[i] = acc[i] + np.asarray(v, np.float64)
    new = {}
    for path, (s1, s2, count) in total.items():
        mean_path = ("batch_stats", *path, "mean")
        var_path = ("batch_stats", *path, "var")
        old_mean, old_var = get_path(variables, mean_path), get_path(variables, var_path)
        mean = s1 / count
        var = np.maximum(s2 / count - mean * mean, 0.0)
        new[mean_path] = jnp.asarray(mean.reshape(np.shape(old_mean)), jnp.asarray(old_mean).dtype)
        new[var_path] = jnp.asarray(var.reshape(np.shape(old_var)), jnp.asarray(old_var).dtype)
    variables = map_with_paths(lambda p, leaf: new.get(p, leaf), variables)
    return variables, ["/".join(p) for p in total]


def recalibrate_batch_stats(
    model: nn.Module, variables, data, *, apply_kwargs: Mapping | None = None, chunk: int = 512
) -> tuple[Any, list[str]]:
    """Re-estimate the running mean/variance of every ``flax.linen.BatchNorm`` on ``data``.

    The model runs in its inference mode (``apply_kwargs``: dropout off, ...) except that each
    ``nn.BatchNorm`` is switched to training mode by intercepting its call (whatever flag the
    model uses for it), so a BN normalises with the statistics of the chunk it sees, as in
    training, and the downstream layers see realistic inputs. Each BN's input moments are summed
    over all chunks, and its ``mean``/``var`` become the population statistics over ``data``
    (the biased variance, as Flax stores it) -- a cumulative average, not a momentum update.
    Generic for Linen's ``nn.BatchNorm`` (any axis, called from any module, through
    :class:`jaxprune.rebuild.Resized` too); BatchNorm-like modules of other classes are left
    alone, a ``mask=`` passed to a BN is ignored, and a BN called more than once gets the
    moments of all its calls. Returns ``(variables, names of the recalibrated BN layers)``.
    """
    images = _check_data(data)
    chunk = _check_chunk(chunk)
    variables, wrapped = as_variables(variables)
    try:
        variables, names = _recalibrate(
            model, variables, images, inference_kwargs(model, apply_kwargs), chunk
        )
    except ValueError:
        raise
    except Exception as err:
        raise ValueError(
            f"cannot recalibrate {type(model).__name__} on data of per-example "
            f"shape {_spec(images)}: {type(err).__name__}: "
            f"{first_line(err)}"
        ) from None
    return restore_form(variables, wrapped), names
