"""The smaller module for any Linen module (``jaxprune.rebuild``), its JSON record
(``jaxprune._spec``), the inference-mode detection and the checks of ``prune``'s arguments."""
import warnings

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxprune
from jaxprune import _flax, _spec, checkpoint, rebuild


class SetupStyle(nn.Module):
    """Submodules built in ``setup`` with explicit names; a nested compact block."""
    hidden: int = 24

    def setup(self):
        self.inp = nn.Dense(self.hidden)
        self.block = Block(12)
        self.out = nn.Dense(3)

    def __call__(self, x, training: bool = False):
        return self.out(self.block(nn.relu(self.inp(x)), training))


class Block(nn.Module):
    width: int

    @nn.compact
    def __call__(self, x, training: bool):
        x = nn.Dense(self.width, name="fc")(x)
        x = nn.BatchNorm(use_running_average=not training)(x)
        return nn.relu(x)


def _shapes(tree):
    return jax.tree.map(np.shape, tree)


def _init(model, shape, **kw):
    return model.init(jax.random.key(0), jnp.ones((1, *shape)), **kw)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["coreset", "l1_norm"])
def test_setup_style_module_shrinks_and_equals_the_masked_network(method):
    m = SetupStyle()
    v = _init(m, (10,))
    v = jax.tree.map(lambda a: a + 0.1 * jax.random.normal(jax.random.key(3), a.shape), v)
    res = jaxprune.prune(v, jax.random.key(1), 0.5, method=method, model=m, input_shape=(10,))
    assert res.apply_kwargs == {"training": False}           # found from the signature
    small = res.model(m)
    assert isinstance(small, rebuild.Resized)
    assert _shapes(_init(small, (10,))) == _shapes(res.params)
    x = jax.random.normal(jax.random.key(2), (6, 10))
    np.testing.assert_allclose(small.apply(res.params, x), m.apply(res.masked, x),
                               rtol=1e-5, atol=1e-5)
    assert res.report["flops_after"] < res.report["flops_before"]
    # pruning the smaller module again keeps the earlier sizes and adds the new ones
    again = jaxprune.prune(res.params, jax.random.key(4), 0.3, method=method, model=small,
                           input_shape=(10,))
    smaller = again.model(small)
    assert _shapes(_init(smaller, (10,))) == _shapes(again.params)
    np.testing.assert_allclose(smaller.apply(again.params, x), small.apply(again.masked, x),
                               rtol=1e-5, atol=1e-5)


def test_a_size_in_a_field_jaxprune_cannot_see_is_a_clear_error_and_fields_fixes_it():
    class Scaled(nn.Module):
        width: int = 16

        @nn.compact
        def __call__(self, x):
            h = nn.Dense(self.width)(x)
            h = h * self.param("gain", nn.initializers.ones, (self.width,))
            return nn.Dense(2)(nn.relu(h))

    m = Scaled()
    v = _init(m, (5,))
    res = jaxprune.prune(v, jax.random.key(0), 0.5, model=m, input_shape=(5,))
    with pytest.raises(ValueError, match="fields="):
        res.model(m)
    small = res.model(m, fields={"": {"width": res.widths["Dense_0"]}})
    x = jax.random.normal(jax.random.key(1), (3, 5))
    np.testing.assert_allclose(small.apply(res.params, x), m.apply(res.masked, x), atol=1e-5)


@pytest.mark.slow
def test_the_original_module_is_untouched():
    m = nn.Sequential([nn.Dense(8), nn.relu, nn.Dense(6), nn.relu, nn.Dense(2)])
    v = _init(m, (4,))
    res = jaxprune.prune(v, jax.random.key(0), 0.5, model=m, input_shape=(4,))
    res.model(m).init(jax.random.key(0), jnp.ones((1, 4)))
    assert [layer.features for layer in m.layers[::2]] == [8, 6, 2]
    assert _shapes(_init(m, (4,))) == _shapes(v)


def test_module_spec_round_trip_and_clear_errors():
    seq = nn.Sequential([nn.Dense(5, use_bias=False), nn.gelu,
                         nn.Dense(3, param_dtype=jnp.bfloat16)])
    assert _spec.module_from_spec(_spec.module_spec(seq)) == seq
    small = rebuild.Resized(_flax.hashable(seq), ((("layers_0",), (("features", 2),)),))
    assert _spec.module_from_spec(_spec.module_spec(small)) == small
    with pytest.raises(ValueError, match="importable"):
        _spec.module_spec(nn.Sequential([nn.Dense(2), lambda x: x * 2]))
    with pytest.raises(ValueError, match="not importable"):
        _spec.module_from_spec({"class": "no_such_package.mod:Model", "fields": {}},
                              trust=("no_such_package",))


def test_inference_flags_are_detected_and_never_fall_back_to_training():
    class Flags(nn.Module):
        @nn.compact
        def __call__(self, x, deterministic: bool, use_running_average: bool = True):
            return nn.Dropout(0.5, deterministic=deterministic)(nn.Dense(3)(x))

    assert _flax.mode_kwargs(Flags(), train=False) == {"deterministic": True,
                                                       "use_running_average": True}
    assert _flax.mode_kwargs(Flags(), train=True) == {"deterministic": False,
                                                      "use_running_average": False}

    class Mode(nn.Module):
        @nn.compact
        def __call__(self, x, mode: str = "train"):
            h = nn.relu(nn.Dense(8)(x))
            return nn.Dense(2)(nn.Dropout(0.5, deterministic=mode == "eval")(h))

    m = Mode()
    v = m.init(jax.random.key(0), jnp.ones((1, 4)), mode="eval")
    with pytest.raises(ValueError, match="apply_kwargs"):
        jaxprune.prune(v, jax.random.key(0), 0.5, model=m, input_shape=(4,))
    res = jaxprune.prune(v, jax.random.key(0), 0.5, model=m, input_shape=(4,),
                         apply_kwargs={"mode": "eval"})
    x = jnp.ones((2, 4))
    np.testing.assert_allclose(res.model(m).apply(res.params, x, mode="eval"),
                               m.apply(res.masked, x, mode="eval"), atol=1e-5)


def test_ratio_scalars_integer_params_round_to_and_the_frozen_warning():
    m = nn.Sequential([nn.Dense(40), nn.relu, nn.Dense(24), nn.relu, nn.Dense(3)])
    v = _init(m, (6,))
    key = jax.random.key(0)
    base = jaxprune.prune(v, key, 0.5, model=m, input_shape=(6,))
    for r in (np.float32(0.5), jnp.asarray(0.5), np.asarray(0.5)):
        assert jaxprune.prune(v, key, r, model=m, input_shape=(6,)).widths == base.widths
    for bad in (True, "0.5", jnp.ones(2) * 0.5, 1.0, -0.1):
        with pytest.raises(ValueError, match="ratio"):
            jaxprune.prune(v, key, bad, model=m, input_shape=(6,))
    ints = jax.tree.map(lambda a: a.astype(jnp.int32), v)
    with pytest.raises(ValueError, match="floating"):
        jaxprune.prune(ints, key, 0.5, model=m, input_shape=(6,))
    rounded = jaxprune.prune(v, key, 0.5, model=m, input_shape=(6,), round_to=8)
    assert all(w % 8 == 0 for w in rounded.widths.values())
    with pytest.raises(ValueError, match="round_to"):
        jaxprune.prune(v, key, 0.5, model=m, input_shape=(6,), round_to=0)
    # LayerNorm over the hidden channels mixes them: that group is frozen, the target is out
    # of reach, and the warning names what was not pruned and why
    ln = nn.Sequential([nn.Dense(40), nn.LayerNorm(), nn.relu, nn.Dense(24), nn.relu,
                        nn.Dense(3)])
    with pytest.warns(jaxprune.PruneWarning, match="layers_0 .channel axis removed"):
        res = jaxprune.prune(_init(ln, (6,)), key, 0.7, model=ln, input_shape=(6,))
    assert res.report["frozen"]["layers_0"] == "channel axis removed"
    assert res.report["achieved_ratio"] == res.report["ratios"]["params_model"]


def test_pruned_user_module_round_trips_through_a_checkpoint(tmp_path):
    m = SetupStyle()
    v = _init(m, (10,))
    res = jaxprune.prune(v, jax.random.key(1), 0.5, model=m, input_shape=(10,))
    small = res.model(m)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        checkpoint.save_model(tmp_path / "m", small, res.params)
    loaded, variables, _ = checkpoint.load_model(tmp_path / "m", trust=(SetupStyle.__module__,))
    assert loaded == small
    x = jax.random.normal(jax.random.key(2), (4, 10))
    np.testing.assert_allclose(loaded.apply(variables, x), small.apply(res.params, x),
                               atol=1e-6)


def test_the_smaller_user_module_trains_with_jaxprune_train():
    """``small`` (a Resized nn.Sequential with list layers) is a static argument of the
    compiled steps, initialises at the pruned shapes and fine-tunes from ``result.params``."""
    from jaxprune import data, train
    m = nn.Sequential([nn.Dense(32), nn.relu, nn.Dense(16), nn.relu, nn.Dense(3)])
    v = _init(m, (6,))
    res = jaxprune.prune(v, jax.random.key(0), 0.5, model=m, input_shape=(6,))
    small = res.model(m)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((256, 6)).astype(np.float32)
    ds = data.ArrayDataset(x, (x[:, 0] > 0).astype(np.int32) + (x[:, 1] > 0), 3, "toy")
    cfg = train.TrainConfig(optimizer="adam", learning_rate=1e-2, epochs=3, batch_size=32,
                            log_every=0)
    before = train.evaluate(small, res.params, ds)["loss"]
    fit = train.fit(small, ds, cfg, variables=res.params, progress=False, devices=1)
    assert _shapes(fit.variables) == _shapes(res.params)
    assert train.evaluate(small, fit.variables, ds)["loss"] < before
