"""``magnitude``: unstructured weight-magnitude pruning (Han et al. 2015, "Learning
both Weights and Connections for Efficient Neural Networks").

Score of kernel entry ``w``: ``|w|``. The smallest scores are set to zero, the rest are kept
unchanged (no re-weighting); biases, BatchNorm parameters and the output layer's kernel stay
dense (see :func:`jaxprune.prune` for which kernels are prunable and how ``ratio`` is split).
Option ``scope``:

* ``"layer"`` (default) — every prunable kernel keeps its own top-``keep_l`` entries, so every
  layer ends up with the same sparsity (within one weight);
* ``"global"`` — one threshold over all prunable kernels together: the ``Σ_l keep_l`` largest
  ``|w|`` of the whole network are kept (layers with larger weights keep more). With a
  per-layer ``ratio`` dict the threshold runs over the named layers and removes
  ``Σ_l round(r_l·n_l)`` of their entries in total.

Exact counts: ties in ``|w|`` are broken towards the lower index (row-major within a kernel,
kernels in call order for ``"global"``), so exactly the budgeted number of entries is kept.
Deterministic: ``key`` is unused and only ``sampling="deterministic"`` exists.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxprune.methods._base import Method, Selection, register
from jaxprune.selection import top_k_mask

SCOPES = ("layer", "global")


def score(key, views) -> list[np.ndarray]:
    """``|w|`` of every prunable kernel; ``key`` is unused."""
    del key
    return [np.abs(np.asarray(v.kernel, np.float64)) for v in views]


def select(scores, keep, sampling, scope: str = "layer") -> list[Selection]:
    """Keep the largest ``|w|`` per layer (``scope="layer"``) or over all layers (``"global"``)."""
    if sampling != "deterministic":
        raise ValueError(
            f"magnitude: only sampling='deterministic' (keep the largest |w|) is "
            f"defined, got {sampling!r}"
        )
    if scope == "layer":
        return [Selection(top_k_mask(s, k), None, s) for s, k in zip(scores, keep)]
    flat = np.concatenate([s.reshape(-1) for s in scores])
    kept = top_k_mask(flat, int(sum(keep)))
    out, start = [], 0
    for s in scores:
        out.append(Selection(kept[start : start + s.size].reshape(s.shape), None, s))
        start += s.size
    return out


@register
@dataclasses.dataclass(frozen=True)
class Magnitude(Method):
    """``|w|`` pruning; ``scope``: ``"layer"`` (every kernel the same sparsity) or
    ``"global"`` (one threshold over all prunable kernels).

    >>> Magnitude(scope="global").scope
    'global'
    """

    scope: str = "layer"
    name = "magnitude"
    kind = "weights"
    samplings = ("deterministic",)
    description = "unstructured |w| pruning, per layer or one global threshold (Han et al. 2015)"

    def __post_init__(self):
        if self.scope not in SCOPES:
            raise ValueError(f"magnitude: scope must be one of {SCOPES}, got {self.scope!r}")

    def score(self, key, views) -> list:
        return score(key, views)

    def select(self, key, scores, views, keep, sampling) -> list[Selection]:
        del key, views
        return select(scores, keep, sampling, self.scope)
