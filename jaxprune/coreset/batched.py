"""Algorithm 2 sensitivities of a batch of equal-shape point sets: the peeling kernel.

``points`` (b, n, d) and ``mask`` (b, n) hold ``b`` padded point sets; the result (b, n) is
:func:`jaxprune.coreset.sensitivities` of each set (0 on padding), computed one of two ways
that give the same numbers:

* :func:`peel_map`: the sets one after the other (``lax.map``); an empty set (batch padding)
  skips the geometry.  On the CPU it both compiles and runs faster.
* :func:`peel_vmap`: the sets as one batched ``while_loop`` (each step does every set's work
  until the slowest finishes); suited to accelerators.

Both are plain functions; the caller jits them (:mod:`jaxprune.methods.coreset`) or uses the
compiled-ahead copy shipped with the package (:mod:`jaxprune.coreset.shipped_kernels`).

>>> import jax, numpy as np
>>> pts = np.random.default_rng(0).normal(size=(2, 16, 2))
>>> with jax.enable_x64(True):
...     s = np.asarray(jax.jit(peel_map)(pts, np.ones((2, 16), bool)))
>>> s.shape, bool((s > 0).all())
((2, 16), True)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxprune.coreset.sensitivity import sensitivities


def peel_vmap(points: jax.Array, mask: jax.Array) -> jax.Array:
    """Sensitivities of every set, ``jax.vmap`` over the batch."""
    return jax.vmap(sensitivities)(points, mask)  # pyright: ignore[reportReturnType]


def peel_map(points: jax.Array, mask: jax.Array) -> jax.Array:
    """Sensitivities of every set, ``lax.map`` over the batch (empty sets give zeros)."""

    def one(pm):
        return jax.lax.cond(
            jnp.any(pm[1]), sensitivities, lambda p, m: jnp.zeros(p.shape[0], p.dtype), *pm
        )

    return jax.lax.map(one, (points, mask))
