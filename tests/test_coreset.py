"""Tests for jaxprune.coreset: ℓ∞-coreset (Alg. 1 / Lemma 2.5), peeling sensitivities (Alg. 2)
and sensitivity sampling.  Fixed shapes (one compile per function), float64 via enable_x64."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import _clouds
from jaxprune import coreset as C

N, D = 160, 3
KINDS = ("gauss", "student", "cluster", "dup", "plane")
FAST = settings(max_examples=6, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(autouse=True)
def _x64():
    with jax.enable_x64(True):
        yield


def cloud(kind, seed, n=N, d=D):
    return _clouds.cloud(kind, seed, n, d, dup_every=8)


def np_rank(P, rtol=1e-7):
    if len(P) == 0:
        return 0
    s = np.linalg.svd(P - P.mean(0), compute_uv=False)
    return int(np.sum(s > rtol * max(s[0], 1e-300))) if s[0] > 1e-9 * (1 + np.abs(P).max()) else 0


def lemma_ratios(P, S, rng, trials=300):
    """max_P ‖(q−v)X‖₁ / max_S ‖(q−v)X‖₁ over random X (d×j) and v (Lemma 2.5)."""
    d = P.shape[1]
    out = []
    for _ in range(trials):
        j = int(rng.integers(1, d + 1))
        X = rng.standard_normal((d, j)) * rng.choice([1e-2, 1.0, 1e2])
        v = P[rng.integers(len(P))] + rng.standard_normal(d) * rng.choice([0.0, 0.1, 3.0, 30.0])
        f = np.abs((P - v) @ X).sum(1)
        out.append(f.max() / f[S].max())
    return np.array(out)


# ----------------------------------------------------------------------------- Algorithm 1

@FAST
@given(kind=st.sampled_from(KINDS), seed=st.integers(0, 10_000))
def test_linf_coreset_lemma_2_5(kind, seed):
    P = cloud(kind, seed)
    info = C.linf_coreset(P, return_info=True)
    S, r = np.asarray(info.mask), int(info.rank)
    assert r == np_rank(P)
    assert 1 <= S.sum() <= 2 * r * (r + 1)
    ratios = lemma_ratios(P, S, np.random.default_rng(seed))
    assert ratios.min() >= 1 - 1e-12
    assert ratios.max() <= 2 * r ** 1.5
    # every point lies in the enlarged ellipsoid that the bound is built from
    assert float(info.r_out) <= 1.001 * (r + 1) and float(info.r_in) >= r - 1e-9


@pytest.mark.parametrize("kind", KINDS)
def test_vertices_are_convex_combinations_of_the_coreset(kind):
    P = cloud(kind, 3)
    info = C.linf_coreset(P, return_info=True)
    r = int(info.rank)
    valid = np.asarray(info.vertex_valid)
    assert valid.sum() == 2 * r
    W = np.asarray(info.vertex_weights)[valid]
    V = np.asarray(info.vertices)[valid]
    assert W.min() >= 0
    np.testing.assert_allclose(W.sum(1), 1, atol=1e-12)
    assert np.all(np.count_nonzero(W, axis=1) <= r + 1)                    # Carathéodory sets
    assert np.all(np.linalg.norm(W @ P - V, axis=1) < 1e-6)               # inside the hull
    assert np.all(np.asarray(info.residual)[valid] < 1e-6)
    S = np.asarray(info.mask)
    assert np.array_equal(S, np.any(W > 0, axis=0))                        # S = union
    # the 2r vertices are symmetric about the centre and span the affine hull
    c = V[:r].mean(0) / 2 + V[r:].mean(0) / 2
    assert np.linalg.matrix_rank(V - c, tol=1e-9) == r


def test_linf_coreset_degenerate_inputs():
    P = cloud("gauss", 0)
    with pytest.raises(ValueError, match="NaN or inf"):
        C.linf_coreset(np.where(np.arange(N)[:, None] == 3, np.nan, P))
    same = np.ones((N, D))
    S = np.asarray(C.linf_coreset(same))
    assert S.sum() == 1                                                    # rank 0
    line = np.outer(np.linspace(-1, 2, N), [1.0, 2.0, -1.0])
    info = C.linf_coreset(line, return_info=True)
    S = np.asarray(info.mask)
    assert int(info.rank) == 1 and S.sum() <= 4
    assert S[0] and S[-1]                                                  # both endpoints


@pytest.mark.slow
def test_linf_coreset_masked_jit_vmap():
    P = cloud("student", 9)
    masks = np.stack([np.ones(N, bool), np.arange(N) % 2 == 0, np.arange(N) < 5])
    out = jax.jit(jax.vmap(lambda m: C.linf_coreset_masked(P, m)))(jnp.asarray(masks))
    for b in range(3):
        single = np.asarray(C.linf_coreset(P, masks[b]))
        assert np.array_equal(np.asarray(out[b]), single)
        assert not np.any(single & ~masks[b])


# ----------------------------------------------------------------------------- Algorithm 2

def _check_peeling(P, s, layer):
    """Recompute Algorithm 2's bookkeeping from the layers with NumPy."""
    s, layer = np.asarray(s), np.asarray(layer)
    L = layer.max()
    for i in range(1, L + 1):
        Q = layer >= i
        r = max(np_rank(P[Q]), 1)
        np.testing.assert_allclose(s[layer == i], 2 * r ** 1.5 / i, rtol=1e-12)
        if i < L:
            assert Q.sum() >= 2 * r * r                    # loop condition held for S_i
            distinct = len(np.unique(P[layer == i], axis=0))
            assert distinct <= 2 * r * (r + 1)               # |S_i| ≤ 2r(r+1) distinct points
    rest = layer == L
    r = max(np_rank(P[rest]), 1)
    assert rest.sum() < 2 * r * r or len(np.unique(P[rest], axis=0)) <= 2 * r * (r + 1)
    # exact duplicates share layer and value
    _, inv = np.unique(P, axis=0, return_inverse=True)
    for g in np.unique(inv):
        assert len(set(layer[inv.ravel() == g].tolist())) == 1


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_sensitivities_follow_algorithm_2(kind):
    P = cloud(kind, 21)
    s, layer = C.sensitivities(P, return_layers=True)
    assert np.all(np.asarray(s) > 0) and np.all(np.asarray(layer) >= 1)
    _check_peeling(P, s, layer)
    s2, layer2 = C.sensitivities(P, return_layers=True)                   # deterministic
    assert np.array_equal(np.asarray(s), np.asarray(s2))
    assert np.array_equal(np.asarray(layer), np.asarray(peel := C.peeling_layers(P)))
    del peel


def test_sensitivities_outer_points_get_the_top_value():
    rng = np.random.default_rng(0)
    ang = np.linspace(0, 2 * np.pi, 8, endpoint=False)
    ring = 10 * np.stack([np.cos(ang), np.sin(ang), np.zeros(8)], 1) + [0, 0, 1.0]
    cap = np.array([[0, 0, 6.0], [0, 0, -4.0]])
    inner = rng.standard_normal((N - 10, 3)) * [1, 1, 0.5]
    inner[0] = inner[1:].mean(0)                                           # centre point
    P = np.concatenate([ring, cap, inner])
    s, layer = (np.asarray(a) for a in C.sensitivities(P, return_layers=True))
    outer = np.arange(N) < 10
    assert np.all(layer[outer] <= 2) and np.all(layer[~outer] >= 2)
    assert np.mean(layer[~outer]) > 4
    top = layer == 1
    assert np.all(outer[top]) and np.all(s[top] == s.max())
    scipy_spatial = pytest.importorskip("scipy.spatial")
    hull_vertices = set(scipy_spatial.ConvexHull(P).vertices.tolist())
    assert set(np.flatnonzero(top).tolist()) <= hull_vertices
    assert s[10] == s[~outer].min()


@pytest.mark.slow
def test_sensitivities_mask_padding_jit_and_vmap():
    P = cloud("gauss", 5)
    rng = np.random.default_rng(5)
    real = np.zeros(N, bool)
    real[rng.permutation(N)[:120]] = True                                  # padding in between
    pad_a = np.where(real[:, None], P, 1e6)                                 # junk padding
    pad_b = np.where(real[:, None], P, rng.standard_normal((N, D)))         # other junk
    s_a, l_a = C.sensitivities(pad_a, mask=real, return_layers=True)
    s_b = C.sensitivities(pad_b, mask=real)
    assert np.all(np.asarray(s_a)[~real] == 0) and np.all(np.asarray(l_a)[~real] == 0)
    np.testing.assert_array_equal(np.asarray(s_a), np.asarray(s_b))
    _check_peeling(P[real], np.asarray(s_a)[real], np.asarray(l_a)[real])
    batch = jnp.stack([jnp.asarray(cloud(k, 5)) for k in ("gauss", "student", "plane")])
    sv = jax.jit(jax.vmap(C.sensitivities))(batch)
    for b in range(3):
        np.testing.assert_array_equal(np.asarray(sv[b]), np.asarray(C.sensitivities(batch[b])))


def test_sensitivities_duplicates_peel_together():
    rng = np.random.default_rng(4)
    P = rng.standard_normal((N, D))
    P[: N // 2] = 0.0                                     # e.g. dead neurons: identical rows
    s, layer = (np.asarray(a) for a in C.sensitivities(P, return_layers=True))
    assert len(set(layer[: N // 2].tolist())) == 1 and len(set(s[: N // 2].tolist())) == 1
    assert layer.max() < 40                               # not one round per duplicate
    _check_peeling(P, s, layer)


def test_sensitivities_rejects_nan():
    with pytest.raises(ValueError, match="NaN or inf"):
        C.sensitivities(np.full((N, D), np.inf))


# ----------------------------------------------------------------------------- sampling

S_VALUES = np.random.default_rng(1).pareto(1.5, 50) + 0.01


def test_sample_counts_weights_determinism():
    key = jax.random.key(3)
    c1, w1 = C.sample(key, S_VALUES, 40)
    c2, w2 = C.sample(key, S_VALUES, 40)
    assert np.array_equal(np.asarray(c1), np.asarray(c2)) and np.array_equal(w1, w2)
    c1, w1 = np.asarray(c1), np.asarray(w1)
    assert c1.sum() == 40 and c1.min() >= 0
    t = S_VALUES.sum()
    np.testing.assert_allclose(w1, np.where(c1 > 0, c1 * t / (40 * S_VALUES), 0), rtol=1e-12)
    c3, _ = C.sample(jax.random.key(4), S_VALUES, 40)
    assert not np.array_equal(c1, np.asarray(c3))
    # zero-sensitivity entries are never drawn
    s0 = S_VALUES.copy()
    s0[::2] = 0
    c0, _ = C.sample(key, s0, 500)
    assert np.all(np.asarray(c0)[::2] == 0)


def test_sample_weights_are_unbiased():
    f = np.random.default_rng(2).standard_normal(50) ** 2 + np.linspace(0, 3, 50)
    keys = jax.random.split(jax.random.key(0), 4000)
    _, W = jax.jit(jax.vmap(lambda k: C.sample(k, S_VALUES, 20)))(keys)
    est = np.asarray(W) @ f
    se = est.std() / np.sqrt(len(est))
    assert abs(est.mean() - f.sum()) < 5 * se
    # a biased estimator (forgetting the 1/s reweighting) is caught by the same test
    counts = np.asarray(W) * 20 * S_VALUES / S_VALUES.sum()
    assert abs((counts @ f).mean() - f.sum()) > 5 * se


def test_sample_until_distinct():
    key = jax.random.key(7)
    out = C.sample_until_distinct(key, S_VALUES, 12)
    counts, m = np.asarray(out.counts), int(out.num_draws)
    assert bool(out.ok) and np.count_nonzero(counts) == 12 and counts.sum() == m
    t = S_VALUES.sum()
    np.testing.assert_allclose(np.asarray(out.weights),
                               np.where(counts > 0, counts * t / (m * S_VALUES), 0), rtol=1e-12)
    again = C.sample_until_distinct(key, S_VALUES, 12)
    assert np.array_equal(np.asarray(again.counts), counts)
    s = np.array([1.0, 0, 0, 2.0, 0])
    with pytest.raises(ValueError, match="only 2 of 5"):
        C.sample_until_distinct(key, s, 3)
    with pytest.raises(ValueError, match="max_draws"):
        C.sample_until_distinct(key, np.array([1.0, 1e-12, 1.0, 0.0, 0.0]), 3, max_draws=4096)
    jitted = jax.jit(lambda k, s: C.sample_until_distinct(k, s, 3, max_draws=4096))(key, s)
    assert not bool(jitted.ok)                      # jitted core flags instead of raising


def test_top_k():
    s = np.array([0.5, 2.0, 2.0, 0.1, 3.0])
    mask, idx = C.top_k(s, 3)
    assert np.asarray(idx).tolist() == [4, 1, 2]
    assert np.asarray(mask).tolist() == [False, True, True, False, True]
    with pytest.raises(ValueError):
        C.top_k(s, 6)


@pytest.mark.slow
def test_fast_compile_peeling_kernel_matches_the_optimised_one():
    """`prune` on the CPU runs the peeling kernel compiled at XLA backend optimisation level 0
    (`peel_compile="fast"`, half the compile time); it must give the very numbers of XLA's
    default compile, and a bad `peel_compile` or `peel_batch` is an error."""
    from jaxprune import prune
    from jaxprune.models import LeNet300100
    model = LeNet300100(widths=(80, 40))
    variables = model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))
    # projection_dim=3: both layers have n >= 2·rank² points, so both are peeled
    out = {mode: prune(variables, jax.random.key(1), 0.7, model=model, peel_compile=mode,
                       projection_dim=3) for mode in ("fast", "optimised")}
    for mode in ("fast", "optimised"):  # the CPU's batching is `map`
        assert set(out[mode].report["method_info"]["peel_kernel"].values()) == {f"map/{mode}"}
    for g in out["fast"].sensitivities:
        np.testing.assert_allclose(np.asarray(out["fast"].sensitivities[g]),
                                   np.asarray(out["optimised"].sensitivities[g]), rtol=1e-6)
        assert np.array_equal(np.asarray(out["fast"].kept[g]), np.asarray(out["optimised"].kept[g]))
    assert any(len(np.unique(np.asarray(s))) > 1 for s in out["fast"].sensitivities.values())
    with pytest.raises(ValueError, match="peel_compile"):
        prune(variables, jax.random.key(1), 0.7, model=model, peel_compile="O3")
    with pytest.raises(ValueError, match="peel_batch"):
        prune(variables, jax.random.key(1), 0.7, model=model, peel_batch="pmap")
