"""Benchmark: the floor of coreset's steady-state prune on ResNet-50, the exact PCA.

Issue 28 asks for a second coreset prune of ResNet-50 in at most 0.5 s on this CPU without
changing what the geometry computes. Before peeling, coreset projects each group's points (a
layer's filters, ``n`` points in ``d = C_in·k·k`` dims) onto their top 10 principal
directions, exactly, in float64 (:func:`jaxprune.geometry.pca_project_many`: the smaller Gram
matrix and its full ``eigh``). This script times that projection alone, in steady state (every
program compiled first, best of ``--repeats``), on the point sets a ResNet-50 prune gives
(random weights, ratio 0.62, captured by a :class:`jaxprune.methods.Coreset` subclass that
records its views), and splits it:

- ``pca_project_many`` as ``prune`` runs it (chunks side by side on the cores);
- the same in one program, compiled with the cheap options and with XLA's defaults;
- the centred Gram products alone, and the eigendecompositions alone (XLA's, and NumPy's
  LAPACK ``eigh`` on the same matrices);
- the peeling (:func:`jaxprune.methods.coreset.peel_sensitivities`) of the projected sets.

    python experiments/bench_pca.py --out experiments/results/bench/pca.md
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib
import os
import pathlib
import sys
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
if not __package__:
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import jaxprune  # noqa: E402
from experiments.common.bench import random_variables  # noqa: E402
from experiments.common.protocol import cpu_name  # noqa: E402
from jaxprune import geometry, models  # noqa: E402
from jaxprune.geometry import subspace  # noqa: E402

# the module (jaxprune.methods.coreset is also the name of its method class)
coreset_lib = importlib.import_module("jaxprune.methods.coreset")

RATIO = 0.62


@dataclasses.dataclass(frozen=True)
class _Recording(coreset_lib.Coreset):
    """Coreset that keeps the point sets it was given (``points``, a shared list)."""

    points: list = dataclasses.field(default_factory=list, compare=False, hash=False)

    def score(self, key, views) -> list:
        self.points[:] = [np.asarray(v.points, np.float64) for v in views]
        return super().score(key, views)


def point_sets(seed: int) -> list[np.ndarray]:
    """The filter point sets a coreset prune of ResNet-50 projects (random weights)."""
    model = models.get_model("resnet50")
    shape = tuple(models.default_input_shape("resnet50"))
    variables = random_variables(model, shape, seed)
    method = _Recording()
    jaxprune.prune(variables, seed, RATIO, method=method, model=model, input_shape=shape)
    return method.points


def best(fn, repeats: int) -> float:
    """Best wall time of ``repeats`` calls of ``fn`` after one untimed call (compiles)."""
    jax.block_until_ready(fn())
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return min(times)


def _centred(p):
    return p - jnp.mean(p, axis=0)


def _gram(p):
    """The smaller Gram matrix of the centred set, as ``_pca_core`` forms it."""
    x = _centred(p)
    return x.T @ x if p.shape[0] >= p.shape[1] else x @ x.T


def measure(points: list[np.ndarray], k: int, repeats: int) -> list[tuple[str, float]]:
    by_shape: dict = {}
    for p in points:
        by_shape.setdefault(p.shape, []).append(p)
    stacks = [np.stack(s) for s in by_shape.values()]
    optimised = jax.jit(subspace._pca_many.__wrapped__, static_argnames=("k",))
    grams = jax.jit(lambda s: [jax.lax.map(_gram, x) for x in s])
    eigh = jax.jit(lambda g: [jax.lax.map(jnp.linalg.eigh, x) for x in g])
    rows = []
    with jax.enable_x64(True):
        rows.append(("pca_project_many, as prune runs it (chunks side by side)",
                     best(lambda: geometry.pca_project_many(points, k), repeats)))
        rows.append(("one program, cheap compile options",
                     best(lambda: subspace._pca_many(stacks, k), repeats)))
        rows.append(("one program, XLA's default options",
                     best(lambda: optimised(stacks, k), repeats)))
        rows.append(("the centred Gram products alone", best(lambda: grams(stacks), repeats)))
        held = [np.asarray(g) for g in grams(stacks)]
        rows.append(("their eigh alone (XLA)", best(lambda: eigh(held), repeats)))
        rows.append(("their eigh alone (NumPy's LAPACK)",
                     best(lambda: [np.linalg.eigh(g) for g in held], repeats)))
        projected = geometry.pca_project_many(points, k)
    wide = [q for p, q in zip(points, projected) if p.shape[1] > k]
    rows.append(("the peeling of the projected sets",
                 best(lambda: coreset_lib.peel_sensitivities(wide), repeats)))
    return rows


def main(argv=None) -> str:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--k", type=int, default=10, help="the projection dimension (coreset's)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", default=None, help="Markdown file to write the table to")
    args = p.parse_args(argv)
    points = point_sets(args.seed)
    shapes = sorted({q.shape for q in points})
    rows = measure(points, args.k, args.repeats)
    load = os.getloadavg()[0]
    lines = [
        f"ResNet-50 (random weights, ratio {RATIO}): {len(points)} point sets of "
        f"{len(shapes)} shapes, from {shapes[0]} to {shapes[-1]} (points × dims); PCA to "
        f"{args.k} dims in float64. Best of {args.repeats} steady-state calls; {cpu_name()}, "
        f"{os.cpu_count()} cores, jax {jax.__version__}, load average {load:.2f}.",
        "",
        "| step | seconds |",
        "|---|---:|",
    ]
    lines += [f"| {name} | {seconds:.3f} |" for name, seconds in rows]
    text = "\n".join(lines)
    if args.out:
        pathlib.Path(args.out).write_text(text + "\n")
    print(text)
    return text


if __name__ == "__main__":
    main()
