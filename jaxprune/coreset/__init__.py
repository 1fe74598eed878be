"""Coresets for pruning (paper §2): ℓ∞-coreset (Algorithm 1), peeling sensitivities
(Algorithm 2) and sensitivity sampling.  Pure array functions, no knowledge of networks."""

from jaxprune.coreset.linf import LinfConfig, LinfCoreset, linf_coreset, linf_coreset_masked
from jaxprune.coreset.sampling import Sample, sample, sample_until_distinct, top_k
from jaxprune.coreset.sensitivity import PEEL_CONFIG, peeling_layers, sensitivities

__all__ = [
    "LinfConfig",
    "LinfCoreset",
    "linf_coreset",
    "linf_coreset_masked",
    "Sample",
    "sample",
    "sample_until_distinct",
    "top_k",
    "PEEL_CONFIG",
    "peeling_layers",
    "sensitivities",
]
