"""Optimisation over constrained and masked params trees.

* Frank-Wolfe: linear minimisation oracles (:func:`ksparse_lmo`, :func:`l1_lmo`), constraint
  sets over the kernels (:class:`KSparsePolytope`, :class:`L1Ball`; :func:`radii`, :func:`lmo`,
  :func:`violation`) and the optax transformation :func:`stochastic_frank_wolfe` (with
  momentum).
* Masks: :func:`magnitude_mask` (top-k ``|θ|`` per layer or global), :func:`masked` (an optax
  wrapper that leaves masked entries untouched), :func:`kernel_sparsity`, :func:`keep_count`.

"Kernels" are the params leaves with ``ndim > 1`` (:func:`is_kernel`): Dense/Conv weights.
"""

from jaxprune.optim.constraints import KSparsePolytope, L1Ball, is_kernel, lmo, radii, violation
from jaxprune.optim.lmo import keep_count, ksparse_lmo, l1_lmo
from jaxprune.optim.masking import MaskedState, apply_mask, kernel_sparsity, magnitude_mask, masked
from jaxprune.optim.sfw import SFWState, classic_schedule, stochastic_frank_wolfe

__all__ = [
    "KSparsePolytope",
    "L1Ball",
    "MaskedState",
    "SFWState",
    "apply_mask",
    "classic_schedule",
    "is_kernel",
    "keep_count",
    "kernel_sparsity",
    "ksparse_lmo",
    "l1_lmo",
    "lmo",
    "magnitude_mask",
    "masked",
    "radii",
    "stochastic_frank_wolfe",
    "violation",
]
