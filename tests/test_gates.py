"""Tests of ``jaxprune.gates`` (hard-concrete L0 gates, Louizos et al. 2018): support of the
gate, the expected-L0 closed form against Monte Carlo and a hand value, the deterministic
test-time gate, and that training with a strong penalty closes the gates."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxprune import gates as G


def test_sample_gate_in_unit_interval_with_point_masses():
    la = jnp.array([-3.0, 0.0, 3.0])
    z = np.asarray(G.sample_gate(jax.random.PRNGKey(0), la, (20000, 3)))
    assert z.shape == (20000, 3)
    assert np.all(z >= 0.0) and np.all(z <= 1.0)
    # the stretch-and-clip puts real mass exactly at 0 and at 1
    assert np.mean(z[:, 0] == 0.0) > 0.5 and np.mean(z[:, 2] == 1.0) > 0.5
    assert 0.0 < np.mean((z[:, 1] > 0) & (z[:, 1] < 1)) < 1.0
    # larger log α ⇒ larger gates (stochastically)
    assert z[:, 0].mean() < z[:, 1].mean() < z[:, 2].mean()


def test_expected_l0_closed_form_and_monte_carlo():
    # hand value: log α = 0 → sigmoid(−(2/3)·log(0.1/1.1)) = sigmoid((2/3)·ln 11)
    hand = 1.0 / (1.0 + math.exp(-(2.0 / 3.0) * math.log(11.0)))
    assert float(G.prob_nonzero(0.0)) == pytest.approx(hand, rel=1e-6)
    assert hand == pytest.approx(0.8318, abs=1e-4)
    la = jnp.array([-4.0, -1.0, 0.0, 0.7, 2.5])
    p = np.asarray(G.prob_nonzero(la))
    z = np.asarray(G.sample_gate(jax.random.PRNGKey(1), la, (200_000, 5)))
    np.testing.assert_allclose(np.mean(z > 0, axis=0), p, atol=5e-3)
    assert float(G.expected_l0(la)) == pytest.approx(float(p.sum()), rel=1e-6)
    # other stretch parameters: the closed form follows γ, ζ, β
    kw = dict(beta=0.5, gamma=-0.2, zeta=1.05)
    z2 = np.asarray(G.sample_gate(jax.random.PRNGKey(2), la, (200_000, 5), **kw))
    np.testing.assert_allclose(np.mean(z2 > 0, axis=0), G.prob_nonzero(la, **kw), atol=5e-3)
    # the penalty is differentiable and increasing in log α
    g = jax.grad(G.expected_l0)(la)
    assert np.all(np.asarray(g) > 0)


def test_deterministic_gate_values():
    np.testing.assert_allclose(G.deterministic_gate(jnp.array([0.0])), [0.5], rtol=1e-6)
    assert float(G.deterministic_gate(10.0)) == 1.0
    assert float(G.deterministic_gate(-10.0)) == 0.0
    # sigmoid(a)·1.2 − 0.1 in between
    a = 0.3
    assert float(G.deterministic_gate(a)) == pytest.approx(1.2 / (1 + math.exp(-a)) - 0.1,
                                                           rel=1e-6)
    # closes exactly when sigmoid(log α) ≤ 1/12
    assert float(G.deterministic_gate(math.log(1 / 11) - 1e-3)) == 0.0
    np.testing.assert_allclose(G.init_log_alpha((2,), 0.1), [math.log(9.0)] * 2, rtol=1e-6)
    np.testing.assert_array_equal(G.keep_mask(jnp.array([0.1, 3.0, -1.0, 3.0]), 2),
                                  [False, True, False, True])


def _toy(n=512, d=6, k=3, seed=0):
    r = np.random.default_rng(seed)
    x = r.standard_normal((n, d)).astype(np.float32)
    w = r.standard_normal((d, k)).astype(np.float32)
    y = np.argmax(x @ w, 1).astype(np.int32)
    return x, y


def _apply(params, x, z):
    return (x * z) @ params["w"] + params["b"]          # one gate per input feature


def _batches(x, y, epochs, bs=64):
    for e in range(epochs):
        order = np.random.default_rng(e).permutation(len(y))
        for i in range(0, len(y), bs):
            idx = order[i:i + bs]
            yield x[idx], y[idx]


@pytest.mark.parametrize("lam, closed", [(2.0, True), (0.0, False)])
def test_training_with_strong_penalty_closes_gates(lam, closed):
    x, y = _toy()
    params = {"w": jnp.zeros((6, 3)), "b": jnp.zeros(3)}
    la = G.init_log_alpha((6,), 0.2)
    params, la, hist = G.fit_l0(_apply, params, la, _batches(x, y, 15), lam=lam,
                                key=jax.random.PRNGKey(0), learning_rate=0.05)
    assert len(hist) == 15 * 8 and all(np.isfinite(h).all() for h in hist)
    det = np.asarray(G.deterministic_gate(la))
    if closed:     # a penalty of 2 per open gate outweighs any CE gain (CE ≤ log 3 here)
        assert np.all(det == 0.0)
        assert float(G.expected_l0(la)) < 0.5
        assert hist[-1][2] < hist[0][2]
    else:          # no penalty and informative features: gates stay open, CE drops
        assert np.all(det > 0.5)
        assert hist[-1][1] < 0.5 * hist[0][1]
