"""Frank-Wolfe (jaxprune.optim, jaxprune.methods.frank_wolfe): LMO vertices, feasibility of
iterates, momentum ρ=0 ≡ SFW, masks, the structured methods through jaxprune.prune (kept =
top-k group norms of the iterate)."""
import importlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import jaxprune
from jaxprune import methods, optim
from jaxprune.models import LeNet5, LeNet300100

fwm = importlib.import_module("jaxprune.methods.frank_wolfe")  # methods.frank_wolfe: the class


def _params(seed=0):
    rng = np.random.default_rng(seed)
    return {"a": {"kernel": jnp.asarray(rng.normal(size=(5, 4, 3)), jnp.float32),
                  "bias": jnp.asarray(rng.normal(size=(3,)), jnp.float32)},
            "b": {"kernel": jnp.asarray(rng.normal(size=(7, 6)), jnp.float32)}}


@settings(max_examples=15, deadline=None)
@given(n=st.integers(1, 40), data=st.data())
def test_ksparse_lmo_is_optimal_vertex(n, data):
    k = data.draw(st.integers(1, n))
    r = data.draw(st.floats(0.1, 5.0))
    seed = data.draw(st.integers(0, 2**31 - 1))
    g = jnp.asarray(np.random.default_rng(seed).normal(size=(n,)), jnp.float32)
    v = np.asarray(optim.ksparse_lmo(g, k, r))
    nz = np.flatnonzero(v)
    assert nz.size == k                                            # exactly K non-zeros
    np.testing.assert_allclose(np.abs(v[nz]), np.float32(r))      # magnitude r
    assert np.all(np.sign(v[nz]) == -np.sign(np.asarray(g)[nz]))  # signs = −sign(g)
    # on the K largest |g|, and ⟨g, v⟩ equals the polytope minimum −r·(sum of top-K |g|)
    top = np.sort(np.abs(np.asarray(g)))[::-1][:k]
    assert np.min(np.abs(np.asarray(g)[nz])) >= top[-1]
    np.testing.assert_allclose(np.dot(np.asarray(g), v), -np.float32(r) * top.sum(), rtol=1e-5)


def test_ksparse_lmo_zero_gradient_is_still_a_vertex():
    v = np.asarray(optim.ksparse_lmo(jnp.zeros((3, 4)), 5, 2.0))
    assert np.count_nonzero(v) == 5 and np.all(np.abs(v[v != 0]) == 2.0)


def test_l1_lmo():
    g = jnp.asarray([0.3, -2.0, 1.5, 0.0])
    np.testing.assert_array_equal(np.asarray(optim.l1_lmo(g, 3.0)), [0, 3.0, 0, 0])


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_pytree_lmo_per_layer_and_global(scope):
    p = _params()
    c = optim.KSparsePolytope(sparsity=0.75, scope=scope)
    radii = optim.radii(c, p)
    v = optim.lmo(c, _params(1), radii)
    assert np.all(np.asarray(v["a"]["bias"]) == 0)              # free leaf
    if scope == "layer":
        assert len(radii) == 2
        assert np.count_nonzero(v["a"]["kernel"]) == optim.keep_count(60, 0.75)
        assert np.count_nonzero(v["b"]["kernel"]) == optim.keep_count(42, 0.75)
    else:
        assert len(radii) == 1
        total = np.count_nonzero(v["a"]["kernel"]) + np.count_nonzero(v["b"]["kernel"])
        assert total == optim.keep_count(102, 0.75)
    assert optim.violation(c, p, radii) <= 1e-6                      # radius rule: start feasible


@pytest.mark.parametrize("constraint,rescale,momentum", [
    (optim.KSparsePolytope(0.8, "layer"), "none", None),
    (optim.KSparsePolytope(0.8, "global"), "gradient", 0.9),
    (optim.KSparsePolytope(0.5, "layer", tau=1.5), "diameter", 0.9),
    (optim.L1Ball("layer"), "none", 0.5),
    (optim.L1Ball("global"), "gradient", None),
])
def test_iterates_stay_feasible(constraint, rescale, momentum):
    rng = np.random.default_rng(3)
    params = _params(2)
    etas = rng.uniform(0.0, 1.0, size=60).astype(np.float32)
    tx = optim.stochastic_frank_wolfe(constraint, lambda t: jnp.asarray(etas)[t], rescale=rescale,
                                   momentum=momentum, free_learning_rate=0.1)
    state = tx.init(params)
    update = jax.jit(tx.update)
    for t in range(60):
        g = jax.tree.map(lambda x: jnp.asarray(rng.normal(size=x.shape) * 10, x.dtype), params)
        upd, state = update(g, state, params)
        params = optax.apply_updates(params, upd)
        assert optim.violation(constraint, params, state.radii) <= 1e-5, t


def test_update_is_convex_combination_with_vertex():
    params = _params()
    c = optim.KSparsePolytope(0.7, "layer")
    tx = optim.stochastic_frank_wolfe(c, 0.3, rescale="none")
    state = tx.init(params)
    g = _params(5)
    upd, _ = tx.update(g, state, params)
    v = optim.lmo(c, g, state.radii)
    new = optax.apply_updates(params, upd)
    np.testing.assert_allclose(new["b"]["kernel"], 0.7 * params["b"]["kernel"]
                               + 0.3 * v["b"]["kernel"], rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(new["a"]["bias"], params["a"]["bias"])  # free lr 0
    with pytest.raises(ValueError, match="needs params"):
        tx.update(g, state)


@pytest.mark.parametrize("rescale", ["gradient", "diameter", "none"])
def test_momentum_zero_equals_plain_sfw(rescale):
    c = optim.KSparsePolytope(0.6, "global")
    txs = [optim.stochastic_frank_wolfe(c, 0.2, rescale=rescale, momentum=m, free_learning_rate=0.05)
           for m in (None, 0.0)]
    ps = [_params(), _params()]
    states = [tx.init(p) for tx, p in zip(txs, ps)]
    rng = np.random.default_rng(0)
    for _ in range(20):
        g = jax.tree.map(lambda x: jnp.asarray(rng.normal(size=x.shape), x.dtype), ps[0])
        for i, tx in enumerate(txs):
            upd, states[i] = jax.jit(tx.update)(g, states[i], ps[i])
            ps[i] = optax.apply_updates(ps[i], upd)
    for a, b in zip(jax.tree.leaves(ps[0]), jax.tree.leaves(ps[1])):
        np.testing.assert_array_equal(a, b)


def test_momentum_changes_the_direction():
    c = optim.KSparsePolytope(0.6, "layer")
    tx = optim.stochastic_frank_wolfe(c, 0.2, momentum=0.9)
    p = _params()
    s = tx.init(p)
    g = _params(4)
    _, s = tx.update(g, s, p)
    np.testing.assert_allclose(s.momentum["b"]["kernel"], 0.1 * g["b"]["kernel"], rtol=1e-6)


@pytest.mark.parametrize("scope", ["layer", "global"])
@pytest.mark.parametrize("sparsity", [0.5, 0.9, 0.99])
def test_magnitude_mask_sparsity(scope, sparsity):
    p = _params(7)
    m = optim.magnitude_mask(p, sparsity, scope)
    assert np.all(m["a"]["bias"] == 1)
    if scope == "layer":
        assert m["a"]["kernel"].sum() == optim.keep_count(60, sparsity)
        assert m["b"]["kernel"].sum() == optim.keep_count(42, sparsity)
        # kept entries are the largest magnitudes
        a = np.abs(np.asarray(p["b"]["kernel"]))
        assert a[m["b"]["kernel"] == 1].min() >= a[m["b"]["kernel"] == 0].max()
    else:
        assert m["a"]["kernel"].sum() + m["b"]["kernel"].sum() == optim.keep_count(102, sparsity)
    masked = jax.tree.map(lambda x, y: x * y, p, m)
    want = 1 - optim.keep_count(60, sparsity) / 60 if scope == "layer" else None
    if want is not None:
        assert np.mean(np.asarray(masked["a"]["kernel"]) == 0) == pytest.approx(want)


def _numpy_init(model, input_shape, seed=0):
    """Random variables of the right shapes without compiling flax's initialisers (slow on a
    loaded CPU): shapes from ``jax.eval_shape``, values from NumPy."""
    shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1,) + input_shape))
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda s: (rng.normal(size=s.shape) / np.sqrt(np.prod(s.shape[:-1]))
                                   ).astype(np.float32), shapes)


LENET5_GROUPS = ("conv_0", "conv_1", "dense_0", "dense_1")


def _top_group_norms(kernel, k):
    """Reference ranking in NumPy: sorted indices of the ``k`` output channels whose kernel
    entries have the largest ℓ2 norm (ties -> the lower index)."""
    w = np.asarray(kernel, np.float64).reshape(-1, np.shape(kernel)[-1])
    return np.sort(np.argsort(-np.sqrt((w * w).sum(0)), kind="stable")[:k])


@pytest.fixture(scope="module")
def fw_lenet5():
    """A small LeNet-5, toy data, and a cache of SFW phases keyed by (momentum, radius rule)."""
    model = LeNet5(widths=(4, 6, 12, 8))
    return model, _numpy_init(model, (16, 16, 1)), _toy_data(), {}


@settings(max_examples=8, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_prune_keeps_the_top_group_norms_of_the_fw_iterate(fw_lenet5, data):
    """``prune`` with a Frank-Wolfe method shrinks the SFW iterate to the channels of largest
    kernel ℓ2 norm in the iterate (or in the momentum buffer), ``k`` per group as the ratio
    dict ``{group: (C − k)/C}`` asks."""
    model, v, ds, phases = fw_lenet5
    momentum = data.draw(st.sampled_from([None, 0.9]), "momentum")
    rule = data.draw(st.sampled_from(fwm.RADIUS_RULES), "radius_rule")
    score_by = data.draw(st.sampled_from(fwm.SCORE_BY), "score_by")
    keep = {n: data.draw(st.integers(1, c), n) for n, c in zip(LENET5_GROUPS, model.widths)}
    ratio = {n: (c - keep[n]) / c for n, c in zip(LENET5_GROUPS, model.widths)}
    if (momentum, rule) not in phases:
        phases[momentum, rule] = fwm.fw_phase(
            model, v, ds, constraint=optim.KSparsePolytope(0.9, "layer", rule=rule),
            momentum=momentum, batch_size=32, seed=1)
    it, state, _ = phases[momentum, rule]
    method = methods.frank_wolfe(train_ds=ds, momentum=momentum, radius_rule=rule,
                                 score_by=score_by, batch_size=32, seed=1)
    res = jaxprune.prune(v, 0, ratio, method=method, model=model, input_shape=(16, 16, 1))
    for a, b in zip(jax.tree.leaves(res.dense_variables), jax.tree.leaves(it)):
        np.testing.assert_array_equal(a, b)                     # prune shrinks the iterate
    scored = it["params"] if score_by == "iterate" else state.momentum
    for n in LENET5_GROUPS:
        np.testing.assert_array_equal(res.kept[n], _top_group_norms(scored[n]["kernel"], keep[n]))
    assert res.model(model).widths == tuple(keep[n] for n in LENET5_GROUPS)
    k0, k1 = res.kept["conv_0"], res.kept["conv_1"]             # the iterate's kept slices
    np.testing.assert_array_equal(res.params["params"]["conv_1"]["kernel"],
                                  np.asarray(it["params"]["conv_1"]["kernel"])[:, :, k0][..., k1])


@settings(max_examples=25, deadline=None)
@given(widths=st.lists(st.integers(1, 40), min_size=2, max_size=2),
       keep_fraction=st.floats(0.01, 1.0))
def test_experiment_keep_fraction_is_kept_per_group_through_prune(widths, keep_fraction):
    """experiments/frank_wolfe_mnist.py's keep fraction, converted to a ratio dict, keeps
    ``max(1, round(keep_fraction·C))`` channels of every group through ``prune``."""
    from experiments.frank_wolfe_mnist import keep_ratio
    model = LeNet300100(widths=tuple(widths))
    rng = np.random.default_rng(0)
    sizes = (16, *widths, 10)
    params = {name: {"kernel": rng.normal(size=(a, b)).astype(np.float32),
                     "bias": np.zeros(b, np.float32)}
              for name, a, b in zip((*model.prunable_layers(), "head"), sizes[:-1], sizes[1:])}
    res = jaxprune.prune(params, 0, keep_ratio(model, keep_fraction), method="l2_norm")
    assert res.widths == {n: max(1, round(keep_fraction * c))
                          for n, c in zip(model.prunable_layers(), widths)}


def test_fw_prune_end_to_end_tiny():
    from jaxprune.data import ArrayDataset
    model = LeNet300100(widths=(20, 10))
    v = _numpy_init(model, (16, 16, 1))
    rng = np.random.default_rng(0)
    ds = ArrayDataset(rng.normal(size=(64, 16, 16, 1)).astype(np.float32),
                      rng.integers(0, 10, 64).astype(np.int32), 10, "toy")
    res = fwm.fw_prune(model, v, ds, sparsity=0.9, momentum=0.9, epochs=1, batch_size=32)
    m = res.mask
    for leaf, mk in zip(jax.tree.leaves(res.variables["params"]), jax.tree.leaves(m)):
        if leaf.ndim > 1:
            assert np.count_nonzero(leaf) <= optim.keep_count(leaf.size, 0.9)
            assert mk.sum() == optim.keep_count(leaf.size, 0.9)
    assert res.report["kernel_sparsity"] >= 0.9 - 1e-3
    c = optim.KSparsePolytope(0.9)
    assert optim.violation(c, res.fw_variables["params"], res.report["radii"]) <= 1e-5


def test_masked_wrapper_freezes_masked_entries():
    params = {"w": jnp.ones((3, 2)), "b": jnp.ones((2,))}
    mask = {"w": jnp.array([[1, 0], [0, 1], [1, 1]], jnp.float32), "b": jnp.ones((2,))}
    tx = optim.masked(optax.adam(0.1), mask)
    state = tx.init(params)
    assert isinstance(state, optim.MaskedState)
    grads = jax.tree.map(jnp.ones_like, params)
    upd, state = jax.jit(tx.update)(grads, state, params)
    w = np.asarray(upd["w"])
    assert np.all(w[np.asarray(mask["w"]) == 0] == 0) and np.all(w[np.asarray(mask["w"]) == 1] != 0)
    # masked entries never enter the inner optimiser's statistics
    mu = np.asarray(state.inner[0].mu["w"])
    assert np.all(mu[np.asarray(mask["w"]) == 0] == 0)


def _toy_data(n=64, shape=(16, 16, 1), seed=0):
    from jaxprune.data import ArrayDataset
    rng = np.random.default_rng(seed)
    return ArrayDataset(rng.normal(size=(n,) + shape).astype(np.float32),
                        rng.integers(0, 10, n).astype(np.int32), 10, "toy")


def test_fw_phase_is_the_sfw_update_on_fit_batches():
    """The FW phase (``train.fit`` with the SFW transformation) equals SFW steps taken by
    hand on the same (seed, epoch)-ordered batches."""
    from jaxprune import data, train
    model = LeNet300100(widths=(12, 8))
    v = _numpy_init(model, (16, 16, 1))
    ds = _toy_data()
    it, state, hist = fwm.fw_phase(model, v, ds, sparsity=0.8, momentum=0.9, epochs=2,
                                   batch_size=32, seed=3)
    c = optim.KSparsePolytope(0.8)
    tx = optim.stochastic_frank_wolfe(c, 0.03, rescale="none", momentum=0.9)
    p = jax.tree.map(jnp.asarray, v["params"])
    s = tx.init(p)

    @jax.jit
    def step(p, s, x, y):
        g = jax.grad(lambda q: train.cross_entropy(model.apply({"params": q}, x), y).mean())(p)
        u, s = tx.update(g, s, p)
        return optax.apply_updates(p, u), s

    for e in range(2):
        for x, y in data.batches(ds, 32, seed=3, epoch=e):
            p, s = step(p, s, jnp.asarray(x), jnp.asarray(y))
    for a, b in zip(jax.tree.leaves(it["params"]), jax.tree.leaves(p)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(state.momentum["dense_0"]["kernel"], s.momentum["dense_0"]["kernel"],
                               rtol=1e-5, atol=1e-7)
    assert int(state.count) == 4 and [h["epoch"] for h in hist] == [1, 2]


def test_registered_methods_prepare_and_score():
    for name, rho in (("frank_wolfe", None), ("frank_wolfe_momentum", 0.9)):
        m = methods.get(name)
        assert m.kind == "channels" and m.sampling == "deterministic"
        opts = m.options()
        assert opts["momentum"] == rho and {"train_ds", "epochs", "score_by"} <= set(opts)
        assert opts["train_ds"] is methods.REQUIRED
    model = LeNet300100(widths=(12, 8))
    v = _numpy_init(model, (16, 16, 1))
    ds = _toy_data()
    shrink_v, score_v = methods.frank_wolfe_momentum(train_ds=ds, batch_size=32).prepare(model, v)
    assert score_v is shrink_v
    shrink_m, score_m = methods.frank_wolfe_momentum(
        train_ds=ds, batch_size=32, score_by="momentum").prepare(model, v)
    for a, b in zip(jax.tree.leaves(shrink_v), jax.tree.leaves(shrink_m)):
        np.testing.assert_array_equal(a, b)
    assert not np.allclose(score_m["params"]["dense_0"]["kernel"],
                           shrink_m["params"]["dense_0"]["kernel"])
    views = [methods.LayerView(points=jnp.asarray([[3.0, 4.0, 9.0], [1.0, 0.0, 0.0]]),
                               outgoing=jnp.ones((2, 1)), is_bias=np.array([False, False, True]))]
    scores = methods.frank_wolfe(train_ds=ds).score(jax.random.key(0), views)
    np.testing.assert_allclose(np.asarray(scores[0]), [5.0, 1.0])
    res = jaxprune.prune(v, 0, {"dense_0": 0.5, "dense_1": 0.5},
                         method=methods.frank_wolfe_momentum(train_ds=ds, batch_size=32),
                         model=model, input_shape=(16, 16, 1))
    assert res.model(model).widths == (6, 4)
    assert res.params["params"]["dense_0"]["kernel"].shape == (256, 6)
    for a, b in zip(jax.tree.leaves(res.dense_variables), jax.tree.leaves(shrink_v)):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="radius_rule"):
        methods.frank_wolfe(train_ds=ds, radius_rule="x")
