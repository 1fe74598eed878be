"""The bound laboratory: approximation bounds of coreset pruning, made computable, after
"When are neural pruning approximation bounds useful?" (the *bounds paper*) and Theorem 2.6 of
the main paper.

Everything here is a pure function of arrays; the scalar formulas are vectorised with numpy
(they broadcast over arrays of ``ε`` / ``m``), the array-heavy parts (μ(P) estimation, label
margins, observed errors) use jax. The bounds paper's LeNet-300-100 experiments built on
them live beside their script: ``experiments/bounds_lab/``, run by
``experiments/bounds_report.py``.

=================  ==========================================================================
``theorems``       sample sizes and ε of SiPP randomized (Thm A.1) and deterministic (Thm A.2)
                   weight pruning, Mussay et al. neuron pruning (Thm A.4), the ReLU ε-coreset
                   (main paper Thm 2.6); SiPP and Mussay sensitivities
``mu``             the regression complexity measure μ(P) (main paper Definition 2.3)
``guarantees``     Lemma 4.1 label margins, the ε that guarantees a fraction of the labels
``draws``          epsilon-first and sparsity-first pruning draws (bounds paper §3.3)
``errors``         observed additive / multiplicative error statistics
``twolayer``       the two-layer ReLU net of the α-scaling argument (Lemma C.1)
=================  ==========================================================================
"""

from jaxprune.bounds.certificate import certify, epsilon_ratios, group_epsilon_ratios
from jaxprune.bounds.draws import (
    PruneDraw,
    deterministic_epsilon_first,
    deterministic_sparsity_first,
    epsilon_first,
    expected_distinct,
    sparsity_first,
)
from jaxprune.bounds.errors import ErrorStats, observed_error, observed_errors
from jaxprune.bounds.guarantees import epsilon_for_guarantee, guaranteed_fraction, label_margins
from jaxprune.bounds.mu import MuEstimate, estimate_mu, mu_is_unbounded
from jaxprune.bounds.theorems import (
    coreset_epsilon,
    coreset_samples,
    mussay_epsilon,
    mussay_samples,
    mussay_sensitivities,
    sipp_deterministic_epsilon,
    sipp_deterministic_samples,
    sipp_num_validation_points,
    sipp_randomized_epsilon,
    sipp_randomized_samples,
    sipp_sensitivities,
)
from jaxprune.bounds.twolayer import scale_two_layer, total_sensitivity, two_layer_forward

__all__ = [
    "certify",
    "epsilon_ratios",
    "group_epsilon_ratios",
    "sipp_randomized_epsilon",
    "sipp_randomized_samples",
    "sipp_num_validation_points",
    "sipp_sensitivities",
    "sipp_deterministic_epsilon",
    "sipp_deterministic_samples",
    "mussay_sensitivities",
    "mussay_epsilon",
    "mussay_samples",
    "coreset_epsilon",
    "coreset_samples",
    "estimate_mu",
    "mu_is_unbounded",
    "MuEstimate",
    "label_margins",
    "epsilon_for_guarantee",
    "guaranteed_fraction",
    "PruneDraw",
    "epsilon_first",
    "sparsity_first",
    "expected_distinct",
    "deterministic_epsilon_first",
    "deterministic_sparsity_first",
    "ErrorStats",
    "observed_error",
    "observed_errors",
    "two_layer_forward",
    "scale_two_layer",
    "total_sensitivity",
]
