"""Tests for jaxprune.geometry: MVEE, Carathéodory, convex combination, rank/subspace, projections.

Shapes are fixed per function so each jitted core compiles once; hypothesis varies the seed
and the kind of cloud (Gaussian, heavy-tailed Student-t, clustered, duplicated).  Everything
runs under ``jax.enable_x64`` so outputs are float64 and precision claims can be checked.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import _clouds
from jaxprune import geometry as G

N, D = 200, 3
KINDS = ("gauss", "student", "cluster", "dup")
FAST = settings(max_examples=8, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(autouse=True)
def _x64():
    with jax.enable_x64(True):
        yield


def cloud(kind, seed, n=N, d=D):
    return _clouds.cloud(kind, seed, n, d, dup_every=10)


def numpy_khachiyan(P, tol):
    """Independent plain-NumPy Khachiyan (no away steps, uniform start, explicit inverse)."""
    n, d = P.shape
    Q = np.hstack([P, np.ones((n, 1))])
    u = np.full(n, 1.0 / n)
    for _ in range(200_000):
        X = Q.T @ (u[:, None] * Q)
        M = np.einsum("ij,jk,ik->i", Q, np.linalg.inv(X), Q)
        j = int(np.argmax(M))
        if M[j] <= (1 + tol) * (d + 1):
            break
        a = (M[j] - d - 1) / ((d + 1) * (M[j] - 1))
        u *= 1 - a
        u[j] += a
    c = u @ P
    S = (P - c).T @ (u[:, None] * (P - c))
    return c, np.linalg.inv(S) / d


def inside(res, P):
    c, A = np.asarray(res.center), np.asarray(res.shape)
    return np.einsum("ij,jk,ik->i", P - c, A, P - c)


# ----------------------------------------------------------------------------- MVEE

@FAST
@given(kind=st.sampled_from(KINDS), seed=st.integers(0, 10_000))
def test_mvee_encloses_every_point(kind, seed):
    P = cloud(kind, seed)
    res = G.mvee(P, tol=1e-3)
    assert bool(res.converged)
    assert np.max(inside(res, P)) <= 1.0 + 1e-9
    w = np.asarray(res.weights)
    assert w.min() >= 0 and abs(w.sum() - 1) < 1e-9
    # optimality certificate of the returned weights: R ≤ (1 + tol)(d + 1) − 1
    assert float(res.radius) <= 1.001 * (D + 1) - 1 + 1e-9
    assert float(res.radius) >= D - 1e-9


@pytest.mark.parametrize("kind,seed", [("gauss", 1), ("student", 2), ("cluster", 3), ("dup", 4)])
def test_mvee_volume_matches_numpy_reference(kind, seed):
    P = cloud(kind, seed)
    res = G.mvee(P, tol=1e-7)
    _, A_ref = numpy_khachiyan(P, 1e-3)
    ld = np.linalg.slogdet(np.asarray(res.shape))[1]
    ld_ref = np.linalg.slogdet(A_ref)[1]
    # volume ∝ det^-1/2.  Weak duality: the reference's (1/d) S_u^-1 ellipsoid is never larger
    # than the MVEE, ours encloses the points so it is never smaller; both within the gap.
    assert ld <= ld_ref + 1e-9, (ld, ld_ref)
    assert ld >= ld_ref - 1e-2, (ld, ld_ref)
    assert np.max(inside(res, P)) <= 1 + 1e-9


def test_mvee_is_affine_invariant_and_not_the_covariance_ellipsoid():
    P = cloud("student", 7)
    T = np.array([[2.0, 0.3, 0.0], [0.0, 0.5, 0.1], [0.2, 0.0, 3.0]])
    b = np.array([1.0, -2.0, 5.0])
    r1, r2 = G.mvee(P, tol=1e-6), G.mvee(P @ T + b, tol=1e-6)
    ld1 = np.linalg.slogdet(np.asarray(r1.shape))[1]
    ld2 = np.linalg.slogdet(np.asarray(r2.shape))[1]
    assert abs((ld1 - ld2) - 2 * np.log(abs(np.linalg.det(T)))) < 1e-3
    cov = np.cov(P.T)
    ld_cov = np.linalg.slogdet(np.linalg.inv(cov) / np.max(
        np.einsum("ij,jk,ik->i", P - P.mean(0), np.linalg.inv(cov), P - P.mean(0))))[1]
    assert ld1 > ld_cov + 0.1    # MVEE strictly smaller than the enlarged covariance ellipsoid


@pytest.mark.parametrize("bad,msg", [
    (np.ones((3, 3)), "n > d"),
    (np.ones((N, D)), "equal"),
    (np.where(np.arange(N * D).reshape(N, D) == 5, np.nan, 1.0 + np.arange(N * D).reshape(N, D)),
     "NaN"),
    (np.where(np.arange(N * D).reshape(N, D) == 7, np.inf, 1.0), "NaN or inf"),
])
def test_mvee_degenerate_raises(bad, msg):
    with pytest.raises(ValueError, match=msg):
        G.mvee(bad)


@pytest.mark.slow
def test_mvee_lower_dimensional_raises_and_masked_variant_works():
    rng = np.random.default_rng(0)
    plane = rng.standard_normal((N, 2)) @ np.array([[1.0, 0.0, 1.0], [0.0, 1.0, -1.0]]) + 3.0
    with pytest.raises(ValueError, match="lower-dimensional"):
        G.mvee(plane)
    mask = rng.random(N) < 0.6
    res = G.mvee_masked(plane, mask)
    assert int(res.rank) == 2
    q = inside(res, plane)
    assert np.max(q[mask]) <= 1 + 1e-9
    w = np.asarray(res.weights)
    assert np.all(w[~mask] == 0) and abs(w.sum() - 1) < 1e-9
    # jit + vmap over masks, one program for every rank
    masks = jnp.stack([jnp.asarray(mask), jnp.ones(N, bool), jnp.arange(N) < 2])
    vm = jax.jit(jax.vmap(lambda m: G.mvee_masked(plane, m)))(masks)
    assert [int(r) for r in vm.rank] == [2, 2, 1]
    np.testing.assert_allclose(np.asarray(vm.center[0]), np.asarray(res.center), atol=1e-9)


def test_mvee_masked_full_rank_matches_mvee():
    P = cloud("gauss", 11)
    a, b = G.mvee(P), G.mvee_masked(P, np.ones(N, bool))
    np.testing.assert_allclose(np.asarray(a.shape), np.asarray(b.shape), rtol=1e-9)


def test_float32_in_float32_out():
    P = cloud("gauss", 3).astype(np.float32)
    assert G.mvee(P).shape.dtype == jnp.float32
    assert G.pca_project(P, 2).dtype == jnp.float32


def _mvee_internals():
    import importlib
    return importlib.import_module("jaxprune.geometry.mvee")


@pytest.mark.parametrize("kind,d,plane", [("student", 3, False), ("gauss", 6, False),
                                          ("student", 10, False), ("plane", 4, True)])
@pytest.mark.slow
def test_mvee_carried_quantities_match_recomputation(kind, d, plane):
    """The loop never recomputes X⁻¹, the leverages M or Σ u q: after any number of steps
    they must equal what a fresh computation from the weights gives (full rank, and the
    rank-deficient masked case where only the live block counts)."""
    from jaxprune.geometry.subspace import _frame_pt
    MV = _mvee_internals()
    P = cloud(kind, 5, n=N, d=d)
    mask = np.arange(N) % 7 != 0 if plane else np.ones(N, bool)
    fr = _frame_pt(jnp.asarray(P.T), jnp.asarray(mask), 1e-7)
    r = int(fr.rank)
    assert r == (2 if plane else d)
    yt = np.asarray(fr.coords_t)
    idx0, w0 = MV._ky_init_t(fr.coords_t, jnp.asarray(mask), fr.rank)
    live = np.r_[np.arange(r), d]                     # active coordinates and the lifted 1
    Q = np.vstack([yt, np.ones(N)])[live]
    for max_iter in (0, 1, 5, 40, 20_000):
        u, it, conv, Xinv, cq, M = (np.asarray(a) for a in MV._khachiyan_t(
            fr.coords_t, jnp.asarray(mask), fr.rank, idx0, w0, 1e-3, max_iter))
        assert int(it) <= max_iter and (bool(conv) or int(it) == max_iter)
        assert u.min() >= 0 and abs(u.sum() - 1) < 1e-12 and np.all(u[~mask] == 0)
        X = (Q * u) @ Q.T
        Xi = np.linalg.inv(X)
        np.testing.assert_allclose(Xinv[np.ix_(live, live)], Xi, atol=1e-9 * np.abs(Xi).max())
        np.testing.assert_allclose(cq[live], Q @ u, atol=1e-12)
        M_ref = np.einsum("in,ij,jn->n", Q, Xi, Q)
        np.testing.assert_allclose(M[mask], M_ref[mask], atol=1e-9 * M_ref.max())
        assert np.all(M[~mask] == -np.inf)


@pytest.mark.slow
def test_mvee_fast_paths_match_their_general_forms(monkeypatch):
    """Unrolled leverage / Gram / Kumar–Yıldırım code (small d) equals the general form."""
    from jaxprune.geometry import subspace
    MV = _mvee_internals()
    rng = np.random.default_rng(0)
    for k in (2, 5, 8, 12):                          # unrolled up to 8, one product above
        yt = rng.standard_normal((k, 50))
        A = rng.standard_normal((k, k))
        A = A + A.T
        b, c0 = rng.standard_normal(k), 0.7
        ref = np.einsum("in,ij,jn->n", yt, A, yt) + 2 * b @ yt + c0
        got = np.asarray(MV._lifted_quad(jnp.asarray(yt), jnp.asarray(A), jnp.asarray(b), c0))
        np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12 * np.abs(ref).max())
    for d in (3, 6):                                  # broadcast-reduce Gram, then the dot
        at = rng.standard_normal((d, 40))
        np.testing.assert_allclose(np.asarray(subspace._gram_t(jnp.asarray(at))), at @ at.T,
                                   rtol=1e-12)
    for kind, d in (("student", 5), ("plane", 4)):
        fr = subspace._frame_pt(jnp.asarray(cloud(kind, 2, d=d).T), jnp.ones(N, bool), 1e-7)
        straight = MV._ky_init_t(fr.coords_t, jnp.ones(N, bool), fr.rank)
        monkeypatch.setattr(MV, "_KY_UNROLL", 0)
        looped = MV._ky_init_t(fr.coords_t, jnp.ones(N, bool), fr.rank)
        monkeypatch.undo()
        for a, b in zip(straight, looped):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_mvee_converged_flag_at_the_iteration_cap():
    P = cloud("gauss", 4)
    res = G.mvee(P)
    it = int(res.iterations)
    assert bool(res.converged) and it > 1
    at_cap = G.mvee(P, max_iter=it)
    assert bool(at_cap.converged) and int(at_cap.iterations) == it
    short = G.mvee(P, max_iter=it - 1)
    assert not bool(short.converged) and int(short.iterations) == it - 1
    assert np.max(inside(short, P)) <= 1 + 1e-9      # contained even when not converged


def test_mvee_device_input_and_non_finite_rank():
    P = cloud("student", 8)
    a, b = G.mvee(P), G.mvee(jnp.asarray(P))           # host (pre-transposed) / device paths
    np.testing.assert_allclose(np.asarray(a.shape), np.asarray(b.shape), rtol=1e-9)
    bad = P.copy()
    bad[3, 1] = np.nan
    assert int(G.affine_rank(bad)) == 0                # non-finite: rank 0 → mvee reports it
    with pytest.raises(ValueError, match="NaN"):
        G.mvee(jnp.asarray(bad))


# ----------------------------------------------------------------------------- Carathéodory

def _check_caratheodory(P, w, w2, dmax):
    w2 = np.asarray(w2)
    assert w2.min() >= 0
    assert np.count_nonzero(w2) <= dmax + 1
    np.testing.assert_allclose(w2.sum(), w.sum(), rtol=1e-11)
    scale = np.abs(P).max() * w.sum()
    assert np.max(np.abs(w2 @ P - w @ P)) <= 1e-11 * scale


@FAST
@given(kind=st.sampled_from(KINDS), seed=st.integers(0, 10_000))
def test_caratheodory_support_and_exact_sums(kind, seed):
    P = cloud(kind, seed, n=60, d=4)
    w = np.random.default_rng(seed).random(60) ** 3
    _check_caratheodory(P, w, G.caratheodory(P, w), 4)
    _check_caratheodory(P, w, G.caratheodory_booster(P, w), 4)


def test_caratheodory_masked_and_jit():
    P = cloud("student", 5, n=60, d=4)
    w = np.random.default_rng(5).random(60)
    mask = np.arange(60) % 3 != 0
    for f in (G.caratheodory, G.caratheodory_booster):
        w2 = np.asarray(jax.jit(f)(P, w, mask))
        assert np.all(w2[~mask] == 0)
        _check_caratheodory(P, w * mask, w2, 4)


# ----------------------------------------------------------------------------- convex combination

@FAST
@given(kind=st.sampled_from(KINDS), seed=st.integers(0, 10_000))
def test_convex_combination_recovers_hull_points(kind, seed):
    P = cloud(kind, seed)
    rng = np.random.default_rng(seed)
    lam = rng.dirichlet(np.full(N, 0.05))
    target = lam @ P
    w, res, _ = G.convex_combination(P, target)
    w = np.asarray(w)
    assert w.min() >= 0 and abs(w.sum() - 1) < 1e-12
    assert float(res) < 1e-8 * (1 + np.abs(P).max())
    assert np.linalg.norm(w @ P - target) < 1e-8 * (1 + np.abs(P).max())


def test_convex_combination_outside_reports_distance():
    P = np.array([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]] * 50)
    target = np.array([1.0, 1.0, 1.0])     # nearest hull point: (1/3, 1/3, 1/3)
    for method in ("wolfe", "fw"):
        w, res, _ = G.convex_combination(P, target, method=method, max_iter=5000)
        assert abs(float(res) - np.sqrt(3) * 2 / 3) < 1e-6


# ----------------------------------------------------------------------------- rank, subspace, projections

def test_affine_rank_and_subspace():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((N, 2))
    B = np.linalg.qr(rng.standard_normal((5, 2)))[0].T          # (2, 5) orthonormal rows
    P = x @ B * 1e3 + 7.0                                          # plane in R^5, large offset
    assert int(G.affine_rank(P)) == 2
    Y, z = G.affine_subspace(P)
    Y, z = np.asarray(Y), np.asarray(z)
    assert np.count_nonzero(np.linalg.norm(Y, axis=0) > 0.5) == 2
    np.testing.assert_allclose(z + (P - z) @ Y @ Y.T, P, atol=1e-8)
    assert int(G.affine_rank(np.tile(P[:1], (N, 1)))) == 0
    assert int(G.affine_rank(np.outer(np.arange(N), [1.0, 2, 3, 4, 5]))) == 1
    assert int(G.affine_rank(rng.standard_normal((N, 5)))) == 5
    mask = np.arange(N) < 2
    assert int(G.affine_rank(P, mask)) == 1


def test_projections():
    P = cloud("gauss", 2, d=6)
    Z = np.asarray(G.pca_project(P, 3))
    assert Z.shape == (N, 3)
    np.testing.assert_allclose(Z.mean(0), 0, atol=1e-10)
    var = Z.var(0)
    assert np.all(np.diff(var) <= 1e-9)
    ev = np.sort(np.linalg.eigvalsh(np.cov(P.T, bias=True)))[::-1][:3]
    np.testing.assert_allclose(var, ev, rtol=1e-8)
    assert np.asarray(G.pca_project(P, 8)).shape == (N, 8)
    key = jax.random.key(0)
    J1, J2 = G.jl_project(key, P, 4), G.jl_project(key, P, 4)
    assert J1.shape == (N, 4) and np.array_equal(np.asarray(J1), np.asarray(J2))


@pytest.mark.parametrize("n,d", [(60, 12), (12, 60)])
def test_pca_matches_numpy_svd_on_both_gram_sides(n, d):
    """n ≥ d uses the d×d Gram matrix, n < d the n×n one; both equal the SVD projection."""
    rng = np.random.default_rng(n)
    x = rng.normal(size=(n, d)) * np.linspace(4.0, 0.2, d)
    got = np.asarray(G.pca_project(jnp.asarray(x), 5))
    xc = x - x.mean(axis=0)
    ref = xc @ np.linalg.svd(xc, full_matrices=False)[2][:5].T
    for j in range(5):
        assert min(np.abs(got[:, j] - ref[:, j]).max(), np.abs(got[:, j] + ref[:, j]).max()) < 1e-8
