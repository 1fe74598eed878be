"""``pfp`` (Liebenwein et al. 2020, data-informed filter pruning) and ``pvc``'s β from data.

The references below re-state the formulas with explicit loops over examples, patch positions,
consumer outputs and patch entries; they share nothing with the implementation but the captured
layer inputs (``jaxprune.views.layer_inputs``).
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxprune
from jaxprune import methods, surgery
from jaxprune.views import layer_inputs
from jaxprune.methods import LayerView


class MLP(nn.Module):
    widths: tuple = (3,)
    out: int = 1
    act: str = "relu"

    @nn.compact
    def __call__(self, x, train=False):
        act = nn.relu if self.act == "relu" else jnp.tanh
        for i, w in enumerate(self.widths):
            x = act(nn.Dense(w, name=f"l{i}")(x))
        return nn.Dense(self.out, name="head")(x)


class TinyCNN(nn.Module):
    """conv_0 (3×3 SAME) → relu → conv_1 (3×3, stride 2, SAME) → relu → 2×2 max-pool →
    flatten → dense_0 → relu → head; on 8×8 inputs (LeNet-5-like, tiny widths)."""
    widths: tuple = (4, 5, 6)

    @nn.compact
    def __call__(self, x, train=False):
        x = nn.relu(nn.Conv(self.widths[0], (3, 3), padding="SAME", name="conv_0")(x))
        x = nn.relu(nn.Conv(self.widths[1], (3, 3), strides=(2, 2), padding="SAME",
                            name="conv_1")(x))
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
        x = x.reshape((x.shape[0], -1))
        x = nn.relu(nn.Dense(self.widths[2], name="dense_0")(x))
        return nn.Dense(3, name="head")(x)

    def prunable_layers(self):
        return ("conv_0", "conv_1", "dense_0")


def _data(shape, n, seed):
    return np.asarray(jax.random.normal(jax.random.key(seed), (n, *shape)), np.float32)


# --------------------------------------------------------------------------------------------
# naive re-statements
# --------------------------------------------------------------------------------------------
def _ref_pfp(units, n_channels):
    """``s_j = max over units, outputs i, signs of c_ij / Σ_k c_ik`` with
    ``c_ij = Σ_{r: channel(r) = j} max(±w_ri a_r, 0)``; ``units``: (a (R,), channel (R,), w (R, K))
    — one per example (Dense) or per example and output position (Conv patch)."""
    s = np.zeros(n_channels)
    for a, channel, w in units:
        for i in range(w.shape[1]):
            for sign in (1.0, -1.0):
                c = np.zeros(n_channels)
                for r in range(len(a)):
                    c[channel[r]] += max(sign * w[r, i] * a[r], 0.0)
                if c.sum() > 0:
                    s = np.maximum(s, c / c.sum())
    return s


def _dense_units(a, kernel, n_channels):
    """Dense consumer; NHWC flatten: row ``r`` belongs to channel ``r % n_channels``."""
    channel = np.arange(kernel.shape[0]) % n_channels
    return [(a[n], channel, kernel) for n in range(a.shape[0])]


def _same_pads(size, k, stride):
    out = -(-size // stride)
    total = max((out - 1) * stride + k - size, 0)
    return out, total // 2


def _patches(a, k, stride, padding):
    """Every (example, output position) patch of ``a`` (N, H, W, C): (k, k, C) arrays."""
    n_ex, h, w, _ = a.shape
    if padding == "SAME":
        (oh, ph), (ow, pw) = _same_pads(h, k, stride), _same_pads(w, k, stride)
    else:
        oh, ow, ph, pw = (h - k) // stride + 1, (w - k) // stride + 1, 0, 0
    out = []
    for n in range(n_ex):
        for y in range(oh):
            for x in range(ow):
                patch = np.zeros((k, k, a.shape[3]))
                for dy in range(k):
                    for dx in range(k):
                        yy, xx = y * stride + dy - ph, x * stride + dx - pw
                        if 0 <= yy < h and 0 <= xx < w:
                            patch[dy, dx] = a[n, yy, xx]
                out.append(patch)
    return out


def _conv_units(a, kernel, stride, padding):
    k, c_in = kernel.shape[0], kernel.shape[2]
    channel = np.tile(np.arange(c_in), k * k)  # (dy, dx, c) flattened: channel = c
    w = kernel.reshape(-1, kernel.shape[-1])
    return [(p.reshape(-1), channel, w) for p in _patches(a, k, stride, padding)]


def _params(v, name):
    return {k: np.asarray(x, np.float64) for k, x in v["params"][name].items()}


# --------------------------------------------------------------------------------------------
# pfp
# --------------------------------------------------------------------------------------------
def test_pfp_hand_computed_three_neurons():
    """Hidden activations a = x (identity producer, x >= 0), head weights (1, 1, -1).

    S = {(1, 1, 0), (3, 1, 0)}: shares of the positive part (.5, .5, 0) and (.75, .25, 0), the
    negative part is 0 -> s = (.75, .5, 0), neuron 2 (never active) is the one removed. Adding
    (0, 0, 5) makes neuron 2 the whole negative part of the pre-activation -> s_2 = 1."""
    model = MLP(widths=(3,), out=1)
    params = {"l0": {"kernel": jnp.eye(3), "bias": jnp.zeros(3)},
              "head": {"kernel": jnp.array([[1.0], [1.0], [-1.0]]), "bias": jnp.zeros(1)}}
    data = np.array([[1, 1, 0], [3, 1, 0]], np.float32)
    res = jaxprune.prune(params, jax.random.key(0), {"l0": 0.34}, method="pfp", model=model,
                         data=data, input_shape=(3,))
    np.testing.assert_allclose(res.sensitivities["l0"], [0.75, 0.5, 0.0], atol=1e-6)
    np.testing.assert_array_equal(res.kept["l0"], [0, 1])
    assert res.report["sampling"] == "deterministic"
    np.testing.assert_array_equal(res.scales["l0"], [1.0, 1.0])
    res = jaxprune.prune(params, jax.random.key(0), {"l0": 0.34}, method="pfp", model=model,
                         data=np.concatenate([data, [[0, 0, 5]]]), input_shape=(3,))
    np.testing.assert_allclose(res.sensitivities["l0"], [0.75, 0.5, 1.0], atol=1e-6)
    np.testing.assert_array_equal(res.kept["l0"], [0, 2])


@pytest.mark.parametrize("act", ["relu", "tanh"])
def test_pfp_matches_loops_on_a_dense_mlp(act):
    """Dense→Dense; ``tanh`` gives signed inputs (then (w a)⁺ = w⁺a⁺ + w⁻a⁻)."""
    model = MLP(widths=(7, 5), out=4, act=act)
    v = model.init(jax.random.key(1), jnp.zeros((1, 6)))
    data = _data((6,), 5, seed=2)
    res = jaxprune.prune(v, jax.random.key(0), {"l0": 0.3, "l1": 0.4}, method="pfp",
                         model=model, data=data, input_shape=(6,))
    inputs = layer_inputs(model, v, data)
    for group, consumer, width in (("l0", "l1", 7), ("l1", "head", 5)):
        a = np.asarray(inputs[(consumer,)], np.float64)
        if act == "tanh":
            assert (a < 0).any()
        ref = _ref_pfp(_dense_units(a, _params(v, consumer)["kernel"], width), width)
        assert ref.max() > 0
        np.testing.assert_allclose(res.sensitivities[group], ref, rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def tiny_cnn():
    model = TinyCNN()
    v = model.init(jax.random.key(3), jnp.zeros((1, 8, 8, 2)))
    data = _data((8, 8, 2), 6, seed=4)
    return model, v, data, layer_inputs(model, v, data)


@pytest.mark.slow
@pytest.mark.parametrize("block_elements", [None, 50])
def test_pfp_matches_loops_on_conv_conv_and_conv_flatten_dense(tiny_cnn, block_elements):
    """conv→conv (stride 2, SAME: every patch a separate input, padding contributes nothing),
    conv→pool→flatten→dense (channel j owns h·w rows) and dense→dense; a tiny block size
    splits examples and outputs into padded blocks and must not change the result."""
    model, v, data, inputs = tiny_cnn
    opts = {} if block_elements is None else {"block_elements": block_elements}
    res = jaxprune.prune(v, jax.random.key(0), {"conv_0": 0.25, "conv_1": 0.4, "dense_0": 0.5},
                         method="pfp", model=model, data=data, input_shape=(8, 8, 2), **opts)
    a1 = np.asarray(inputs[("conv_1",)], np.float64)
    ref = {"conv_0": _ref_pfp(_conv_units(a1, _params(v, "conv_1")["kernel"], 2, "SAME"), 4),
           "conv_1": _ref_pfp(_dense_units(np.asarray(inputs[("dense_0",)], np.float64),
                                           _params(v, "dense_0")["kernel"], 5), 5),
           "dense_0": _ref_pfp(_dense_units(np.asarray(inputs[("head",)], np.float64),
                                            _params(v, "head")["kernel"], 6), 6)}
    for name, expected in ref.items():
        assert expected.max() > 0
        np.testing.assert_allclose(res.sensitivities[name], expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("sampling", ["deterministic", "sparsity_first"])
def test_pfp_shrunk_equals_masked(tiny_cnn, sampling):
    model, v, data, _ = tiny_cnn
    # widths <= the channels active on S (sparsity-first draws ∝ s; s_j = 0 for a channel
    # that is dead on all of S)
    res = jaxprune.prune(v, jax.random.key(2), {"conv_0": 0.5, "conv_1": 0.4, "dense_0": 0.5},
                         model=model, method="pfp", data=data, sampling=sampling,
                         input_shape=(8, 8, 2))
    small = res.model(model)
    assert small.widths == (2, 3, 3)
    masked = surgery.mask(v, res.groups, res.kept, res.scales)
    x = _data((8, 8, 2), 5, seed=7)
    np.testing.assert_allclose(small.apply(res.params, x), model.apply(masked, x),
                               rtol=1e-4, atol=1e-5)
    if sampling == "sparsity_first":
        assert any(not np.allclose(s, 1) for s in res.scales.values())


def test_pfp_is_deterministic_under_a_fixed_key():
    model = MLP(widths=(7, 5), out=4, act="tanh")  # tanh: every neuron active
    v = model.init(jax.random.key(8), jnp.zeros((1, 6)))
    data = _data((6,), 5, seed=9)
    kw = dict(model=model, method="pfp", data=data, sampling="sparsity_first", input_shape=(6,))
    a = jaxprune.prune(v, jax.random.key(1), {"l0": 0.6}, **kw)
    b = jaxprune.prune(v, jax.random.key(1), {"l0": 0.6}, **kw)
    c = jaxprune.prune(v, jax.random.key(2), {"l0": 0.6}, **kw)
    np.testing.assert_array_equal(a.kept["l0"], b.kept["l0"])
    np.testing.assert_array_equal(a.scales["l0"], b.scales["l0"])
    np.testing.assert_array_equal(a.sensitivities["l0"], c.sensitivities["l0"])  # data-only
    assert not (np.array_equal(a.kept["l0"], c.kept["l0"])
                and np.array_equal(a.scales["l0"], c.scales["l0"]))


def test_pfp_without_data_or_model_is_a_clear_error():
    model = MLP(widths=(4,), out=2)
    v = model.init(jax.random.key(0), jnp.zeros((1, 3)))
    with pytest.raises(ValueError, match="data="):
        jaxprune.prune(v, jax.random.key(0), {"l0": 0.5}, method="pfp", model=model)
    with pytest.raises(ValueError, match="model="):
        jaxprune.prune(v, jax.random.key(0), {"l0": 0.5}, method="pfp", data=np.ones((2, 3)))
    view = LayerView(points=jnp.ones((4, 4)), outgoing=jnp.ones((4, 2)))
    with pytest.raises(ValueError, match="data-informed"):
        methods.pfp().score(jax.random.key(0), [view])
    assert methods.get("pfp").needs_data and not methods.get("pvc").needs_data


# --------------------------------------------------------------------------------------------
# pvc: β from data
# --------------------------------------------------------------------------------------------
def test_pvc_beta_is_the_max_input_norm_on_an_mlp():
    model = MLP(widths=(6, 4), out=3)
    v = model.init(jax.random.key(10), jnp.zeros((1, 5)))
    data = _data((5,), 7, seed=11)
    res = jaxprune.prune(v, jax.random.key(0), {"l0": 0.5, "l1": 0.5}, method="pvc",
                         model=model, data=data, input_shape=(5,))
    p0 = _params(v, "l0")
    hidden = np.maximum(data @ p0["kernel"] + p0["bias"], 0.0)
    expected = {"l0": max(np.linalg.norm(x) for x in data),
                "l1": max(np.linalg.norm(h) for h in hidden)}
    info = res.report["method_info"]
    assert set(info["beta"]) == {"l0", "l1"}
    for name, beta in expected.items():
        np.testing.assert_allclose(info["beta"][name], beta, rtol=1e-5)
        assert info["beta_source"][name] == "data"
        # the scores are pvc's with that β
        given = jaxprune.prune(v, jax.random.key(0), {name: 0.5}, method="pvc", model=model,
                               beta=float(beta), input_shape=(5,))
        np.testing.assert_allclose(res.sensitivities[name], given.sensitivities[name],
                                   rtol=1e-5)
        assert given.report["method_info"]["beta"] == {name: float(beta)}
        assert given.report["method_info"]["beta_source"] == {name: "given"}


def test_pvc_beta_on_convs_is_the_max_patch_norm(tiny_cnn):
    model, v, data, inputs = tiny_cnn
    res = jaxprune.prune(v, jax.random.key(0), {"conv_0": 0.25, "conv_1": 0.4, "dense_0": 0.5},
                         method="pvc", model=model, data=data, input_shape=(8, 8, 2))
    a1 = np.asarray(inputs[("conv_1",)], np.float64)
    expected = {
        "conv_0": max(np.linalg.norm(p) for p in _patches(data.astype(np.float64), 3, 1, "SAME")),
        "conv_1": max(np.linalg.norm(p) for p in _patches(a1, 3, 2, "SAME")),
        "dense_0": max(np.linalg.norm(x) for x in np.asarray(inputs[("dense_0",)], np.float64)),
    }
    beta = res.report["method_info"]["beta"]
    for name, value in expected.items():
        np.testing.assert_allclose(beta[name], value, rtol=1e-5)
    # a patch norm, not the whole input's norm
    assert beta["conv_0"] < max(np.linalg.norm(x) for x in data)


def test_pvc_without_data_or_beta_warns_and_reports_the_default():
    model = MLP(widths=(4,), out=2)
    v = model.init(jax.random.key(0), jnp.zeros((1, 3)))
    with pytest.warns(UserWarning, match="not estimated"):
        res = jaxprune.prune(v, jax.random.key(0), {"l0": 0.5}, method="pvc", model=model,
                             input_shape=(3,))
    assert res.report["method_info"] == {"beta": {"l0": 1.0}, "beta_source": {"l0": "default"}}
