"""Affine rank / affine subspace of a point set and low-dimensional projections.

``rank(P)`` is the dimension of the affine hull of ``P`` (paper §2.1): the number of singular
values of the centred matrix ``P − z`` (``z`` = mean) above ``rtol · s_max`` and above a
float64 noise floor ``1e4·eps·max|p|·sqrt(n)`` (so exactly equal points have rank 0).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxprune.geometry._compile import cheap_jit
from jaxprune.geometry._parallel import balanced_chunks, cpu_workers, split_run
from jaxprune.geometry._precision import cast_floats, f64, out_dtype, precision

DEFAULT_RTOL = 1e-7


class Frame(NamedTuple):
    """Whitened coordinates of the masked points in their affine hull.

    ``coords = (P − offset) @ W`` (masked-out rows set to 0): on the first ``rank`` columns the
    masked coordinates have mean 0 and (≈) identity covariance, the other ``d − rank`` columns are
    exactly 0.  ``p = offset + y @ W_pinv`` maps back (exact on the affine hull).  ``basis``
    (d, d) holds orthonormal principal directions as columns (descending ``sv``).
    """

    coords: jax.Array  # (n, d)
    offset: jax.Array  # (d,)
    W: jax.Array  # (d, d), zero columns beyond rank
    W_pinv: jax.Array  # (d, d), zero rows beyond rank
    basis: jax.Array  # (d, d)
    sv: jax.Array  # (d,) singular values of the centred masked matrix, descending
    rank: jax.Array  # () int32
    count: jax.Array  # () number of masked points (float)


def _sym_eig_desc(g):
    """Eigen-pairs in descending order, each vector's largest-|.| entry made positive."""
    lam, vec = jnp.linalg.eigh(0.5 * (g + g.T))
    lam, vec = lam[::-1], vec[:, ::-1]
    piv = vec[jnp.argmax(jnp.abs(vec), axis=0), jnp.arange(vec.shape[1])]
    return lam, vec * jnp.where(piv < 0, -1.0, 1.0)[None, :]


class FrameT(NamedTuple):
    """:class:`Frame` with the coordinates stored transposed, ``coords_t`` = ``coords.T`` (d, n)."""

    coords_t: jax.Array
    offset: jax.Array
    W: jax.Array
    W_pinv: jax.Array
    basis: jax.Array
    sv: jax.Array
    rank: jax.Array
    count: jax.Array


def _gram_t(at):
    """``at @ at.T`` for ``at`` (d, n).  Small ``d``: one fused multiply-reduce over contiguous
    rows (XLA:CPU's dot for a (d, n) × (n, d) product with tiny ``d`` costs several times more);
    larger ``d``: the dot."""
    d = at.shape[0]
    if d <= _SMALL_D:
        return jnp.sum(at[:, None, :] * at[None, :, :], axis=-1)
    return at @ at.T


_SMALL_D = 4


def _frame_pt(pt, mask, rtol):
    """Masked affine frame of the points given transposed, ``pt`` (d, n); coordinates (d, n).

    Works in feature-major layout: XLA's CPU reductions and products over the long point
    axis are several times faster on contiguous rows of a ``(d, n)`` array than on the strided
    columns of an ``(n, d)`` one.  One Gram/eigh pass instead of an SVD (XLA's CPU SVD of a
    tall matrix is ~100× slower).  Singular values from a Gram matrix are reliable down to
    ``~1e-8 s_max`` in float64, hence ``DEFAULT_RTOL = 1e-7``; the whitened covariance is the
    identity up to ``eps·κ² ≤ 1e-2`` (κ ≤ 1/rtol), which is harmless because everything
    downstream is affine invariant.  Eigenvector signs are canonical, so eager, jit and vmap
    give the same frame.  Non-finite masked input gives rank 0 (callers report it; see
    :func:`jaxprune.geometry.mvee`).
    """
    d, n = pt.shape
    dt = pt.dtype
    cnt = jnp.sum(mask.astype(dt))
    safe = jnp.maximum(cnt, 1.0)
    z = jnp.sum(jnp.where(mask, pt, 0.0), axis=1) / safe
    at = jnp.where(mask, pt - z[:, None], 0.0)  # points off the mask: 0
    lam1, V1 = _sym_eig_desc(_gram_t(at))
    sv = jnp.sqrt(jnp.maximum(lam1, 0.0))
    scale = jnp.max(jnp.where(mask, jnp.abs(pt), 0.0))
    floor = 1e4 * jnp.finfo(dt).eps * scale * jnp.sqrt(safe)
    active = (sv > rtol * sv[0]) & (sv > floor) & jnp.isfinite(scale)
    rank = jnp.sum(active).astype(jnp.int32)
    act = jnp.arange(d) < rank
    inv1 = jnp.where(act, jnp.sqrt(safe) / jnp.where(act, sv, 1.0), 0.0)
    W = V1 * inv1[None, :]
    W_pinv = V1.T * (jnp.where(act, sv, 0.0) / jnp.sqrt(safe))[:, None]
    coords_t = W.T @ at
    return FrameT(coords_t, z, W, W_pinv, V1, sv, rank, cnt)


def _frame_t(points, mask, rtol):
    """:func:`_frame_pt` of points given as (n, d)."""
    return _frame_pt(points.T, mask, rtol)


def frame_of(points, mask, rtol):
    """Masked affine frame (see :class:`Frame`); pure, jittable, fixed shapes.

    Computed by :func:`_frame_t`; only the coordinates are transposed back to ``(n, d)``
    (callers that only need the rank pay nothing for them: XLA drops unused outputs).
    """
    ft = _frame_t(points, mask, rtol)
    return Frame(ft.coords_t.T, *ft[1:])


_frame_jit = cheap_jit(frame_of)


def _prep(points, mask, cdt):
    pts = f64(points, cdt)
    if pts.ndim != 2:
        raise ValueError(f"points must be a 2-D array (n, d), got shape {pts.shape}")
    msk = jnp.ones(pts.shape[0], bool) if mask is None else jnp.asarray(mask, bool)
    return pts, msk


def masked_frame(points, mask=None, rtol: float = DEFAULT_RTOL) -> Frame:
    """Whitened affine frame of the masked points (float64; see :class:`Frame`)."""
    with precision(points) as cdt:
        pts, msk = _prep(points, mask, cdt)
        return _frame_jit(pts, msk, f64(rtol, cdt))


def affine_rank(points, mask=None, rtol: float = DEFAULT_RTOL):
    """Dimension of the affine hull of the (masked) points, ``rank(P)`` of paper §2.1.

    >>> import numpy as np
    >>> int(affine_rank(np.array([[0., 0., 1.], [1., 1., 1.], [2., 2., 1.]])))   # on a line
    1
    """
    return masked_frame(points, mask, rtol).rank


def affine_subspace(points, mask=None, rtol: float = DEFAULT_RTOL):
    """(Y, z) with ``P ⊆ {z + x Yᵀ}`` (Algorithm 1, line 1).

    ``Y`` is (d, d) with orthonormal columns; the first ``rank`` span the affine hull's
    directions, the remaining columns are zero.  ``z`` is the (masked) mean, so the
    coordinates ``P' = (P − z) Y`` of Algorithm 1 line 2 satisfy ``P = z + P' Yᵀ``.
    """
    dt = out_dtype(points)
    with precision(points) as cdt:
        pts, msk = _prep(points, mask, cdt)
        fr = _frame_jit(pts, msk, f64(rtol, cdt))
        keep = jnp.arange(fr.basis.shape[1]) < fr.rank
        return cast_floats((fr.basis * keep[None, :], fr.offset), dt)


def _pca_core(points, k):
    """Top-``k`` principal components of the centred points ``X`` (n, d).

    Gram/eigh instead of SVD (XLA's CPU SVD is slow), on the smaller side: the d×d matrix
    ``XᵀX`` when n ≥ d, else the n×n matrix ``XXᵀ = U Λ Uᵀ`` with ``X V_k = U_k Λ_k^½`` and
    ``V_k = Xᵀ U_k Λ_k^{-½}`` (a conv layer's filters have d = 9·C_in ≫ n).
    """
    n, d = points.shape
    x = points - jnp.mean(points, axis=0)
    kk = min(k, d, n)
    if n >= d:
        _, vecs = jnp.linalg.eigh(x.T @ x)
        vt = vecs[:, ::-1].T[:kk]  # (kk, d)
    else:
        vals, u = jnp.linalg.eigh(x @ x.T)
        vals, u = vals[::-1][:kk], u[:, ::-1][:, :kk]
        root = jnp.sqrt(jnp.maximum(vals, 0.0))
        vt = ((x.T @ u) / jnp.where(root > 0, root, 1.0)).T  # (kk, d), rows unit or 0
    # deterministic sign: largest-|.| loading of each component positive
    sgn = jnp.sign(vt[jnp.arange(kk), jnp.argmax(jnp.abs(vt), axis=1)])
    vt = vt * jnp.where(sgn == 0, 1.0, sgn)[:, None]
    out = x @ vt.T
    return jnp.pad(out, ((0, 0), (0, k - kk)))


_pca = cheap_jit(_pca_core, static_argnames=("k",))


@cheap_jit(static_argnames=("k",))
def _pca_many(stacks, k):
    """:func:`_pca_core` of every set of every stack (sets of one shape stacked), in one
    program: one traced copy of the core per shape, looped over the stack (``lax.map``: each
    set's arithmetic is the unbatched one)."""
    return [jax.lax.map(lambda p: _pca_core(p, k), s) for s in stacks]


def _pca_cost(shape) -> float:
    """Arithmetic of :func:`_pca_core` on an (n, d) set: the Gram product and its eigh."""
    n, d = shape
    m = min(n, d)
    return float(m) ** 3 + float(n) * d * m


def pca_project_many(points, k: int, workers: int | None = None) -> list:
    """:func:`pca_project` of several point sets (any shapes) in few compiled programs.

    A network's layers have many shapes, several sets each (a ResNet-50: 33 sets, 13
    shapes), and each shape would otherwise cost its own compile: the sets of one shape are
    stacked and looped over, and one program takes a list of such stacks.  The stacks are
    split into ``workers`` chunks of similar cost (default: the CPU cores;
    :func:`~jaxprune.geometry.balanced_chunks`), one program each, run side by side
    (:func:`~jaxprune.geometry.split_run`).  Each set's arithmetic, and so its result, is that
    of :func:`pca_project` (as NumPy arrays)."""
    if not points:
        return []
    dts = [out_dtype(p) for p in points]
    with precision(points[0]) as cdt:
        cast = [f64(p, cdt) for p in points]
        by_shape: dict = {}
        for i, p in enumerate(cast):
            by_shape.setdefault(tuple(np.shape(p)), []).append(i)
        members = list(by_shape.values())
        stacks = [np.stack([np.asarray(cast[i]) for i in m]) for m in members]
        chunks = balanced_chunks(
            [len(m) * _pca_cost(np.shape(cast[m[0]])) for m in members],
            cpu_workers() if workers is None else workers,
        )
        done = split_run(lambda idx: _pca_many([stacks[j] for j in idx], int(k)), chunks)
        outs: list = [None] * len(cast)
        for m, stacked in zip(members, done):
            stacked = np.asarray(stacked)  # rows on the host: no slicing program per shape
            for row, i in enumerate(m):
                outs[i] = stacked[row].astype(dts[i], copy=False)
        return outs


def pca_project(points, k: int):
    """Project onto the top-``k`` principal directions: ``(P − mean) V_k`` → (n, k).

    Columns beyond ``d`` are zero; signs are fixed deterministically.

    >>> import numpy as np
    >>> points = np.random.default_rng(0).normal(size=(50, 8))
    >>> pca_project(points, 3).shape
    (50, 3)
    """
    dt = out_dtype(points)
    with precision(points) as cdt:
        return _pca(f64(points, cdt), int(k)).astype(dt)


@cheap_jit(static_argnames=("k",))
def _jl(key, points, k):
    g = jax.random.normal(key, (points.shape[1], k), dtype=points.dtype) / jnp.sqrt(k)
    return points @ g


def jl_project(key, points, k: int):
    """Johnson–Lindenstrauss projection ``P G / sqrt(k)`` with Gaussian ``G`` (d, k) → (n, k)."""
    dt = out_dtype(points)
    with precision(points) as cdt:
        return _jl(key, f64(points, cdt), int(k)).astype(dt)
