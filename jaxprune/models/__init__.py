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

Linen models are ``nn.Module`` dataclasses; the NNX twins (``<name>_nnx``) are ``nnx.Module``
objects holding their arrays, with the Linen twin's parameter names and layouts and an
``init_args`` attribute (their constructor arguments, which ``model_config`` records).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax.linen as nn
from flax import nnx

from jaxprune.models.lenet import LeNet5, LeNet300100, NnxLeNet5, NnxLeNet300100
from jaxprune.models.resnet import (BasicBlock, Bottleneck, CifarResNet, ResNet50,
                                    resnet20, resnet50, resnet56)
from jaxprune.models.vgg import VGG, VGG19_CONV, vgg16, vgg19
from jaxprune.models.vit import NnxViT, ViT

__all__ = [
    "LeNet300100", "LeNet5", "VGG", "vgg16", "vgg19", "CifarResNet", "ResNet50", "BasicBlock",
    "Bottleneck", "resnet20", "resnet56", "resnet50", "ViT", "NnxViT", "NnxLeNet300100", "NnxLeNet5", "MODELS", "NNX_MODELS", "get_model", "model_config",
    "model_from_config", "default_input_shape", "model_names",
]

MODELS: dict[str, Callable[..., nn.Module]] = {
    "lenet300": LeNet300100,
    "lenet5": LeNet5,
    "vgg16": vgg16,
    "vgg19": vgg19,
    "resnet20": resnet20,
    "resnet56": resnet56,
    "resnet50": resnet50,
    "vit": ViT,
}

_INPUT_SHAPES = {
    "lenet300": (28, 28, 1),
    "lenet5": (28, 28, 1),
    "vgg16": (32, 32, 3),
    "vgg19": (32, 32, 3),
    "resnet20": (32, 32, 3),
    "resnet56": (32, 32, 3),
    "resnet50": (224, 224, 3),
    "vit": (28, 28, 1),
}


# NNX twins: name -> (class, the Linen twin whose recipe and input shape they share)
NNX_MODELS: dict[str, tuple[Callable[..., nnx.Module], str]] = {
    "lenet300_nnx": (NnxLeNet300100, "lenet300"),
    "lenet5_nnx": (NnxLeNet5, "lenet5"),
    "vit_nnx": (NnxViT, "vit"),
}


def model_names() -> tuple[str, ...]:
    return tuple(MODELS) + tuple(NNX_MODELS)


def is_nnx_name(name: str) -> bool:
    """True for the registry name of an NNX model."""
    return name in NNX_MODELS


def linen_twin(name: str) -> str:
    """The Linen model an NNX name mirrors (its training recipe); other names unchanged."""
    return NNX_MODELS[name][1] if name in NNX_MODELS else name


def _check_name(name: str) -> str:
    if name not in MODELS and name not in NNX_MODELS:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(model_names())}")
    return name


def _tupled(overrides: dict) -> dict:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()}


def get_model(name: str, **overrides: Any):
    """Build a registered model; ``overrides`` replace constructor fields (lists → tuples).

    NNX models are initialised on construction: ``rngs`` (default ``nnx.Rngs(0)``) seeds
    them and ``image`` (default :func:`default_input_shape`) sizes their input layers."""
    if _check_name(name) in NNX_MODELS:
        kwargs = {"image": default_input_shape(name), **_tupled(overrides)}
        kwargs.setdefault("rngs", nnx.Rngs(0))
        return NNX_MODELS[name][0](**kwargs)
    return MODELS[name](**_tupled(overrides))


def default_input_shape(name: str) -> tuple[int, int, int]:
    """Per-example NHWC input shape (no batch dim) the model was designed for."""
    return _INPUT_SHAPES[linen_twin(_check_name(name))]


def _nnx_registry_name(module: nnx.Module) -> str:
    for name, (cls, _) in NNX_MODELS.items():
        if type(module) is cls:
            return name
    raise TypeError(f"{type(module).__name__} is not a registered jaxprune model (save your "
                    "own NNX modules with jaxprune.checkpoint.save_nnx)")


def _registry_name(model: nn.Module) -> str:
    if isinstance(model, LeNet300100):
        return "lenet300"
    if isinstance(model, LeNet5):
        return "lenet5"
    if isinstance(model, VGG):
        return "vgg19" if model.num_conv == len(VGG19_CONV) else "vgg16"
    if isinstance(model, CifarResNet):
        return "resnet20" if tuple(model.num_blocks) == (3, 3, 3) else "resnet56"
    if isinstance(model, ResNet50):
        return "resnet50"
    if isinstance(model, ViT):
        return "vit"
    raise TypeError(f"{type(model).__name__} is not a registered jaxprune model")


def _fields(model: nn.Module) -> dict[str, Any]:
    out = {}
    for f in dataclasses.fields(model):
        if f.name in ("parent", "name") or not f.init:
            continue
        v = getattr(model, f.name)
        out[f.name] = [int(a) if isinstance(a, int) else a for a in v] \
            if isinstance(v, (tuple, list)) else v
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
        return {"name": _nnx_registry_name(model),
                **{k: list(v) if isinstance(v, tuple) else v for k, v in model.init_args}}
    return {"name": _registry_name(model), **_fields(model)}


def model_from_config(cfg: dict[str, Any]):
    """Inverse of :func:`model_config`."""
    cfg = dict(cfg)
    if "name" not in cfg:
        raise ValueError(f"model config needs a 'name' key (one of {', '.join(model_names())})")
    return get_model(cfg.pop("name"), **cfg)
