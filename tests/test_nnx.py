"""Flax NNX modules in, pruned NNX modules out (``prune(module, key, ratio, input_shape=)``):
every method and option, with the kept units and the report of the Linen twin."""
import os
import pathlib
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import flax.linen as nn
import jaxprune
from jaxprune import _flax, _nnx, checkpoint, data, structure
from jaxprune._tree import get_path, leaves_with_paths

import zoo_nnx

TESTS = pathlib.Path(__file__).resolve().parent
CASES = {"mlp": (lambda: zoo_nnx.NnxMLP(rngs=nnx.Rngs(0)), (10,)),
         "cnn": (lambda: zoo_nnx.NnxCNN(rngs=nnx.Rngs(0)), (6, 6, 2))}
TWINS = {"mlp": zoo_nnx.LinenMLP, "cnn": zoo_nnx.LinenCNN}


def _randomised(module, seed=0):
    """Non-trivial biases, norm scales and running statistics (init has zeros/ones)."""
    rng = np.random.default_rng(seed)
    for _, var in nnx.to_flat_state(nnx.state(module, (nnx.Param, nnx.BatchStat))):
        value = np.asarray(var.get_value())
        var.set_value(jnp.asarray(value + 0.3 * rng.standard_normal(value.shape), value.dtype)
                      if value.ndim == 1 else jnp.asarray(value))
    return module


def _linen_name(name: str) -> str:
    """An NNX unit or layer name as the Linen twin spells it (``layers/0`` -> ``layers_0``)."""
    return re.sub(r"/(\d+)(?=/|$)", r"_\1", name)


def _linen_twin(name, module):
    """``(Linen twin, the module's variables in the twin's layout)``."""
    variables: dict = {}
    for path, leaf in leaves_with_paths(_nnx.variables_of(module)):
        keys = _linen_name("/".join(path)).split("/")
        node = variables
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = leaf
    return TWINS[name](), variables


def _renamed(obj):
    """``obj`` (a report) with every unit name in the Linen twin's spelling."""
    if isinstance(obj, dict):
        return {_renamed(k): _renamed(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(map(_renamed, obj))
    return _linen_name(obj) if isinstance(obj, str) else obj


def _assert_same(a, b, where="report"):
    if isinstance(a, dict):
        assert set(a) == set(b), where
        for k in a:
            _assert_same(a[k], b[k], f"{where}/{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{where}/{i}")
    elif isinstance(a, (float, np.floating, np.ndarray, jax.Array)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7, err_msg=where)
    else:
        assert a == b, where


def _state(module):
    return jax.tree.map(np.asarray, nnx.state(module, (nnx.Param, nnx.BatchStat)))


@pytest.mark.slow
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


@pytest.mark.slow
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
    linen, variables = _linen_twin("mlp", module)
    a = jaxprune.prune(module, jax.random.key(7), 0.6, input_shape=(10,))
    b = jaxprune.prune(variables, jax.random.key(7), 0.6, model=linen, input_shape=(10,))
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
    # the method's own requirements, worded as for Linen
    with pytest.raises(ValueError, match="'pfp' is data-informed"):
        jaxprune.prune(module, key, 0.5, input_shape=(10,), method="pfp")
    with pytest.raises(ValueError, match="'frank_wolfe' needs the option.*train_ds"):
        jaxprune.prune(module, key, 0.5, input_shape=(10,), method="frank_wolfe")
    with pytest.raises(ValueError, match="structured method.*'magnitude'"):
        jaxprune.prune(module, key, 0.5, method="magnitude", data=np.ones((4, 10)),
                       reconstruct="lstsq")
    with pytest.raises(AttributeError, match="result.model"):
        jaxprune.prune({"params": {"d": {"kernel": jnp.ones((3, 4))},
                                   "e": {"kernel": jnp.ones((4, 2))}}}, key, 0.5).module


# -- every method: the Linen twin's kept units and report -----------------------------------
METHODS = {"pfp": {"method": "pfp"},
           "pvc+certificate": {"method": "pvc", "certificate": True},
           "coreset+lstsq": {"method": "coreset", "reconstruct": "lstsq", "recalibrate_bn": True},
           "magnitude": {"method": "magnitude"},
           "sipp": {"method": "sipp"},
           "frank_wolfe": {"method": "frank_wolfe", "epochs": 1, "batch_size": 32},
           "frank_wolfe_momentum": {"method": "frank_wolfe_momentum", "score_by": "momentum",
                                    "epochs": 1, "batch_size": 32}}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("case", list(METHODS))
def test_every_method_prunes_an_nnx_module_as_its_linen_twin(name, case):
    build, shape = CASES[name]
    module = _randomised(build())
    linen, variables = _linen_twin(name, module)
    rng = np.random.default_rng(1)
    options = dict(METHODS[case], data=rng.normal(size=(16, *shape)).astype(np.float32))
    if case.startswith("frank_wolfe"):
        options["train_ds"] = data.ArrayDataset(
            rng.normal(size=(64, *shape)).astype(np.float32),
            rng.integers(0, 3, 64).astype(np.int32), 3, "synthetic")
    before = _state(module)
    a = jaxprune.prune(module, jax.random.key(1), 0.5, **options)
    b = jaxprune.prune(variables, jax.random.key(1), 0.5, model=linen, **options)
    assert a.kind == b.kind and a.report["method"] == METHODS[case]["method"]
    assert {_linen_name(k) for k in a.kept} == set(b.kept) and a.kept
    for k, kept in a.kept.items():
        np.testing.assert_array_equal(kept, b.kept[_linen_name(k)])
    assert {_linen_name(k): w for k, w in a.widths.items()} == b.widths
    _assert_same(_renamed(a.report), b.report)
    x = jnp.asarray(rng.normal(size=(4, *shape)), jnp.float32)
    small, masked = a.module, a.masked
    small.eval()
    masked.eval()
    np.testing.assert_allclose(small(x), masked(x), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(masked(x), linen.apply(b.masked, x), rtol=1e-5, atol=1e-5)
    assert jax.tree.all(jax.tree.map(np.array_equal, before, _state(module)))
    if a.kind == "weights":  # the input's shapes, pruned entries exactly 0, in both fields
        pruned = _nnx.variables_of(small)
        assert jax.tree.all(jax.tree.map(np.array_equal, pruned, _nnx.variables_of(masked)))
        assert jax.tree.all(jax.tree.map(np.array_equal, pruned, a.params))
        for layer in a.groups:
            if layer.name in a.kept:
                kernel = np.asarray(get_path(pruned, layer.path))
                assert kernel.shape == a.kept[layer.name].shape
                assert np.all(kernel[~a.kept[layer.name]] == 0)
    else:
        assert a.report["params_after"] < a.report["params_before"]


def test_as_linen_computes_what_the_module_computes_in_both_modes():
    module = _randomised(zoo_nnx.NnxCNN(rngs=nnx.Rngs(0)))
    adapter = _nnx.as_linen(module)
    variables = _nnx.variables_of(module)
    x = jax.random.normal(jax.random.key(2), (4, 6, 6, 2))
    reference = nnx.clone(module)
    reference.eval()
    np.testing.assert_array_equal(adapter.apply(variables, x), reference(x))
    reference.train()
    y = reference(x)  # BatchNorm on the batch's statistics, running averages updated
    out, updates = adapter.apply(variables, x, train=True, mutable=["batch_stats"])
    np.testing.assert_allclose(out, y, rtol=1e-6, atol=1e-6)
    _assert_same(updates["batch_stats"], _nnx.variables_of(reference)["batch_stats"])
    layers = _flax.kernel_modules(adapter, variables, (6, 6, 2))
    assert [type(m) for m in layers.values()] == [nn.Conv] * 3 + [nn.Dense] * 2


class _Scaled(nnx.Linear):
    def __call__(self, x):
        return 2.0 * super().__call__(x)


class _Odd(nnx.Module):
    """Kernel layers without a Linen counterpart: a subclass with its own call and a
    ``LinearGeneral``; they run as they are and are still seen as kernel layers."""

    def __init__(self, *, rngs):
        self.first = _Scaled(6, 8, rngs=rngs)
        self.general = nnx.LinearGeneral(8, (2, 4), rngs=rngs)
        self.out = nnx.Linear(8, 3, rngs=rngs)

    def __call__(self, x):
        h = self.general(nnx.relu(self.first(x)))
        return self.out(h.reshape(x.shape[0], -1))


def test_layers_without_a_linen_counterpart_run_as_they_are():
    module = _Odd(rngs=nnx.Rngs(0))
    adapter = _nnx.as_linen(module)
    variables = _nnx.variables_of(module)
    x = jax.random.normal(jax.random.key(2), (5, 6))
    np.testing.assert_array_equal(adapter.apply(variables, x), module(x))
    layers = structure.kernel_layers(variables, adapter, (6,))
    assert [(k.name, k.layer, k.why) for k in layers] == [
        ("first", "other", "_Scaled layer"), ("general", "other", "LinearGeneral layer"),
        ("out", "dense", "")]
    res = jaxprune.prune(module, jax.random.key(0), 0.5, method="magnitude", input_shape=(6,))
    assert set(res.kept) == {"first", "general"}
    np.testing.assert_allclose(res.module(x), res.masked(x))
    assert float(res.report["achieved_ratio"]) == pytest.approx(0.5, abs=0.01)


def test_certify_after_the_fact_reads_an_nnx_result():
    """``bounds.certify`` on a finished NNX prune (``result.masked`` is then a module) gives
    the same certificate, observed errors included, as the Linen twin's."""
    from jaxprune import bounds
    module = _randomised(zoo_nnx.NnxMLP(rngs=nnx.Rngs(0)))
    linen, variables = _linen_twin("mlp", module)
    x = np.random.default_rng(3).normal(size=(16, 10)).astype(np.float32)
    a = jaxprune.prune(module, jax.random.key(2), 0.5, input_shape=(10,))
    b = jaxprune.prune(variables, jax.random.key(2), 0.5, model=linen, input_shape=(10,))
    ca = bounds.certify(a, model=_nnx.as_linen(module), data=x)
    cb = bounds.certify(b, model=linen, data=x)
    for i in range(2):
        got, want = ca[f"layers/{i}"]["observed"], cb[f"layers_{i}"]["observed"]
        assert [k.replace("/", "_") for k in got] == list(want)
        for (_, g), (_, w) in zip(got.items(), want.items()):
            np.testing.assert_allclose(g["max_rel_err"], w["max_rel_err"], rtol=1e-5)
