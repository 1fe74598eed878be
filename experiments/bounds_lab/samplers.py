"""The four pruning methods of the lab, applied to LeNet-300-100's final (100→10) layer.

* ``sipp_rand`` / ``sipp_det`` (Theorems A.1 / A.2) on the layer's weights: 10 output
  perceptrons × {positive, negative} weights = 20 *parts* over the 101 inputs ``[h2 | 1]``
  (bias embedded as a weight on a constant input, Appendix A.1; the signed parts are sparsified
  separately, Lemma 6 of Baykal et al.).  A weight whose input is 0 on all of the validation
  batch ``S`` has ``s_j = 0`` and is never drawn.
* ``mussay`` (Theorem A.4) and ``coreset`` (main paper, Theorem 2.6; sensitivities of the
  registered ``coreset`` method on the points ``[W_j | b_j]``) on the layer's 100 input neurons
  (two-layer view ``W⁽¹⁾ = dense_1``, ``W⁽²⁾ = head``, input ``h1`` of dimension d = 300).
  Theorem A.4 as stated allows ``s_j ≤ 0``; the sampling uses ``max_i |w⁽²⁾_ij|`` (Alg. 3).

Epsilon-first draws ``m`` i.i.d. elements ∝ ``s`` as multinomial counts (numpy, vectorised over
guarantees and parts): the distribution of :func:`jaxprune.bounds.epsilon_first`, at ``O(n)``
cost for any ``m`` (the bounds reach 10⁹ samples and more), re-weighted by ``count/(m q)``.
Sample sizes above :data:`MAX_DRAW` (or infinite) are evaluated as their ``m → ∞`` limit: every
element with ``s_j > 0`` kept with weight 1.

Every function returns final layers as a stack ``heads`` (F, 101, 10) (kernel rows + bias row).
"""
from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from experiments.bounds_lab.network import row_top_k
from jaxprune import bounds as B
from jaxprune import methods

__all__ = ["METHODS", "METHOD_LABEL", "KIND", "WEIGHT_METHODS", "MAX_DRAW", "SippParts",
           "sipp_parts", "sipp_epsilon_first", "sipp_sparsity_first", "NeuronScores", "neuron_scores",
           "neuron_epsilon_first", "neuron_sparsity_first", "layer_size", "sparsity_of"]

METHODS = ("sipp_rand", "sipp_det", "mussay", "coreset")
METHOD_LABEL = {"sipp_rand": "Wt Rnd (SiPP, Thm A.1)", "sipp_det": "Wt Det (SiPP, Thm A.2)",
                "mussay": "Neuron (Mussay, Thm A.4)", "coreset": "Neuron (coreset, Thm 2.6)"}
KIND = {"sipp_rand": "multiplicative", "sipp_det": "multiplicative", "mussay": "additive",
        "coreset": "multiplicative"}
WEIGHT_METHODS = ("sipp_rand", "sipp_det")
MAX_DRAW = 1e15      # larger (or infinite) sample sizes are evaluated as their m → ∞ limit


# =========================================================================== SiPP weights

class SippParts(NamedTuple):
    signed: np.ndarray     # (20, 101) the signed weights of every part (0 outside the part)
    s: np.ndarray          # (20, 101) sensitivities, 0 outside the part's I
    total: np.ndarray      # (20,) S per part
    n_part: np.ndarray     # (20,) |I| of every part


def sipp_parts(head, sipp_x) -> SippParts:
    """SiPP sensitivities of the 20 signed parts of ``head`` (101, 10) on the validation
    inputs ``sipp_x`` (|S|, 101) = ``[h2 | 1]``."""
    w = head.T                                                   # (10, 101)
    signed = np.concatenate([np.maximum(w, 0), np.minimum(w, 0)])
    pos = np.concatenate([w, -w])                                # the part's weights, > 0 in I
    s = jax.vmap(B.sipp_sensitivities, in_axes=(0, None))(
        jnp.asarray(pos, jnp.float32), jnp.asarray(sipp_x, jnp.float32))
    s = np.asarray(s, np.float64)
    return SippParts(signed, s, s.sum(1), (signed != 0).sum(1))


def _assemble_parts(parts: SippParts, factors):
    """``factors`` (F, 20, 101) → heads (F, 101, 10)."""
    p = parts.signed[None] * factors
    return np.transpose(p[:, :10] + p[:, 10:], (0, 2, 1))


def _keep_targets(parts: SippParts, sparsity):
    """Keep budget ⌈(1 − s)·101⌉ per output perceptron, split over its two signed parts in
    proportion to their sizes (the layer's zeros belong to neither part)."""
    per = (1.0 - sparsity) * 101
    w = parts.n_part.reshape(2, 10)
    tot = np.maximum(w.sum(0), 1)
    return np.ceil(per * w / tot[None] - 1e-9).astype(int).reshape(20)


def sipp_epsilon_first(parts: SippParts, eps, cfg, *, randomized: bool, rng=None):
    """Epsilon-first SiPP for every ε of ``eps`` (F,) → ``(heads, samples (F,), extra)``.

    Randomized (Thm A.1): ``m`` per part from :func:`jaxprune.bounds.sipp_randomized_samples`,
    multinomial draws from ``rng``; ``extra["limit_network"]`` flags the ``m → ∞`` rows.
    Deterministic (Thm A.2): the fewest largest-sensitivity weights per part."""
    if not randomized:
        m = np.stack([B.sipp_deterministic_samples(np.asarray(eps), parts.s[p], cfg.K)
                      for p in range(20)], 1)                     # (F, 20)
        return _assemble_parts(parts, row_top_k(parts.s, m)), m.sum(1), {}
    m = np.zeros((len(eps), 20))
    act = parts.total > 0
    m[:, act] = B.sipp_randomized_samples(np.asarray(eps)[:, None], parts.total[act][None],
                                          cfg.delta, cfg.K)
    q = np.where(parts.total[:, None] > 0,
                 parts.s / np.where(parts.total > 0, parts.total, 1.0)[:, None], 1.0 / 101)
    big = m > MAX_DRAW
    counts = rng.multinomial(np.where(big, 0, m).astype(np.int64), q)   # (F, 20, 101)
    with np.errstate(divide="ignore", invalid="ignore"):
        fac = np.where(counts > 0, counts / (m[:, :, None] * q[None]), 0.0)
    fac = np.where(big[:, :, None], (parts.s > 0)[None].astype(np.float64), fac)
    return _assemble_parts(parts, fac), m.sum(1), {"limit_network": np.any(big, 1).tolist()}


def sipp_sparsity_first(parts: SippParts, sparsity, cfg, *, randomized: bool, key=None):
    """Sparsity-first SiPP at one target ``sparsity`` → ``(heads (1, 101, 10), samples,
    {"epsilon": max over parts})``, or ``(None, None, {"unreachable": why})`` when a part has
    fewer elements of non-zero probability than its budget (randomized only)."""
    k = _keep_targets(parts, sparsity)
    if not randomized:
        k = np.minimum(k, 101)
        eps = max(float(B.sipp_deterministic_epsilon(int(k[p]), parts.s[p], cfg.K))
                  for p in range(20))
        heads = _assemble_parts(parts, row_top_k(parts.s, k[None]))
        return heads, int(np.count_nonzero(heads)), {"epsilon": eps}
    fac = np.zeros((20, 101))
    m_total, eps = 0, 0.0
    for p in range(20):
        if parts.n_part[p] == 0:
            continue
        eps_for = functools.partial(B.sipp_randomized_epsilon,
                                    total_sensitivity=max(parts.total[p], 1e-300),
                                    delta=cfg.delta, K=cfg.K)
        try:
            d = B.sparsity_first(jax.random.fold_in(key, p), parts.s[p], int(k[p]), eps_for,
                                 max_draws=cfg.max_draws)
        except ValueError as e:
            return None, None, {"unreachable": f"part {p} (output {p % 10}, "
                                f"{'+' if p < 10 else '-'}): {e}"}
        fac[p] = d.weights
        m_total += d.num_samples
        eps = max(eps, d.epsilon)
    return _assemble_parts(parts, fac[None]), m_total, {"epsilon": eps}


# =========================================================================== neurons

class NeuronScores(NamedTuple):
    method: str            # "mussay" or "coreset"
    head: np.ndarray       # (101, 10) the final layer
    s: np.ndarray          # (100,) sensitivities
    total: float           # t = Σ_j s_j
    q: np.ndarray          # (100,) sampling distribution s / t
    d: int                 # input dimension of the two-layer view (300)
    mu: float | None       # coreset: the μ(P) estimate
    rank: int | None       # coreset: rank of the points
    info: dict             # reported beside the results


def neuron_scores(params, head, beta, method: str, cfg) -> NeuronScores:
    """Sensitivities of the 100 input neurons of the final layer (see the module docstring)."""
    w1 = np.asarray(params["dense_1"]["kernel"], np.float64).T      # (100, 300)
    b1 = np.asarray(params["dense_1"]["bias"], np.float64)
    w2 = np.asarray(params["head"]["kernel"], np.float64).T         # (10, 100)
    d = w1.shape[1]
    info, mu, rank = {}, None, None
    if method == "mussay":
        s = np.asarray(B.mussay_sensitivities(w1, b1, w2, beta, absolute=True), np.float64)
        info["beta"] = beta
    else:
        points = np.concatenate([w1, b1[:, None]], 1)                # (100, 301)
        is_bias = np.zeros(points.shape[1], bool)
        is_bias[-1] = True
        view = methods.LayerView(jnp.asarray(points, jnp.float32),
                                 jnp.asarray(np.abs(w2.T), jnp.float32), is_bias)
        s = np.asarray(methods.coreset(projection="pca", projection_dim=cfg.projection_dim)
                       .score(jax.random.PRNGKey(cfg.seed), [view])[0], np.float64)
        # an all-zero point (a pre-pruned neuron) adds 0 to both sums of Definition 2.3, so
        # μ(P) = μ(P without it); dropped because the LP certificate of
        # mu_is_unbounded asks every point to be strictly negative, which p = 0 never is
        live = np.any(points != 0, axis=1)
        est = B.estimate_mu(points[live], seed=cfg.seed, num_random=cfg.mu_random,
                            ascent_steps=cfg.mu_ascent_steps)
        mu, rank = est.value, int(np.linalg.matrix_rank(points))
        info.update(mu=est.value, mu_unbounded=est.unbounded, rank=rank, n=100, d=d,
                    zero_points=int(np.sum(~live)))
    total = float(s.sum())
    info["total_sensitivity"] = total
    return NeuronScores(method, head, s, total, s / total, d, mu, rank, info)


def _neuron_samples(ns: NeuronScores, eps, cfg):
    if ns.method == "mussay":
        return np.asarray(B.mussay_samples(np.asarray(eps), ns.total, ns.d, cfg.delta,
                                           cfg.mussay_c), np.float64).reshape(-1)
    return np.asarray(B.coreset_samples(np.asarray(eps), ns.mu, ns.rank, 100, ns.d,
                                        cfg.delta, cfg.coreset_c), np.float64).reshape(-1)


def _neuron_epsilon(ns: NeuronScores, m, cfg):
    if ns.method == "mussay":
        return B.mussay_epsilon(m, ns.total, ns.d, cfg.delta, cfg.mussay_c)
    return B.coreset_epsilon(m, ns.mu, ns.rank, 100, ns.d, cfg.delta, cfg.coreset_c)


def _assemble_neurons(ns: NeuronScores, factors):
    heads = np.repeat(ns.head[None], factors.shape[0], 0)
    heads[:, :-1] *= factors[:, :, None]
    return heads


def neuron_epsilon_first(ns: NeuronScores, eps, cfg, rng):
    """Epsilon-first neuron sampling for every ε of ``eps`` (F,) → ``(heads, samples,
    {"limit_network": [bool per ε]})``."""
    m = _neuron_samples(ns, eps, cfg)
    fin = m <= MAX_DRAW
    counts = np.zeros((len(m), 100))
    if np.any(fin):
        counts[fin] = rng.multinomial(m[fin].astype(np.int64), ns.q)
    with np.errstate(divide="ignore", invalid="ignore"):
        fac = np.where(counts > 0, counts / (m[:, None] * ns.q[None]), 0.0)
    # m = ∞ (or > MAX_DRAW): the m → ∞ limit keeps every σ_j > 0, weight count/(m q) → 1
    fac[~fin] = (ns.s > 0).astype(np.float64)
    return _assemble_neurons(ns, fac), m, {"limit_network": (~fin).tolist()}


def neuron_sparsity_first(ns: NeuronScores, sparsity, cfg, key):
    """Sparsity-first neuron sampling at one target → ``(heads (1, 101, 10), draws,
    {"epsilon"})`` or ``(None, None, {"unreachable": why})``."""
    k = int(math.ceil((1.0 - sparsity) * 100 - 1e-9))
    try:
        d = B.sparsity_first(key, ns.s, k, functools.partial(_neuron_epsilon, ns, cfg=cfg),
                             max_draws=cfg.max_draws)
    except ValueError as e:
        return None, None, {"unreachable": str(e)}
    return (_assemble_neurons(ns, np.asarray(d.weights, np.float64)[None]), d.num_samples,
            {"epsilon": float(d.epsilon)})


def layer_size(method, head):
    """Weights + embedded biases of the 100→10 layer (1,010) or its 100 input neurons."""
    return int(head.size) if method in WEIGHT_METHODS else 100


def sparsity_of(method, heads):
    """Fraction of the layer's weights (weight methods) or input neurons removed, per head."""
    if method in WEIGHT_METHODS:
        return 1.0 - np.count_nonzero(heads, axis=(1, 2)) / heads[0].size
    return 1.0 - np.count_nonzero(np.any(heads[:, :-1] != 0, axis=2), axis=1) / 100.0
