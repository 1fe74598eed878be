"""Flax NNX modules in, smaller NNX modules out (``prune(module, key, ratio, input_shape=)``)."""
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import jaxprune
from jaxprune import checkpoint

import zoo_nnx

TESTS = pathlib.Path(__file__).resolve().parent
CASES = {"mlp": (lambda: zoo_nnx.NnxMLP(rngs=nnx.Rngs(0)), (10,)),
         "cnn": (lambda: zoo_nnx.NnxCNN(rngs=nnx.Rngs(0)), (6, 6, 2))}


def _randomised(module, seed=0):
    """Non-trivial biases, norm scales and running statistics (init has zeros/ones)."""
    rng = np.random.default_rng(seed)
    for _, var in nnx.to_flat_state(nnx.state(module, (nnx.Param, nnx.BatchStat))):
        value = np.asarray(var.get_value())
        var.set_value(jnp.asarray(value + 0.3 * rng.standard_normal(value.shape), value.dtype)
                      if value.ndim == 1 else jnp.asarray(value))
    return module


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("method", ["coreset", "l1_norm", "random"])
@pytest.mark.parametrize("prune_residual", [False, True])
def test_smaller_nnx_module_equals_the_masked_one(name, method, prune_residual):
    build, shape = CASES[name]
    module = _randomised(build())
    before = jax.tree.map(np.asarray, nnx.state(module, (nnx.Param, nnx.BatchStat)))
    res = jaxprune.prune(module, jax.random.key(1), 0.5, method=method, input_shape=shape,
                         prune_residual=prune_residual)
    small, masked = res.module, res.masked
    assert isinstance(small, type(module)) and small is not module
    small.eval()
    masked.eval()
    x = jax.random.normal(jax.random.key(2), (4, *shape))
    np.testing.assert_allclose(small(x), masked(x), rtol=1e-5, atol=1e-5)
    # the input module is untouched; the smaller one is consistent with its own arrays
    after = jax.tree.map(np.asarray, nnx.state(module, (nnx.Param, nnx.BatchStat)))
    assert jax.tree.all(jax.tree.map(np.array_equal, before, after))
    for _, layer in nnx.iter_modules(small):
        if isinstance(layer, (nnx.Linear, nnx.Conv)):
            assert layer.kernel.shape[-1] == layer.out_features
            assert layer.kernel.shape[-2] == layer.in_features
        if isinstance(layer, nnx.BatchNorm):
            assert layer.scale.shape == (layer.num_features,)
    assert res.report["params_after"] < res.report["params_before"]
    assert sum(np.size(a) for a in jax.tree.leaves(nnx.state(small, nnx.Param))) == \
        res.report["params_after"]
    if name == "cnn" and not prune_residual:
        assert "stem" not in res.widths and res.report["frozen"]["stem"].startswith("tied")


def test_the_smaller_module_jits_and_fine_tunes_with_nnx_optimizer():
    module = _randomised(zoo_nnx.NnxCNN(rngs=nnx.Rngs(0)))
    res = jaxprune.prune(module, jax.random.key(0), 0.5, input_shape=(6, 6, 2))
    small = res.module
    small.train()
    optimizer = nnx.Optimizer(small, optax.adam(1e-2), wrt=nnx.Param)
    x = jax.random.normal(jax.random.key(3), (32, 6, 6, 2))
    y = jax.random.randint(jax.random.key(4), (32,), 0, 3)

    @nnx.jit
    def step(model, opt):
        def loss_fn(m):
            return optax.softmax_cross_entropy_with_integer_labels(m(x), y).mean()
        loss, grads = nnx.value_and_grad(loss_fn)(model)
        opt.update(model, grads)
        return loss

    losses = [float(step(small, optimizer)) for _ in range(30)]
    assert losses[-1] < 0.7 * losses[0]


_RESTORE = """
import sys, numpy as np, jax
from flax import nnx
from jaxprune import checkpoint
import zoo_nnx
m = checkpoint.load_nnx(sys.argv[1], lambda: zoo_nnx.NnxCNN(rngs=nnx.Rngs(0)))
m.eval()
x = np.load(sys.argv[1] + "/x.npy")
np.save(sys.argv[1] + "/y.npy", np.asarray(m(x)))
print(m.inner.out_features, m.bn1.num_features)
"""


def test_save_and_restore_in_a_fresh_process(tmp_path):
    module = _randomised(zoo_nnx.NnxCNN(rngs=nnx.Rngs(0)))
    res = jaxprune.prune(module, jax.random.key(0), 0.5, input_shape=(6, 6, 2))
    small = res.module
    small.eval()
    checkpoint.save_nnx(tmp_path, small)
    x = np.asarray(jax.random.normal(jax.random.key(5), (3, 6, 6, 2)))
    np.save(tmp_path / "x.npy", x)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS), str(TESTS.parent),
                                                       os.environ.get("PYTHONPATH", "")]))
    p = subprocess.run([sys.executable, "-c", _RESTORE, str(tmp_path)], env=env,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.split() == [str(small.inner.out_features)] * 2
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), small(x), rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="other arrays"):
        checkpoint.load_nnx(tmp_path, lambda: zoo_nnx.NnxMLP(rngs=nnx.Rngs(0)))


def test_linen_and_nnx_twins_keep_the_same_channels():
    module = _randomised(zoo_nnx.NnxMLP(rngs=nnx.Rngs(0)))
    linen = zoo_nnx.LinenMLP()
    params = {"layers_0": {"kernel": module.layers[0].kernel.get_value(),
                           "bias": module.layers[0].bias.get_value()},
              "layers_1": {"kernel": module.layers[1].kernel.get_value(),
                           "bias": module.layers[1].bias.get_value()},
              "out": {"kernel": module.out.kernel.get_value(),
                      "bias": module.out.bias.get_value()}}
    a = jaxprune.prune(module, jax.random.key(7), 0.6, input_shape=(10,))
    b = jaxprune.prune({"params": params}, jax.random.key(7), 0.6, model=linen,
                       input_shape=(10,))
    assert [a.widths[f"layers/{i}"] for i in range(2)] == [b.widths[f"layers_{i}"]
                                                           for i in range(2)]
    for i in range(2):
        np.testing.assert_array_equal(a.kept[f"layers/{i}"], b.kept[f"layers_{i}"])
    x = jax.random.normal(jax.random.key(8), (5, 10))
    small = a.module
    small.eval()
    np.testing.assert_allclose(small(x), b.model(linen).apply(b.params, x), rtol=1e-5,
                               atol=1e-5)


def test_nnx_bad_input_is_a_clear_error():
    module = zoo_nnx.NnxMLP(rngs=nnx.Rngs(0))
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="input_shape"):
        jaxprune.prune(module, key, 0.5)
    with pytest.raises(ValueError, match="no model="):
        jaxprune.prune(module, key, 0.5, input_shape=(10,), model=zoo_nnx.LinenMLP())
    with pytest.raises(ValueError, match="not available for NNX"):
        jaxprune.prune(module, key, 0.5, input_shape=(10,), method="magnitude")
    with pytest.raises(AttributeError, match="result.model"):
        jaxprune.prune({"params": {"d": {"kernel": jnp.ones((3, 4))},
                                   "e": {"kernel": jnp.ones((4, 2))}}}, key, 0.5).module
