"""The analyses of the bounds paper on LeNet-300-100 (one function per section).

* :func:`analyse` — pruning the final layer of a case guaranteeing ``cfg.fractions`` of the
  correct dev labels (Lemma 4.1 → ε, :func:`jaxprune.bounds.epsilon_for_guarantee`),
  epsilon-first, and sparsity-first at ``cfg.sparsities`` (§3.3; the unreachable case is
  reported, not looped on).
* :func:`finetune_gap` — Figure 3: the final layer pruned sparsity-first with deterministic
  SiPP, then fine-tuned (CE) or distilled by logit matching.
* :func:`hidden_vs_output` — §5.2: the *first* layer pruned (Mussay neurons; deterministic
  SiPP weights), errors at the hidden layer and at the logits before and after logit KD.
* :func:`alpha_scaling` — Lemma C.1 / Corollary C.2: ``W⁽¹⁾ → αW⁽¹⁾`` of the last two layers.

Conventions (choices the paper leaves open):

* SiPP sensitivities come from ``|S| = ⌈K'·log(2ρ/δ)⌉`` training images (Theorem A.1; 25 for
  the final layer).  ε is applied to each signed part (as the paper's implementation):
  ``|ẑ± − z±| ≤ ε z±`` bounds ``|f̂ − f|`` by ``ε(z⁺ + z⁻)``, which is ``ε|f|`` only when the
  parts do not cancel.
* ``β`` of Theorem A.4 = ``max ‖(x, 1)‖`` over the training inputs of the layer (measured, as
  the paper).
* Theorem 2.6 needs μ(P) of the layer's points; 100 linearly independent points in 300 dims
  can all be switched off at once, so μ(P) = ∞ (certified by an LP) and ``m = ∞``: the row is
  then the ``m → ∞`` limit network (every σ_j > 0 kept with weight 1), marked as such.
* Observed error of an example = the max over units of ``|f̂ − f|`` (additive) or
  ``|f̂ − f|/|f|`` (multiplicative) — the smallest ε for which the element-wise guarantee holds
  on it; mean±std and median over dev examples; the mean over units is reported beside it.

``cfg`` is a :class:`~bounds_lab.config.LabConfig`.
"""
from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from experiments.bounds_lab._util import log, progress, to_host
from experiments.bounds_lab.cases import Case
from experiments.bounds_lab.network import (apply_mask, forward_np, head_aug, heads_logits,
                                            max_augmented_norm, ones_like, raw_pixel_layer,
                                            row_top_k, with_head)
from experiments.bounds_lab.samplers import (KIND, METHODS, WEIGHT_METHODS, layer_size,
                                             neuron_epsilon_first, neuron_scores,
                                             neuron_sparsity_first, sipp_epsilon_first, sipp_parts,
                                             sipp_sparsity_first, sparsity_of)
from experiments.bounds_lab.tuning import distill_logits, finetune
from jaxprune import bounds as B
from jaxprune import data, methods, train

__all__ = ["Net", "prepare", "error_summary", "metrics_of", "analyse", "finetune_gap",
           "hidden_vs_output", "alpha_scaling"]


class Net(NamedTuple):
    name: str
    params: dict
    dev: dict              # forward outputs on dev
    labels: np.ndarray
    accuracy: float
    head: np.ndarray       # (101, 10) kernel rows + bias row
    sipp_x: np.ndarray     # (|S|, 101) validation inputs [h2 | 1]
    beta: float            # max ‖(h1, 1)‖ over train
    eps: dict              # kind -> (F,) ε for cfg.fractions


def prepare(case: Case, cfg, train_ds, dev_ds, beta_images) -> Net:
    """Dev outputs, SiPP validation inputs, β and the ε of every guarantee of one case."""
    dev = forward_np(case.params, dev_ds.images)
    ref = train.predict_logits(case.model, {"params": case.params}, dev_ds.images[:64])
    np.testing.assert_allclose(dev["logits"][:64], ref, rtol=1e-4, atol=1e-4,
                               err_msg="forward() must equal model.apply")
    labels = np.asarray(dev_ds.labels)
    acc = float(np.mean(np.argmax(dev["logits"], 1) == labels))
    head = head_aug(case.params)
    rho = int(np.count_nonzero(head))
    n_s = cfg.sipp_val_points or B.sipp_num_validation_points(rho, cfg.delta, cfg.K_prime)
    idx = np.random.default_rng([cfg.seed, 11]).choice(len(train_ds), n_s, replace=False)
    h2 = forward_np(case.params, train_ds.images[idx])["h2"]
    sipp_x = np.concatenate([h2, np.ones((n_s, 1), h2.dtype)], 1)
    beta = float(cfg.beta) if cfg.beta else max_augmented_norm(case.params, beta_images)
    eps = {k: np.asarray(B.epsilon_for_guarantee(dev["logits"], labels,
                                                 np.asarray(cfg.fractions), k))
           for k in ("additive", "multiplicative")}
    return Net(case.name, case.params, dev, labels, acc, head, sipp_x, beta, eps)


def error_summary(orig, new, bound_kind):
    """Observed error of ``new`` against ``orig`` (N, units), both kinds.  ``additive`` /
    ``multiplicative``: mean and std over examples of the per-example *max* over units (the
    smallest ε for which the element-wise guarantee holds on that example,
    :func:`jaxprune.bounds.observed_error`); ``*_median``: the median of that per-example
    value; ``*_unit_mean``: the same with the *mean* over units instead of the max.
    Multiplicative errors are large where ``|f_u(x)|`` is close to 0."""
    a = B.observed_error(orig, new)
    u = B.observed_error(orig, new, reduce="mean")
    return {"additive": (a.additive_mean, a.additive_std),
            "multiplicative": (a.multiplicative_mean, a.multiplicative_std),
            "additive_median": float(np.median(a.additive)),
            "multiplicative_median": float(np.nanmedian(a.multiplicative)),
            "additive_unit_mean": (u.additive_mean, u.additive_std),
            "multiplicative_unit_mean": (u.multiplicative_mean, u.multiplicative_std),
            "bound_kind": bound_kind}


def metrics_of(net: Net, heads: np.ndarray, kind: str, eps=None) -> list[dict]:
    """Accuracy, labels kept, observed errors (both kinds) and the Lemma 4.1 guarantee of
    every final layer in ``heads`` (F, 101, 10)."""
    logits = np.asarray(heads_logits(jnp.asarray(net.dev["h2"]),
                                     jnp.asarray(heads, jnp.float32)))
    orig = net.dev["logits"]
    correct = np.argmax(orig, 1) == net.labels
    out = []
    for f in range(heads.shape[0]):
        pred = np.argmax(logits[f], 1)
        err = error_summary(orig, logits[f], kind)
        row = {"accuracy": float(np.mean(pred == net.labels)),
               "kept_correct": float(np.mean(pred[correct] == net.labels[correct])),
               "errors": err, "observed": err[kind], "observed_median": err[kind + "_median"],
               "observed_unit_mean": err[kind + "_unit_mean"]}
        if eps is not None:
            e = float(eps[f])
            row["guaranteed_fraction"] = (
                float(B.guaranteed_fraction(orig, net.labels, e, kind)) if math.isfinite(e)
                else 0.0)
        out.append(row)
    return out


def analyse(net: Net, method: str, cfg) -> dict:
    """Epsilon-first over ``cfg.fractions`` and sparsity-first over ``cfg.sparsities``."""
    rng = np.random.default_rng([cfg.seed, 5, METHODS.index(method)])
    key = jax.random.PRNGKey(cfg.seed + 17)
    kind = KIND[method]
    eps = net.eps[kind]
    randomized = method == "sipp_rand"
    if method in WEIGHT_METHODS:
        parts = sipp_parts(net.head, net.sipp_x)
        act = parts.n_part > 0
        info = {"total_sensitivity_per_part": parts.total.tolist(),
                "weights_per_part": parts.n_part.tolist(),
                # S ≤ |I| (every s_j ≤ 1): how far below its maximum the total sensitivity is
                "mean_S_over_max": float(np.mean(parts.total[act] / parts.n_part[act])),
                "validation_points": int(net.sipp_x.shape[0])}
        heads, samples, extra = sipp_epsilon_first(parts, eps, cfg, randomized=randomized,
                                                   rng=rng)
    else:
        ns = neuron_scores(net.params, net.head, net.beta, method, cfg)
        info = dict(ns.info)
        heads, samples, extra = neuron_epsilon_first(ns, eps, cfg, rng)
    size = layer_size(method, net.head)
    sp = sparsity_of(method, heads)
    rows = metrics_of(net, heads, kind, eps)
    eps_first = []
    for f, frac in enumerate(cfg.fractions):
        r = {"fraction": frac, "epsilon": float(eps[f]), "samples": float(samples[f]),
             "layer_size": size, "sparsity": float(sp[f]),
             "vacuous": bool(not math.isfinite(samples[f]) or samples[f] > size), **rows[f]}
        if extra.get("limit_network"):
            r["limit_network"] = bool(extra["limit_network"][f])
        eps_first.append(r)
    sf = []
    for i, target in enumerate(cfg.sparsities):
        k = jax.random.fold_in(key, i)
        if method in WEIGHT_METHODS:
            h, m, ex = sipp_sparsity_first(parts, target, cfg, randomized=randomized, key=k)
        else:
            h, m, ex = neuron_sparsity_first(ns, target, cfg, k)
        if h is None:
            sf.append({"target_sparsity": target, "unreachable": ex["unreachable"]})
            continue
        e = ex["epsilon"]
        sf.append({"target_sparsity": target, "sparsity": float(sparsity_of(method, h)[0]),
                   "samples": float(m), "epsilon": e,
                   **metrics_of(net, h, kind, np.asarray([e]))[0]})
    return {"network": net.name, "method": method, "kind": kind, "dense_accuracy": net.accuracy,
            "info": info, "epsilon_first": eps_first, "sparsity_first": sf}


def finetune_gap(net: Net, cfg, train_ds, dev_ds) -> list[dict]:
    """Figure 3: deterministic SiPP sparsity-first on the difficult net's final layer, then
    CE fine-tuning and logit-matching KD."""
    parts = sipp_parts(net.head, net.sipp_x)
    rows = []
    for i, target in enumerate(progress(cfg.ft_sparsities, "fine-tuning gap")):
        heads, _, ex = sipp_sparsity_first(parts, target, cfg, randomized=False)
        head = heads[0]
        pruned = with_head(net.params, head)
        mask = ones_like(net.params)
        keep = (head != 0).astype(np.float32)
        mask["head"] = {"kernel": keep[:-1], "bias": keep[-1]}
        m = metrics_of(net, heads, "multiplicative", np.asarray([ex["epsilon"]]))[0]
        ft = finetune(pruned, mask, train_ds, cfg, cfg.ft_epochs, cfg.seed + 100 + i)
        kd = distill_logits(pruned, mask, net.params, train_ds, cfg, cfg.kd_epochs,
                            cfg.seed + 200 + i)
        row = {"target_sparsity": target, "sparsity": float(sparsity_of("sipp_det", heads)[0]),
               "epsilon": ex["epsilon"], "guaranteed_fraction": m["guaranteed_fraction"],
               "guaranteed_accuracy": m["guaranteed_fraction"] * net.accuracy,
               "accuracy_pruned": m["accuracy"],
               "error_pruned": error_summary(net.dev["logits"],
                                             forward_np(pruned, dev_ds.images)["logits"],
                                             "multiplicative")}
        for name, p in (("finetuned", ft), ("kd", kd)):
            out = forward_np(p, dev_ds.images)["logits"]
            row[f"accuracy_{name}"] = float(np.mean(np.argmax(out, 1) == net.labels))
            row[f"error_{name}"] = error_summary(net.dev["logits"], out, "multiplicative")
        rows.append(row)
        log(f"    sparsity {row['sparsity']:.3f}: acc pruned {row['accuracy_pruned']:.4f} "
            f"(guaranteed {row['guaranteed_accuracy']:.4f}), fine-tuned "
            f"{row['accuracy_finetuned']:.4f}, KD {row['accuracy_kd']:.4f}")
    return rows


def _first_layer_neurons(p, cfg, flat):
    """Mussay neurons of dense_0 (two-layer view dense_0 → dense_1), sparsity-first →
    (pruned params, mask, ε, sparsity, β)."""
    w1 = np.asarray(p["dense_0"]["kernel"], np.float64).T           # (300, 784)
    b1 = np.asarray(p["dense_0"]["bias"], np.float64)
    w2 = np.asarray(p["dense_1"]["kernel"], np.float64).T           # (100, 300)
    beta0 = float(np.sqrt(np.max(np.sum(np.square(flat, dtype=np.float32), 1)) + 1.0))
    s = np.asarray(B.mussay_sensitivities(w1, b1, w2, beta0, absolute=True), np.float64)
    t = float(s.sum())
    k = int(math.ceil((1.0 - cfg.hidden_neuron_sparsity) * 300 - 1e-9))
    d = B.sparsity_first(jax.random.PRNGKey(cfg.seed + 31), s, k,
                         lambda m: B.mussay_epsilon(m, t, 784, cfg.delta, cfg.mussay_c),
                         max_draws=cfg.max_draws)
    kept = np.asarray(d.counts) > 0
    mask = ones_like(p)
    mask["dense_0"]["kernel"] = np.repeat(kept[None].astype(np.float32), 784, 0)
    mask["dense_0"]["bias"] = kept.astype(np.float32)
    mask["dense_1"]["kernel"] = np.repeat(kept[:, None].astype(np.float32), 100, 1)
    pruned = {k_: dict(v) for k_, v in to_host(p).items()}
    pruned["dense_1"] = {"kernel": (np.asarray(p["dense_1"]["kernel"]) *
                                    np.asarray(d.weights, np.float32)[:, None]),
                         "bias": np.asarray(p["dense_1"]["bias"])}
    return apply_mask(pruned, mask), mask, d.epsilon, 1.0 - kept.mean(), beta0


def _first_layer_weights(p, cfg, flat, mean, std):
    """Deterministic SiPP on the weights of dense_0 in raw-pixel coordinates (600 signed
    parts over the 785 inputs ``[x_raw | 1]``) → (pruned params, mask, ε, sparsity)."""
    kern = np.asarray(p["dense_0"]["kernel"], np.float64)
    bias = np.asarray(p["dense_0"]["bias"], np.float64)
    wr, br = raw_pixel_layer(kern, bias, mean, std)
    aug = np.concatenate([wr, br[None]], 0).T                        # (300, 785)
    rho = int(np.count_nonzero(aug))
    n_s = cfg.sipp_val_points or B.sipp_num_validation_points(rho, cfg.delta, cfg.K_prime)
    idx = np.random.default_rng([cfg.seed, 13]).choice(len(flat), n_s, replace=False)
    xr = flat[idx].astype(np.float64) * std + mean
    xs = np.concatenate([np.clip(xr, 0.0, None), np.ones((n_s, 1))], 1)
    parts = np.concatenate([aug, -aug])                              # (600, 785)
    sens = np.asarray(jax.vmap(B.sipp_sensitivities, in_axes=(0, None))(
        jnp.asarray(parts, jnp.float32), jnp.asarray(xs, jnp.float32)), np.float64)
    keep_k = np.ceil((1.0 - cfg.hidden_weight_sparsity) * (parts > 0).sum(1) - 1e-9).astype(int)
    keep = (row_top_k(sens, keep_k) > 0) & (parts > 0)
    eps = max(float(B.sipp_deterministic_epsilon(int(keep_k[i]), sens[i], cfg.K))
              for i in range(600))
    kmask = (keep[:300] | keep[300:]).T                               # (785, 300)
    wmask = kmask[:-1].astype(np.float32)
    new_kernel = kern * wmask
    new_bias = br * kmask[-1] + (mean / std) * new_kernel.sum(0)
    pruned = {k_: dict(v) for k_, v in to_host(p).items()}
    pruned["dense_0"] = {"kernel": new_kernel.astype(np.float32),
                         "bias": new_bias.astype(np.float32)}
    mask = ones_like(p)
    mask["dense_0"]["kernel"] = wmask
    return pruned, mask, eps, 1.0 - wmask.mean()


def _hidden_row(net, pruned, mask, hidden, kind, eps, sparsity, beta, cfg, train_ds, x_dev):
    before = forward_np(pruned, x_dev)
    kd = distill_logits(pruned, mask, net.params, train_ds, cfg, cfg.kd_epochs, cfg.seed + 300)
    after = forward_np(kd, x_dev)
    row = {"sparsity": float(sparsity), "hidden_layer": hidden, "bound_kind": kind,
           "implied_epsilon": float(eps), "beta": beta}
    for tag, o in (("pruned", before), ("kd", after)):
        row[f"accuracy_{tag}"] = float(np.mean(np.argmax(o["logits"], 1) == net.labels))
        row[f"output_error_{tag}"] = error_summary(net.dev["logits"], o["logits"], kind)
        row[f"hidden_error_{tag}"] = error_summary(net.dev[hidden], o[hidden], kind)
    return row


def hidden_vs_output(net: Net, cfg, train_ds, dev_ds) -> dict:
    """§5.2: prune the FIRST layer of the difficult net, compare the error at the hidden layer
    the bound speaks about (z2 for neurons of dense_0, z1 for its weights) with the error at
    the logits, before and after logit-matching KD."""
    mean, std = (float(v[0]) for v in data.NORMALIZATION[cfg.dataset])
    flat = train_ds.images.reshape(len(train_ds), -1)
    pruned, mask, eps, sp, beta0 = _first_layer_neurons(net.params, cfg, flat)
    out = {"neuron": _hidden_row(net, pruned, mask, "z2", "additive", eps, sp, beta0, cfg,
                                 train_ds, dev_ds.images)}
    pruned, mask, eps, sp = _first_layer_weights(net.params, cfg, flat, mean, std)
    out["weight"] = _hidden_row(net, pruned, mask, "z1", "multiplicative", eps, sp, None, cfg,
                                train_ds, dev_ds.images)
    return out


def alpha_scaling(net: Net, cfg) -> list[dict]:
    """Lemma C.1 / Corollary C.2 on the last two layers of ``net`` (input h1)."""
    p = net.params
    two = tuple(jnp.asarray(v, jnp.float32) for v in (
        np.asarray(p["dense_1"]["kernel"]).T, p["dense_1"]["bias"],
        np.asarray(p["head"]["kernel"]).T, p["head"]["bias"]))
    h1 = jnp.asarray(net.dev["h1"])
    base = np.asarray(B.two_layer_forward(two, h1))
    labels0 = np.argmax(base, 1)
    sens = functools.partial(B.mussay_sensitivities, absolute=True)
    t1 = B.total_sensitivity(two, net.beta, 1.0, sensitivity_fn=sens)
    points = np.concatenate([np.asarray(two[0]), np.asarray(two[1])[:, None]], 1)
    is_bias = np.zeros(points.shape[1], bool)
    is_bias[-1] = True
    outgoing = jnp.asarray(np.abs(np.asarray(two[2])).T)
    coreset_score = methods.coreset(projection="pca", projection_dim=cfg.projection_dim).score
    g = cfg.guarantee
    rows = []
    ref = {}
    for alpha in progress(cfg.alphas, "alpha-scaling"):
        sc = B.scale_two_layer(two, alpha)
        logits = np.asarray(B.two_layer_forward(sc, h1))
        t = B.total_sensitivity(two, net.beta, alpha, sensitivity_fn=sens)
        t_rebal = B.total_sensitivity(two, net.beta, alpha, w2_power=-1, sensitivity_fn=sens)
        e_add = float(B.epsilon_for_guarantee(logits, net.labels, g, "additive"))
        e_mul = float(B.epsilon_for_guarantee(logits, net.labels, g, "multiplicative"))
        m = float(B.mussay_samples(e_add, t, points.shape[1] - 1, cfg.delta, cfg.mussay_c))
        # SiPP (scale-invariant, bounds paper footnote 6): inputs α·h2 on the S batch
        sx = net.sipp_x.copy()
        sx[:, :-1] *= alpha
        head_sc = np.concatenate([np.asarray(p["head"]["kernel"]), alpha *
                                  np.asarray(p["head"]["bias"])[None]], 0).T
        s_sipp = jax.vmap(B.sipp_sensitivities, in_axes=(0, None))(
            jnp.asarray(np.concatenate([head_sc, -head_sc]), jnp.float32),
            jnp.asarray(sx, jnp.float32))
        view = methods.LayerView(jnp.asarray(alpha * points, jnp.float32), outgoing, is_bias)
        t_core = float(jnp.sum(coreset_score(jax.random.PRNGKey(cfg.seed), [view])[0]))
        row = {"alpha": alpha, "total_sensitivity": t, "t_ratio": t / t1,
               "t_rebalanced_ratio": t_rebal / t1,
               "labels_unchanged": float(np.mean(np.argmax(logits, 1) == labels0)),
               "max_rel_dev_from_alpha_f": float(np.max(np.abs(logits - alpha * base)) /
                                                 (alpha * np.max(np.abs(base)))),
               "epsilon_additive": e_add, "epsilon_multiplicative": e_mul,
               "mussay_samples": m, "sipp_total_sensitivity": float(jnp.sum(s_sipp)),
               "coreset_total_sensitivity": t_core}
        if alpha == 1.0:
            ref = row
        rows.append(row)
    for r in rows:
        r["epsilon_additive_ratio"] = r["epsilon_additive"] / ref["epsilon_additive"]
        r["samples_ratio"] = r["mussay_samples"] / ref["mussay_samples"]
        r["sipp_ratio"] = r["sipp_total_sensitivity"] / ref["sipp_total_sensitivity"]
        r["coreset_ratio"] = r["coreset_total_sensitivity"] / ref["coreset_total_sensitivity"]
    return rows
