"""jaxprune: provable, data-independent structured pruning in JAX.

The entry point is :func:`jaxprune.prune` (:mod:`jaxprune.pipeline`); the sub-packages hold
the parts, in import order: ``geometry`` (MVEE, Carathéodory, projections) → ``coreset``
(ℓ∞-coreset, peeling sensitivities, sampling) → ``structure`` (traced channel groups) →
``surgery`` → ``selection`` → ``optim`` → ``train`` → ``methods`` → ``pipeline`` → ``bounds``.
"""
from jaxprune.cache import enable_compilation_cache
from jaxprune.pipeline import PruneResult, PruneWarning, prune

__version__ = "0.1.0"

__all__ = ["PruneResult", "PruneWarning", "enable_compilation_cache", "prune", "__version__"]
