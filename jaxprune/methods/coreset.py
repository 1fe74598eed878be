"""``coreset`` (ours): data-independent sensitivities from the Löwner ellipsoid + Carathéodory.

Per channel group (main paper §2.3–2.5):

1. points ``p_j = [W_j | b_j]`` projected to ``k`` dims (PCA by default, JL as an option).
   Default ``k = 10`` with ``allocation="bound"``, kept by a validation sweep over five
   independently trained LeNet-300-100 nets (MNIST validation split, PR 90/92.6/94.6 %, one
   fine-tune epoch; ``experiments/coreset_sweep.py``): k = 10 gave 5.92 ± 0.07 % mean error,
   k = 2/3/5 were not significantly different (6.07, 6.03, 5.91 %), k = 20 worse (6.29 %);
   ``allocation="uniform"`` was worse at every k by 3.1–4.0 points (paired 95 % intervals
   exclude 0). So the sweep separates the allocations, not k in 2–10;
2. peeling sensitivities ``s(p_j) = 2·rank(Q)^1.5 / i`` (Algorithm 2; ``jaxprune.coreset``);
3. next-layer weighting, the worst case over the consumer's neurons ``k`` (§2.5 "from weight to
   neuron pruning", as in PvC):  ``σ_j = max_k |w_kj| s_j / Σ_i |w_ki| s_i``.
   Each ratio is the sensitivity of ``p_j`` in the query space weighted by neuron ``k``'s
   incoming weights; taking the max over ``k`` makes one sample serve every next-layer neuron.
4. ``σ`` is multiplied by the activation constant ``κ_φ`` (§2.5: other "nice hinge"
   activations change the bound by a scalar). We use ``κ_φ`` = the Lipschitz constant of φ
   (ReLU and leaky ReLU 1, GELU ≈ 1.1289, sigmoid 1/4). A common scalar changes the total
   sensitivity ``t`` (and epsilon-first sample sizes) but not which channels are drawn.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxprune import geometry
from jaxprune.coreset import batched, shipped_kernels
from jaxprune.geometry import (
    CHEAP_CPU_OPTIONS,
    OPTIMISED_CPU_OPTIONS,
    balanced_chunks,
    cheap_jit,
    cpu_workers,
    on_cpu,
    split_run,
)
from jaxprune.methods._base import LayerView, Method, check_positive_int, register, split_keys

ACTIVATION_CONSTANTS = {"relu": 1.0, "leaky_relu": 1.0, "gelu": 1.1289, "sigmoid": 0.25}


def activation_constant(activation: str) -> float:
    if activation not in ACTIVATION_CONSTANTS:
        raise ValueError(
            f"unknown activation {activation!r}; supported: {sorted(ACTIVATION_CONSTANTS)}"
        )
    return ACTIVATION_CONSTANTS[activation]


def project_all(keys: list, points: list, projection: str, dim: int) -> list[np.ndarray]:
    """:func:`project` of every group's points; with PCA, all of them in one compiled program
    (a network's layers have many distinct shapes)."""
    if projection != "pca":
        return [np.asarray(project(k, p, projection, dim)) for k, p in zip(keys, points)]
    out = list(points)
    wide = [n for n, p in enumerate(points) if p.shape[1] > dim]
    for n, q in zip(wide, geometry.pca_project_many([points[n] for n in wide], dim)):
        out[n] = np.asarray(q)
    return out


def project(key: jax.Array, points: jax.Array, projection: str, dim: int) -> jax.Array:
    """(C, D) -> (C, min(dim, D)) with PCA, JL, or no projection."""
    if projection in (None, "none") or points.shape[1] <= dim:
        return points
    if projection == "pca":
        return geometry.pca_project(points, dim)
    if projection == "jl":
        return geometry.jl_project(key, points, dim)
    raise ValueError(f"unknown projection {projection!r}; use 'pca', 'jl' or 'none'")


WEIGHT_TILE = 512  # consumer columns per call of the weighting program


@cheap_jit
def _weighted_tile(s: np.ndarray | jax.Array, outgoing: np.ndarray | jax.Array) -> jax.Array:
    """``max_k |w_kj| s_j / Σ_i |w_ki| s_i`` over one tile of consumer columns ``k`` (float64).

    A column's total needs only that column, so tiles are independent and the row maxima of
    all tiles combine by a max."""
    mass = outgoing.astype(s.dtype) * s[:, None]  # (C, T)
    total = jnp.sum(mass, axis=0, keepdims=True)  # (1, T)
    ratio = jnp.where(total > 0, mass / jnp.where(total > 0, total, 1.0), 0.0)
    return jnp.max(ratio, axis=1)


def weighted_sensitivity(s, outgoing, kappa: float = 1.0) -> jax.Array:
    """``σ_j = κ_φ · max_k |w_kj| s_j / Σ_i |w_ki| s_i`` (columns with zero mass are ignored).

    One compiled program per power-of-two row bucket, whatever the layer: rows are padded
    with zeros (zero mass) and the columns go through in tiles of ``WEIGHT_TILE``.  Computed
    in float64 and rounded once to float32, so the result does not depend on the padding or
    on the order XLA sums a column in."""
    s = np.asarray(s, np.float64)
    outgoing = np.asarray(outgoing)
    rows, cols = outgoing.shape
    padded = _bucket(rows)
    s_pad = np.zeros(padded)
    s_pad[:rows] = s
    best = np.zeros(padded)
    with jax.enable_x64(True):
        for start in range(0, cols, WEIGHT_TILE):
            part = outgoing[:, start : start + WEIGHT_TILE]
            tile = np.zeros((padded, WEIGHT_TILE), np.float32)
            tile[:rows, : part.shape[1]] = part
            best = np.maximum(best, np.asarray(_weighted_tile(s_pad, tile)))
    # one array in, one array out (JAX types device_put over whole trees)
    return jax.device_put((kappa * best[:rows]).astype(np.float32))  # pyright: ignore[reportReturnType]


# The peeling graph (Algorithm 1 inside Algorithm 2's while-loop: MVEE, Wolfe's MNP,
# Carathéodory) is large, and on the CPU its compile dominates `prune`'s first call. Two knobs
# shape the kernel; every choice gives the same numbers (tests/test_coreset.py):
#   peel_batch:   "vmap" runs the point sets as one batched while-loop (every step does the work
#                 of every set until the slowest finishes; good on accelerators); "map" runs
#                 them one after the other with `lax.map` (no batched loops: on the CPU it
#                 both compiles and runs faster).
#   peel_compile: "fast" compiles with `geometry._compile.CHEAP_CPU_OPTIONS` (XLA backend
#                 level 0, classic fusion emitter: about a quarter of the compile, calls ~10 %
#                 slower); "optimised" is XLA's default.
# "auto" picks map + fast on the CPU, where one-off prunes are compile-bound, and vmap +
# optimised elsewhere (`experiments/bench_prune.py --peel-kernels` measures them).
# On the CPU, map + fast is shipped traced ahead of time for the usual shapes (`_kernel_fn`).
# `score` guesses the kernel's shapes from the groups' sizes before projecting and compiles it
# on a thread meanwhile (`_compile_in_background`).
PEEL_COMPILES = ("auto", "fast", "optimised")
PEEL_BATCHES = ("auto", "map", "vmap")
_KERNEL_JITS = {
    (batch, compile_): jax.jit(
        fn, compiler_options=(CHEAP_CPU_OPTIONS if compile_ == "fast" else OPTIMISED_CPU_OPTIONS)
    )
    for batch, fn in (("map", batched.peel_map), ("vmap", batched.peel_vmap))
    for compile_ in ("fast", "optimised")
}


def _kernel_fn(kernel: tuple[str, str], shape: tuple):
    """The jitted kernel for point sets of ``shape`` (batch, n, d): on the CPU, map + fast
    comes traced ahead of time with the package when it ships that shape
    (:mod:`jaxprune.coreset.shipped_kernels`: same numbers, no tracing or lowering)."""
    if kernel == ("map", "fast") and on_cpu():
        shipped = shipped_kernels.kernel(shape[1], shape[2])
        if shipped is not None:
            return shipped
    return _KERNEL_JITS[kernel]


def _kernel(peel_compile: str, peel_batch: str) -> tuple[str, str]:
    """``(batch, compile)`` of the peeling kernel, "auto" resolved for the backend."""
    if peel_compile not in PEEL_COMPILES:
        raise ValueError(f"peel_compile must be one of {PEEL_COMPILES}, got {peel_compile!r}")
    if peel_batch not in PEEL_BATCHES:
        raise ValueError(f"peel_batch must be one of {PEEL_BATCHES}, got {peel_batch!r}")
    cpu = on_cpu()
    if peel_compile == "auto":
        peel_compile = "fast" if cpu else "optimised"
    if peel_batch == "auto":
        peel_batch = "map" if cpu else "vmap"
    return peel_batch, peel_compile


_COMPILED: set = set()  # (kernel, shape) pairs compiled (or being compiled) in this process


def _batched_sensitivities(
    points: np.ndarray | jax.Array, mask: np.ndarray | jax.Array, peel_compile: str, peel_batch: str
):
    kernel = _kernel(peel_compile, peel_batch)
    _COMPILED.add((kernel, points.shape))
    return _kernel_fn(kernel, points.shape)(points, mask)


def _compile_in_background(shape: tuple, peel_compile: str, peel_batch: str):
    """Start compiling the peeling kernel for point sets of ``shape`` (batch, n, d) on a
    thread (by a call on empty sets, which the kernel skips), so that the compile overlaps
    the projections; returns the thread to join before the real call, or None when the
    kernel is already there.  A wrong guess of the shape only costs that compile."""
    kernel = _kernel(peel_compile, peel_batch)
    if (kernel, shape) in _COMPILED:
        return None
    _COMPILED.add((kernel, shape))

    def compile_():
        try:
            with jax.enable_x64(True):
                jax.block_until_ready(
                    _kernel_fn(kernel, shape)(np.zeros(shape), np.zeros(shape[:2], bool))
                )
        except Exception:  # the real call compiles (and reports) for itself
            _COMPILED.discard((kernel, shape))

    thread = threading.Thread(target=compile_, name="jaxprune-peel-compile", daemon=True)
    thread.start()
    return thread


def _bucket(n: int, floor: int = 64) -> int:
    return max(floor, 1 << max(0, int(n) - 1).bit_length())


def _peel_plan(shapes, peel_batch: str) -> tuple[list[list[int]], tuple[int, int, int]]:
    """How point sets of these ``(n, d)`` shapes are peeled: the chunks of set indices run side
    by side (``map`` on the CPU: one per core, balanced by points; ``vmap``: one chunk), and
    the padded ``(batch, points, dims)`` array every chunk fills, so one program serves all."""
    workers = cpu_workers() if peel_batch == "map" else 1
    chunks = balanced_chunks([n for n, _ in shapes], workers)
    shape = (
        _bucket(max(len(c) for c in chunks), floor=1),
        _bucket(max(n for n, _ in shapes)),
        max(d for _, d in shapes),
    )
    return chunks, shape


def _expected_peel_shape(views, projection, projection_dim, peel_batch):
    """The padded shape of :func:`_peel_plan` for the sets that will surely be peeled, known
    before projecting: a set of ``n`` points in ``d`` dims has affine rank
    ``r ≤ min(d, n − 1)`` and is peeled when ``n ≥ 2 max(r, 1)²`` (a lower rank may add sets,
    and the guess is then wrong)."""
    shapes = []
    for v in views:
        n, width = v.points.shape
        d = projection_dim if projection not in (None, "none") and width > projection_dim else width
        if d <= MAX_GEOMETRY_DIM and n >= 2 * max(min(d, n - 1), 1) ** 2:
            shapes.append((n, d))
    return _peel_plan(shapes, peel_batch)[1] if shapes else None


def peel_sensitivities(
    projected: Sequence[np.ndarray | jax.Array],
    peel_compile: str = "auto",
    peel_batch: str = "auto",
) -> list[jax.Array]:
    """Algorithm 2 sensitivities of several point sets in one compiled kernel.

    Compilation, not the peeling itself, dominates on small networks, so every set is padded
    to one power-of-two bucket (masked points get sensitivity 0 and do not take part) and the
    batch is padded to a power of two with empty sets: networks of similar size share one
    compiled kernel.  On the CPU the sets go in chunks, one per core, that the same kernel
    peels side by side (:func:`jaxprune.geometry.split_run`).
    """
    batch, _ = _kernel(peel_compile, peel_batch)  # validates both
    if not projected:
        return []
    chunks, (b_pad, n_pad, dim) = _peel_plan([p.shape for p in projected], batch)

    def peel(chunk):
        pts = np.zeros((b_pad, n_pad, dim), np.float64)
        mask = np.zeros((b_pad, n_pad), bool)
        for b, n in enumerate(chunk):
            p = projected[n]
            pts[b, : p.shape[0], : p.shape[1]] = np.asarray(p)
            mask[b, : p.shape[0]] = True
        values = np.asarray(_batched_sensitivities(pts, mask, peel_compile, peel_batch))
        return [values[b, : projected[n].shape[0]] for b, n in enumerate(chunk)]

    with jax.enable_x64(True):  # rank, MVEE and Carathéodory run in float64
        values = split_run(peel, chunks)
    return [jax.device_put(v.astype(np.float32)) for v in values]


MAX_GEOMETRY_DIM = 64  # the peeling geometry holds d×d matrices per point set; beyond this, project


def _no_peel_sensitivity(points: np.ndarray) -> np.ndarray | None:
    """Exact Algorithm 2 output when not even one peel is possible (``n < 2 rank²``).

    Then every point gets ``2·rank^1.5 / 1``; this is the case for high-dimensional points
    (e.g. ``projection="none"`` on a 785-dim layer), where the geometry is never needed.
    """
    n = points.shape[0]
    centred = points - points.mean(axis=0, keepdims=True)
    sv = np.linalg.svd(centred, compute_uv=False) if n > 1 else np.zeros(1)
    rank = int(np.sum(sv > 1e-5 * max(sv[0], 1e-300)))  # weights are float32: ~1e-7 noise
    if n >= 2 * max(rank, 1) ** 2:
        return None
    return np.full(n, 2.0 * max(rank, 1) ** 1.5)


def score(
    key: jax.Array,
    views: list[LayerView],
    projection: str = "pca",
    projection_dim: int = 10,
    activation: str = "relu",
    peel_compile: str = "auto",
    peel_batch: str = "auto",
) -> list[jax.Array]:
    """σ for every group at once.

    A first prune is compile-bound, so the programs are few and shared: one PCA program for
    all groups, one peeling kernel per (batch, points, dims) bucket, compiled on a thread
    while the PCA runs, and one weighting program per row bucket.  Host arrays go to them as
    NumPy (cast on the host, no per-shape conversion programs), and per-group keys are drawn
    only for the random ``jl`` projection."""
    kappa = activation_constant(activation)
    expected = _expected_peel_shape(
        views, projection, projection_dim, _kernel(peel_compile, peel_batch)[0]
    )
    compiling = expected and _compile_in_background(expected, peel_compile, peel_batch)
    keys = [None] * len(views)
    if projection == "jl":
        keys = split_keys(key, len(views))
    with jax.enable_x64(True):  # the geometry (rank, MVEE, Carathéodory) runs in float64
        projected = project_all(
            keys, [np.asarray(v.points, np.float64) for v in views], projection, projection_dim
        )
    if compiling:
        compiling.join()
    direct = [_no_peel_sensitivity(p) for p in projected]
    peel = [n for n, d in enumerate(direct) if d is None]
    for n in peel:
        if projected[n].shape[1] > MAX_GEOMETRY_DIM:
            raise ValueError(
                f"coreset: {projected[n].shape[1]}-dimensional points can be peeled "
                f"only up to {MAX_GEOMETRY_DIM} dims; use projection='pca' or 'jl' "
                "with a small projection_dim (2-10)"
            )
    peeled = peel_sensitivities([projected[n] for n in peel], peel_compile, peel_batch)
    s_all: list[np.ndarray | jax.Array | None] = [
        None if d is None else np.asarray(d, np.float32) for d in direct
    ]
    for n, s in zip(peel, peeled):
        s_all[n] = s
    return [weighted_sensitivity(s, v.outgoing, kappa) for s, v in zip(s_all, views)]


# Default selection: top-k of σ. The paper's Alg. 2 sampling (sampling="sparsity_first", with
# re-weights count·t/(m σ)) is kept as an option and reported beside it in the experiments:
# on LeNet-300-100 and LeNet-5 (real MNIST) its re-weighted networks were worse than top-k both
# right after pruning and after fine-tuning (README, Results).
PROJECTIONS = ("pca", "jl", "none")


@register
@dataclasses.dataclass(frozen=True)
class Coreset(Method):
    """Coreset sensitivities σ (module docstring). ``projection``: ``"pca"``, ``"jl"`` or
    ``"none"``; ``projection_dim``: the ``k`` of the projection; ``activation``: the φ whose
    constant ``κ_φ`` scales σ; ``peel_compile`` / ``peel_batch``: the peeling kernel (every
    choice gives the same numbers; ``report["method_info"]["peel_kernel"]`` says which ran).

    >>> Coreset(projection_dim=5).projection_dim
    5
    """

    projection: str = "pca"
    projection_dim: int = 10
    activation: str = "relu"
    peel_compile: str = "auto"
    peel_batch: str = "auto"
    name = "coreset"
    description = "Löwner ellipsoid + Carathéodory peeling sensitivities"

    def __post_init__(self):
        if self.projection not in (*PROJECTIONS, None):
            raise ValueError(f"unknown projection {self.projection!r}; use 'pca', 'jl' or 'none'")
        check_positive_int(self.projection_dim, "projection_dim")
        activation_constant(self.activation)
        _kernel(self.peel_compile, self.peel_batch)

    def score(self, key, views) -> list:
        return score(
            key,
            views,
            self.projection,
            self.projection_dim,
            self.activation,
            self.peel_compile,
            self.peel_batch,
        )

    def info(self, views) -> dict:
        """``{"peel_kernel": ["batch/compile" per group]}``: the peeling kernel of this call."""
        return {"peel_kernel": ["/".join(_kernel(self.peel_compile, self.peel_batch))] * len(views)}
