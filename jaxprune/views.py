"""What a method sees: :class:`~jaxprune.methods.LayerView` per channel group and
:class:`~jaxprune.methods.WeightView` per prunable kernel, built from the variables (and, for
data-informed methods, from what each kernel layer reads on a small batch ``S``)."""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from jaxprune import _flax, calibration, surgery
from jaxprune._tree import get_path
from jaxprune.methods import LayerInput, LayerView, WeightView
from jaxprune.structure import ChannelGroup

Path = tuple[str, ...]


def _layer_inputs(variables, slots, inputs, modules) -> tuple:
    """One :class:`LayerInput` per slot: what the slot's kernel module reads on the data."""
    out = []
    for slot in slots:
        path = tuple(slot.path[1:-1])  # ("params", *module path, "kernel")
        if path not in inputs:
            raise ValueError(
                f"no captured input for the module {'/'.join(path)} (its kernel "
                "is not applied by a module's __call__ with the input first)"
            )
        out.append(
            LayerInput(
                inputs=inputs[path],
                kernel=np.asarray(get_path(variables, slot.path)),
                slot=slot,
                module=(modules or {}).get(path),
            )
        )
    return tuple(out)


def layer_view(
    variables,
    group: ChannelGroup,
    inputs: Mapping | None = None,
    modules: Mapping | None = None,
    producers: bool = True,
) -> LayerView:
    """Points ``[W_j | b_j]`` and outgoing ``|w_kj|`` of one group.

    ``inputs``: ``{module path: its input on the data}`` (:func:`jaxprune._flax.kernel_inputs`)
    and ``modules`` (:func:`jaxprune._flax.kernel_modules`); when given, the view's
    ``consumer_inputs`` and (``producers=True``) ``producer_inputs`` are filled.
    """
    cols, is_bias = [], []
    for slot in group.producers:
        cols.append(surgery.channels_first(get_path(variables, slot.path), slot, group.size))
        is_bias.append(np.zeros(cols[-1].shape[1], bool))
        bias = slot.path[:-1] + ("bias",)
        for m in group.members:
            if m.path == bias:
                cols.append(surgery.channels_first(get_path(variables, m.path), m, group.size))
                is_bias.append(np.ones(cols[-1].shape[1], bool))
    out = []
    for slot in group.consumers:
        w = np.abs(np.asarray(get_path(variables, slot.path)))
        view, _ = surgery.split_channels(w, slot, group.size)
        ax = slot.axis + 1
        # keep the channel axis and the consumer's output axis (its last axis)
        reduce = tuple(a for a in range(view.ndim) if a not in (ax, view.ndim - 1))
        out.append(np.sum(view, axis=reduce))  # (C, K_consumer)
    extra = {}
    if inputs is not None:
        extra = dict(
            consumer_inputs=_layer_inputs(variables, group.consumers, inputs, modules),
            producer_inputs=_layer_inputs(variables, group.producers, inputs, modules)
            if producers
            else None,
        )
    return LayerView(
        points=jnp.asarray(np.concatenate(cols, axis=1), jnp.float32),
        outgoing=jnp.asarray(np.concatenate(out, axis=1), jnp.float32),
        is_bias=np.concatenate(is_bias),
        **extra,
    )


def channel_views(
    variables,
    groups,
    model=None,
    data=None,
    apply_kwargs: Mapping | None = None,
    statistics: bool = False,
    batch_size: int = 32,
) -> list[LayerView]:
    """One view per group; with ``data``, each view also holds its layers' inputs on it.

    ``statistics=True``: each :class:`~jaxprune.methods.LayerInput` holds the
    :class:`~jaxprune.calibration.ChannelStats` of its module's input instead of the
    activations, streamed ``batch_size`` examples at a time
    (:func:`jaxprune.calibration.input_statistics`), so the activations of the whole of
    ``data`` are never held (what ``wanda_sp`` and ``flap`` read); only the consumers' inputs
    are summarised (``producer_inputs`` is None)."""
    inputs = modules = None
    if data is not None:
        # callers pass data= only together with the model
        modules = _flax.kernel_modules(model, variables, _flax.input_spec(data), apply_kwargs)  # pyright: ignore[reportArgumentType]
        if statistics:
            paths = {tuple(s.path[1:-1]) for g in groups for s in g.consumers}
            inputs = calibration.input_statistics(
                model,
                variables,
                data,
                sorted(paths),
                batch_size=batch_size,
                apply_kwargs=apply_kwargs,
            )
        else:
            inputs = _flax.kernel_inputs(model, variables, data, apply_kwargs=apply_kwargs)  # pyright: ignore[reportArgumentType]
    return [layer_view(variables, g, inputs, modules, producers=not statistics) for g in groups]


def chain_inputs(variables, layers, data) -> dict[str, np.ndarray]:
    """Inputs of each layer of a bare Dense chain (ReLU between layers, as
    :func:`jaxprune.structure.from_params` assumes)."""
    x = jnp.asarray(np.asarray(data, np.float32).reshape(len(data), -1))
    d = np.shape(get_path(variables, layers[0].path))[0]
    if x.shape[1] != d:
        raise ValueError(
            f"data has {x.shape[1]} features per example, the first Dense kernel "
            f"{layers[0].name!r} reads {d}"
        )
    out = {}
    for n, layer in enumerate(layers):
        out[layer.name] = np.asarray(x)
        mod = get_path(variables, layer.path[:-1])
        x = x @ jnp.asarray(mod["kernel"], jnp.float32)
        if "bias" in mod:
            x = x + jnp.asarray(mod["bias"], jnp.float32)
        if n < len(layers) - 1:
            x = jax.nn.relu(x)
    return out


def weight_views(
    variables, layers, prunable, model=None, data=None, apply_kwargs: Mapping | None = None
) -> list[WeightView]:
    """One view per prunable kernel layer; with ``data``, each holds the layer's input on it
    (for a bare Dense chain, computed through the ReLU chain itself)."""
    inputs = {}
    if data is not None:
        if model is None:
            inputs = chain_inputs(variables, layers, data)
        else:
            captured = _flax.kernel_inputs(model, variables, data, apply_kwargs=apply_kwargs)
            inputs = {"/".join(p): a for p, a in captured.items()}
    return [
        WeightView(
            layer.name,
            np.asarray(get_path(variables, layer.path)),
            layer.layer,
            layer.conv,
            inputs.get(layer.name),
            layer.why,
        )
        for layer in prunable
    ]


def layer_inputs(
    model, variables, images, *, batch_size: int = 256, apply_kwargs: Mapping | None = None
) -> dict:
    """``{module path: its input on images}`` for every kernel-bearing module of ``model``
    (inference mode; what the data-informed methods read). See
    :func:`jaxprune._flax.kernel_inputs`."""
    return _flax.kernel_inputs(
        model, variables, images, batch_size=batch_size, apply_kwargs=apply_kwargs
    )
