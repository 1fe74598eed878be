"""The training cases of the bounds paper (§4.2, App. B.1), LeNet-300-100 on MNIST.

``difficult``: no regularisation.  ``moderate``: L1 (``jaxprune.train``'s ``l1`` adds
``l1·Σ|kernel|``, a *sum* over every kernel entry, to the batch-mean CE).  ``easy_weight``: the
difficult net with the final weight matrix magnitude-pruned to ``easy_weight_sparsity`` and
re-trained with the pruned entries held at zero.  ``easy_neuron``: the difficult net trained
with hard-concrete L0 gates on the 100 neurons of the last hidden layer (``jaxprune.gates``,
Louizos et al. 2018), the gates most likely off pruned (``easy_neuron_sparsity``), re-trained
with them held at zero.  ``dropout<p>``: no regularisation but dropout ``p``.  All SGD with the
paper's lr 0.1, momentum 0.5, batch 100 (cosine decay by default so the last epoch is stable).
"""
from __future__ import annotations

import pathlib
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from experiments.bounds_lab._util import log, progress, to_host
from experiments.bounds_lab.network import (apply_mask, gated_apply, magnitude_mask, neuron_mask,
                                            ones_like)
from jaxprune import checkpoint, data, gates, train
from jaxprune.models import LeNet300100

__all__ = ["Case", "sgd_config", "cached", "train_cases"]


class Case(NamedTuple):
    name: str
    model: LeNet300100
    params: dict
    accuracy: float
    seconds: float
    description: str


def sgd_config(cfg, epochs, l1=0.0, seed=None) -> train.TrainConfig:
    return train.TrainConfig(optimizer="sgd", learning_rate=cfg.lr, momentum=cfg.momentum,
                             schedule=cfg.schedule, epochs=epochs, batch_size=cfg.batch_size,
                             l1=l1, seed=cfg.seed if seed is None else seed, log_every=0)


def _cache_key(cfg, name):
    keys = ["epochs", "lr", "momentum", "batch_size", "schedule", "seed", "limit_train",
            "dataset"]
    if name == "moderate":
        keys.append("l1")
    if name.startswith("easy"):
        keys += ["retrain_epochs", "easy_weight_sparsity", "easy_neuron_sparsity", "l0_epochs",
                 "l0_lambda", "l0_lr", "l0_gate_lr", "l0_init_drop"]
    return {"case": name, **{k: getattr(cfg, k) for k in keys}}


def cached(cfg, name, model, make):
    """``make() -> (params, info)``; with ``cfg.cache_dir`` restore when the training settings
    match."""
    key = _cache_key(cfg, name)
    if cfg.cache_dir:
        path = pathlib.Path(cfg.cache_dir).resolve() / name
        if checkpoint.is_model_dir(path):
            doc = checkpoint.read_model_json(path)
            if doc.get("meta", {}).get("key") == checkpoint.to_jsonable(key):
                _, variables, _ = checkpoint.load_model(path)
                log(f"  {name}: restored from {path}")
                return to_host(variables["params"]), doc["meta"]["info"]
    params, info = make()
    params = to_host(params)
    if cfg.cache_dir:
        checkpoint.save_model(path, model, {"params": params}, meta={"key": key, "info": info})
    return params, info


def _timed(fn):
    def run():
        t0 = time.time()
        params, info = fn()
        info["seconds"] = time.time() - t0
        return params, info
    return run


def _fit_l0_gates(cfg, params, train_ds):
    """Hard-concrete L0 gates on the last hidden layer → (params, log α, history)."""
    la = gates.init_log_alpha((100,), cfg.l0_init_drop)
    bs = cfg.batch_size

    def batches():
        for e in range(cfg.l0_epochs):
            yield from data.batches(train_ds, bs, seed=cfg.seed + 7, epoch=e)

    bar = progress(range(cfg.l0_epochs * data.num_batches(len(train_ds), bs)), "L0 gates")
    it = iter(bar)
    params, la, hist = gates.fit_l0(gated_apply, jax.tree.map(jnp.asarray, params), la,
                                    batches(), lam=cfg.l0_lambda,
                                    key=jax.random.PRNGKey(cfg.seed + 3),
                                    learning_rate=cfg.l0_lr, gate_learning_rate=cfg.l0_gate_lr,
                                    progress=lambda i: next(it, None))
    bar.close()
    return to_host(params), np.asarray(la), hist


def train_cases(cfg, train_ds, dev_ds) -> dict:
    """``{name: Case}``: the training cases of the module docstring (+ the dropout cases)."""
    cases = {}
    base = LeNet300100()

    def fit(model, tc, variables=None, mask=None):
        return train.fit(model, train_ds, tc, variables=variables, mask=mask,
                         devices=cfg.devices, progress=False).variables["params"]

    def add(name, model, make, description):
        t0 = time.time()
        params, info = cached(cfg, name, model, _timed(make))
        acc = train.evaluate(model, {"params": params}, dev_ds)["accuracy"]
        secs = info.get("seconds", time.time() - t0)
        cases[name] = Case(name, model, params, acc, secs, description)
        flag = "" if acc >= cfg.min_accuracy else f"   (below the {cfg.min_accuracy:.0%} target)"
        log(f"  {name:12s} dev accuracy {acc:.4f}  ({secs:.0f}s){flag}")

    add("difficult", base, lambda: (fit(base, sgd_config(cfg, cfg.epochs)), {}),
        "no regularisation")
    add("moderate", base, lambda: (fit(base, sgd_config(cfg, cfg.epochs, l1=cfg.l1)), {}),
        f"L1 {cfg.l1:g}·Σ|kernel|")
    for p in cfg.dropout:
        m = LeNet300100(dropout_rate=float(p))
        add(f"dropout{p:g}", m, lambda m=m: (fit(m, sgd_config(cfg, cfg.epochs)), {}),
            f"dropout {p:g}, no regularisation")
    difficult = cases["difficult"].params

    def make_easy_weight():
        mask = ones_like(difficult)
        mask["head"]["kernel"] = magnitude_mask(difficult["head"]["kernel"],
                                                cfg.easy_weight_sparsity)
        pruned = apply_mask(difficult, mask)
        acc0 = train.evaluate(base, {"params": pruned}, dev_ds)["accuracy"]
        params = fit(base, sgd_config(cfg, cfg.retrain_epochs, seed=cfg.seed + 1),
                     {"params": pruned}, mask)
        return params, {"accuracy_before_retrain": acc0}

    add("easy_weight", base, make_easy_weight,
        f"final weight matrix magnitude-pruned to {cfg.easy_weight_sparsity:.0%}, re-trained "
        "masked")

    def make_easy_neuron():
        params, la, hist = _fit_l0_gates(cfg, difficult, train_ds)
        zhat = np.asarray(gates.deterministic_gate(la))
        closed = int(np.sum(zhat == 0.0))
        num_keep = int(round((1.0 - cfg.easy_neuron_sparsity) * 100))
        keep = gates.keep_mask(la, num_keep)
        # fold the test-time gate of the kept neurons into their outgoing weights
        params["head"]["kernel"] = params["head"]["kernel"] * zhat[:, None].astype(np.float32)
        mask = neuron_mask(params, keep)
        pruned = apply_mask(params, mask)
        acc0 = train.evaluate(base, {"params": pruned}, dev_ds)["accuracy"]
        params = fit(base, sgd_config(cfg, cfg.retrain_epochs, seed=cfg.seed + 2),
                     {"params": pruned}, mask)
        log(f"  easy_neuron: L0 training closed {closed}/100 gates (test-time gate = 0), "
            f"E[L0] = {float(gates.expected_l0(la)):.1f}; kept the {num_keep} most open")
        return params, {"gates_closed": closed, "expected_l0": float(gates.expected_l0(la)),
                        "accuracy_before_retrain": acc0,
                        "l0_final_ce": hist[-1][1] if hist else None}

    add("easy_neuron", base, make_easy_neuron,
        f"last hidden layer L0-gated, {cfg.easy_neuron_sparsity:.0%} of neurons pruned, "
        "re-trained masked")
    return cases
