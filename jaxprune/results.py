"""What :func:`jaxprune.prune` returns: one result type per kind of method.

Both share :class:`PruneResult`: ``params`` (the pruned pytree, in the input's form),
``report`` (counts and ratios), ``mask`` (0/1, shaped like the input's ``'params'``: the
entries the pruned network still uses), ``masked`` (the pruned network at the input's
shapes) and ``model(module)`` (the module ``params`` fit). :class:`ChannelResult` (structured
methods) holds a smaller network; :class:`WeightResult` (unstructured methods) the input's
shapes with pruned entries exactly 0.

    >>> import jax, jax.numpy as jnp, jaxprune
    >>> params = {"a": {"kernel": jnp.ones((4, 100)), "bias": jnp.zeros(100)},
    ...           "b": {"kernel": jnp.ones((100, 2)), "bias": jnp.zeros(2)}}
    >>> res = jaxprune.prune(params, 0, 0.5, method="l1_norm")
    >>> isinstance(res, jaxprune.ChannelResult), res.params["a"]["kernel"].shape
    (True, (4, 50))
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, ClassVar

import jax
import numpy as np

from jaxprune import _nnx, rebuild, surgery
from jaxprune._tree import as_variables
from jaxprune.plan import model_input_shape

__all__ = ["ChannelResult", "PruneResult", "PruneWarning", "WeightResult"]


def _shapes(tree):
    """Shapes and dtypes of every leaf (no copy of device arrays to the host)."""
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(
            np.shape(x), x.dtype if hasattr(x, "dtype") else np.asarray(x).dtype
        ),
        tree,
    )


class PruneWarning(UserWarning):
    """The pruned network differs from what was asked (a ratio out of reach, layers at their
    minimum width); the message names the groups and why."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class PruneResult:
    """The base of both results (module docstring). ``params``: the pruned pytree, the
    input's structure (an NNX module gives its variables dict); ``report``: counts and
    ratios; ``input_shape`` / ``apply_kwargs``: the per-example input and the inference
    keyword arguments the network was traced with. NNX input: ``module`` is the pruned
    module and ``masked`` a module too."""

    params: Any
    report: dict
    input_shape: Any = None
    apply_kwargs: dict | None = None
    nnx_module: Any = dataclasses.field(default=None, repr=False)
    kind: ClassVar[str] = ""

    @functools.cached_property
    def module(self):
        """NNX input: the pruned ``nnx.Module`` (a new object; the input is untouched)."""
        if self.nnx_module is None:
            raise AttributeError(
                "result.module is for NNX modules; for Linen use result.model(module)"
            )
        return self._nnx_module()

    def _nnx_module(self):
        return _nnx.with_variables(self.nnx_module, self.params)

    def _as_module(self, variables):
        """``variables`` as the input's form: a dict, or the NNX module holding them."""
        return (
            variables
            if self.nnx_module is None
            else _nnx.with_variables(self.nnx_module, variables)
        )


@dataclasses.dataclass(frozen=True, kw_only=True)
class ChannelResult(PruneResult):
    """A structured prune: ``params`` holds smaller arrays.

    ``widths``: per pruned group, its channels left; ``kept``: per pruned group, its sorted
    kept channel indices; ``scales``: per kept channel, the re-weight multiplied into its
    consumers; ``sensitivities``: the method's scores per group; ``groups``: every traced
    channel group; ``dense_variables``: the variables it was pruned from."""

    widths: dict
    kept: dict
    scales: dict
    sensitivities: dict
    groups: tuple
    dense_variables: Any = dataclasses.field(default=None, repr=False)
    kind: ClassVar[str] = "channels"

    @functools.cached_property
    def mask(self):
        """Zeros on the removed channels of every producer, member and consumer array."""
        ones = jax.tree.map(lambda x: np.ones(np.shape(x), np.float32), self.dense_variables)
        return surgery.mask(ones, self.groups, self.kept)["params"]

    @functools.cached_property
    def masked(self):
        """``result.params`` placed back at the kept channels, zeros at the removed ones:
        ``model.apply(result.masked, x) == result.model(model).apply(result.params, x)``."""
        return self._as_module(
            surgery.expand(
                as_variables(self.params)[0], self.dense_variables, self.groups, self.kept
            )
        )

    def _nnx_module(self):
        return rebuild.smaller_nnx(self.nnx_module, self.params, self.groups, self.widths)

    def model(self, module, *, input_shape=None, fields=None):
        """The smaller Flax module that ``result.params`` fit (:func:`jaxprune.rebuild.smaller`):
        jaxprune's models come back as ``module.clone(widths=...)``, any other Linen module as a
        :class:`jaxprune.rebuild.Resized` wrapper. ``fields``: ``{'path/to/layer': {field:
        value}}`` for layers whose size lives in another field. NNX: ``result.module``."""
        if _nnx.is_module(module):
            return self.module
        shape = input_shape or self.input_shape or model_input_shape(module, None)
        return rebuild.smaller(
            module,
            _shapes(self.dense_variables),
            as_variables(self.params)[0],
            shape,
            groups=self.groups,
            widths=self.widths,
            apply_kwargs=self.apply_kwargs,
            fields=fields,
        )


@dataclasses.dataclass(frozen=True, kw_only=True)
class WeightResult(PruneResult):
    """An unstructured prune: ``params`` keeps the input's shapes, pruned entries exactly 0.

    ``keep``: per prunable kernel layer, the bool mask of its kept entries; ``scales``: the
    re-weight of every kept entry (0 elsewhere); ``sensitivities``: the method's scores per
    layer; ``layers``: every kernel layer; ``mask``: ``keep`` as a 0/1 float32 pytree like
    the input's ``'params'`` (ones on every other array). ``kept``, ``groups`` and ``widths``
    read the same data under the structured result's names (``widths``: per layer, its
    output units that keep at least one weight)."""

    keep: dict
    scales: dict
    sensitivities: dict
    layers: tuple
    mask: Any = dataclasses.field(default=None, repr=False)
    kind: ClassVar[str] = "weights"

    @property
    def kept(self) -> dict:
        return self.keep

    @property
    def groups(self) -> tuple:
        return self.layers

    @functools.cached_property
    def widths(self) -> dict:
        return {
            name: int(np.count_nonzero(k.reshape(-1, k.shape[-1]).any(axis=0)))
            for name, k in self.keep.items()
        }

    @functools.cached_property
    def masked(self):
        """The pruned network (the input's shapes): ``params`` as a variables dict."""
        return self._as_module(as_variables(self.params)[0])

    def model(self, module, *, input_shape=None, fields=None):
        """``module`` itself: weight pruning keeps every shape (NNX: ``result.module``)."""
        del input_shape, fields
        return self.module if _nnx.is_module(module) else module
