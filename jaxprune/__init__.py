"""jaxprune: data-independent structured pruning in JAX (coreset pruning, whose sampled variant
carries a guarantee where μ(P) is finite; see :mod:`jaxprune.bounds`), and its baselines.

The entry point is :func:`jaxprune.prune` (:mod:`jaxprune.pipeline`); the sub-packages hold
the parts, in import order: ``geometry`` (MVEE, Carathéodory, projections) → ``coreset``
(ℓ∞-coreset, peeling sensitivities, sampling) → ``structure`` (traced channel groups) →
``surgery`` → ``selection`` → ``optim`` → ``train`` → ``methods`` → ``plan`` / ``results`` /
``pipeline`` → ``bounds``.
"""

from jaxprune.cache import enable_compilation_cache
from jaxprune.pipeline import (
    Certificate,
    ChannelResult,
    PruneResult,
    PruneWarning,
    Refit,
    WeightResult,
    prune,
)

__version__ = "0.1.0"

__all__ = [
    "Certificate",
    "ChannelResult",
    "PruneResult",
    "PruneWarning",
    "Refit",
    "WeightResult",
    "enable_compilation_cache",
    "prune",
    "__version__",
]
