"""Label consistency (bounds paper Lemma 4.1): the ε-approximation that provably keeps the
arg-max, and the accuracy guarantee implied by an ε (bounds paper §4.1)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxprune.bounds._checks import scalar

__all__ = ["label_margins", "epsilon_for_guarantee", "guaranteed_fraction"]


@jax.jit
def label_margins(logits: jax.Array):
    """Per example, the largest element-wise ε that cannot change the arg-max (Lemma 4.1).

    With ``j`` the arg-max and ``j'`` the runner-up of the pre-softmax logits ``f(x)``:

        additive:        ε_add(x) = (f(x)_j − f(x)_j') / 2
        multiplicative:  ε_mul(x) = (f(x)_j − f(x)_j') / (|f(x)_j| + |f(x)_j'|)

    For ε strictly below these values the arg-max provably cannot change; at equality a tie
    is possible (the lemma writes ``≤``).  The runner-up is the binding competitor for both
    forms (for the multiplicative one, ``(f_j − f_k)/(|f_j| + |f_k|)`` is smallest at
    ``k = j'``), so these are exactly the largest such ε.  A tie ``f_j = f_j'`` gives 0; the
    multiplicative ``0/0`` (both zero) is guarded to 0.  ``logits`` (N, k), k ≥ 2 →
    ``(ε_add (N,), ε_mul (N,), argmax (N,))``.
    """
    top2 = jax.lax.top_k(logits, 2)[0]
    fj, fj2 = top2[..., 0], top2[..., 1]
    gap = fj - fj2
    den = jnp.abs(fj) + jnp.abs(fj2)
    mul = jnp.where(den > 0, gap / jnp.where(den > 0, den, 1.0), 0.0)
    return gap / 2.0, mul, jnp.argmax(logits, axis=-1)


def _guarantee_k(fraction, n):
    f = np.asarray(fraction, dtype=np.float64)
    if np.any((f <= 0) | (f > 1)):
        raise ValueError(f"fraction must lie in (0, 1], got {fraction!r}")
    return np.maximum(np.ceil(f * n - 1e-9), 1).astype(np.int64)


def epsilon_for_guarantee(logits, labels, fraction=0.5, kind: str = "additive"):
    """ε that guarantees a ``fraction`` of the correctly classified examples stays correct
    (bounds paper §4.1 with Lemma 4.1).

    Over the ``N_c`` examples with ``argmax f(x) = label`` take the per-example margins
    ``ε_i`` (:func:`label_margins`, ``kind`` = "additive" or "multiplicative") and return the
    ``k``-th largest, ``k = ⌈fraction·N_c⌉``: then at least ``k`` (≥ fraction·N_c) correct
    examples have ``ε_i ≥ ε`` and keep their label under an ε-approximation (Lemma 4.1).  This
    is the lower order-statistic quantile ``Q(1 − fraction)``.  ``fraction`` may be an array.
    Raises ``ValueError`` if no example is correct.

    >>> import jax.numpy as jnp
    >>> logits = jnp.array([[2.0, 0.5, 0.0], [0.1, 0.3, 0.2]])
    >>> round(float(epsilon_for_guarantee(logits, jnp.array([0, 1]), fraction=0.5)), 4)
    0.75
    """
    add, mul, pred = label_margins(jnp.asarray(logits))
    eps = {"additive": add, "multiplicative": mul}.get(kind)
    if eps is None:
        raise ValueError(f"kind must be 'additive' or 'multiplicative', got {kind!r}")
    correct = np.asarray(pred) == np.asarray(labels)
    e = np.sort(np.asarray(eps, np.float64)[correct])[::-1]
    if e.size == 0:
        raise ValueError("no correctly classified example: nothing to guarantee")
    k = _guarantee_k(fraction, e.size)
    return scalar(e[k - 1])


def guaranteed_fraction(logits, labels, epsilon, kind: str = "additive"):
    """Fraction of the correctly classified examples whose Lemma 4.1 margin is ≥ ``epsilon``
    (the accuracy guarantee implied by an ε-approximation; ``epsilon`` may be an array)."""
    add, mul, pred = label_margins(jnp.asarray(logits))
    eps = {"additive": add, "multiplicative": mul}.get(kind)
    if eps is None:
        raise ValueError(f"kind must be 'additive' or 'multiplicative', got {kind!r}")
    correct = np.asarray(pred) == np.asarray(labels)
    e = np.asarray(eps, np.float64)[correct]
    if e.size == 0:
        raise ValueError("no correctly classified example")
    epsilon = np.asarray(epsilon, np.float64)
    return scalar(np.mean(e[None, :] >= epsilon.reshape(-1, 1), axis=1).reshape(epsilon.shape))
