"""``jaxprune.prune`` on third-party-style Linen models (``tests/zoo.py``).

For every zoo model and both a data-free sensitivity method (``coreset``) and a magnitude
baseline (``l1_norm``) at ratio 0.5: the smaller module (``res.model(m)``, a
:class:`jaxprune.rebuild.Resized` wrapper) computes what the masked dense network computes,
its ``init`` creates exactly the pruned shapes, the whole-model ratio is met (or a
``PruneWarning`` names every group left whole), and the FLOPs drop. Then: saved small models
round-trip through a fresh process, the inference flags are detected from ``__call__`` (and an
undetectable one is a clear error naming ``apply_kwargs``), and a model no channel of which
may be removed (GroupNorm) says why.

Expensive set-up (variables, pruning results) is computed once per (model, method) and shared
by the parametrisations through module-level caches.
"""
import json
import os
import pathlib
import subprocess
import sys
import textwrap
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxprune
from jaxprune import checkpoint

import zoo

TESTS = pathlib.Path(__file__).resolve().parent
REPO = TESTS.parent
RATIO = 0.5
METHODS = ("coreset", "l1_norm")
CASES = [(name, method) for name in zoo.ZOO for method in METHODS]


# --------------------------------------------------------------------------------------------
# shared set-up
# --------------------------------------------------------------------------------------------
def _draw_variables(model, shape, kwargs, seed):
    """He-normal kernels and non-trivial biases / norm scales / BatchNorm statistics, drawn
    with NumPy at the shapes of ``model.init`` (eval_shape only: nothing is compiled)."""
    abstract = jax.eval_shape(lambda k, x: model.init(k, x, **kwargs), jax.random.key(seed),
                              jnp.zeros((1, *shape)))
    rng = np.random.default_rng(seed)

    def draw(path, a):
        name = str(getattr(path[-1], "key", path[-1]))
        if name == "kernel":
            fan_in = int(np.prod(a.shape[:-1]))
            value = rng.normal(size=a.shape) * np.sqrt(2.0 / fan_in)
        elif name in ("scale", "var"):
            value = rng.uniform(0.5, 1.5, a.shape)
        else:  # bias, mean
            value = 0.3 * rng.normal(size=a.shape)
        return jnp.asarray(value, a.dtype)

    return jax.tree_util.tree_map_with_path(draw, abstract)


_MODELS = {}
_RESULTS = {}


def _model(name):
    """``(module, variables, input_shape, inference kwargs)`` of a zoo entry (cached)."""
    if name not in _MODELS:
        factory, shape, kwargs = zoo.ZOO[name]
        model = factory()
        kwargs = dict(kwargs or {})
        _MODELS[name] = (model, _draw_variables(model, shape, kwargs, seed=len(_MODELS)),
                         tuple(shape), kwargs)
    return _MODELS[name]


def _prune(name, method):
    """``(result, PruneWarnings raised)`` of pruning a zoo entry at RATIO (cached, failures
    too: every test of the case reports the same error). The inference flags are NOT passed:
    ``prune`` finds them from ``__call__``. ``zoo.BARE`` entries are pruned from their bare
    params, without ``model=``."""
    key = (name, method)
    if key not in _RESULTS:
        model, v, shape, _ = _model(name)
        bare = name in zoo.BARE
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                res = jaxprune.prune(v["params"] if bare else v, jax.random.key(1), RATIO,
                                     method=method, model=None if bare else model,
                                     input_shape=None if bare else shape)
            except Exception as err:  # noqa: BLE001 - re-raised by every test of the case
                res = err
        found = [w for w in caught if issubclass(w.category, jaxprune.PruneWarning)]
        _RESULTS[key] = (res, found)
    res, found = _RESULTS[key]
    if isinstance(res, Exception):
        raise res
    return res, found


def _as_variables(name, params):
    return {"params": params} if name in zoo.BARE else params


def _x(shape, n=6, seed=11):
    return jax.random.normal(jax.random.key(seed), (n, *shape))


def _pruned_something(res):
    return any(after < before for before, after in res.report["neurons"].values())


def _shape_tree(tree):
    return jax.tree.map(lambda a: tuple(np.shape(a)), dict(tree))


# --------------------------------------------------------------------------------------------
# (a)-(d): every zoo model x method
# --------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("name,method", CASES)
def test_small_model_equals_masked_network(name, method):
    model, v, shape, kw = _model(name)
    res, _ = _prune(name, method)
    small = res.model(model)
    x = _x(shape)
    got = np.asarray(small.apply(_as_variables(name, res.params), x, **kw))
    want = np.asarray(model.apply(res.masked, x, **kw))
    assert got.shape == want.shape
    scale = float(np.max(np.abs(want))) or 1.0
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * scale)
    if _pruned_something(res):  # the pruned network differs from the dense one
        dense = np.asarray(model.apply(v, x, **kw))
        assert not np.allclose(want, dense, atol=1e-3 * scale)


@pytest.mark.parametrize("name,method", CASES)
def test_small_model_init_creates_the_pruned_shapes(name, method):
    model, _, shape, kw = _model(name)
    res, _ = _prune(name, method)
    small = res.model(model)
    fresh = jax.eval_shape(lambda k, x: small.init(k, x, **kw), jax.random.key(0),
                           jnp.zeros((1, *shape)))
    assert _shape_tree(fresh) == _shape_tree(_as_variables(name, res.params))


@pytest.mark.parametrize("name,method", CASES)
def test_whole_model_ratio_or_a_warning_naming_the_frozen_groups(name, method):
    res, found = _prune(name, method)
    achieved = res.report["ratios"]["params_model"]
    assert res.report["achieved_ratio"] == pytest.approx(achieved)  # unit="params"
    for group, reason in res.report["frozen"].items():
        assert isinstance(reason, str) and reason, (group, reason)
    if abs(achieved - RATIO) <= 0.02:
        return
    messages = [str(w.message) for w in found if "Not pruned" in str(w.message)]
    assert messages, (f"achieved {achieved:.4f} (target {RATIO}) but no PruneWarning "
                      f"listing the frozen groups: {[str(w.message) for w in found]}")
    missing = [g for g in res.report["frozen"] if f"{g} (" not in messages[0]]
    assert not missing, f"PruneWarning does not name frozen groups {missing}: {messages[0]}"


@pytest.mark.parametrize("name,method", CASES)
def test_flops_drop_when_a_group_was_pruned(name, method):
    res, _ = _prune(name, method)
    before, after = res.report["flops_before"], res.report["flops_after"]
    assert 0 < after <= before
    if _pruned_something(res):
        assert after < before


# --------------------------------------------------------------------------------------------
# specific behaviours
# --------------------------------------------------------------------------------------------
def test_bare_dense_chain_is_ordered_numerically():
    """Dense_0..Dense_11 of equal widths, pruned without model=: the chain is walked in
    numeric order (alphabetically Dense_10 precedes Dense_2, which computes another network);
    the equivalence test above compares with the model itself."""
    res, _ = _prune("dense_chain12", "l1_norm")
    assert [g.name for g in res.groups] == [f"Dense_{i}" for i in range(12)]
    assert res.report["frozen"] == {"Dense_11": "channels reach the network output"}
    assert all(res.widths[f"Dense_{i}"] < 16 for i in range(11))


_RESTORE = textwrap.dedent("""
    import json, sys
    import numpy as np
    from jaxprune import checkpoint
    root, cases = sys.argv[1], json.loads(sys.argv[2])
    for name, kwargs in cases.items():
        model, variables, meta = checkpoint.load_model(root + "/" + name, trust=("zoo",))
        x = np.load(root + "/" + name + "/x.npy")
        np.save(root + "/" + name + "/restored.npy", np.asarray(model.apply(variables, x, **kwargs)))
        print(name, type(model).__name__, type(model.module).__module__,
              type(model.module).__name__, meta["zoo"])
""")


@pytest.mark.slow
def test_saved_small_models_reload_in_a_fresh_process(tmp_path):
    names = ("sequential_mlp", "batchnorm_cnn", "densenet")
    expected, classes = {}, {}
    for name in names:
        model, _, shape, kw = _model(name)
        res, _ = _prune(name, "l1_norm")
        small = res.model(model)
        x = np.asarray(_x(shape, n=3, seed=5))
        d = tmp_path / name
        checkpoint.save_model(d, small, res.params, meta={"zoo": name})
        np.save(d / "x.npy", x)
        expected[name] = np.asarray(small.apply(res.params, x, **kw))
        classes[name] = f"{type(model).__module__} {type(model).__name__}"
    env = dict(os.environ, XLA_FLAGS="",
               PYTHONPATH=os.pathsep.join([str(TESTS), str(REPO),
                                           os.environ.get("PYTHONPATH", "")]))
    cases = json.dumps({n: _model(n)[3] for n in names})
    p = subprocess.run([sys.executable, "-c", _RESTORE, str(tmp_path), cases], env=env,
                       cwd=REPO, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    lines = p.stdout.strip().splitlines()
    for name in names:
        assert f"{name} Resized {classes[name]} {name}" in lines  # zoo.* / nn.Sequential
        restored = np.load(tmp_path / name / "restored.npy")
        np.testing.assert_allclose(restored, expected[name], rtol=1e-6, atol=1e-6)


def test_deterministic_flag_is_detected_without_apply_kwargs():
    model, v, shape, _ = _model("dropout_mlp")
    res = jaxprune.prune(v, jax.random.key(0), RATIO, method="l1_norm", model=model,
                         input_shape=shape)
    assert res.apply_kwargs == {"deterministic": True}
    x = _x(shape)
    small = res.model(model)
    np.testing.assert_allclose(small.apply(res.params, x, deterministic=True),
                               model.apply(res.masked, x, deterministic=True),
                               rtol=1e-4, atol=1e-5)


def test_an_undetectable_inference_flag_needs_apply_kwargs():
    model = zoo.ModeSwitch()
    shape = (6,)
    v = _draw_variables(model, shape, {"mode": "eval"}, seed=3)
    with pytest.raises(ValueError, match="apply_kwargs"):
        jaxprune.prune(v, jax.random.key(0), RATIO, method="l1_norm", model=model,
                       input_shape=shape)
    res = jaxprune.prune(v, jax.random.key(0), RATIO, method="l1_norm", model=model,
                         input_shape=shape, apply_kwargs={"mode": "eval"})
    assert res.apply_kwargs == {"mode": "eval"}
    assert _pruned_something(res)
    small = res.model(model)
    x = _x(shape)
    np.testing.assert_allclose(small.apply(res.params, x, mode="eval"),
                               model.apply(res.masked, x, mode="eval"), rtol=1e-4, atol=1e-5)


def test_module_called_twice_prunes_as_one_group_with_prune_residual():
    """A Dense applied twice in a row ties its input and output channels with the previous
    layer's: one group with two producers, pruned consistently everywhere it appears."""
    model, v, shape, kw = _model("shared_twice_chain")
    res = jaxprune.prune(v, jax.random.key(1), RATIO, method="l1_norm", model=model,
                         input_shape=shape, prune_residual=True)
    (group,) = [g for g in res.groups if g.name in res.widths]
    assert sorted(group.producer_modules) == ["inp", "shared"]
    assert res.widths[group.name] < group.size
    small = res.model(model)
    x = _x(shape)
    np.testing.assert_allclose(small.apply(res.params, x), model.apply(res.masked, x),
                               rtol=1e-4, atol=1e-5)
    assert res.params["params"]["shared"]["kernel"].shape == (res.widths[group.name],) * 2


def test_a_model_frozen_entirely_reports_every_group_and_why():
    """GroupNorm normalises over groups of channels: removing one changes the others, so no
    conv group may be pruned. The result says so per group; nothing shrinks."""
    res, found = _prune("groupnorm_cnn", "l1_norm")
    frozen = res.report["frozen"]
    assert {"Conv_0", "Conv_1", "Dense_0"} <= set(frozen)
    for name in ("Conv_0", "Conv_1"):
        assert isinstance(frozen[name], str) and frozen[name]
        assert "output" not in frozen[name]  # frozen for the norm, not as the output layer
    assert res.report["ratios"]["params_model"] == 0.0
    assert res.report["flops_after"] == res.report["flops_before"]
    assert any("Conv_0 (" in str(w.message) for w in found)
