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

import jax
import jax.numpy as jnp
import numpy as np

from jaxprune import coreset, geometry
from jaxprune.geometry._compile import CHEAP_CPU_OPTIONS, cheap_jit
from jaxprune.methods._base import LayerView, Method, register, split_keys

ACTIVATION_CONSTANTS = {"relu": 1.0, "leaky_relu": 1.0, "gelu": 1.1289, "sigmoid": 0.25}


def activation_constant(activation: str) -> float:
    if activation not in ACTIVATION_CONSTANTS:
        raise ValueError(f"unknown activation {activation!r}; supported: {sorted(ACTIVATION_CONSTANTS)}")
    return ACTIVATION_CONSTANTS[activation]


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
def _weighted_tile(s: jax.Array, outgoing: jax.Array) -> jax.Array:
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
            part = outgoing[:, start:start + WEIGHT_TILE]
            tile = np.zeros((padded, WEIGHT_TILE), np.float32)
            tile[:rows, :part.shape[1]] = part
            best = np.maximum(best, np.asarray(_weighted_tile(s_pad, tile)))
    return jax.device_put((kappa * best[:rows]).astype(np.float32))


def _vmapped_sensitivities(points: jax.Array, mask: jax.Array) -> jax.Array:
    return jax.vmap(coreset.sensitivities)(points, mask)


def _mapped_sensitivities(points: jax.Array, mask: jax.Array) -> jax.Array:
    return jax.lax.map(lambda pm: coreset.sensitivities(*pm), (points, mask))


# The peeling graph (Algorithm 1 inside Algorithm 2's while-loop: MVEE, Wolfe's MNP,
# Carathéodory) is large, and on the CPU its compile dominates `prune`'s first call. Two knobs
# shape the kernel; every choice gives the same numbers (tests/test_coreset.py):
#   peel_batch:   "vmap" runs the point sets as one batched while-loop (every step does the work
#                 of every set until the slowest finishes; good on accelerators); "map" runs
#                 them one after the other with `lax.map` (no batched loops: on the CPU it
#                 both compiles and runs faster).
#   peel_compile: "fast" compiles at XLA's backend optimisation level 0 (roughly half the
#                 compile, slower calls); "optimised" is XLA's default.
# "auto" picks map + fast on the CPU, where one-off prunes are compile-bound, and vmap +
# optimised elsewhere (`experiments/bench_prune.py --peel-kernels` measures them).
PEEL_COMPILES = ("auto", "fast", "optimised")
PEEL_BATCHES = ("auto", "map", "vmap")
_KERNELS = {
    (batch, compile_): jax.jit(fn, compiler_options=(
        CHEAP_CPU_OPTIONS if compile_ == "fast" else None))
    for batch, fn in (("map", _mapped_sensitivities), ("vmap", _vmapped_sensitivities))
    for compile_ in ("fast", "optimised")}


def _batched_sensitivities(points: jax.Array, mask: jax.Array, peel_compile: str,
                           peel_batch: str):
    on_cpu = jax.default_backend() == "cpu"
    if peel_compile == "auto":
        peel_compile = "fast" if on_cpu else "optimised"
    if peel_batch == "auto":
        peel_batch = "map" if on_cpu else "vmap"
    return _KERNELS[peel_batch, peel_compile](points, mask)


def _bucket(n: int, floor: int = 64) -> int:
    return max(floor, 1 << max(0, int(n) - 1).bit_length())


def peel_sensitivities(projected: list[jax.Array], peel_compile: str = "auto",
                       peel_batch: str = "auto") -> list[jax.Array]:
    """Algorithm 2 sensitivities of several point sets in ONE jitted call.

    Compilation, not the peeling itself, dominates on small networks, so every set is padded
    to one power-of-two bucket (masked points get sensitivity 0 and do not take part) and the
    batch is padded to a power of two with empty sets: networks of similar size share one
    compiled kernel.
    """
    if peel_compile not in PEEL_COMPILES:
        raise ValueError(f"peel_compile must be one of {PEEL_COMPILES}, got {peel_compile!r}")
    if peel_batch not in PEEL_BATCHES:
        raise ValueError(f"peel_batch must be one of {PEEL_BATCHES}, got {peel_batch!r}")
    if not projected:
        return []
    dim = max(p.shape[1] for p in projected)
    n_pad = _bucket(max(p.shape[0] for p in projected))
    b_pad = _bucket(len(projected), floor=1)
    pts = np.zeros((b_pad, n_pad, dim), np.float64)
    mask = np.zeros((b_pad, n_pad), bool)
    for b, p in enumerate(projected):
        pts[b, : p.shape[0], : p.shape[1]] = np.asarray(p)
        mask[b, : p.shape[0]] = True
    with jax.enable_x64(True):  # rank, MVEE and Carathéodory run in float64
        values = np.asarray(_batched_sensitivities(pts, mask, peel_compile, peel_batch))
    return [jax.device_put(values[b, : p.shape[0]].astype(np.float32))
            for b, p in enumerate(projected)]


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


def score(key: jax.Array, views: list[LayerView], *, projection: str = "pca",
               projection_dim: int = 10, activation: str = "relu",
               peel_compile: str = "auto", peel_batch: str = "auto") -> list[jax.Array]:
    """σ for every group at once (layers of equal projected shape are batched).

    Host arrays go to the jitted kernels as NumPy (cast on the host, no per-shape conversion
    kernels) and per-group keys are drawn only for the random ``jl`` projection: on a deep
    network every distinct array shape would otherwise cost one small XLA compile on the
    first call."""
    kappa = activation_constant(activation)
    keys = [None] * len(views)
    if projection == "jl":
        keys = split_keys(key, len(views))
    with jax.enable_x64(True):  # the geometry (rank, MVEE, Carathéodory) runs in float64
        projected = [np.asarray(project(k, np.asarray(v.points, np.float64), projection,
                                        projection_dim)) for k, v in zip(keys, views)]
    direct = [_no_peel_sensitivity(p) for p in projected]
    peel = [n for n, d in enumerate(direct) if d is None]
    for n in peel:
        if projected[n].shape[1] > MAX_GEOMETRY_DIM:
            raise ValueError(f"coreset: {projected[n].shape[1]}-dimensional points can be peeled "
                             f"only up to {MAX_GEOMETRY_DIM} dims; use projection='pca' or 'jl' "
                             "with a small projection_dim (2-10)")
    peeled = peel_sensitivities([projected[n] for n in peel], peel_compile, peel_batch)
    s_all = [None if d is None else np.asarray(d, np.float32) for d in direct]
    for n, s in zip(peel, peeled):
        s_all[n] = s
    return [weighted_sensitivity(s, v.outgoing, kappa) for s, v in zip(s_all, views)]


# Default selection: top-k of σ. The paper's Alg. 2 sampling (sampling="sparsity_first", with
# re-weights count·t/(m σ)) is kept as an option and reported beside it in the experiments:
# on LeNet-300-100 and LeNet-5 (real MNIST) its re-weighted networks were worse than top-k both
# right after pruning and after fine-tuning (README, Results).
METHOD = register(Method("coreset", "channels", score, sampling="deterministic",
                         description="Löwner ellipsoid + Carathéodory peeling sensitivities"))
