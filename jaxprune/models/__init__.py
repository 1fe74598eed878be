"""Flax (linen) models with configurable, prunable widths, and a small registry.

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
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax.linen as nn

from jaxprune.models.lenet import LeNet5, LeNet300100
from jaxprune.models.resnet import (BasicBlock, Bottleneck, CifarResNet, ResNet50,
                                    resnet20, resnet50, resnet56)
from jaxprune.models.vgg import VGG, VGG19_CONV, vgg16, vgg19
from jaxprune.models.vit import NnxViT, ViT

__all__ = [
    "LeNet300100", "LeNet5", "VGG", "vgg16", "vgg19", "CifarResNet", "ResNet50", "BasicBlock",
    "Bottleneck", "resnet20", "resnet56", "resnet50", "ViT", "NnxViT", "MODELS", "get_model", "model_config",
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


def model_names() -> tuple[str, ...]:
    return tuple(MODELS)


def _check_name(name: str) -> str:
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(MODELS)}")
    return name


def get_model(name: str, **overrides: Any) -> nn.Module:
    """Build a registered model; ``overrides`` replace constructor fields (lists → tuples)."""
    factory = MODELS[_check_name(name)]
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()}
    return factory(**kwargs)


def default_input_shape(name: str) -> tuple[int, int, int]:
    """Per-example NHWC input shape (no batch dim) the model was designed for."""
    return _INPUT_SHAPES[_check_name(name)]


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
    ``model_from_config(model_config(m)) == m`` is exact for pruned widths too.
    """
    return {"name": _registry_name(model), **_fields(model)}


def model_from_config(cfg: dict[str, Any]) -> nn.Module:
    """Inverse of :func:`model_config`."""
    cfg = dict(cfg)
    if "name" not in cfg:
        raise ValueError(f"model config needs a 'name' key (one of {', '.join(MODELS)})")
    return get_model(cfg.pop("name"), **cfg)
