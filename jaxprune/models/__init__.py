"""Flax models with configurable, prunable widths, and a small registry.

Every model: ``__call__(x, train=False)`` on NHWC float32 input; field ``widths`` = output
width of each prunable hidden layer in call order; ``prunable_layers()`` = the '/'-joined
params path of each of those layers; ``num_classes``; a pruned model is
``model.clone(widths=smaller)``.

Registry::

    get_model("lenet300")                 # LeNet300100()
    get_model("resnet56", num_classes=100)
    get_model("vit", heads=8)             # no ``widths``: pruned through rebuild.Resized
    cfg = model_config(model)             # JSON-able: {"name": ..., fields...}
    model_from_config(cfg)                # == model
    get_model("lenet300_nnx", rngs=nnx.Rngs(0))   # NNX twin (``image`` sizes the input)
    register_model("mine", Mine, (28, 28, 1), recipe={"epochs": 5})   # see register_model

Linen models are ``nn.Module`` dataclasses; the NNX twins (``<name>_nnx``) are ``nnx.Module``
objects holding their arrays, with the Linen twin's parameter names and layouts and an
``init_args`` attribute (their constructor arguments, which ``model_config`` records).
One :func:`register_model` call makes a model known to all of these, to checkpoints and to
``jaxprune train --model NAME`` (with its training recipe).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import numpy as np
from flax import nnx

from jaxprune import _flax
from jaxprune.models._registry import (
    MODELS,
    NNX_MODELS,
    RegisteredModel,
    entry_of,
    model_names,
    register_model,
    registered,
    unregister_model,
)
from jaxprune.models.lenet import LeNet5, LeNet300100, NnxLeNet5, NnxLeNet300100
from jaxprune.models.lm import LM, NnxLM
from jaxprune.models.resnet import (
    BasicBlock,
    Bottleneck,
    CifarResNet,
    ResNet50,
    resnet20,
    resnet50,
    resnet56,
)
from jaxprune.models.vgg import VGG, VGG19_CONV, vgg16, vgg19
from jaxprune.models.vit import NnxViT, ViT

__all__ = [
    "LeNet300100",
    "LeNet5",
    "VGG",
    "vgg16",
    "vgg19",
    "CifarResNet",
    "ResNet50",
    "BasicBlock",
    "Bottleneck",
    "resnet20",
    "resnet56",
    "resnet50",
    "ViT",
    "NnxViT",
    "NnxLeNet300100",
    "NnxLeNet5",
    "LM",
    "NnxLM",
    "lm",
    "MODELS",
    "NNX_MODELS",
    "RegisteredModel",
    "register_model",
    "unregister_model",
    "get_model",
    "model_config",
    "model_from_config",
    "default_input_shape",
    "default_input_dtype",
    "example_input",
    "model_names",
    "training_recipe",
]

# MNIST-scale models: Adam 1e-3 with cosine decay, batch 128 (>= 98% / >= 99% test accuracy).
_MNIST = dict(optimizer="adam", learning_rate=1e-3, schedule="cosine", batch_size=128)
# CIFAR/ImageNet: SGD + Nesterov momentum, cosine, warmup, L2 5e-4 / 1e-4, crop+flip.
_VGG = dict(
    optimizer="sgd",
    learning_rate=0.05,
    nesterov=True,
    schedule="cosine",
    warmup_epochs=1.0,
    weight_decay=5e-4,
    epochs=160,
    batch_size=128,
    augment="crop_flip",
)
_CIFAR_RESNET = dict(
    optimizer="sgd",
    learning_rate=0.1,
    nesterov=True,
    schedule="cosine",
    warmup_epochs=1.0,
    weight_decay=1e-4,
    epochs=182,
    batch_size=128,
    augment="crop_flip",
)
_IMAGENET = dict(
    optimizer="sgd",
    learning_rate=0.1,
    nesterov=True,
    schedule="cosine",
    warmup_epochs=5.0,
    weight_decay=1e-4,
    epochs=90,
    batch_size=256,
    label_smoothing=0.1,
    augment="crop_flip",
)


def _is_vgg19(module) -> bool:
    return isinstance(module, VGG) and module.num_conv == len(VGG19_CONV)


def _is_resnet20(module) -> bool:
    return isinstance(module, CifarResNet) and tuple(module.num_blocks) == (3, 3, 3)


register_model(
    "lenet300", LeNet300100, (28, 28, 1), recipe={**_MNIST, "epochs": 20}, nnx=NnxLeNet300100
)
register_model("lenet5", LeNet5, (28, 28, 1), recipe={**_MNIST, "epochs": 10}, nnx=NnxLeNet5)
register_model(
    "vgg16",
    vgg16,
    (32, 32, 3),
    recipe=_VGG,
    matches=lambda m: isinstance(m, VGG) and not _is_vgg19(m),
)
register_model("vgg19", vgg19, (32, 32, 3), recipe=_VGG, matches=_is_vgg19)
register_model("resnet20", resnet20, (32, 32, 3), recipe=_CIFAR_RESNET, matches=_is_resnet20)
register_model(
    "resnet56",
    resnet56,
    (32, 32, 3),
    recipe=_CIFAR_RESNET,
    matches=lambda m: isinstance(m, CifarResNet) and not _is_resnet20(m),
)
register_model(
    "resnet50", resnet50, (224, 224, 3), recipe=_IMAGENET, matches=lambda m: isinstance(m, ResNet50)
)
register_model("vit", ViT, (28, 28, 1), nnx=NnxViT)


def lm(num_classes: int | None = None, **fields) -> LM:
    """:class:`LM` with ``fields``; ``num_classes`` (the dataset's label count, as
    ``jaxprune train`` passes it) sets ``vocab_size`` when given."""
    if num_classes is not None:
        fields["vocab_size"] = num_classes
    return LM(**fields)


# Byte LM: windows of 128 byte ids; Adam 3e-3 with warmup and cosine decay, batch 32.
register_model(
    "lm",
    lm,
    (LM.max_len,),
    nnx=NnxLM,
    input_dtype="int32",
    matches=lambda m: isinstance(m, LM),
    recipe=dict(
        optimizer="adam",
        learning_rate=3e-3,
        schedule="cosine",
        warmup_epochs=0.1,
        epochs=1,
        batch_size=32,
    ),
)


def is_nnx_name(name: str) -> bool:
    """True for the registry name of an NNX model."""
    return name in NNX_MODELS


def linen_twin(name: str) -> str:
    """The Linen model an NNX name mirrors (its training recipe); other names unchanged."""
    return NNX_MODELS[name][1] if name in NNX_MODELS else name


def training_recipe(name: str) -> dict[str, Any]:
    """The :class:`jaxprune.train.TrainConfig` fields registered for ``name`` (an NNX twin:
    its Linen twin's); ``{}`` for a name without a recipe or not registered."""
    return dict(registered(name).recipe) if name in model_names() else {}


def _tupled(overrides: dict) -> dict:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()}


def get_model(name: str, **overrides: Any):
    """Build a registered model; ``overrides`` replace constructor fields (lists → tuples).

    NNX models are initialised on construction: ``rngs`` (default ``nnx.Rngs(0)``) seeds
    them and ``image`` (default :func:`default_input_shape`) sizes their input layers."""
    entry = registered(name)
    if entry.is_nnx:
        kwargs = {"image": entry.input_shape, **_tupled(overrides)}
        kwargs.setdefault("rngs", nnx.Rngs(0))
        return entry.factory(**kwargs)
    return entry.factory(**_tupled(overrides))


def default_input_shape(name: str) -> tuple[int, ...]:
    """Per-example NHWC input shape (no batch dim) the model was designed for."""
    return registered(name).input_shape


def default_input_dtype(name: str) -> str:
    """The dtype of the model's input (``'float32'`` images, ``'int32'`` token ids)."""
    return registered(name).input_dtype


def example_input(name: str, batch: int = 1) -> np.ndarray:
    """Zeros of the registered input shape and dtype with a leading batch axis: what the
    model is traced and initialised on (``example_inputs=`` of :func:`jaxprune.prune`).

    >>> example_input("lm").dtype, example_input("lenet300", 2).shape
    (dtype('int32'), (2, 28, 28, 1))
    """
    entry = registered(name)
    return np.zeros((int(batch),) + entry.input_shape, entry.input_dtype)


def _fields(model: nn.Module) -> dict[str, Any]:
    out = {}
    for f in dataclasses.fields(model):
        if f.name in ("parent", "name") or not f.init:
            continue
        v = getattr(model, f.name)
        out[f.name] = (
            [int(a) if isinstance(a, int) else a for a in v] if isinstance(v, (tuple, list)) else v
        )
    return out


def model_config(model: nn.Module) -> dict[str, Any]:
    """JSON-able description ``{'name': registry name, **all constructor fields}``.

    Every field is stored, so the registry name only picks the factory: the round trip
    ``model_from_config(model_config(m)) == m`` is exact for pruned widths too. An NNX model
    records its ``init_args`` (for a pruned one: the dense module's); ``model_from_config``
    then builds a freshly initialised dense module, and ``jaxprune.checkpoint.load_model``
    shrinks it to the saved arrays.
    """
    if isinstance(model, nnx.Module):
        try:
            name = entry_of(model).name
        except TypeError as err:
            raise TypeError(
                f"{err} (save your own NNX modules with jaxprune.checkpoint.save_nnx)"
            ) from None
        return {
            "name": name,
            **{k: list(v) if isinstance(v, tuple) else v for k, v in model.init_args},
        }
    return {"name": entry_of(model).name, **_fields(model)}


def model_from_config(cfg: dict[str, Any]):
    """Inverse of :func:`model_config`."""
    cfg = dict(cfg)
    if "name" not in cfg:
        raise ValueError(f"model config needs a 'name' key (one of {', '.join(model_names())})")
    return get_model(cfg.pop("name"), **cfg)


def _registered_input_shape(model):
    """The input shape a zoo model was registered with (``None`` for any other module)."""
    try:
        return entry_of(model).input_shape
    except TypeError:
        return None


_flax.add_input_shape_hook(_registered_input_shape)
