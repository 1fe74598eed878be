"""``l1_norm`` and ``l2_norm``: filter/neuron norm criteria.

* ``l1_norm`` — "FT", Li et al. 2016 ("Pruning Filters for Efficient ConvNets"):
  ``score_j = ‖W_j‖₁ = Σ_d |W_jd|``;
* ``l2_norm`` — the SoftNet criterion, He et al. 2018 ("Soft Filter Pruning"):
  ``score_j = ‖W_j‖₂ = (Σ_d W_jd²)^½``;

where ``W_j`` are the producer kernel entries of channel ``j`` (a Dense column, or a conv
filter's ``kh·kw·C_in`` entries). Both keep the top-k channels (``sampling="deterministic"``,
re-weight 1); ``prune(..., sampling="sparsity_first")`` samples ∝ the norm instead.

The bias. Li et al. and He et al. score the kernel only, so the bias is excluded by default.
:class:`~jaxprune.methods.LayerView` marks which columns of ``points`` are producer-bias
columns (``view.is_bias``, built by :func:`jaxprune.views.layer_view`): the kernel columns
are ``~is_bias``. A bias-free producer (the ResNets' convs, ``use_bias=False``) has no bias
column, so every kernel entry is counted; a group with several producers (a
residual add, with ``prune_residual=True``; attention heads) has one kernel block per
producer, each followed by that producer's bias column if it has one, and all of those bias
columns are excluded. A view built by hand
with ``is_bias=None`` is taken to have no bias columns (every column is kernel).

* ``include_bias`` (default ``False``): count the bias columns too (``‖[W_j | b_j]‖``, over
  every column of ``points``); a no-op for bias-free producers.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from jaxprune.geometry import cheap_jit
from jaxprune.methods._base import LayerView, Method, register


def bias_mask(view: LayerView, who: str = "norm") -> np.ndarray:
    """``view.is_bias`` as a validated (D,) NumPy bool array (``None`` -> no bias columns).

    Static data: callers index columns with it outside ``jit``.
    """
    d = view.points.shape[1]
    if view.is_bias is None:
        return np.zeros(d, bool)
    mask = np.asarray(view.is_bias)
    if mask.dtype != np.bool_ or mask.shape != (d,):
        raise ValueError(
            f"{who}: LayerView.is_bias must be a ({d},) bool array (one flag per "
            f"column of points), got dtype {mask.dtype} shape {mask.shape}"
        )
    if mask.all():
        raise ValueError(
            f"{who}: every column of the view is marked as bias; no kernel entries to score"
        )
    return mask


def _columns(points: jax.Array, mask: np.ndarray) -> np.ndarray | jax.Array:
    """``points[:, mask]`` with a static NumPy mask (no copy when every column is kept), taken
    on the host: a device gather would compile once per layer shape."""
    return points if mask.all() else np.asarray(points)[:, np.flatnonzero(mask)]


def kernel_columns(view: LayerView, include_bias: bool) -> np.ndarray | jax.Array:
    """The columns of ``view.points`` a norm criterion looks at (see the module doc)."""
    if not isinstance(include_bias, bool):
        raise ValueError(f"include_bias must be a bool, got {include_bias!r}")
    is_bias = bias_mask(view)
    return view.points if include_bias else _columns(view.points, ~is_bias)


def _norm_core(w: jax.Array, order: int) -> jax.Array:
    w = w.astype(jnp.float32)
    if order == 1:
        return jnp.sum(jnp.abs(w), axis=1)
    return jnp.sqrt(jnp.sum(w * w, axis=1))


_norm = cheap_jit(_norm_core, static_argnames=("order",))


@cheap_jit(static_argnames=("order",))
def _norms(ws: list, order: int) -> list:
    """:func:`_norm_core` of every array of ``ws`` in ONE program: a network's layers have
    many distinct shapes, and each would otherwise cost a compile on the first prune."""
    return [_norm_core(w, order) for w in ws]


def _scores(views, include_bias: bool, order: int) -> list:
    return list(_norms([kernel_columns(v, include_bias) for v in views], order)) if views else []


def l1_score(key: jax.Array, view: LayerView, *, include_bias: bool = False) -> jax.Array:
    """``‖W_j‖₁`` per channel (``‖[W_j | b_j]‖₁`` with ``include_bias=True``)."""
    del key
    return _norm(kernel_columns(view, include_bias), 1)


def l2_score(key: jax.Array, view: LayerView, *, include_bias: bool = False) -> jax.Array:
    """``‖W_j‖₂`` per channel (``‖[W_j | b_j]‖₂`` with ``include_bias=True``)."""
    del key
    return _norm(kernel_columns(view, include_bias), 2)


@dataclasses.dataclass(frozen=True)
class _Norm(Method):
    """A filter/neuron norm criterion; ``include_bias``: count the bias columns too."""

    include_bias: bool = False
    order: ClassVar[int] = 1

    def __post_init__(self):
        if not isinstance(self.include_bias, bool):
            raise ValueError(f"include_bias must be a bool, got {self.include_bias!r}")

    def score(self, key, views) -> list:
        """``‖W_j‖_order`` of every view's channels, all in one compiled program."""
        del key
        return _scores(views, self.include_bias, self.order)


@register
@dataclasses.dataclass(frozen=True)
class L1Norm(_Norm):
    """``score_j = ‖W_j‖₁`` (FT, Li et al. 2016).

    >>> L1Norm(include_bias=True).include_bias
    True
    """

    name = "l1_norm"
    description = "filter/neuron ℓ1 norm of the kernel, top-k (FT, Li et al. 2016)"


@register
@dataclasses.dataclass(frozen=True)
class L2Norm(_Norm):
    """``score_j = ‖W_j‖₂`` (SoftNet, He et al. 2018)."""

    name = "l2_norm"
    description = "filter/neuron ℓ2 norm of the kernel, top-k (SoftNet, He et al. 2018)"
    order = 2
