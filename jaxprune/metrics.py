"""Model size, compute and speed metrics.

Units (used everywhere in jaxprune):

* **parameters** — number of scalar entries in the ``'params'`` collection (BatchNorm running
  statistics in ``'batch_stats'`` are *not* parameters);
* **MACs** — multiply-accumulates per example of the weight layers (``nn.Dense``,
  ``nn.Conv``): ``out_elements × kernel fan-in``. Bias adds,
  normalisation, activations and pooling are not counted;
* **FLOPs** — ``2 × MACs`` (one multiply plus one add per MAC). :func:`flops` returns FLOPs,
  :func:`macs` returns MACs; pruning reports quote both.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxprune._flax import apply_inference, kernel_calls
from jaxprune._tree import as_variables, params_of

__all__ = [
    "param_count",
    "nonzero_count",
    "sparsity",
    "layer_macs",
    "macs",
    "flops",
    "measure_latency",
    "compare_latency",
]


def param_count(tree: Any) -> int:
    """Number of scalars in ``tree`` (in its ``'params'`` if a variables dict is given).

    >>> import jax.numpy as jnp
    >>> param_count({"dense": {"kernel": jnp.ones((3, 2)), "bias": jnp.zeros(2)}})
    8
    """
    return int(sum(np.size(x) for x in jax.tree.leaves(params_of(tree))))


def nonzero_count(tree: Any) -> int:
    """Number of non-zero scalars (over ``'params'`` if a variables dict is given)."""
    return int(sum(int(np.count_nonzero(np.asarray(x))) for x in jax.tree.leaves(params_of(tree))))


def sparsity(tree: Any) -> float:
    """Fraction of zero parameters, ``1 - nonzero/total`` (0.0 for an empty tree).

    >>> import jax.numpy as jnp
    >>> round(sparsity({"kernel": jnp.array([[0., 1.], [2., 0.]]), "bias": jnp.zeros(2)}), 3)
    0.667
    """
    total = param_count(tree)
    return 0.0 if total == 0 else 1.0 - nonzero_count(tree) / total


def layer_macs(
    model: nn.Module, variables: Any | None, input_shape: tuple[int, ...], **apply_kwargs: Any
) -> dict[str, int]:
    """Per-layer MACs per example, keyed by the layer's '/'-joined module path.

    ``input_shape`` is one example's shape (no batch dim). The model is traced abstractly
    (``jax.eval_shape``, nothing is computed) in inference mode; each ``nn.Dense`` /
    ``nn.Conv`` call contributes ``output.size / batch × prod(kernel.shape[:-1])``, which is
    exact for strides, padding, feature groups and any (pruned) width. ``variables=None``
    uses abstract initial variables. A layer called twice is counted twice.
    """
    shape = (1,) + tuple(int(d) for d in input_shape)
    x = jax.ShapeDtypeStruct(shape, jnp.float32)
    if variables is None:
        variables = jax.eval_shape(model.init, jax.random.key(0), x)
    variables, _ = as_variables(variables)
    counts: dict[str, int] = {}

    def record(mod, _inp, out):
        if isinstance(mod, (nn.Dense, nn.Conv)):
            kernel = mod.variables["params"]["kernel"]
            per_example = int(np.prod(out.shape)) // shape[0]
            n = per_example * int(np.prod(kernel.shape[:-1]))
            key = "/".join(mod.path) if mod.path else (mod.name or type(mod).__name__)
            counts[key] = counts.get(key, 0) + n

    def run(v, inp):
        with kernel_calls(record):
            return apply_inference(model, v, inp, **apply_kwargs)

    jax.eval_shape(run, variables, x)
    return counts


def macs(
    model: nn.Module, variables: Any | None, input_shape: tuple[int, ...], **apply_kwargs: Any
) -> int:
    """Total multiply-accumulates per example of all Dense and Conv layers."""
    return int(sum(layer_macs(model, variables, input_shape, **apply_kwargs).values()))


def flops(
    model: nn.Module, variables: Any | None, input_shape: tuple[int, ...], **apply_kwargs: Any
) -> int:
    """FLOPs per example = ``2 × macs(...)`` (see module doc for what is counted).

    >>> import jax, jax.numpy as jnp
    >>> from jaxprune.models import LeNet300100
    >>> model = LeNet300100(widths=(32, 16))
    >>> variables = model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))
    >>> flops(model, variables, (28, 28, 1)) == 2 * (784 * 32 + 32 * 16 + 16 * 10)
    True
    """
    return 2 * macs(model, variables, input_shape, **apply_kwargs)


def measure_latency(
    fn: Callable, *args: Any, repeats: int = 20, warmup: int = 3, jit: bool = True
) -> float:
    """Median wall-clock seconds of one call ``fn(*args)``.

    ``fn`` is wrapped in ``jax.jit`` (unless ``jit=False``), compiled and run ``warmup``
    times untimed, then timed ``repeats`` times, each with ``jax.block_until_ready`` on the
    result so asynchronous dispatch is included. Compile time is excluded.
    """
    return compare_latency({"fn": (fn, args)}, repeats=repeats, warmup=warmup, jit=jit)["fn"]


def compare_latency(
    calls: dict[str, tuple[Callable, tuple]],
    *,
    repeats: int = 20,
    warmup: int = 3,
    jit: bool = True,
) -> dict[str, float]:
    """Median wall-clock seconds of each ``fn(*args)`` in ``calls = {name: (fn, args)}``,
    measured **interleaved** (round ``r`` times every call once, in turn).

    Load from other processes then hits every candidate alike, so the *ratios* of the medians
    are fair on a shared machine even when the absolute times drift. Compile time is excluded
    (``warmup`` untimed calls each, at least one); each timed call ends with
    ``jax.block_until_ready``.
    """
    if repeats < 1:
        raise ValueError("repeats must be >= 1")
    if not calls:
        raise ValueError("compare_latency needs at least one call")
    fns = {name: (jax.jit(fn) if jit else fn, args) for name, (fn, args) in calls.items()}
    for f, args in fns.values():
        for _ in range(max(1, warmup)):
            jax.block_until_ready(f(*args))
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, (f, args) in fns.items():
            t0 = time.perf_counter()
            jax.block_until_ready(f(*args))
            times[name].append(time.perf_counter() - t0)
    return {name: float(statistics.median(ts)) for name, ts in times.items()}
