"""L0 regularisation with hard-concrete gates (Louizos, Welling & Kingma, "Learning Sparse
Neural Networks through L0 Regularization", ICLR 2018 — *Louizos et al.* below).

Used by the bounds experiment (``experiments/bounds_report.py``) to build the "easy case"
LeNet-300-100 whose final hidden layer is pre-pruned neuron-wise (bounds paper, Appendix B.1:
"Neuron pruning is accomplished via L0 regularization ... each neuron is multiplied by a gate
variable ... sampled from a hard-concrete distribution ... we prune the neurons whose gates
have the highest probability of being off").

A gate ``z ∈ [0, 1]`` with location parameter ``log α`` (one per gated unit), temperature
``β`` and stretch interval ``(γ, ζ)``, ``γ < 0 < 1 < ζ`` (Louizos et al. §4, Eq. 10):

    u ~ U(0, 1),   s = sigmoid((log u − log(1 − u) + log α) / β),
    s̄ = s·(ζ − γ) + γ,   z = min(1, max(0, s̄)).

Stretching the binary-concrete variable ``s`` to ``(γ, ζ)`` and clipping puts point masses
at exactly 0 and 1, and the sample is differentiable in ``log α`` (reparameterisation).
The probability that a gate is *not* exactly zero has a closed form (Eq. 12), which is the
expected L0 norm used as the penalty:

    P(z ≠ 0) = 1 − Q_s̄(0) = sigmoid(log α − β·log(−γ/ζ)),

(``Q_s̄`` is the CDF of ``s̄``; ``s̄ ≤ 0 ⇔ s ≤ −γ/(ζ−γ) ⇔ logit(s) ≤ log(−γ/ζ)``, and
``logit(s) ~ (Logistic + log α)/β``.)  At test time Louizos et al. use the deterministic
estimator (Eq. 13):

    ẑ = min(1, max(0, sigmoid(log α)·(ζ − γ) + γ)).

Defaults ``β = 2/3``, ``γ = −0.1``, ``ζ = 1.1`` are those of Louizos et al. §4.

All functions are pure and jittable; :func:`fit_l0` is a small optax loop that minimises
``mean CE + λ·E[L0]`` for any ``apply_fn(params, x, z)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import jax
import jax.numpy as jnp
import numpy as np
import optax

__all__ = [
    "BETA",
    "GAMMA",
    "ZETA",
    "init_log_alpha",
    "sample_gate",
    "prob_nonzero",
    "expected_l0",
    "deterministic_gate",
    "keep_mask",
    "fit_l0",
]

BETA = 2.0 / 3.0
GAMMA = -0.1
ZETA = 1.1
_EPS = 1e-6


def init_log_alpha(shape, drop_rate: float = 0.5, *, key=None, std: float = 0.01):
    """``log α`` for an initial gate "dropout" rate ``p``: ``log(1 − p) − log p`` (the
    initialisation of Louizos et al.'s code, optionally with ``N(0, std²)`` jitter from
    ``key``).  ``p = 0.5`` gives ``log α = 0``."""
    if not 0.0 < drop_rate < 1.0:
        raise ValueError(f"drop_rate must lie in (0, 1), got {drop_rate}")
    mean = math.log(1.0 - drop_rate) - math.log(drop_rate)
    out = jnp.full(shape, mean, jnp.float32)
    if key is not None:
        out = out + std * jax.random.normal(key, shape, jnp.float32)
    return out


def sample_gate(
    key, log_alpha, shape=None, *, beta: float = BETA, gamma: float = GAMMA, zeta: float = ZETA
):
    """One hard-concrete sample ``z ∈ [0, 1]`` per entry (Louizos et al. Eq. 10).

    ``shape`` (default ``log_alpha.shape``) must broadcast with ``log_alpha``; e.g.
    ``(batch,) + log_alpha.shape`` draws an independent gate per example.  ``u`` is kept in
    ``[1e-6, 1 − 1e-6]`` so the logistic noise is finite.
    """
    log_alpha = jnp.asarray(log_alpha)
    shape = log_alpha.shape if shape is None else tuple(shape)
    u = jax.random.uniform(key, shape, log_alpha.dtype, _EPS, 1.0 - _EPS)
    s = jax.nn.sigmoid((jnp.log(u) - jnp.log1p(-u) + log_alpha) / beta)
    return jnp.clip(s * (zeta - gamma) + gamma, 0.0, 1.0)


def prob_nonzero(log_alpha, *, beta: float = BETA, gamma: float = GAMMA, zeta: float = ZETA):
    """``P(z ≠ 0) = sigmoid(log α − β·log(−γ/ζ))`` per gate (Louizos et al. Eq. 12)."""
    return jax.nn.sigmoid(jnp.asarray(log_alpha) - beta * math.log(-gamma / zeta))


def expected_l0(log_alpha, **kw):
    """Expected number of non-zero gates ``Σ_j P(z_j ≠ 0)`` — the differentiable L0 penalty
    (Louizos et al. Eq. 12)."""
    return jnp.sum(prob_nonzero(log_alpha, **kw))


def deterministic_gate(log_alpha, *, gamma: float = GAMMA, zeta: float = ZETA):
    """Test-time gate ``min(1, max(0, sigmoid(log α)(ζ − γ) + γ))`` (Louizos et al. Eq. 13)."""
    return jnp.clip(jax.nn.sigmoid(jnp.asarray(log_alpha)) * (zeta - gamma) + gamma, 0.0, 1.0)


def keep_mask(log_alpha, num_keep: int) -> np.ndarray:
    """Boolean mask of the ``num_keep`` gates *least* likely to be off (largest ``log α``;
    ``P(z ≠ 0)`` is increasing in ``log α``), ties to the lower index — the bounds paper's
    "prune the neurons whose gates have the highest probability of being off".

    >>> import jax.numpy as jnp
    >>> keep_mask(jnp.array([0.5, -1.0, 2.0, 0.0]), 2).tolist()
    [True, False, True, False]
    """
    la = np.asarray(log_alpha, np.float64).ravel()
    if not 0 <= int(num_keep) <= la.size:
        raise ValueError(f"num_keep={num_keep} outside [0, {la.size}]")
    order = np.argsort(-la, kind="stable")
    mask = np.zeros(la.size, bool)
    mask[order[: int(num_keep)]] = True
    return mask.reshape(np.shape(log_alpha))


def fit_l0(
    apply_fn: Callable,
    params,
    log_alpha,
    batches: Iterable,
    *,
    lam: float,
    key,
    learning_rate: float = 1e-3,
    gate_learning_rate: float | None = None,
    per_example: bool = True,
    progress: Callable | None = None,
):
    """Minimise ``E_u[mean CE(apply_fn(params, x, z), y)] + λ·Σ_j P(z_j ≠ 0)`` with Adam.

    ``apply_fn(params, x, z) -> logits`` multiplies the gated units by ``z`` (shape
    ``(batch,) + log_alpha.shape`` with ``per_example=True``, else ``log_alpha.shape``: one
    gate draw per batch), and must be jittable.  ``batches`` yields ``(x, y)`` with integer
    labels (e.g. ``jaxprune.data.batches`` over several epochs).  ``gate_learning_rate``
    (default: the weights' rate) is the Adam rate of ``log α``.  One jitted step (compiled
    once per call); ``progress(step_index)`` is called after every step if given.
    Returns ``(params, log_alpha, history)``, ``history`` a list of ``(loss, ce, E[L0])``
    per step (Python floats).
    """
    glr = learning_rate if gate_learning_rate is None else gate_learning_rate
    tx = optax.multi_transform({"w": optax.adam(learning_rate), "g": optax.adam(glr)}, ("w", "g"))
    state = tx.init((params, log_alpha))
    lam = float(lam)

    @jax.jit
    def step(params, log_alpha, state, x, y, k):
        def loss_fn(pl):
            p, la = pl
            shape = ((x.shape[0],) + la.shape) if per_example else la.shape
            z = sample_gate(k, la, shape)
            logits = apply_fn(p, x, z)
            ce = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
            l0 = expected_l0(la)
            return ce + lam * l0, (ce, l0)

        (loss, (ce, l0)), grads = jax.value_and_grad(loss_fn, has_aux=True)((params, log_alpha))
        upd, state = tx.update(grads, state, (params, log_alpha))
        # apply_updates returns a tree shaped like the (params, log_alpha) pair it is given
        params, log_alpha = optax.apply_updates((params, log_alpha), upd)  # pyright: ignore[reportGeneralTypeIssues]
        return params, log_alpha, state, jnp.stack([loss, ce, l0])

    pending = []
    for i, (x, y) in enumerate(batches):
        params, log_alpha, state, stats = step(
            params, log_alpha, state, jnp.asarray(x), jnp.asarray(y), jax.random.fold_in(key, i)
        )
        pending.append(stats)
        if progress is not None:
            progress(i)
    history = (
        [tuple(float(v) for v in s) for s in np.asarray(jnp.stack(pending))] if pending else []
    )
    return params, log_alpha, history
