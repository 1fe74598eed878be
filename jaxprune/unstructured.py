"""Unstructured (weight) pruning: ``prune(..., method=m)`` for methods with ``kind="weights"``.

Structured methods remove channels and shrink the network; weight methods (``magnitude``,
``sipp``) zero individual kernel entries and keep every shape, so the result is a masked
network that is fine-tuned with the mask held fixed (``train.fit(..., mask=result.mask)``).

Data flow. :func:`prune_weights` (called by :func:`jaxprune.prune`)

1. finds the kernel layers in call order (:func:`kernel_layers`: with ``model=`` by tracing
   ``model.apply`` with :func:`flax.linen.intercept_methods` under ``jax.eval_shape``;
   without a model the params must be a Dense chain, taken in pytree order);
2. decides which kernels are prunable: every kernel except the output layer's (the kernel
   module called last; ``prune_output=True`` prunes it too) and except those named in
   ``leave=``. Layer names are the '/'-joined module paths (``"dense_0"``, ``"conv_1"``,
   ``"head"``, ``"stage_1/block_0/conv_0"``): the same strings as the structured channel
   group names of :mod:`jaxprune.structure` (a group is named after its producer module);
3. splits the budget over the prunable kernels (see *Allocation*);
4. for data-informed methods (``Method.needs_data``) computes every layer's input ``a(x)`` on
   ``data`` (:func:`jaxprune.activations.layer_inputs`; for a bare Dense chain, the ReLU
   chain itself);
5. calls the method (contract below) and assembles params, mask and report.

Allocation. ``ratio`` is the fraction of the prunable kernels' entries removed (``unit`` must be
``"params"``: a weight method removes no neuron and no FLOP of a dense kernel, so ``"neurons"``
and ``"flops"`` are rejected). Both ``allocation="uniform"`` and ``allocation="bound"`` give
every prunable kernel the same sparsity: ``R = round(ratio·N)`` weights of the ``N`` prunable
ones are removed, layer ``l`` (``n_l`` entries) removes ``⌊ratio·n_l⌋`` plus one of the
``R − Σ_l ⌊ratio·n_l⌋`` leftover weights if its fractional part ``ratio·n_l − ⌊ratio·n_l⌋``
is among the largest (largest-remainder rounding, ties to the earlier layer), so the total is
exactly ``R`` and every layer is within one weight of ``ratio``. ``"bound"`` (the structured
default, which balances channel-sampling error bounds) has no weight-level counterpart here and
falls back to this uniform split; the report records ``allocation: "uniform"``. A dict ratio
``{layer name: r}`` prunes only the named layers, each at its own fraction. Every layer keeps at
least one weight (``sipp`` keeps at least one per neuron). ``magnitude`` with
``scope="global"`` uses only the total ``Σ_l keep_l`` (one threshold over all kernels).

Method contract (``kind="weights"``). ``Method.score`` is called once with all prunable layers::

    score(key, views: list[WeightView], keep: list[int], sampling: str, **options)
        -> list[Selection]

``keep[l]`` is the number of entries of ``views[l].kernel`` to keep. Each :class:`Selection`
gives the kept entries (bool, kernel shape), optional re-weights (float, kernel shape,
multiplied into the kept entries; ``None`` = 1) and the per-weight scores (kernel shape).

Result (:class:`jaxprune.pruning.PruneResult`): ``params`` has the input's structure and shapes
(a variables dict stays a variables dict, BatchNorm statistics untouched) with the pruned kernel
entries exactly ``0.0`` and the kept ones multiplied by their re-weights; ``mask`` is a 0/1
float32 pytree shaped like the ``'params'`` collection (what ``train.fit(mask=)`` takes): the
kept pattern for each pruned kernel, ones for every other leaf (biases, BatchNorm, output layer,
``leave=`` layers); ``sensitivities`` = ``{layer name: per-weight scores}``; ``widths``,
``kept``, ``scales`` are empty and ``groups`` is ``()``.
"""
from __future__ import annotations

import math
import warnings
from typing import Any, Mapping, NamedTuple

import flax.linen as nn
from flax.linen.linear import canonicalize_padding
import jax
import jax.numpy as jnp
import numpy as np

from jaxprune import activations, metrics, structure

Path = tuple[str, ...]


class ConvSpec(NamedTuple):
    """What a ``flax.linen.Conv`` call does besides the kernel (hashable: a jit static)."""
    window: tuple[int, ...]
    strides: tuple[int, ...]
    padding: Any                      # "SAME" | "VALID" | ((lo, hi), ...)
    input_dilation: tuple[int, ...]
    kernel_dilation: tuple[int, ...]


class KernelLayer(NamedTuple):
    """One kernel-bearing module. ``name``: '/'-joined module path; ``path``: path of the kernel
    in the variables dict (``('params', ..., 'kernel')``); ``layer``: ``"dense"``, ``"conv"`` or
    ``"other"`` (a kernel module magnitude can prune but the patch view does not cover, e.g.
    ``ConvTranspose``, grouped convs); ``conv``: the conv's :class:`ConvSpec` (else None);
    ``why``: for ``"other"``, what is unsupported."""
    name: str
    path: Path
    layer: str
    conv: ConvSpec | None = None
    why: str = ""


class WeightView(NamedTuple):
    """What a weight method sees of one prunable kernel.

    ``kernel``: the kernel as a NumPy array (Dense ``(in, out)``, Conv ``(*window, in, out)``);
    the last axis indexes the layer's output units (neurons/filters), every other axis its
    fan-in. ``inputs``: the layer's input on ``data`` (``(N, in)`` for Dense, ``(N, *spatial,
    in)`` for Conv) for data-informed methods, else ``None``.
    """
    name: str
    kernel: np.ndarray
    layer: str
    conv: ConvSpec | None = None
    inputs: np.ndarray | None = None
    why: str = ""


class Selection(NamedTuple):
    """A weight method's decision for one kernel (all arrays have the kernel's shape)."""
    keep: np.ndarray                  # bool: kept entries
    scale: np.ndarray | None          # re-weights of the kept entries (None: 1)
    scores: np.ndarray                # per-weight scores (sensitivities)
    draws: int | None = None          # i.i.d. draws made (sampling methods), else None


# --------------------------------------------------------------------------------------------
# Helpers shared by the weight methods
# --------------------------------------------------------------------------------------------
def top_k_mask(scores, k: int) -> np.ndarray:
    """Bool mask (same shape) of the ``k`` largest entries of ``scores`` (row-major order;
    ties -> the lower flat index is kept). Exactly ``k`` entries (``k`` clipped to [0, size])."""
    s = np.asarray(scores, np.float64)
    k = int(min(max(k, 0), s.size))
    order = np.argsort(-s.reshape(-1), kind="stable")
    keep = np.zeros(s.size, bool)
    keep[order[:k]] = True
    return keep.reshape(s.shape)


def layer_budgets(sizes, ratio: float, minimum=1) -> list[int]:
    """Entries to keep per layer: ``R = round(ratio·Σ sizes)`` removed in total, split by
    largest-remainder rounding of ``ratio·size_l`` (ties -> earlier layer), then each
    ``keep_l`` clipped to ``[minimum_l, size_l]`` (``minimum`` an int or one per layer)."""
    sizes = [int(n) for n in sizes]
    mins = [int(minimum)] * len(sizes) if np.isscalar(minimum) else [int(m) for m in minimum]
    total = sum(sizes)
    removed_total = int(math.floor(float(ratio) * total + 0.5))
    quotas = [float(ratio) * n for n in sizes]
    removed = [int(math.floor(q)) for q in quotas]
    left = removed_total - sum(removed)
    order = sorted(range(len(sizes)), key=lambda i: (-(quotas[i] - removed[i]), i))
    for i in order[:max(left, 0)]:
        removed[i] += 1
    return [int(min(n, max(m, n - r))) for n, r, m in zip(sizes, removed, mins)]


# --------------------------------------------------------------------------------------------
# Which kernels, in which order
# --------------------------------------------------------------------------------------------
def _tuple(value, n: int) -> tuple[int, ...]:
    if value is None:
        return (1,) * n
    if isinstance(value, int):
        return (int(value),) * n
    return tuple(int(v) for v in value)


def _describe(module: nn.Module, kernel_ndim: int) -> tuple[str, ConvSpec | None, str]:
    """('dense' | 'conv' | 'other', ConvSpec or None, why) of a kernel-bearing module."""
    if isinstance(module, nn.Dense):
        return "dense", None, ""
    if isinstance(module, nn.Conv):  # shared-weight convolution (not ConvLocal/Transpose)
        n = kernel_ndim - 2
        if int(module.feature_group_count) != 1:
            return "other", None, ("grouped convolution (feature_group_count="
                                   f"{module.feature_group_count})")
        if getattr(module, "mask", None) is not None:
            return "other", None, "convolution with a fixed weight mask"
        padding = module.padding
        if isinstance(padding, str):
            padding = padding.upper()
            if padding not in ("SAME", "VALID"):
                return "other", None, f"convolution padding {padding!r}"
        else:
            padding = tuple(tuple(int(q) for q in p) for p in
                            canonicalize_padding(padding, n))
        ks = module.kernel_size
        window = (int(ks),) * n if isinstance(ks, int) else tuple(int(k) for k in ks)
        return "conv", ConvSpec(window, _tuple(module.strides, n), padding,
                                _tuple(module.input_dilation, n),
                                _tuple(module.kernel_dilation, n)), ""
    return "other", None, f"{type(module).__name__} layer"


def _apply(model, variables, x):
    try:
        return model.apply(variables, x, train=False)
    except TypeError:
        return model.apply(variables, x)


def _model_layers(model, variables, input_shape) -> list[KernelLayer]:
    """Kernel modules of ``model`` in the order of their last call (abstract trace only)."""
    records: dict[Path, tuple] = {}

    def interceptor(next_fun, args, kwargs, context):
        module = context.module
        if context.method_name == "__call__" and args and activations._has_kernel(module):
            path = tuple(module.scope.path)
            kernel = module.variables["params"]["kernel"]
            records.pop(path, None)             # re-insert: order of the last call
            records[path] = _describe(module, np.ndim(kernel))
        return next_fun(*args, **kwargs)

    def run(v, x):
        records.clear()
        with nn.intercept_methods(interceptor):
            return _apply(model, v, x)

    jax.eval_shape(run, variables, jax.ShapeDtypeStruct((1, *tuple(input_shape)), jnp.float32))
    if not records:
        raise ValueError(f"{type(model).__name__}: no submodule with a 'kernel' parameter was "
                         "called; nothing to prune")
    return [KernelLayer("/".join(p), ("params", *p, "kernel"), *d) for p, d in records.items()]


def _chain_layers(variables) -> list[KernelLayer]:
    """Without a model: the params must be a Dense chain (pytree order, ``out_l == in_{l+1}``)."""
    flat = jax.tree_util.tree_flatten_with_path(variables["params"])[0]
    kernels = [(structure.path_of(p), leaf) for p, leaf in flat
               if structure.path_of(p)[-1] == "kernel"]
    others = [structure.path_of(p) for p, _ in flat
              if structure.path_of(p)[-1] not in ("kernel", "bias")]
    if not kernels or others or any(np.ndim(k) != 2 for _, k in kernels):
        raise ValueError("without `model=` only a chain of Dense layers ({'kernel': (in, out), "
                         "'bias': (out,)} per layer) is understood; pass the Flax module as "
                         "`model=` for other networks")
    for (p0, k0), (p1, k1) in zip(kernels, kernels[1:]):
        if np.shape(k0)[1] != np.shape(k1)[0]:
            raise ValueError(f"Dense kernels {'/'.join(p0)} {np.shape(k0)} and {'/'.join(p1)} "
                             f"{np.shape(k1)} do not chain; pass the Flax module as `model=`")
    return [KernelLayer("/".join(p[:-1]), ("params", *p), "dense") for p, _ in kernels]


def kernel_layers(variables, model=None, input_shape=None, data=None) -> list[KernelLayer]:
    """The kernel layers of a network in call order (the last one is the output layer).

    The model is traced at ``input_shape``, else at ``data``'s per-example shape, else at the
    model's own (``jaxprune.pruning._input_shape``)."""
    if model is None:
        return _chain_layers(variables)
    if input_shape is None and data is not None:
        input_shape = np.shape(data)[1:]
    from jaxprune.pruning import _input_shape
    return _model_layers(model, variables, _input_shape(model, variables, input_shape))


def _get(tree, path):
    for k in path:
        tree = tree[k]
    return tree


def _chain_inputs(variables, layers, data) -> dict[str, np.ndarray]:
    """Inputs of each layer of a bare Dense chain (ReLU between layers, as ``from_params``)."""
    x = jnp.asarray(np.asarray(data, np.float32).reshape(len(data), -1))
    d = np.shape(_get(variables, layers[0].path))[0]
    if x.shape[1] != d:
        raise ValueError(f"data has {x.shape[1]} features per example, the first Dense kernel "
                         f"{layers[0].name!r} reads {d}")
    out = {}
    for n, layer in enumerate(layers):
        out[layer.name] = np.asarray(x)
        mod = _get(variables, layer.path[:-1])
        x = x @ jnp.asarray(mod["kernel"], jnp.float32)
        if "bias" in mod:
            x = x + jnp.asarray(mod["bias"], jnp.float32)
        if n < len(layers) - 1:
            x = jax.nn.relu(x)
    return out


# --------------------------------------------------------------------------------------------
# The entry point (called by jaxprune.prune)
# --------------------------------------------------------------------------------------------
def prune_weights(variables, wrapped: bool, key, ratio, meth, *, model=None, input_shape=None,
                  unit: str = "params", sampling: str = "deterministic",
                  allocation: str = "uniform", leave=(), data=None, prune_output: bool = False,
                  **method_options):
    """Unstructured pruning of ``variables`` with the weight method ``meth`` (module doc).

    ``prune_output``: also prune the output layer's kernel (default False). ``leave``: layer
    names (module paths, e.g. ``"dense_1"``) kept dense. Other keywords go to the method.
    """
    from jaxprune.pruning import PruneResult

    if unit != "params":
        raise ValueError(f"method {meth.name!r} prunes individual weights: ratio counts kernel "
                         f"entries (unit='params'); unit={unit!r} is not supported (it removes "
                         "no neuron and no FLOP of a dense kernel)")
    if not isinstance(prune_output, bool):
        raise ValueError(f"prune_output must be a bool, got {prune_output!r}")
    if isinstance(leave, str):
        leave = (leave,)
    leave = tuple(leave)
    layers = kernel_layers(variables, model, input_shape, data)
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

    kernels = [np.asarray(_get(variables, layer.path)) for layer in prunable]
    sizes = [k.size for k in kernels]
    if isinstance(ratio, Mapping):
        keep = [layer_budgets([n], float(ratio[layer.name]))[0]
                for layer, n in zip(prunable, sizes)]
    else:
        keep = layer_budgets(sizes, float(ratio))

    inputs = {}
    if meth.needs_data:
        if model is None:
            inputs = _chain_inputs(variables, layers, data)
        else:
            captured = activations.layer_inputs(model, variables, data)
            inputs = {"/".join(p): a for p, a in captured.items()}
    views = [WeightView(layer.name, k, layer.layer, layer.conv, inputs.get(layer.name),
                        layer.why) for layer, k in zip(prunable, kernels)]
    selections = meth.score(key, views, keep, sampling, **method_options)
    if len(selections) != len(views):
        raise RuntimeError(f"method {meth.name!r} returned {len(selections)} selections for "
                           f"{len(views)} layers")

    new_kernels, kernel_masks = {}, {}
    for layer, k, sel in zip(prunable, kernels, selections):
        kept = np.asarray(sel.keep, bool)
        if kept.shape != k.shape:
            raise RuntimeError(f"method {meth.name!r}: keep mask of {layer.name} has shape "
                               f"{kept.shape}, kernel {k.shape}")
        value = k if sel.scale is None else k * np.asarray(sel.scale, k.dtype)
        new_kernels[layer.path] = jnp.asarray(np.where(kept, value, 0).astype(k.dtype))
        kernel_masks[layer.path[1:]] = kept.astype(np.float32)

    def new_leaf(p, leaf):
        return new_kernels.get(structure.path_of(p), leaf)

    def mask_leaf(p, leaf):
        m = kernel_masks.get(structure.path_of(p))
        return m if m is not None else np.ones(np.shape(leaf), np.float32)

    pruned = jax.tree_util.tree_map_with_path(new_leaf, variables)
    mask = jax.tree_util.tree_map_with_path(mask_leaf, variables["params"])
    report = _report(meth.name, sampling, ratio, allocation, prunable, kernels, selections,
                     variables, pruned, leave, names[-1], prune_output)
    return PruneResult(params=pruned if wrapped else pruned["params"], widths={}, kept={},
                       scales={}, sensitivities={layer.name: np.asarray(sel.scores)
                                                for layer, sel in zip(prunable, selections)},
                       groups=(), report=report, mask=mask)


def _report(method, sampling, ratio, allocation, prunable, kernels, selections, variables,
            pruned, leave, output, prune_output) -> dict:
    total = sum(k.size for k in kernels)
    kept = [int(np.count_nonzero(s.keep)) for s in selections]
    zeros = sum(int(k.size - np.count_nonzero(_get(pruned, layer.path)))
                for layer, k in zip(prunable, kernels))
    achieved = 1.0 - sum(kept) / total
    params_before = metrics.param_count(variables)
    nonzero = metrics.nonzero_count(pruned)
    draws = {layer.name: s.draws for layer, s in zip(prunable, selections) if s.draws is not None}
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
                      f"{ratio} (minimum kept weights per layer/neuron bind)")
    return report
