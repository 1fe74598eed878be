"""Kernel layers in call order (for weight pruning) and the bare Dense-chain check."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, NamedTuple

import flax.linen as nn
import numpy as np
from flax.linen.linear import canonicalize_padding

from jaxprune._flax import module_path, trace_kernel_calls
from jaxprune._tree import Path, leaves_with_paths, params_of


class ConvSpec(NamedTuple):
    """What a ``flax.linen.Conv`` call does besides the kernel (hashable: a jit static)."""

    window: tuple[int, ...]
    strides: tuple[int, ...]
    padding: Any  # "SAME" | "VALID" | ((lo, hi), ...)
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


def _natural_key(path: Path):
    """Sort key that orders ``dense_2`` before ``dense_10`` (digit runs compare as numbers)."""
    return [tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", part)) for part in path]


def _numbered(paths) -> bool:
    """True when the module paths differ only in integers (``Dense_0, Dense_1, ...``,
    ``layers_0/...``): Flax numbers auto-named modules in creation order."""
    return len({tuple(re.sub(r"\d+", "#", part) for part in p) for p in paths}) == 1


def _orders_by_shapes(kernels) -> list:
    """Every order in which the kernels chain (``out_i == in_{i+1}``) with one successor
    possible at each step."""
    dims = [np.shape(k) for _, k in kernels]

    def chain_from(start):
        order, left = [start], set(range(len(dims))) - {start}
        while left:
            nxt = [j for j in left if dims[j][0] == dims[order[-1]][1]]
            if len(nxt) != 1:
                return None
            order.append(nxt[0])
            left.discard(nxt[0])
        return order

    return [[kernels[i] for i in c] for c in map(chain_from, range(len(dims))) if c is not None]


def dense_chain(variables) -> list[tuple[Path, Any]]:
    """``[(module path, kernel), ...]`` of a bare Dense chain in call order; a clear
    ``ValueError`` unless every module is ``{'kernel': (in, out)[, 'bias']}`` and the kernels
    chain (``out_i == in_{i+1}``).

    Without the model the call order is not in the pytree (its keys are sorted as strings,
    ``dense_10`` before ``dense_2``): numbered names (``Dense_0 … Dense_11``) are taken in
    numeric order; otherwise the shapes must admit exactly one chaining order.
    """
    flat = leaves_with_paths(params_of(variables))
    kernels = [(p[:-1], leaf) for p, leaf in flat if p[-1] == "kernel"]
    others = [p for p, _ in flat if p[-1] not in ("kernel", "bias")]
    if not kernels or others or any(np.ndim(k) != 2 for _, k in kernels):
        raise ValueError(
            "the parameter pytree matches no known structure: without `model=` only a chain of "
            "Dense layers ({'kernel': (in, out), 'bias': (out,)} per layer) is understood; "
            "pass the Flax module as `model=` (and `input_shape=`) for other networks"
        )
    if _numbered([p for p, _ in kernels]):
        kernels = sorted(kernels, key=lambda pk: _natural_key(pk[0]))
    else:
        orders = _orders_by_shapes(kernels)
        if len(orders) > 1:
            raise ValueError(
                f"the call order of the Dense layers {['/'.join(p) for p, _ in kernels]} is "
                "ambiguous without the model (their names carry no numbers and their shapes "
                "chain in several orders); pass the Flax module as `model=`"
            )
        kernels = orders[0] if orders else kernels  # no order: the check below says so
    for (p0, k0), (p1, k1) in zip(kernels, kernels[1:]):
        if np.shape(k0)[1] != np.shape(k1)[0]:
            raise ValueError(
                f"Dense kernels {'/'.join(p0)} {np.shape(k0)} and {'/'.join(p1)} "
                f"{np.shape(k1)} do not chain; pass the Flax module as `model=` so the "
                "structure can be traced"
            )
    return kernels


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
            return (
                "other",
                None,
                (f"grouped convolution (feature_group_count={module.feature_group_count})"),
            )
        if getattr(module, "mask", None) is not None:
            return "other", None, "convolution with a fixed weight mask"
        padding = module.padding
        if isinstance(padding, str):
            padding = padding.upper()
            if padding not in ("SAME", "VALID"):
                return "other", None, f"convolution padding {padding!r}"
        else:
            padding = tuple(tuple(int(q) for q in p) for p in canonicalize_padding(padding, n))
        ks = module.kernel_size
        window = (int(ks),) * n if isinstance(ks, int) else tuple(int(k) for k in ks)
        return (
            "conv",
            ConvSpec(
                window,
                _tuple(module.strides, n),
                padding,
                _tuple(module.input_dilation, n),
                _tuple(module.kernel_dilation, n),
            ),
            "",
        )
    return "other", None, f"{type(module).__name__} layer"


def _model_layers(model, variables, input_shape, apply_kwargs) -> list[KernelLayer]:
    """Kernel modules of ``model`` in the order of their last call (abstract trace only)."""
    records: dict[Path, tuple] = {}

    def record(module, _x, _out):
        path = module_path(module)
        kernel = module.variables["params"]["kernel"]
        records.pop(path, None)  # re-insert: order of the last call
        records[path] = _describe(module, np.ndim(kernel))

    trace_kernel_calls(model, variables, input_shape, record, apply_kwargs)
    if not records:
        raise ValueError(
            f"{type(model).__name__}: no submodule with a 'kernel' parameter was "
            "called; nothing to prune"
        )
    return [KernelLayer("/".join(p), ("params", *p, "kernel"), *d) for p, d in records.items()]


def kernel_layers(
    variables, model=None, input_shape=None, apply_kwargs: Mapping | None = None
) -> list[KernelLayer]:
    """The kernel layers of a network in call order (the last one is the output layer).

    With ``model``, found by tracing it abstractly at ``input_shape``; without, the params
    must be a Dense chain (:func:`dense_chain`, pytree order)."""
    if model is None:
        return [
            KernelLayer("/".join(p), ("params", *p, "kernel"), "dense")
            for p, _ in dense_chain(variables)
        ]
    if input_shape is None:
        raise ValueError(
            f"kernel_layers: pass input_shape= (one example, no batch axis) to "
            f"trace {type(model).__name__}"
        )
    return _model_layers(model, variables, input_shape, apply_kwargs)
