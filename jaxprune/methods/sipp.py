"""``sipp``: data-informed weight pruning of Baykal et al. 2019 ("SiPPing Neural Networks:
Sensitivity-informed Provable Pruning of Neural Networks"; Algorithms 1–2 and Theorems A.1–A.2
of "When are neural pruning approximation bounds useful?", Appendix A).

Sensitivities. A prunable layer computes ``z_i(x) = Σ_j w_ij a_j(x)`` for every output unit
(neuron / filter) ``i``, with ``a(x)`` the layer's input. For each product ``p_ij(x) =
w_ij a_j(x)`` and a batch ``S`` (``prune(..., data=S)``):

    g_ij(x) = p_ij(x) / Σ_{k: p_ik(x) > 0} p_ik(x)     if p_ij(x) > 0,
    g_ij(x) = p_ij(x) / Σ_{k: p_ik(x) < 0} p_ik(x)     if p_ij(x) < 0,      (0 if p_ij(x) = 0)
    s_ij    = max_{x ∈ S} g_ij(x)  ∈ [0, 1].

This is Algorithm 1, line 1 (``s_j = max_x w_j x_j / Σ_{k∈I} w_k x_k`` over the non-negative
weights ``I``) applied to the positive and to the negative part of the pre-activation
separately (Lemma 6 of Baykal et al.; the bounds paper does the same). Splitting the
*products* rather than the weights also covers signed inputs (e.g. normalised images into the
first layer); for ReLU inputs ``a ≥ 0`` the two coincide, so ``s[:, i]`` equals
``bounds.sipp_sensitivities(w[:, i], a) + bounds.sipp_sensitivities(-w[:, i], a)``. The bias is
never pruned and is not part of the sums (the sensitivities describe the kernel part of
``z_i``). Conv layers: every output position's input patch is one more ``x`` (im2col via
``jax.lax.conv_general_dilated_patches``, same strides/padding/dilations as the layer), so the
max runs over examples and positions. Everything is vectorised over examples, positions and
neurons (``lax.scan`` over chunks of at most ``chunk_elements`` products, so memory stays
bounded); the only Python loop is over layers.

Per-layer budget. ``prune`` gives each layer the same fraction (:func:`jaxprune.prune`);
a layer keeps at least one weight per output unit.

Selection (``sampling``):

* ``"deterministic"`` (default; Algorithm 2, "sipp (det)" in tables): per neuron, keep the
  ``m_i`` weights of largest ``s_ij`` (ties -> lower index), no re-weighting. Theorem A.2
  bounds neuron ``i``'s relative error by ``ε_i = 3K·Σ_{j ∉ I_{m_i}} s_ij``, the *tail* of its
  sensitivities. ``neuron_budget="tail"`` (default) chooses the ``m_i`` (``m_i ≥ 1``,
  ``Σ m_i`` = the layer's budget) that minimise ``max_i ε_i``, i.e. the same guarantee for
  every neuron of the layer: greedily give the next weight to the neuron whose current tail is
  largest — because each tail sequence is non-increasing, this is exactly "keep the
  ``budget − n`` largest values of ``{t_i(m) : 1 ≤ m < fan_in}``" and it is optimal for the
  max. ``neuron_budget="sensitivity"``: ``m_i ∝ S_i = Σ_j s_ij`` (one multiplier, see below).
* ``"sparsity_first"`` (randomized SiPP, Algorithm 1): per neuron, ``m_i`` i.i.d. draws with
  ``q_ij = s_ij / S_i``; a drawn weight is kept and multiplied by ``count_ij / (m_i q_ij)``
  (unbiased: ``E[ẑ_i] = z_i``). Theorem A.1's sample size is ``∝ S_i`` for a common ε, so
  ``m_i = ⌈c·S_i⌉`` with one multiplier ``c`` per layer, increased until the layer holds
  exactly its budget of distinct weights: neuron ``i``'s ``k``-th draw happens at
  ``c = (k−1)/S_i``; the draws of all neurons are merged in that order (ties -> lower neuron
  index) and the merge stops at the draw that brings the number of distinct weights to the
  budget. Every neuron's first draw comes at ``c = 0``, so ``m_i ≥ 1``. Draws are
  inverse-CDF look-ups of uniforms from a NumPy PCG64 stream seeded with
  ``jax.random.fold_in(key, block)`` (fixed key -> same result), made in blocks so that more
  draws extend the same sequence. Zero sensitivities (a weight whose products are 0 on all of
  ``S``) get a floor of ``1e-6·max_j s_ij`` (uniform ``q`` if the whole neuron is 0) so that
  any budget is reachable, as :func:`jaxprune.selection.select` does for channels; the draw
  rate uses the unfloored ``S_i`` (itself floored at ``1e-6·max_i S_i``), so an all-zero
  neuron keeps (almost always) just one weight.

Options: ``neuron_budget`` (``"tail"`` | ``"sensitivity"``; default ``"tail"`` for
deterministic, ``"sensitivity"`` — the only rule — for sparsity_first); ``chunk_elements``
(default ``2**22``): the most products ``w_ij a_j(x)`` held at once.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxprune.methods._base import Method, Selection, check_positive_int, register
from jaxprune.structure import ConvSpec

SAMPLINGS = ("deterministic", "sparsity_first")
NEURON_BUDGETS = ("tail", "sensitivity")
FLOOR = 1e-6
MAX_DRAW_ELEMENTS = 1 << 25  # sparsity-first sampling: at most this many draws in a layer,
MAX_DRAW_BLOCKS = 1 << 10  # in at most this many (K, D) blocks (bounded work on tiny layers)


# --------------------------------------------------------------------------------------------
# Sensitivities
# --------------------------------------------------------------------------------------------
def _max_g(x: jax.Array, w: jax.Array) -> jax.Array:
    """``max`` over the rows ``x`` (r, D) of ``g`` (D, K) for the kernel ``w`` (D, K)."""
    p = x[:, :, None] * w[None]  # (r, D, K) products
    pos = jnp.sum(jnp.maximum(p, 0.0), axis=1, keepdims=True)  # (r, 1, K)
    neg = jnp.sum(jnp.minimum(p, 0.0), axis=1, keepdims=True)
    g = jnp.where(
        p > 0,
        p / jnp.where(pos > 0, pos, 1.0),
        jnp.where(p < 0, p / jnp.where(neg < 0, neg, -1.0), 0.0),
    )
    return jnp.max(g, axis=0)


def _scan_rows(rows: jax.Array, w: jax.Array, row_chunk: int) -> jax.Array:
    pad = (-rows.shape[0]) % row_chunk  # zero rows give g = 0
    rows = jnp.pad(rows, ((0, pad), (0, 0)))

    def body(best, x):
        return jnp.maximum(best, _max_g(x, w)), None

    best, _ = jax.lax.scan(
        body, jnp.zeros(w.shape, jnp.float32), rows.reshape(-1, row_chunk, rows.shape[1])
    )
    return best


_dense_sens = jax.jit(_scan_rows, static_argnames=("row_chunk",))


def _patches(x: jax.Array, spec: ConvSpec) -> jax.Array:
    """(n, *spatial, C) -> (n·P, C·prod(window)): one row per output position, features in
    (C, *window) order."""
    p = jax.lax.conv_general_dilated_patches(
        jnp.moveaxis(x, -1, 1),
        spec.window,
        spec.strides,
        spec.padding,
        lhs_dilation=spec.input_dilation,
        rhs_dilation=spec.kernel_dilation,
    )
    p = jnp.moveaxis(p, 1, -1)
    return p.reshape(-1, p.shape[-1])


@functools.partial(jax.jit, static_argnames=("spec", "ex_chunk", "row_chunk"))
def _conv_sens(x, w, spec: ConvSpec, ex_chunk: int, row_chunk: int):
    pad = (-x.shape[0]) % ex_chunk  # zero examples give g = 0
    x = jnp.pad(x, ((0, pad),) + ((0, 0),) * (x.ndim - 1))

    def body(best, xc):
        return jnp.maximum(best, _scan_rows(_patches(xc, spec), w, row_chunk)), None

    best, _ = jax.lax.scan(
        body, jnp.zeros(w.shape, jnp.float32), x.reshape(-1, ex_chunk, *x.shape[1:])
    )
    return best


def sensitivities(
    kernel, inputs, conv: ConvSpec | None = None, *, chunk_elements: int = 1 << 22
) -> np.ndarray:
    """``s_ij`` (module doc) of one layer, in the kernel's shape.

    ``kernel``: Dense ``(D, K)`` or Conv ``(*window, C, K)``; ``inputs``: what the layer reads
    on the batch ``S`` — Dense ``(N, ..., D)`` (leading axes are separate points), Conv
    ``(N, *spatial, C)`` with ``conv`` its :class:`~jaxprune.unstructured.ConvSpec`.
    """
    kernel = np.asarray(kernel, np.float32)
    x = jnp.asarray(np.asarray(inputs, np.float32))
    if (
        isinstance(chunk_elements, bool)
        or not isinstance(chunk_elements, int)
        or chunk_elements < 1
    ):
        raise ValueError(f"sipp: chunk_elements must be a positive int, got {chunk_elements!r}")
    k = kernel.shape[-1]
    if conv is None:
        if kernel.ndim != 2:
            raise ValueError(f"sipp: a Dense kernel must be 2-D, got shape {kernel.shape}")
        d = kernel.shape[0]
        if x.shape[-1] != d:
            raise ValueError(f"sipp: inputs {x.shape} do not match the kernel {kernel.shape}")
        rows = x.reshape(-1, d)
        row_chunk = max(1, min(rows.shape[0], chunk_elements // (d * k)))
        return np.asarray(_dense_sens(rows, jnp.asarray(kernel), row_chunk=row_chunk))
    n_sp = kernel.ndim - 2
    c = kernel.shape[-2]
    if x.ndim < n_sp + 2 or x.shape[-1] != c:
        raise ValueError(f"sipp: conv inputs {x.shape} do not match the kernel {kernel.shape}")
    x = x.reshape(-1, *x.shape[-(n_sp + 1) :])
    # kernel (*window, C, K) -> patch order (C, *window) x K
    w = np.moveaxis(kernel, -2, 0).reshape(-1, k)
    d = w.shape[0]
    out = jax.eval_shape(
        lambda a: _patches(a, conv), jax.ShapeDtypeStruct((1, *x.shape[1:]), jnp.float32)
    )
    positions = out.shape[0]
    ex_chunk = max(1, min(x.shape[0], chunk_elements // max(positions * d, 1)))
    row_chunk = max(1, min(ex_chunk * positions, chunk_elements // (d * k)))
    s = np.asarray(_conv_sens(x, jnp.asarray(w), conv, ex_chunk, row_chunk))
    return np.moveaxis(s.reshape(c, *kernel.shape[:-2], k), 0, -2)


# --------------------------------------------------------------------------------------------
# Per-neuron budgets and selection (s2 = sensitivities as (fan_in D, neurons K))
# --------------------------------------------------------------------------------------------
def tail_budgets(s2: np.ndarray, budget: int) -> np.ndarray:
    """``m_i`` (K,) minimising ``max_i Σ_{j ∉ top m_i} s_ij`` subject to ``m_i ≥ 1``,
    ``Σ m_i = budget`` (greedy = the ``budget − K`` largest tails ``t_i(m)``, ``1 ≤ m < D``;
    ties -> lower neuron index)."""
    d, k = s2.shape
    budget = int(min(max(budget, k), d * k))
    if d == 1:
        return np.ones(k, np.int64)
    srt = -np.sort(-np.asarray(s2, np.float64).T, axis=1)  # (K, D) descending
    tails = np.cumsum(srt[:, ::-1], axis=1)[:, ::-1]  # t_i(m), m = 0..D-1
    keys = tails[:, 1:].reshape(-1)  # candidate (i, m ≥ 1)
    picked = np.argsort(-keys, kind="stable")[: budget - k]
    return 1 + np.bincount(picked // (d - 1), minlength=k)


def _floored(s2: np.ndarray) -> np.ndarray:
    """(K, D) sensitivities with the ``FLOOR·max`` floor (uniform for an all-zero neuron)."""
    st = np.asarray(s2, np.float64).T
    mx = st.max(axis=1, keepdims=True)
    return np.maximum(st, np.where(mx > 0, FLOOR * mx, 1.0))


def _rates(s2: np.ndarray) -> np.ndarray:
    """``S_i = Σ_j s_ij`` (K,), floored at ``FLOOR·max_i S_i`` (and 1e-30) so that every
    neuron has a finite draw rate; an all-zero neuron gets (almost) only its first weight."""
    total = np.asarray(s2, np.float64).sum(axis=0)
    return np.maximum(total, max(FLOOR * float(total.max()), 1e-30))


def sensitivity_budgets(s2: np.ndarray, budget: int) -> np.ndarray:
    """``m_i = ⌈c·S_i⌉`` (capped at D) with the one ``c`` that gives ``Σ m_i = budget``:
    neuron ``i``'s ``r``-th weight (r = 1..D) enters at ``c = (r−1)/S_i`` (ties -> lower
    neuron index)."""
    d, k = s2.shape
    budget = int(min(max(budget, k), d * k))
    total = _rates(s2)
    enter = np.arange(d)[None, :] / total[:, None]  # (K, D)
    picked = np.argsort(enter.reshape(-1), kind="stable")[:budget]
    return np.bincount(picked // d, minlength=k)


def keep_top(s2: np.ndarray, m: np.ndarray) -> np.ndarray:
    """(D, K) bool: per neuron ``i`` its ``m_i`` largest ``s_ij`` (ties -> lower index)."""
    order = np.argsort(-np.asarray(s2, np.float64), axis=0, kind="stable")
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(s2.shape[0])[:, None], axis=0)
    return rank < np.asarray(m)[None, :]


def _uniforms(key, block: int, shape) -> np.ndarray:
    """Uniform [0, 1) float64 draws of one block, a pure function of ``(key, block)``: a
    NumPy PCG64 stream seeded with the bits of ``fold_in(key, block)`` (no compile per
    layer shape)."""
    bits = np.asarray(jax.random.key_data(jax.random.fold_in(key, block)), np.uint32)
    return np.random.Generator(np.random.PCG64(bits.reshape(-1).tolist())).random(shape)


def sample_sparsity_first(key, s2: np.ndarray, budget: int):
    """Randomized SiPP for one layer (module doc). Returns ``(keep (D, K) bool, scale (D, K),
    m (K,), counts (D, K), q (D, K))`` with exactly ``budget`` distinct kept weights."""
    d, k = s2.shape
    budget = int(min(max(budget, k), d * k))
    sp = _floored(s2)  # (K, D)
    q = sp / sp.sum(axis=1, keepdims=True)
    total = _rates(s2)
    cdf = np.cumsum(q, axis=1)
    cdf[:, -1] = 1.0
    # one monotone array: row i's CDF shifted by i, so one searchsorted serves every neuron
    shifted = (cdf + np.arange(k)[:, None]).reshape(-1)
    max_blocks = max(1, min(MAX_DRAW_ELEMENTS // (k * d), MAX_DRAW_BLOCKS))
    blocks: list[np.ndarray] = []
    n_blocks = 1
    while True:
        while len(blocks) < n_blocks:  # draws (K, D) per block
            u = _uniforms(key, len(blocks), (k, d))
            flat = np.searchsorted(shifted, (u + np.arange(k)[:, None]).reshape(-1), side="right")
            blocks.append(np.minimum(flat.reshape(k, d) - np.arange(k)[:, None] * d, d - 1))
        draws = np.concatenate(blocks, axis=1)  # (K, L)
        length = draws.shape[1]
        ids = (np.arange(k)[:, None] * d + draws).reshape(-1)
        new = np.zeros(ids.size, bool)
        new[np.unique(ids, return_index=True)[1]] = True  # first draw of (i, j)
        # neuron i's r-th draw at c = r / S_i; all draws below L / max S_i are present
        enter = (np.arange(length)[None, :] / total[:, None]).reshape(-1)
        order = np.argsort(enter, kind="stable")
        valid = order[enter[order] < length / total.max()]
        reached = np.cumsum(new[valid])
        if reached.size and reached[-1] >= budget:
            last = int(np.searchsorted(reached, budget))  # reached[last] == budget
            m = np.bincount(valid[: last + 1] // length, minlength=k)
            used = np.arange(length)[None, :] < m[:, None]
            counts = np.bincount(ids[used.reshape(-1)], minlength=k * d).reshape(k, d)
            keep = counts > 0
            scale = np.where(keep, counts / (m[:, None] * q), 0.0)
            return keep.T, scale.T, m, counts.T, q.T
        if n_blocks >= max_blocks:
            raise ValueError(
                f"sipp sparsity_first: {length} draws per neuron did not reach "
                f"{budget} distinct weights of {d * k}; use "
                "sampling='deterministic' or prune more"
            )
        n_blocks = min(2 * n_blocks, max_blocks)


# --------------------------------------------------------------------------------------------
# The method (contract: jaxprune.methods._base, kind "weights")
# --------------------------------------------------------------------------------------------
def score(key, views, chunk_elements: int = 1 << 22) -> list[np.ndarray]:
    """Sensitivities ``s_ij`` of every prunable layer (module doc); ``key`` is unused."""
    del key
    out = []
    for view in views:
        if view.layer not in ("dense", "conv"):
            raise ValueError(
                f"sipp: layer {view.name!r} is not supported ({view.why}); sipp "
                "covers Dense and Conv layers — keep it dense with leave="
            )
        if view.inputs is None:
            raise ValueError(f"sipp: no input captured for layer {view.name!r}")
        out.append(
            sensitivities(view.kernel, view.inputs, view.conv, chunk_elements=chunk_elements)
        )
    return out


def select(key, scores, views, keep, sampling, neuron_budget: str | None = None) -> list[Selection]:
    """Kept weights of every prunable layer from its sensitivities (module doc)."""
    del views
    if sampling not in SAMPLINGS:
        raise ValueError(f"sipp: sampling must be one of {SAMPLINGS}, got {sampling!r}")
    if neuron_budget is None:
        neuron_budget = "tail" if sampling == "deterministic" else "sensitivity"
    if neuron_budget not in NEURON_BUDGETS:
        raise ValueError(
            f"sipp: neuron_budget must be one of {NEURON_BUDGETS}, got {neuron_budget!r}"
        )
    if sampling == "sparsity_first" and neuron_budget != "sensitivity":
        raise ValueError(
            "sipp: sampling='sparsity_first' draws m_i ∝ S_i per neuron "
            "(neuron_budget='sensitivity'); 'tail' is a deterministic rule"
        )
    keys = jax.random.split(key, max(len(scores), 1))
    out = []
    for s, budget, lkey in zip(scores, keep, keys):
        s2 = s.reshape(-1, s.shape[-1])
        d, k = s2.shape
        if budget >= d * k:
            out.append(Selection(np.ones(s.shape, bool), None, s))
        elif sampling == "deterministic":
            m = (
                tail_budgets(s2, budget)
                if neuron_budget == "tail"
                else sensitivity_budgets(s2, budget)
            )
            out.append(Selection(keep_top(s2, m).reshape(s.shape), None, s))
        else:
            kept, scale, m, _, _ = sample_sparsity_first(lkey, s2, budget)
            out.append(Selection(kept.reshape(s.shape), scale.reshape(s.shape), s, int(m.sum())))
    return out


@register
@dataclasses.dataclass(frozen=True)
class SiPP(Method):
    """SiPP weight sensitivities and selection (module docstring). ``chunk_elements``: the
    most products ``w_ij a_j(x)`` held at once; ``neuron_budget``: ``"tail"`` or
    ``"sensitivity"`` (``None``: ``"tail"`` for deterministic, ``"sensitivity"`` for
    sparsity_first).

    >>> SiPP(neuron_budget="sensitivity").neuron_budget
    'sensitivity'
    """

    chunk_elements: int = 1 << 22
    neuron_budget: str | None = None
    name = "sipp"
    kind = "weights"
    needs_data = True
    description = (
        "Baykal et al. 2019 SiPP: data-informed weight sensitivities, top per neuron or sampled"
    )

    def __post_init__(self):
        check_positive_int(self.chunk_elements, "sipp: chunk_elements")
        if self.neuron_budget not in (None, *NEURON_BUDGETS):
            raise ValueError(
                f"sipp: neuron_budget must be one of {NEURON_BUDGETS}, got {self.neuron_budget!r}"
            )

    def score(self, key, views) -> list:
        return score(key, views, self.chunk_elements)

    def select(self, key, scores, views, keep, sampling) -> list[Selection]:
        return select(key, scores, views, keep, sampling, self.neuron_budget)
