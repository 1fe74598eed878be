"""``jaxprune.prune``: contract, equivalence with the masked network, ratios, errors."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxprune
from jaxprune import metrics, surgery
from jaxprune.models import LeNet5, LeNet300100
from jaxprune.views import layer_view


@pytest.fixture(scope="module")
def lenet():
    model = LeNet300100()
    return model, model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))


@pytest.fixture(scope="module")
def lenet5():
    model = LeNet5(widths=(6, 16, 40, 30))
    return model, model.init(jax.random.key(1), jnp.zeros((1, 28, 28, 1)))


def _x(shape, n=8, seed=3):
    return jax.random.normal(jax.random.key(seed), (n, *shape))


def test_ratio_zero_is_the_identity(lenet):
    model, v = lenet
    res = jaxprune.prune(v, jax.random.key(0), 0.0, model=model)
    small = res.model(model)
    assert small.widths == model.widths
    x = _x((28, 28, 1))
    np.testing.assert_array_equal(small.apply(res.params, x), model.apply(v, x))


@pytest.mark.parametrize("sampling", ["sparsity_first", "deterministic"])
@pytest.mark.parametrize("method", ["coreset", "random"])
def test_shrunk_equals_masked_and_reweighted_original(lenet5, method, sampling):
    model, v = lenet5
    res = jaxprune.prune(v, jax.random.key(2), 0.6, model=model, method=method,
                         sampling=sampling, input_shape=(28, 28, 1))
    small = res.model(model)
    masked = surgery.mask(v, res.groups, res.kept, res.scales)
    x = _x((28, 28, 1))
    np.testing.assert_allclose(small.apply(res.params, x), model.apply(masked, x),
                               rtol=1e-4, atol=1e-5)
    # shapes and counts agree with the report
    assert metrics.param_count(res.params) == res.report["params_after"]
    assert metrics.flops(small, res.params, (28, 28, 1)) == res.report["flops_after"]
    for name, (before, after) in res.report["neurons"].items():
        assert len(res.kept[name]) == after and res.sensitivities[name].shape == (before,)
    if sampling == "deterministic":
        assert all(np.all(s == 1) for s in res.scales.values())
    else:
        assert any(not np.allclose(s, 1) for s in res.scales.values())


@pytest.mark.parametrize("unit", ["params", "neurons", "flops"])
@pytest.mark.parametrize("ratio", [0.5, 0.9, 0.926, 0.946])
def test_achieved_ratio_within_one_percent(lenet, unit, ratio):
    model, v = lenet
    res = jaxprune.prune(v, jax.random.key(0), ratio, model=model, unit=unit,
                         sampling="deterministic")
    assert res.report["unit"] == unit
    assert abs(res.report["achieved_ratio"] - ratio) <= 0.01
    # independent count of the whole model (LeNet: all but the 10 output biases are prunable)
    removed = 1 - metrics.param_count(res.params) / metrics.param_count(v)
    assert abs(removed - res.report["ratios"]["params_model"]) < 1e-12
    if unit == "params":
        assert abs(removed - res.report["achieved_ratio"]) < 1e-4


def test_per_layer_dict_ratio(lenet):
    model, v = lenet
    res = jaxprune.prune(v, jax.random.key(0), {"dense_0": 0.5}, model=model)
    assert res.model(model).widths == (150, 100)
    assert set(res.kept) == {"dense_0"}


def test_deterministic_under_a_fixed_key_and_random_across_keys(lenet):
    model, v = lenet
    kw = dict(model=model, sampling="sparsity_first")
    a = jaxprune.prune(v, jax.random.key(7), 0.8, **kw)
    b = jaxprune.prune(v, jax.random.key(7), 0.8, **kw)
    c = jaxprune.prune(v, jax.random.key(8), 0.8, **kw)
    for name in a.kept:
        np.testing.assert_array_equal(a.kept[name], b.kept[name])
        np.testing.assert_array_equal(a.scales[name], b.scales[name])
    assert any(not np.array_equal(a.kept[n], c.kept[n]) for n in a.kept)


def test_bare_params_without_model(lenet):
    model, v = lenet
    res = jaxprune.prune(v["params"], jax.random.key(0), 0.9)
    assert set(res.params) == set(v["params"])  # same structure, params in -> params out
    small = res.model(model)
    x = _x((28, 28, 1))
    masked = surgery.mask(v, res.groups, res.kept, res.scales)
    np.testing.assert_allclose(small.apply({"params": res.params}, x), model.apply(masked, x),
                               rtol=1e-4, atol=1e-5)


def test_coreset_keeps_the_neuron_that_carries_the_next_layer():
    """A hidden neuron whose outgoing weights dominate must survive deterministic pruning."""
    rng = np.random.default_rng(0)
    w1 = rng.normal(size=(6, 40)).astype(np.float32)
    w2 = 0.01 * rng.normal(size=(40, 3)).astype(np.float32)
    w2[17] = 10.0
    params = {"l0": {"kernel": jnp.asarray(w1), "bias": jnp.zeros(40)},
              "l1": {"kernel": jnp.asarray(w2), "bias": jnp.zeros(3)}}
    res = jaxprune.prune(params, jax.random.key(0), {"l0": 0.9}, sampling="deterministic")
    assert 17 in res.kept["l0"]
    view = layer_view({"params": params}, res.groups[0])
    assert view.points.shape == (40, 7) and view.outgoing.shape == (40, 3)


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5, float("nan"), True, "0.5"])
def test_bad_ratio_is_a_clear_error(lenet, bad):
    model, v = lenet
    with pytest.raises(ValueError, match="ratio"):
        jaxprune.prune(v, jax.random.key(0), bad, model=model)


def test_non_finite_weights_are_rejected(lenet):
    model, v = lenet
    bad = jax.tree_util.tree_map(lambda a: a, v)
    bad["params"]["dense_1"]["kernel"] = bad["params"]["dense_1"]["kernel"].at[0, 0].set(jnp.nan)
    with pytest.raises(ValueError, match="non-finite.*dense_1/kernel"):
        jaxprune.prune(bad, jax.random.key(0), 0.5, model=model)


def test_other_bad_input(lenet):
    model, v = lenet
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="unknown pruning method"):
        jaxprune.prune(v, key, 0.5, model=model, method="nope")
    with pytest.raises(ValueError, match="unit"):
        jaxprune.prune(v, key, 0.5, model=model, unit="bytes")
    with pytest.raises(ValueError, match="zero width"):
        jaxprune.prune(v, key, 0.5, model=model, min_width=0)
    with pytest.raises(ValueError, match="would end up with width 1"):
        jaxprune.prune(v, key, {"dense_1": 0.99}, model=model, min_width=5)
    with pytest.raises(ValueError, match="unknown groups"):
        jaxprune.prune(v, key, 0.5, model=model, leave=("nope",))
    with pytest.raises(ValueError, match="no known structure"):
        jaxprune.prune({"conv": {"kernel": jnp.ones((3, 3, 1, 4))}}, key, 0.5)
    with pytest.raises(ValueError, match="sampling"):
        jaxprune.prune(v, key, 0.5, model=model, sampling="magic")

    class NoShape(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(2)(nn.relu(nn.Dense(4)(x)))

    m = NoShape()
    with pytest.raises(ValueError, match="input_shape"):
        jaxprune.prune(m.init(key, jnp.zeros((1, 3))), key, 0.5, model=m)
    with pytest.raises(ValueError, match="integer|floating"):
        jaxprune.prune({"d": {"kernel": jnp.ones((3, 4), jnp.int32)}}, key, 0.5)
    with pytest.raises(ValueError, match="apply_kwargs"):
        jaxprune.prune(m.init(key, jnp.zeros((1, 3))), key, 0.5, model=m, input_shape=(3,),
                       apply_kwargs={"train": False})


@pytest.mark.slow
@pytest.mark.parametrize("batch, compile_", [("map", "fast"), ("vmap", "optimised")])
def test_padded_batched_peeling_equals_per_layer_peeling(batch, compile_):
    """Bucketing (zero padding + masks, batch padding) must not change any sensitivity, with
    the sets peeled one after the other (`map`) or as one batched loop (`vmap`)."""
    from jaxprune import coreset
    from jaxprune.methods.coreset import peel_sensitivities

    rng = np.random.default_rng(0)
    sets = [rng.standard_t(3, size=(n, 3)) for n in (40, 100, 75)]
    batched = peel_sensitivities([jnp.asarray(s) for s in sets], compile_, batch)
    with jax.enable_x64(True):
        for s, got in zip(sets, batched):
            np.testing.assert_allclose(got, coreset.sensitivities(jnp.asarray(s)), rtol=1e-6)


@pytest.mark.parametrize("workers", [2, 3])
def test_the_geometry_split_over_cores_gives_the_one_program_numbers(workers, monkeypatch):
    """The PCA and the peeling run in chunks side by side on the CPU's cores; every set's
    numbers are bit for bit those of one chunk (one program), whatever the split."""
    import importlib

    from jaxprune.geometry import subspace
    peel_module = importlib.import_module("jaxprune.methods.coreset")  # not the factory

    rng = np.random.default_rng(1)
    shapes = ((30, 50), (12, 200), (64, 16), (8, 9), (40, 40), (30, 50), (64, 16), (30, 50))
    wide = [rng.normal(size=shape) for shape in shapes]  # sets of one shape share a stack
    one = subspace.pca_project_many(wide, 3, workers=1)
    split = subspace.pca_project_many(wide, 3, workers=workers)
    for p, a, b in zip(wide, one, split):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        np.testing.assert_array_equal(np.asarray(a), np.asarray(subspace.pca_project(p, 3)))

    sets = [rng.standard_t(3, size=(n, 3)) for n in (40, 100, 75, 33, 64)]
    monkeypatch.setattr(peel_module, "cpu_workers", lambda: 1)
    alone = peel_module.peel_sensitivities(sets, "fast", "map")
    monkeypatch.setattr(peel_module, "cpu_workers", lambda: workers)
    side_by_side = peel_module.peel_sensitivities(sets, "fast", "map")
    for a, b in zip(alone, side_by_side):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_unprojected_points_skip_or_refuse_the_geometry():
    """``projection='none'``: exact uniform s when no peel is possible, a clear error when the
    points are low-rank but too high-dimensional for the peeling geometry."""
    rng = np.random.default_rng(0)
    w1 = rng.normal(size=(100, 300)).astype(np.float32)
    params = {"l0": {"kernel": jnp.asarray(w1), "bias": jnp.zeros(300)},
              "l1": {"kernel": jnp.asarray(rng.normal(size=(300, 4)), jnp.float32)}}
    res = jaxprune.prune(params, jax.random.key(0), {"l0": 0.5}, projection="none",
                         sampling="deterministic")
    assert len(res.kept["l0"]) == 150
    low_rank = rng.normal(size=(100, 3)) @ rng.normal(size=(3, 300))
    params["l0"]["kernel"] = jnp.asarray(low_rank, jnp.float32)
    with pytest.raises(ValueError, match="projection='pca'"):
        jaxprune.prune(params, jax.random.key(0), {"l0": 0.5}, projection="none")


@pytest.mark.slow
def test_frank_wolfe_methods_run_their_data_phase_inside_prune():
    from jaxprune import data

    model = LeNet5(widths=(4, 6, 12, 8))
    v = model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))
    rng = np.random.default_rng(0)
    ds = data.ArrayDataset(rng.normal(size=(128, 28, 28, 1)).astype(np.float32),
                           rng.integers(0, 10, 128).astype(np.int32), 10, "synthetic")
    res = jaxprune.prune(v, jax.random.key(0), 0.5, model=model, method="frank_wolfe_momentum",
                         train_ds=ds, epochs=1, batch_size=64)
    small = res.model(model)
    assert small.widths != model.widths
    assert metrics.param_count(res.params) == res.report["params_after"]
    assert all(np.all(s == 1) for s in res.scales.values())  # top-k by group norm
    with pytest.raises(ValueError, match="pass model="):
        jaxprune.prune(v, jax.random.key(0), 0.5, method="frank_wolfe", train_ds=ds)
    with pytest.raises(ValueError, match="train_ds"):
        jaxprune.prune(v, jax.random.key(0), 0.5, model=model, method="frank_wolfe")


@pytest.mark.slow
def test_structured_result_mask_marks_what_the_smaller_network_uses():
    """``result.mask`` (input shapes) zeroes exactly the removed channels: the dense params
    times the mask compute what the smaller network computes (top-k, no re-weights)."""
    model = LeNet300100(widths=(24, 12))
    v = model.init(jax.random.key(1), jnp.zeros((1, 28, 28, 1)))
    res = jaxprune.prune(v, jax.random.key(2), 0.6, model=model, sampling="deterministic")
    assert res.kind == "channels"
    mask = res.mask
    assert jax.tree.structure(mask) == jax.tree.structure(v["params"])
    kept = sum(int(m.sum()) for m in jax.tree.leaves(mask))
    assert kept == metrics.param_count(res.params)
    x = jax.random.normal(jax.random.key(3), (5, 28, 28, 1))
    masked = jax.tree.map(lambda p, m: p * m, v["params"], mask)
    np.testing.assert_allclose(model.apply({"params": masked}, x),
                               res.model(model).apply(res.params, x), rtol=1e-5, atol=1e-5)


def test_on_phase_hook_wraps_every_phase_that_runs():
    """``prune(on_phase=...)``: each phase of a structured prune is entered once, in order,
    and :func:`jaxprune.pipeline.phase_timer` records a time for each."""
    from jaxprune import pipeline

    model = LeNet300100(widths=(16, 8))
    v = model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))
    timings, seen = {}, []
    timer = pipeline.phase_timer(timings)

    def on_phase(name):
        seen.append(name)
        return timer(name)

    jaxprune.prune(v, jax.random.key(1), 0.5, model=model, on_phase=on_phase)
    expected = [p for p in pipeline.PHASES if p not in ("prepare", "reconstruct")]  # no data phase
    assert seen == expected
    assert set(timings) == set(expected) and all(t >= 0.0 for t in timings.values())


def test_an_int_seed_is_a_key_and_a_bad_key_or_model_is_one_clear_error(lenet):
    model, v = lenet
    by_seed = jaxprune.prune(v, 5, 0.5, method="random")
    by_key = jaxprune.prune(v, jax.random.key(5), 0.5, method="random")
    assert all((by_seed.kept[g] == by_key.kept[g]).all() for g in by_key.kept)
    with pytest.raises(ValueError, match="int seed"):
        jaxprune.prune(v, "0", 0.5)
    # a model= that does not create these params names the parameter, not Flax's internals
    with pytest.raises(ValueError, match=r'model= does not match the params: .*"/dense_0"'):
        jaxprune.prune(v, 0, 0.5, model=LeNet300100(widths=(200, 100)))
