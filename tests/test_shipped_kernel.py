"""The peeling kernel shipped as ``jax.export`` modules (jaxprune.coreset.shipped_kernels) is the
traced kernel: written from the current source, byte-identical to a fresh export when the jax
version matches, and bit-for-bit equal to the jitted ``peel_map`` on awkward point sets."""

from __future__ import annotations

import json
import threading

import jax
import numpy as np
import pytest

from jaxprune.coreset import batched
from jaxprune.coreset import shipped_kernels as sk
from jaxprune.geometry import CHEAP_CPU_OPTIONS

REGENERATE = 'python -c "from jaxprune.coreset import shipped_kernels; shipped_kernels.write()"'
SAME_JAX = sk.is_current()


def _manifest() -> dict:
    return json.loads((sk.DIRECTORY / "manifest.json").read_text())


def test_shipped_modules_are_written_from_the_current_source():
    assert _manifest()["source_sha256"] == sk.source_hash(), (
        f"the geometry changed since the shipped peeling kernels were written; run {REGENERATE}"
    )


def test_every_bucket_is_shipped():
    names = {p.name for p in sk.DIRECTORY.iterdir()}
    for d in sk.DIMS:
        for n in sk.POINT_BUCKETS:
            assert sk.file_name(n, d) in names
    assert sorted(_manifest()["kernels"]) == sorted(
        sk.file_name(n, d) for d in sk.DIMS for n in sk.POINT_BUCKETS
    )


@pytest.mark.skipif(not SAME_JAX, reason="shipped for another jax version (then unused)")
@pytest.mark.parametrize("n", [64, 1024])
def test_a_fresh_export_gives_the_shipped_bytes(n):
    assert sk.serialized(n, 10) == sk.shipped_bytes(n, 10), (
        f"the shipped kernel for n={n} is stale; run {REGENERATE}"
    )


def test_only_shipped_shapes_have_a_kernel():
    assert sk.kernel(100, 10) is None
    assert sk.kernel(64, 3) is None
    assert (sk.kernel(512, 10) is not None) == SAME_JAX


def test_a_stale_manifest_turns_the_shipped_kernels_off(tmp_path):
    for name in ("manifest.json", sk.file_name(64, 10)):
        (tmp_path / name).write_bytes((sk.DIRECTORY / name).read_bytes())
    manifest = tmp_path / "manifest.json"
    manifest.write_text(manifest.read_text().replace(sk.source_hash(), "0" * 64))
    assert sk.kernel(64, 10, tmp_path) is None


def _sets(rng, b, n, d):
    """Point sets with padding, duplicates, a set of one point, and an empty set."""
    pts = rng.normal(size=(b, n, d)) * rng.uniform(0.1, 10.0, size=(b, 1, d))
    mask = np.zeros((b, n), bool)
    sizes = [n, n // 2, 1, 0] + list(rng.integers(2, n, size=max(b - 4, 0)))
    for i, size in enumerate(sizes[:b]):
        mask[i, :size] = True
    pts[1, 1 : n // 4] = pts[1, 0]  # duplicates of one point
    pts[~mask] = 0.0
    return pts, mask


@pytest.mark.skipif(not SAME_JAX, reason="shipped for another jax version (then unused)")
@pytest.mark.parametrize("n", [64, 128])
def test_the_shipped_kernel_computes_the_traced_kernels_numbers(n):
    pts, mask = _sets(np.random.default_rng(n), 5, n, 10)
    traced = jax.jit(batched.peel_map, compiler_options=CHEAP_CPU_OPTIONS)
    with jax.enable_x64(True):
        want = np.asarray(traced(pts, mask))
        got = np.asarray(sk.kernel(n, 10)(pts, mask))
    assert want.dtype == got.dtype == np.float64
    np.testing.assert_array_equal(got, want)
    assert (got[~mask] == 0).all() and (got[3] == 0).all()
    assert (got[mask] > 0).all()


@pytest.mark.skipif(not SAME_JAX, reason="shipped for another jax version (then unused)")
def test_threads_asking_at_once_get_one_jitted_kernel():
    sk._load.cache_clear()
    got = []
    threads = [threading.Thread(target=lambda: got.append(sk.kernel(256, 10))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 4 and len({id(k) for k in got}) == 1
