"""Smoke test: the steady-state PCA benchmark's measurements run on small point sets."""
import numpy as np
import pytest

pytestmark = pytest.mark.slow   # compiles the PCA and peeling programs several ways


def test_bench_pca_measures_every_step():
    from experiments import bench_pca
    rng = np.random.default_rng(0)
    points = [rng.normal(size=s) for s in ((12, 20), (12, 20), (30, 8), (16, 40))]
    rows = bench_pca.measure(points, 4, repeats=1)
    assert [name for name, _ in rows][0].startswith("pca_project_many")
    assert len(rows) == 7 and all(seconds > 0 for _, seconds in rows)
