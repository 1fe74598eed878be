"""Tests of ``jaxprune.bounds``: closed forms computed by hand, monotonicity and
round trips, Lemma 4.1 on hand-built logits, the α-scaling identity of Lemma C.1, the μ(P)
estimator, and the non-hanging sparsity-first failure."""
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from jaxprune import bounds as B

# ------------------------------------------------------------------ Theorem A.1 (SiPP rand)


def test_sipp_randomized_closed_form():
    S, delta, K = 1.0, 0.5, 2.0
    s_t = K * S * math.log(4 / delta)                 # 2 log 8
    m = 1000
    a = s_t / m
    assert B.sipp_randomized_epsilon(m, S) == pytest.approx(math.sqrt(a * (a + 6)) + a, rel=1e-12)
    # inverse: m = ceil(S̃ (6 + 2ε)/ε²); ε = 0.46 → 2 log 8 · 6.92 / 0.2116 = 136.01… → 137
    assert B.sipp_randomized_samples(0.46, S) == math.ceil(s_t * 6.92 / 0.46 ** 2) == 137
    # ≈ 1.4× a 100-weight perceptron at S = 1 (the bounds paper's "1.5x", §4.3.2)
    # the theorem needs m > S̃: no guarantee below
    assert B.sipp_randomized_epsilon(4, S) == math.inf
    # K and δ enter through S̃ only
    assert B.sipp_randomized_samples(0.3, 2.0, delta=0.1, K=3.0) == \
        math.ceil(3 * 2 * math.log(40) * 6.6 / 0.09)
    assert B.sipp_num_validation_points(1000, 0.5) == math.ceil(3 * math.log(2 * 1000 / 0.5)) == 25


def test_sipp_randomized_monotone_and_round_trip():
    ms = np.arange(20, 20000, 97)
    eps = B.sipp_randomized_epsilon(ms, 1.7, delta=0.2)
    assert np.all(np.diff(eps) < 0)                    # more samples ⇒ smaller ε
    back = B.sipp_randomized_samples(eps, 1.7, delta=0.2)
    assert np.all(back >= ms) and np.all(back == ms)   # m(ε(m)) = m exactly (smallest m)
    e = np.linspace(0.05, 0.99, 50)
    m = B.sipp_randomized_samples(e, 1.7)
    assert np.all(np.diff(m) <= 0)                     # smaller ε ⇒ more samples
    assert np.all(B.sipp_randomized_epsilon(m, 1.7) <= e * (1 + 1e-8))
    assert np.all(B.sipp_randomized_epsilon(m - 1, 1.7) > e)   # and it is the smallest


@settings(max_examples=40, deadline=None)
@given(m=st.integers(1, 10 ** 7), S=st.floats(1.0, 1e4), delta=st.floats(0.01, 0.99))
def test_round_trips_property(m, S, delta):
    e = B.sipp_randomized_epsilon(m, S, delta)
    if math.isfinite(e):
        assert B.sipp_randomized_samples(e, S, delta) >= m
    e = B.mussay_epsilon(m, S + 1.0, 7, delta)
    assert B.mussay_samples(e, S + 1.0, 7, delta) >= m
    e = B.coreset_epsilon(m, 3.0, 4, 50, 8, delta)
    assert B.coreset_samples(e, 3.0, 4, 50, 8, delta) >= m


def test_bad_arguments():
    with pytest.raises(ValueError):
        B.sipp_randomized_samples(0.1, 1.0, delta=1.5)
    with pytest.raises(ValueError):
        B.mussay_samples(0.0, 10.0, 3)
    with pytest.raises(ValueError):
        B.sipp_randomized_epsilon(0, 1.0)


# ------------------------------------------------------------------ Theorem A.2 (SiPP det)


def test_sipp_deterministic_closed_form():
    s = [0.1, 0.5, 0.1, 0.3]
    K = 2.0
    assert B.sipp_deterministic_epsilon(2, s) == pytest.approx(3 * K * 0.2)
    assert B.sipp_deterministic_epsilon(0, s) == pytest.approx(6.0)
    assert B.sipp_deterministic_epsilon(4, s) == 0.0
    assert B.sipp_deterministic_epsilon(1, s, K=1.0) == pytest.approx(3 * 0.5)
    eps = B.sipp_deterministic_epsilon(np.arange(5), s)
    assert np.all(np.diff(eps) <= 0)
    assert B.sipp_deterministic_samples(1.2, s) == 2
    assert B.sipp_deterministic_samples(1.19, s) == 3
    assert B.sipp_deterministic_samples(0.0, s) == 4
    assert B.sipp_deterministic_samples(0.0, [1.0, 0.0, 0.0]) == 1
    assert B.sipp_deterministic_samples(100.0, s) == 0


def test_sipp_sensitivities_hand():
    w = jnp.array([1.0, 2.0, -1.0])
    x = jnp.array([[1.0, 1.0, 1.0], [2.0, 0.0, 5.0]])
    # x1: w·x over I = [1, 2], sum 3 → [1/3, 2/3];  x2: [2, 0], sum 2 → [1, 0]
    np.testing.assert_allclose(B.sipp_sensitivities(w, x), [1.0, 2 / 3, 0.0], rtol=1e-6)
    # negative weights: Lemma 6, the same with -w
    np.testing.assert_allclose(B.sipp_sensitivities(-w, x), [0.0, 0.0, 1.0], rtol=1e-6)


# ------------------------------------------------------------------ Theorem A.4 (Mussay)


def test_mussay_closed_form():
    t, d, delta, eps = 100.0, 3, 0.5, 2.0
    A = t * (d * math.log(t) + math.log(1 / delta))
    assert B.mussay_samples(eps, t, d, delta) == math.ceil(A / eps ** 2) == 363
    assert B.mussay_samples(eps, t, d, delta, c=3.0) == math.ceil(3 * A / eps ** 2)
    assert B.mussay_epsilon(400, t, d, delta) == pytest.approx(math.sqrt(A / 400))
    assert B.mussay_samples(1.0, 0.5, 1, 0.9) == 1.0        # bracket < 0: clamped
    m = np.arange(1, 3000, 13)
    assert np.all(np.diff(B.mussay_epsilon(m, t, d)) < 0)


def test_mussay_sensitivities_as_stated():
    w1 = jnp.array([[3.0, 4.0], [0.0, 1.0]])
    w2 = jnp.array([[2.0, -1.0], [-1.0, -3.0]])
    # s_1 = max(2, -1)·φ(β·5) = 10β ; s_2 = max(-1, -3)·φ(β·1) = -β (no |·| in Theorem A.4)
    np.testing.assert_allclose(B.mussay_sensitivities(w1, None, w2, 2.0), [20.0, -2.0])
    np.testing.assert_allclose(B.mussay_sensitivities(w1, None, w2, 2.0, absolute=True),
                               [20.0, 6.0])
    # bias embedded in W(1): ‖[0, 1 | 1]‖ = √2
    np.testing.assert_allclose(B.mussay_sensitivities(w1, jnp.array([0.0, 1.0]), w2, 1.0,
                                                      absolute=True), [10.0, 3 * math.sqrt(2)],
                               rtol=1e-6)


# ------------------------------------------------------------------ Theorem 2.6 (main paper)


def test_coreset_theorem_closed_form():
    mu, r, n, d, delta, eps = 2.0, 3, 10, 4, 0.1, 0.5
    A = mu * r ** 3.5 * math.log(n) * (d * math.log(mu * r * math.log(n)) + math.log(1 / delta))
    assert B.coreset_samples(eps, mu, r, n, d, delta) == math.ceil(A / eps ** 2)
    assert B.coreset_samples(eps, mu, r, n, d, delta, c=5.0) == math.ceil(5 * A / eps ** 2)
    assert B.coreset_epsilon(1000, mu, r, n, d, delta) == pytest.approx(math.sqrt(A / 1000))
    assert B.coreset_samples(eps, math.inf, r, n, d) == math.inf
    assert B.coreset_epsilon(10, math.inf, r, n, d) == math.inf
    ms = np.array([10, 100, 1000])
    assert np.all(np.diff(B.coreset_epsilon(ms, mu, r, n, d)) < 0)


# ------------------------------------------------------------------ μ(P) (Definition 2.3)


def _ratio(P, y):
    z = P[:, :-1] @ np.atleast_1d(y) + P[:, -1]
    return np.sum(np.maximum(-z, 0)) / np.sum(np.maximum(z, 0))


def test_mu_estimate_lower_bound_hand():
    # P = {(1 | 1), (-1 | 1)}: for y > 1 the ratio is (y - 1)/(y + 1) → 1 = μ(P) (not attained);
    # hand lower bound at y = 10: 9/11.  The estimate is a lower bound: ≤ μ = 1.
    P = np.array([[1.0, 1.0], [-1.0, 1.0]])
    est = B.estimate_mu(P)
    assert not est.unbounded
    assert 9 / 11 <= est.value <= 1.0 + 1e-12
    assert est.value == pytest.approx(_ratio(P, est.query), rel=1e-9)
    # P = {(1 | 0), (-1 | 0)}: ratio |y|/|y| = 1 for every y ≠ 0 (0/0 at y = 0 is excluded)
    assert B.estimate_mu(np.array([[1.0, 0.0], [-1.0, 0.0]])).value == pytest.approx(1.0)
    # d = 2: at y = (10, 10) the ratio is 19/22
    P2 = np.array([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0], [-1.0, -1.0, 1.0]])
    assert _ratio(P2, np.array([10.0, 10.0])) == pytest.approx(19 / 22)
    est2 = B.estimate_mu(P2, seed=1)
    assert est2.value >= 19 / 22 and math.isfinite(est2.value)
    assert not B.mu_is_unbounded(P2)


def test_mu_unbounded_when_all_neurons_can_be_switched_off():
    # P = {(1 | -1), (-1 | -1)}: at y = 0 both are negative; at y = 1 + η the ratio is
    # (2 + η)/η → ∞.  Both the LP certificate and the sampling path report ∞.
    P = np.array([[1.0, -1.0], [-1.0, -1.0]])
    assert B.mu_is_unbounded(P)
    assert _ratio(P, 1.001) > 1000
    est = B.estimate_mu(P)
    assert est.value == math.inf and est.unbounded
    est = B.estimate_mu(P, exact_unbounded_check=False)
    assert est.value == math.inf and est.unbounded
    # feeding it into Theorem 2.6: no finite sample size
    assert B.coreset_samples(0.1, est.value, 1, 2, 1) == math.inf
    # all-zero points (pre-pruned neurons) add nothing to Definition 2.3's sums: same answer
    assert B.mu_is_unbounded(np.concatenate([P, np.zeros((3, 2))]))
    assert not B.mu_is_unbounded(np.zeros((4, 3)))


# ------------------------------------------------------------------ Lemma 4.1


def test_label_margins_hand():
    logits = jnp.array([[3.0, 1.0, 0.0],      # add (3-1)/2 = 1, mul 2/(3+1) = 0.5
                        [-1.0, -2.0, -5.0],   # add 0.5, mul 1/3
                        [2.0, 2.0, 0.0],      # tie: 0, 0
                        [0.0, 0.0, -1.0],     # tie at zero: 0/0 guarded to 0
                        [1.0, -1.0, -3.0]])   # add 1, mul 2/2 = 1
    add, mul, pred = B.label_margins(logits)
    np.testing.assert_allclose(add, [1.0, 0.5, 0.0, 0.0, 1.0])
    np.testing.assert_allclose(mul, [0.5, 1 / 3, 0.0, 0.0, 1.0], rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(pred)[[0, 1, 4]], [0, 0, 0])


def test_label_margins_are_tight():
    """Worst-case element-wise perturbations: below the margin the label survives, above it
    flips (the lemma's ε is the largest safe one)."""
    f = np.random.default_rng(0).standard_normal((200, 10)) * 3
    add, mul, pred = map(np.asarray, B.label_margins(jnp.asarray(f)))
    j = pred
    onehot = np.eye(10, dtype=bool)[j]
    for scale, expect in ((0.999, True), (1.001, False)):
        e = (scale * add)[:, None]
        g = np.where(onehot, f - e, f + e)
        assert np.all((np.argmax(g, 1) == j) == expect)
        e = (scale * mul.astype(np.float64))[:, None]
        g = np.where(onehot, f - e * np.abs(f), f + e * np.abs(f))
        assert np.all((np.argmax(g, 1) == j) == expect)


def test_epsilon_for_guarantee_quantile():
    # four correct examples with additive margins 1, 2, 3, 4 and one wrong one (margin 10)
    logits = jnp.array([[2.0, 0.0], [4.0, 0.0], [6.0, 0.0], [0.0, 8.0], [20.0, 0.0]])
    labels = jnp.array([0, 0, 0, 1, 1])
    eg = functools.partial(B.epsilon_for_guarantee, logits, labels)
    assert eg(0.5) == 3.0            # ε_i ≥ 3 for {3, 4}: 50 %
    assert eg(0.9) == 1.0            # ⌈0.9·4⌉ = 4 examples: ε = 1
    assert eg(1.0) == 1.0 and eg(0.25) == 4.0
    np.testing.assert_allclose(eg(np.array([0.25, 0.5, 0.75])), [4.0, 3.0, 2.0])
    assert B.guaranteed_fraction(logits, labels, 3.0) == 0.5
    np.testing.assert_allclose(B.guaranteed_fraction(logits, labels, [0.5, 3.5]), [1.0, 0.25])
    assert eg(0.5, kind="multiplicative") == 1.0   # (f - 0)/(|f| + 0) = 1 for every row
    # ⌈q·N⌉ is not broken by float noise: 0.9·10 = 9.000000000000002
    lg = jnp.stack([jnp.arange(1.0, 11.0), jnp.zeros(10)], 1)
    assert B.epsilon_for_guarantee(lg, jnp.zeros(10, int), 0.9) == 1.0    # 9th largest of 0.5..5
    with pytest.raises(ValueError):
        B.epsilon_for_guarantee(logits, jnp.array([1, 1, 1, 0, 1]), 0.5)


# ------------------------------------------------------------------ epsilon-/sparsity-first


def test_epsilon_first_draws_bound_samples():
    s = jnp.array([4.0, 2.0, 1.0, 1.0, 0.0, 0.0])
    samples_for = functools.partial(B.sipp_randomized_samples, total_sensitivity=1.0)
    out = B.epsilon_first(jax.random.PRNGKey(0), s, 0.9, samples_for)
    assert out.num_samples == samples_for(0.9) == math.ceil(2 * math.log(8) * 7.8 / 0.81)
    assert int(out.counts.sum()) == out.num_samples
    assert out.num_distinct == int(np.sum(out.counts > 0)) <= 4      # zeros never drawn
    assert out.sparsity == pytest.approx(1 - out.num_distinct / 6)
    assert out.epsilon == 0.9
    with pytest.raises(ValueError, match="max_samples"):
        B.epsilon_first(jax.random.PRNGKey(0), s, 1e-4, samples_for, max_samples=1000)
    assert B.expected_distinct([1.0, 1.0], 1) == pytest.approx(1.0)
    assert B.expected_distinct([1.0, 1.0], 2) == pytest.approx(1.5)


def test_sparsity_first_reports_implied_epsilon():
    s = jnp.array([4.0, 2.0, 1.0, 1.0, 0.5, 0.5])
    eps_for = functools.partial(B.sipp_randomized_epsilon, total_sensitivity=1.0)
    out = B.sparsity_first(jax.random.PRNGKey(3), s, 4, eps_for)
    assert out.num_distinct == 4 and out.sparsity == pytest.approx(1 / 3)
    assert int(out.counts.sum()) == out.num_samples >= 4
    assert out.epsilon == eps_for(out.num_samples)


def test_sparsity_first_unreachable_terminates_quickly():
    # the bounds paper's "runs forever" case: 2 of 5 elements have non-zero probability
    s = jnp.array([1.0, 1.0, 0.0, 0.0, 0.0])
    eps_for = functools.partial(B.sipp_randomized_epsilon, total_sensitivity=1.0)
    with pytest.raises(ValueError, match="unreachable"):
        B.sparsity_first(jax.random.PRNGKey(0), s, 3, eps_for)
    # reachable in principle but not within the draw budget: also an error, not a hang
    with pytest.raises(ValueError, match="max_draws"):
        B.sparsity_first(jax.random.PRNGKey(0), jnp.array([1.0, 1e-12]), 2, eps_for,
                         max_draws=1000)


def test_deterministic_first():
    s = [0.1, 0.5, 0.1, 0.3]
    out = B.deterministic_epsilon_first(s, 1.2)
    assert out.num_distinct == 2 and out.sparsity == 0.5
    np.testing.assert_array_equal(out.counts, [0, 1, 0, 1])
    assert out.epsilon == pytest.approx(1.2)
    out = B.deterministic_sparsity_first(s, 3)
    assert out.epsilon == pytest.approx(0.6) and out.num_distinct == 3


# ------------------------------------------------------------------ observed error


def test_observed_error_definitions():
    f = np.array([[1.0, -2.0], [0.0, 4.0]])
    g = np.array([[1.5, -2.0], [0.1, 3.0]])
    st_ = B.observed_error(f, g)
    np.testing.assert_allclose(st_.additive, [0.5, 1.0])
    np.testing.assert_allclose(st_.multiplicative, [0.5, 0.25])      # 0-unit excluded
    assert st_.num_excluded == 1
    assert (st_.additive_mean, st_.additive_std) == pytest.approx((0.75, 0.25))
    assert (st_.multiplicative_mean, st_.multiplicative_std) == pytest.approx((0.375, 0.125))
    st_inf = B.observed_error(f, g, zero_policy="inf")
    assert st_inf.multiplicative[1] == math.inf
    st_mean = B.observed_error(f, g, reduce="mean")
    np.testing.assert_allclose(st_mean.additive, [0.25, 0.55])
    per = B.observed_errors({"hidden": f, "out": g}, {"hidden": g, "out": g})
    assert per["out"].additive_mean == 0.0 and per["hidden"].additive_mean == 0.75


# ------------------------------------------------------------------ Lemma C.1 (α-scaling)


def _net(seed, d=6, h=8, k=4):
    # numpy draws: jax.random.normal compiles slowly on the shared CPU
    r = np.random.default_rng(seed)
    shapes = ((h, d), (h,), (k, h), (k,))
    return tuple(jnp.asarray(r.standard_normal(s), jnp.float32) for s in shapes)


def test_alpha_scaling_lemma_c1():
    params = _net(0)
    x = jnp.asarray(np.random.default_rng(1).standard_normal((64, 6)), jnp.float32)
    beta = 2.5
    t1 = B.total_sensitivity(params, beta)
    labels = jnp.argmax(B.two_layer_forward(params, x), -1)
    for alpha in (0.01, 0.5, 3.0, 100.0):
        # Lemma C.1 exactly: W(1) (bias embedded) → α W(1); t → α t; f → α f; labels unchanged
        assert B.total_sensitivity(params, beta, alpha) == pytest.approx(alpha * t1, rel=1e-5)
        scaled = B.scale_two_layer(params, alpha)
        out = B.two_layer_forward(scaled, x)
        np.testing.assert_allclose(out, alpha * B.two_layer_forward(params, x), rtol=1e-4,
                                   atol=1e-5 * alpha)
        np.testing.assert_array_equal(jnp.argmax(out, -1), labels)
        # the function-preserving rebalancing W2 → W2/α leaves t (and f) unchanged instead
        assert B.total_sensitivity(params, beta, alpha, w2_power=-1) == pytest.approx(t1, rel=1e-5)
    # the hand case of the lemma's proof: s = max_i w2_i · φ(β‖w1‖) = 2 · 5 = 10
    hand = (jnp.array([[3.0, 4.0]]), None, jnp.array([[2.0], [-1.0]]), None)
    assert B.total_sensitivity(hand, 1.0) == pytest.approx(10.0)
    assert B.total_sensitivity(hand, 1.0, 2.0) == pytest.approx(20.0)


def test_corollary_c2_alpha_reduces_required_samples():
    """ε needed for a label guarantee scales with α (additive margins of α·f), t scales with
    α, so Theorem A.4's m ∝ t/ε² shrinks for α > 1 (Corollary C.2)."""
    params = _net(2)
    x = jnp.asarray(np.random.default_rng(3).standard_normal((128, 6)), jnp.float32)
    labels = jnp.argmax(B.two_layer_forward(params, x), -1)
    ms = []
    for alpha in (1.0, 10.0, 100.0):
        logits = B.two_layer_forward(B.scale_two_layer(params, alpha), x)
        eps = B.epsilon_for_guarantee(logits, labels, 0.5)
        t = B.total_sensitivity(params, 1.0, alpha, sensitivity_fn=functools.partial(
            B.mussay_sensitivities, absolute=True))
        ms.append(B.mussay_samples(eps, t, 6))
        assert B.epsilon_for_guarantee(logits, labels, 0.5, kind="multiplicative") == \
            pytest.approx(B.epsilon_for_guarantee(B.two_layer_forward(params, x), labels, 0.5,
                                                  kind="multiplicative"), rel=1e-4)
    assert ms[0] > ms[1] > ms[2]
