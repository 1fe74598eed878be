"""Convex geometry on point sets (paper §2.1–2.2): MVEE (Löwner ellipsoid), Carathéodory
sets, convex representation of a point, affine rank/subspace, PCA and JL projections.
Pure array functions, no knowledge of networks.

Precision: every entry point computes in float64 under a local ``jax.enable_x64(True)`` and
casts floating outputs back to the caller's canonical dtype (float32 input → float32 output;
float64 output only when the caller has x64 on).  This works eagerly and under ``jax.vmap``.
Under an outer ``jax.jit`` the program is lowered after the local context has ended, so
there float64 needs the *caller* to run the jit inside ``with jax.enable_x64(True):``;
otherwise the same code runs in float32 (with a one-time warning).
"""

from jaxprune.geometry._compile import CHEAP_CPU_OPTIONS, OPTIMISED_CPU_OPTIONS, cheap_jit, on_cpu
from jaxprune.geometry._parallel import balanced_chunks, cpu_workers, split_run
from jaxprune.geometry._precision import cast_floats, f64, out_dtype, precision, x64
from jaxprune.geometry.caratheodory import caratheodory, caratheodory_booster, caratheodory_core
from jaxprune.geometry.hull import convex_combination, min_norm_point_core
from jaxprune.geometry.mvee import MVEEResult, ellipsoid_of, mvee, mvee_frame, mvee_masked
from jaxprune.geometry.subspace import (
    DEFAULT_RTOL,
    Frame,
    affine_rank,
    affine_subspace,
    frame_of,
    jl_project,
    masked_frame,
    pca_project,
    pca_project_many,
)

__all__ = [
    "MVEEResult",
    "mvee",
    "mvee_masked",
    "caratheodory",
    "caratheodory_booster",
    "convex_combination",
    "affine_rank",
    "affine_subspace",
    "pca_project",
    "pca_project_many",
    "jl_project",
    "Frame",
    "masked_frame",
    # jit-friendly cores the coreset layer composes (masked, fixed shapes)
    "caratheodory_core",
    "min_norm_point_core",
    "ellipsoid_of",
    "mvee_frame",
    "frame_of",
    "DEFAULT_RTOL",
    # precision helpers: float64 inside, the caller's dtype outside
    "x64",
    "f64",
    "out_dtype",
    "precision",
    "cast_floats",
    # jit with cheap-to-compile XLA:CPU options, for one-off geometry programs
    "cheap_jit",
    "CHEAP_CPU_OPTIONS",
    "on_cpu",
    "OPTIMISED_CPU_OPTIONS",
    # independent programs side by side on the CPU cores
    "split_run",
    "balanced_chunks",
    "cpu_workers",
]
