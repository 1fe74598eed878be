"""``pvc``: data-independent neuron pruning of Mussay et al. 2020.

Mussay et al. ("Data-independent neural pruning via coresets", ICLR 2020; Algorithm 3 of
"When are pruning bounds useful?") sample hidden neurons ∝ a sensitivity built from the
neuron's own parameters and the weights that read it, assuming only a bound ``β`` on the
input norm. Per channel ``j`` of a group, with ``p_j = [W_j | b_j]`` (``LayerView.points``;
``LayerView.is_bias`` marks the bias columns, the rest are the kernel entries ``W_j``) and
``|w_kj|`` (``LayerView.outgoing``, ``k`` over every consumer output):

    B_j = β·‖W_j‖₂ + Σ_{d ∈ bias} |p_jd|        (|b_j| for one producer, 0 for none)
    s_j = max_k |w_kj| · φ(B_j)
    q_j = s_j / Σ_i s_i                         (normalization="total", the default)

``q`` sums to 1 over the group (uniform ``1/C`` if every ``s_j`` is 0). ``prune`` draws
i.i.d. ∝ ``q`` until the target width is reached (``sampling="sparsity_first"``) and scales
the kept channels' outgoing weights by ``count_j / (m q_j)``.

Why ``β‖W_j‖ + |b_j|`` and not ``β‖p_j‖``. The pre-activation is ``z = W_j·x + b_j``, i.e.
``p_j·(x, 1)``. If ``β`` bounds ``‖x‖`` (the input, without the constant 1), Cauchy–Schwarz on
the two parts gives ``|z| ≤ β‖W_j‖ + |b_j|``, attained at ``x = ±β W_j/‖W_j‖`` with the sign
of ``b_j``: this is the tight bound. ``β‖p_j‖`` would be an upper bound only if ``β`` bounded
the augmented ``‖(x, 1)‖`` (then ``β ≥ 1``); with ``β`` bounding ``‖x‖`` it can under-bound
``|z|`` (e.g. ``β = 1``, ``W_j, b_j ≠ 0``: ``√(‖W_j‖² + b_j²) < ‖W_j‖ + |b_j|``). For every
supported ``φ`` (monotone non-decreasing on ``[0, ∞)`` and
``|φ(-z)| ≤ φ(z)`` for ``z ≥ 0``), ``max_{|z| ≤ B} |φ(z)| = φ(B)``, so ``φ(B_j)`` bounds the
magnitude of neuron ``j``'s activation over the whole input ball:

* ``relu``: ``φ(B) = B``; ``leaky_relu`` (slope 0.01): ``φ(B) = B``;
* ``gelu`` (tanh approximation, as ``flax.linen.gelu``): ``φ(B) = gelu(B)``;
* ``sigmoid``: ``φ(B) = σ(B)`` (a dead neuron still outputs ``σ(0) = ½``, so it keeps weight).

``β`` (``beta``) must be the real bound on the norm of what the producer reads: for a Dense
producer ``‖x‖₂`` of its input, for a conv producer the norm of one ``kh×kw×C_in`` input patch
(the window the producer's strides/padding/dilation cut out; one group's window of a grouped
conv), for deeper layers that of the hidden activations. Where it comes from:

* ``beta=`` given: that ``β`` for every group of the ``prune`` call (e.g. ``max ‖x‖`` over the
  training inputs; MNIST: ≈25 measured, ≤28 naively);
* not given, ``prune(..., data=S, model=...)``: estimated per group from ``S`` as
  ``β_g = max_{x∈S} max_pos ‖patch(x, pos)‖₂`` of what the group's producer reads (Dense:
  ``max_x ‖x‖₂``). For a residual group with producers ``p`` it is
  ``max_x (Σ_p max_pos ‖patch_p‖²)^{1/2}``, which bounds the norm of the concatenated input;
* neither: ``β = 1.0`` with a warning that ``β`` was not estimated.

The ``β`` used per group is recorded in ``PruneResult.report["method_info"]["beta"]`` (and
``"beta_source"``: ``"given"``, ``"data"`` or ``"default"``). ``β`` from ``S`` bounds the
inputs of ``S`` only, a sample estimate of the bound the analysis assumes. Within one group a
common ``β`` changes only the relative weight of bias vs kernel, so with zero biases the
selection does not depend on ``β`` (for ReLU).

``normalization="per_output"`` uses ``σ_j = max_k (|w_kj| φ(B_j) / Σ_i |w_ki| φ(B_i))``
(columns ``k`` with zero mass ignored; the next-layer weighting of the ``coreset`` method),
renormalised to ``q_j = σ_j / Σ_i σ_i``.

The bias columns come from the view (``is_bias``, see ``jaxprune.methods.norms``): a bias-free
producer (ResNet convs) has none, so ``B_j = β‖W_j‖₂`` — the tight bound above with ``b_j = 0``;
a hand-built view with ``is_bias=None`` is taken to have none. A group with several producers
(a residual add, with ``prune_residual=True``; attention heads) has one ``[W | b]`` block per
producer: ``W_j`` is then the
concatenation of the producers' kernel entries and the bias term ``Σ_p |b_j^(p)|``. For
``z = Σ_p (W_j^(p)·x_p + b_j^(p))`` this is an upper bound on ``|z|`` when ``β`` bounds the
norm of the concatenated input ``(x_1, …, x_P)`` (Cauchy–Schwarz on the kernels, the triangle
inequality on the biases), attained when the biases share a sign; if ``β`` bounds each
``‖x_p‖`` separately the joint norm can be up to ``√P·β``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from jaxprune.methods._base import LayerInput, LayerView, Method, register
from jaxprune.methods.norms import bias_mask
from jaxprune.methods.pfp import apply_conv

ACTIVATIONS = {
    "relu": jax.nn.relu,
    "leaky_relu": lambda z: jax.nn.leaky_relu(z, 0.01),
    "gelu": lambda z: jax.nn.gelu(z, approximate=True),
    "sigmoid": jax.nn.sigmoid,
}
NORMALIZATIONS = ("total", "per_output")


def check_options(beta, activation, normalization) -> float | None:
    """Clear ``ValueError`` for bad options; returns ``beta`` as a float (``None``: estimate)."""
    if beta is not None and (
        isinstance(beta, bool)
        or not isinstance(beta, numbers.Real)
        or not math.isfinite(float(beta))
        or float(beta) <= 0.0
    ):
        raise ValueError(
            f"pvc: beta (an upper bound on the input norm) must be a finite number "
            f"> 0, got {beta!r}"
        )
    if activation not in ACTIVATIONS:
        raise ValueError(
            f"pvc: unknown activation {activation!r}; supported: {sorted(ACTIVATIONS)}"
        )
    if normalization not in NORMALIZATIONS:
        raise ValueError(
            f"pvc: unknown normalization {normalization!r}; use one of {NORMALIZATIONS}"
        )
    return None if beta is None else float(beta)


@functools.partial(jax.jit, static_argnames=("activation", "normalization"))
def pvc_scores(
    kernel: jax.Array,
    bias: jax.Array,
    outgoing: jax.Array,
    beta: jax.Array,
    *,
    activation: str,
    normalization: str,
) -> jax.Array:
    """``q`` of one group from its kernel columns (C, D_w), bias columns (C, D_b; ``D_b`` may
    be 0) and outgoing weights (C, K) (see the module docstring for the formula)."""
    kernel = kernel.astype(jnp.float32)
    bias = bias.astype(jnp.float32)
    outgoing = jnp.abs(outgoing.astype(jnp.float32))
    bound = beta * jnp.linalg.norm(kernel, axis=1) + jnp.sum(jnp.abs(bias), axis=1)
    act = ACTIVATIONS[activation](bound)  # (C,) φ(B_j) >= 0
    if normalization == "total":
        s = jnp.max(outgoing, axis=1) * act
    else:
        mass = outgoing * act[:, None]  # (C, K)
        col = jnp.sum(mass, axis=0, keepdims=True)  # (1, K)
        s = jnp.max(jnp.where(col > 0, mass / jnp.where(col > 0, col, 1.0), 0.0), axis=1)
    total = jnp.sum(s)
    c = s.shape[0]
    return jnp.where(total > 0, s / jnp.where(total > 0, total, 1.0), 1.0 / c)


def _max_sq_patch_norm(reader: LayerInput) -> np.ndarray:
    """Per example, ``max_pos ‖patch‖²`` of what one producer reads (N,)."""
    a = np.asarray(reader.inputs, np.float64)
    kernel = reader.kernel
    if kernel.ndim == 2:  # Dense (extra leading axes of the input count as positions)
        if a.shape[-1] != kernel.shape[0]:
            raise ValueError(
                f"pvc: input width {a.shape[-1]} of {'/'.join(reader.slot.path)} "
                f"does not match its kernel {kernel.shape}"
            )
        return np.max(np.sum(np.square(a.reshape(a.shape[0], -1, a.shape[-1])), axis=-1), axis=1)
    groups = int(getattr(reader.module, "feature_group_count", 1))
    ones = jnp.ones((*kernel.shape[:-2], kernel.shape[-2], groups), jnp.float32)
    sq = apply_conv(reader.module, jnp.asarray(np.square(a), jnp.float32), ones, groups)
    return np.max(np.asarray(sq, np.float64).reshape(a.shape[0], -1), axis=1)


def estimate_beta(view: LayerView) -> float:
    """``max_{x∈S} (Σ_producers max_pos ‖patch‖²)^{1/2}`` from ``view.producer_inputs``."""
    if not view.producer_inputs:
        raise ValueError(
            "pvc: estimating beta needs the producers' inputs on data "
            "(prune(..., data=S, model=...))"
        )
    total = sum(_max_sq_patch_norm(r) for r in view.producer_inputs)
    return float(np.sqrt(np.max(total)))


def betas(views: list, beta: float | None = None) -> tuple[list, list]:
    """The ``β`` used for each view and where it came from (``given``/``data``/``default``)."""
    if beta is not None:
        return [float(beta)] * len(views), ["given"] * len(views)
    values, sources = [], []
    for v in views:
        if v.producer_inputs:
            values.append(estimate_beta(v))
            sources.append("data")
        else:
            values.append(1.0)
            sources.append("default")
    return values, sources


def score(
    key: jax.Array,
    views: list,
    beta: float | None = None,
    activation: str = "relu",
    normalization: str = "total",
) -> list:
    """Sampling probabilities ``q`` of every group; ``key`` is unused (deterministic)."""
    del key
    beta = check_options(beta, activation, normalization)
    values, sources = betas(views, beta)
    if "default" in sources:
        warnings.warn(
            "pvc: beta (the bound on the norm of what a layer reads) was not given "
            "and not estimated (no data=); using beta=1.0. Pass beta=, or data= and "
            "model= to estimate it per layer",
            stacklevel=3,
        )
    out = []
    for view, b in zip(views, values):
        is_bias = bias_mask(view, "pvc")  # static: split outside jit
        kernel = view.points[:, np.flatnonzero(~is_bias)]
        bias = view.points[:, np.flatnonzero(is_bias)]
        out.append(
            pvc_scores(
                kernel,
                bias,
                view.outgoing,
                jnp.float32(b),
                activation=activation,
                normalization=normalization,
            )
        )
    return out


def info(views: list, beta: float | None = None) -> dict:
    """``{"beta": [β per group], "beta_source": [...]}`` for ``PruneResult.report``."""
    values, sources = betas(views, beta)
    return {"beta": values, "beta_source": sources}


@register
@dataclasses.dataclass(frozen=True)
class PVC(Method):
    """Mussay et al. 2020 sampling probabilities (module docstring). ``beta``: the bound on
    the norm of what a producer reads (``None``: estimated per group from ``data=``);
    ``activation``: φ; ``normalization``: ``"total"`` or ``"per_output"``.

    >>> PVC(beta=25.0).beta
    25.0
    """

    beta: float | None = None
    activation: str = "relu"
    normalization: str = "total"
    name = "pvc"
    sampling = "sparsity_first"
    uses_data = True
    description = "Mussay et al. 2020: max_k |w_kj| φ(β‖W_j‖+|b_j|), sampled"

    def __post_init__(self):
        check_options(self.beta, self.activation, self.normalization)

    def score(self, key, views) -> list:
        return score(key, views, self.beta, self.activation, self.normalization)

    def info(self, views) -> dict:
        return info(views, self.beta)
