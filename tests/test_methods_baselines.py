"""Baseline methods ``l1_norm``, ``l2_norm`` (filter norms) and ``pvc`` (Mussay et al. 2020)."""
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxprune
from jaxprune import methods, surgery
from jaxprune.methods import LayerView
from jaxprune.models import LeNet5
from jaxprune.selection import select
from jaxprune.views import layer_view


# --------------------------------------------------------------------------------------------
# A hand-computed 3-neuron layer (2 inputs -> 3 hidden -> 2 outputs)
#   neuron 0: W = [3, 4],    b = 0    -> ‖W‖₁ = 7,   ‖W‖₂ = 5
#   neuron 1: W = [0, 0],    b = 100  -> ‖W‖₁ = 0,   ‖W‖₂ = 0   (dead kernel, huge bias)
#   neuron 2: W = [-6, 0.5], b = 0    -> ‖W‖₁ = 6.5, ‖W‖₂ = √36.25 ≈ 6.0208
# so ℓ1 ranks 0 > 2 > 1 and ℓ2 ranks 2 > 0 > 1; with the bias counted neuron 1 comes first.
# --------------------------------------------------------------------------------------------
W1 = np.array([[3.0, 0.0, -6.0],
               [4.0, 0.0, 0.5]], np.float32)          # (in=2, out=3): column j = neuron j
B1 = np.array([0.0, 100.0, 0.0], np.float32)
W2 = np.array([[1.0, -2.0],
               [0.5, 0.5],
               [-1.0, 3.0]], np.float32)              # (3, 2)


def _three():
    return {"l0": {"kernel": jnp.asarray(W1), "bias": jnp.asarray(B1)},
            "l1": {"kernel": jnp.asarray(W2), "bias": jnp.zeros(2)}}


IS_BIAS = np.array([False, False, True])                # W1 has 2 inputs, then the bias


def _view():
    return LayerView(points=jnp.asarray(np.concatenate([W1.T, B1[:, None]], axis=1)),
                     outgoing=jnp.asarray(np.abs(W2)), is_bias=IS_BIAS)


def _score(name, view, **opts):
    return np.asarray(methods.get(name)(**opts).score(jax.random.key(0), [view])[0])


def test_registered_with_their_default_sampling():
    assert {"l1_norm", "l2_norm", "pvc"} <= set(methods.names())
    assert methods.get("l1_norm").sampling == "deterministic"
    assert methods.get("l2_norm").sampling == "deterministic"
    assert methods.get("pvc").sampling == "sparsity_first"


def test_layer_view_layout_is_what_the_methods_assume():
    params = _three()
    res = jaxprune.prune(params, jax.random.key(0), {"l0": 0.34}, method="l1_norm")
    v = layer_view({"params": params}, res.groups[0])
    np.testing.assert_array_equal(np.asarray(v.points), np.asarray(_view().points))
    np.testing.assert_array_equal(np.asarray(v.outgoing), np.asarray(_view().outgoing))
    assert isinstance(v.is_bias, np.ndarray) and v.is_bias.dtype == np.bool_
    np.testing.assert_array_equal(v.is_bias, IS_BIAS)


def test_norm_scores_hand_computed():
    v = _view()
    np.testing.assert_allclose(_score("l1_norm", v), [7.0, 0.0, 6.5], rtol=1e-6)
    np.testing.assert_allclose(_score("l2_norm", v), [5.0, 0.0, math.sqrt(36.25)], rtol=1e-6)
    # the bias column counted on request
    np.testing.assert_allclose(_score("l1_norm", v, include_bias=True), [7.0, 100.0, 6.5],
                               rtol=1e-6)
    np.testing.assert_allclose(_score("l2_norm", v, include_bias=True),
                               [5.0, 100.0, math.sqrt(36.25)], rtol=1e-6)
    # a bias-free producer: every column is kernel (is_bias all False, or None for a
    # hand-built view) -- in particular the last kernel entry is counted
    for mask in (np.zeros(2, bool), None):
        nobias = LayerView(points=jnp.asarray(W1.T), outgoing=v.outgoing, is_bias=mask)
        np.testing.assert_allclose(_score("l1_norm", nobias), [7.0, 0.0, 6.5], rtol=1e-6)
        np.testing.assert_allclose(_score("l2_norm", nobias), [5.0, 0.0, math.sqrt(36.25)],
                                   rtol=1e-6)
        np.testing.assert_allclose(_score("l1_norm", nobias, include_bias=True), [7.0, 0.0, 6.5],
                                   rtol=1e-6)


def test_norms_exclude_exactly_the_columns_marked_as_bias():
    v = _view()
    # (a) is_bias marks the last column: it is left out; with is_bias=None it is not
    unmarked = LayerView(points=v.points, outgoing=v.outgoing)
    np.testing.assert_allclose(_score("l1_norm", v), [7.0, 0.0, 6.5], rtol=1e-6)
    np.testing.assert_allclose(_score("l1_norm", unmarked), [7.0, 100.0, 6.5], rtol=1e-6)
    np.testing.assert_allclose(_score("l2_norm", unmarked), [5.0, 100.0, math.sqrt(36.25)],
                               rtol=1e-6)
    # a residual-style layout [W | b | W' | b']: both bias columns out, both kernels in
    rng = np.random.default_rng(0)
    w, bb, w2, bb2 = (rng.normal(size=(4, n)).astype(np.float32) for n in (3, 1, 2, 1))
    pts = np.concatenate([w, bb, w2, bb2], axis=1)
    mask = np.array([0, 0, 0, 1, 0, 0, 1], bool)
    view = LayerView(points=jnp.asarray(pts), outgoing=jnp.ones((4, 1)), is_bias=mask)
    kern = np.concatenate([w, w2], axis=1).astype(np.float64)
    np.testing.assert_allclose(_score("l1_norm", view), np.abs(kern).sum(1), rtol=1e-5)
    np.testing.assert_allclose(_score("l2_norm", view), np.sqrt((kern ** 2).sum(1)), rtol=1e-5)
    np.testing.assert_allclose(_score("l1_norm", view, include_bias=True),
                               np.abs(pts.astype(np.float64)).sum(1), rtol=1e-5)


@pytest.mark.parametrize("method, ratio, opts, expected", [
    ("l1_norm", 0.34, {}, [0, 2]),        # dead neuron dropped
    ("l2_norm", 0.34, {}, [0, 2]),
    ("l1_norm", 0.67, {}, [0]),           # largest ℓ1 kept
    ("l2_norm", 0.67, {}, [2]),           # largest ℓ2 kept
    ("l1_norm", 0.67, {"include_bias": True}, [1]),
    ("l2_norm", 0.34, {"include_bias": True}, [1, 2]),
])
def test_norm_methods_keep_the_expected_neurons_through_prune(method, ratio, opts, expected):
    res = jaxprune.prune(_three(), jax.random.key(0), {"l0": ratio}, method=method,
                         sampling="deterministic", **opts)
    np.testing.assert_array_equal(res.kept["l0"], expected)
    np.testing.assert_array_equal(res.scales["l0"], np.ones(len(expected)))
    assert res.params["l0"]["kernel"].shape == (2, len(expected))
    np.testing.assert_array_equal(res.params["l0"]["kernel"], W1[:, expected])
    np.testing.assert_array_equal(res.params["l1"]["kernel"], W2[expected])


def test_norm_methods_default_sampling_is_top_k():
    res = jaxprune.prune(_three(), jax.random.key(5), {"l0": 0.67}, method="l2_norm")
    assert res.report["sampling"] == "deterministic"
    np.testing.assert_array_equal(res.kept["l0"], [2])


# --------------------------------------------------------------------------------------------
# pvc: an independent NumPy re-statement of
#   B_j = β‖W_j‖₂ + Σ_p |b_j^(p)|  (W_j: every kernel entry of every producer; the sum runs
#   over the producers' biases: |b_j| for one producer, 0 for a bias-free one),
#   s_j = max_k |w_kj| φ(B_j),
#   q_j = s_j / Σ_i s_i      ("total"),
#   σ_j = max_k |w_kj| φ(B_j) / Σ_i |w_ki| φ(B_i),  q_j = σ_j / Σ_i σ_i   ("per_output").
# --------------------------------------------------------------------------------------------
def _phi(name, z):
    if name in ("relu", "leaky_relu"):
        return z                                          # z = B >= 0
    if name == "sigmoid":
        return 1.0 / (1.0 + math.exp(-z))
    if name == "gelu":
        return 0.5 * z * (1.0 + math.tanh(math.sqrt(2.0 / math.pi) * (z + 0.044715 * z ** 3)))
    raise AssertionError(name)


def _pvc_reference(kernel, biases, out_w, beta, activation, normalization):
    """``kernel``: (d, c) in-by-out, every producer's kernel rows stacked; ``biases``: a list
    of (c,) producer biases (empty for bias-free producers)."""
    kernel, out_w = np.asarray(kernel, np.float64), np.asarray(out_w, np.float64)
    d, c = kernel.shape
    n_out = out_w.shape[1]
    act = []
    for j in range(c):
        b = sum(abs(float(bias[j])) for bias in biases)
        act.append(_phi(activation, beta * math.sqrt(sum(kernel[i, j] ** 2 for i in range(d))) + b))
    if normalization == "total":
        s = [max(abs(out_w[j, k]) for k in range(n_out)) * act[j] for j in range(c)]
    else:
        col = [sum(abs(out_w[i, k]) * act[i] for i in range(c)) for k in range(n_out)]
        s = [max(abs(out_w[j, k]) * act[j] / col[k] for k in range(n_out) if col[k] > 0)
             for j in range(c)]
    return np.array(s) / sum(s)


# layouts: producer bias flags, one per producer block [W^(p) | b^(p)?]; None: a hand-built
# bias-free view with is_bias=None
@pytest.mark.parametrize("seed, beta, activation, normalization, layout", [
    (0, 1.0, "relu", "total", (True,)),
    (1, 25.0, "relu", "total", (True,)),
    (2, 0.3, "relu", "per_output", (True,)),
    (3, 2.0, "leaky_relu", "total", (True,)),
    (4, 1.5, "sigmoid", "total", (True,)),
    (5, 0.7, "gelu", "per_output", (True,)),
    (6, 3.0, "relu", "total", (False,)),
    (7, 1.0, "sigmoid", "per_output", (False,)),
    (8, 2.0, "relu", "total", None),
    (9, 1.2, "relu", "total", (True, True)),          # residual group, both with bias
    (10, 0.5, "gelu", "per_output", (False, True)),   # bias column in the middle / last
    (11, 4.0, "relu", "per_output", (True, False)),
])
def test_pvc_matches_numpy_reference(seed, beta, activation, normalization, layout):
    rng = np.random.default_rng(seed)
    c, k = rng.integers(3, 12), rng.integers(1, 6)
    out_w = rng.normal(size=(c, k)).astype(np.float32)
    kernels, biases, cols, mask = [], [], [], []
    for has in (layout or (False,)):
        kern = rng.normal(size=(rng.integers(2, 9), c)).astype(np.float32)
        kernels.append(kern)
        cols.append(kern.T)
        mask += [False] * kern.shape[0]
        if has:
            biases.append(rng.normal(size=c).astype(np.float32))
            cols.append(biases[-1][:, None])
            mask.append(True)
    view = LayerView(points=jnp.asarray(np.concatenate(cols, axis=1)),
                     outgoing=jnp.asarray(np.abs(out_w)),
                     is_bias=None if layout is None else np.array(mask))
    q = _score("pvc", view, beta=beta, activation=activation, normalization=normalization)
    expected = _pvc_reference(np.concatenate(kernels, axis=0), biases, out_w, beta, activation,
                              normalization)
    np.testing.assert_allclose(q, expected, rtol=2e-5, atol=1e-7)
    assert q.shape == (c,) and abs(q.sum() - 1.0) < 1e-5


def test_pvc_through_prune_uses_the_real_bias_and_outgoing_weights():
    rng = np.random.default_rng(11)
    w1 = rng.normal(size=(5, 12)).astype(np.float32)
    b1 = rng.normal(size=12).astype(np.float32)
    w2 = rng.normal(size=(12, 4)).astype(np.float32)
    params = {"l0": {"kernel": jnp.asarray(w1), "bias": jnp.asarray(b1)},
              "l1": {"kernel": jnp.asarray(w2), "bias": jnp.zeros(4)}}
    res = jaxprune.prune(params, jax.random.key(3), {"l0": 0.5}, method="pvc", beta=4.0)
    q = _pvc_reference(w1, [b1], w2, 4.0, "relu", "total")
    np.testing.assert_allclose(res.sensitivities["l0"], q, rtol=2e-5)
    assert res.report["sampling"] == "sparsity_first" and len(res.kept["l0"]) == 6
    # re-weights are count_j / (m q_j): scale_j · m · q_j is a positive integer, Σ counts = m
    m = res.report["draws"]["l0"]
    counts = res.scales["l0"] * m * q[res.kept["l0"]]
    np.testing.assert_allclose(counts, np.round(counts), atol=1e-3)
    assert np.all(np.round(counts) >= 1) and int(np.round(counts).sum()) == m


def test_pvc_relu_bound_is_the_tight_activation_bound():
    """φ(β‖W‖+|b|) >= relu(W·x+b) over the β-ball, with equality at x = β·sign(b)·W/‖W‖."""
    rng = np.random.default_rng(2)
    w, b, beta = rng.normal(size=6), -0.8, 1.7
    bound = beta * np.linalg.norm(w) + abs(b)
    x = rng.normal(size=(2000, 6))
    x *= beta * rng.uniform(size=(2000, 1)) ** (1 / 6) / np.linalg.norm(x, axis=1, keepdims=True)
    assert np.all(np.maximum(x @ w + b, 0) <= bound + 1e-9)
    x_star = beta * np.sign(b) * w / np.linalg.norm(w)
    assert abs(abs(x_star @ w + b) - bound) < 1e-9
    # and the method's score of a 1-output layer is exactly that bound, normalised
    view = LayerView(points=jnp.asarray(np.array([[*w, b], [*w, 0.0]], np.float32)),
                     outgoing=jnp.ones((2, 1)), is_bias=np.arange(7) == 6)
    q = _score("pvc", view, beta=beta)
    bounds = np.array([bound, beta * np.linalg.norm(w)])
    np.testing.assert_allclose(q, bounds / bounds.sum(), rtol=1e-5)


def _dominant(seed=0):
    rng = np.random.default_rng(seed)
    w1 = rng.normal(size=(6, 40)).astype(np.float32)
    w2 = 0.01 * rng.normal(size=(40, 3)).astype(np.float32)
    w2[17] = 10.0
    return {"l0": {"kernel": jnp.asarray(w1), "bias": jnp.zeros(40)},
            "l1": {"kernel": jnp.asarray(w2), "bias": jnp.zeros(3)}}


def test_pvc_keeps_the_neuron_whose_outgoing_weights_dominate():
    params = _dominant()
    det = jaxprune.prune(params, jax.random.key(0), {"l0": 0.9}, method="pvc",
                         sampling="deterministic")
    assert 17 in det.kept["l0"] and len(det.kept["l0"]) == 4
    q = det.sensitivities["l0"]
    assert q[17] > 0.5 and np.argmax(q) == 17
    # randomized: q_17 > 0.5, so it is drawn in practically every run
    hits = [17 in select(k, jnp.asarray(q), 4, "sparsity_first")[0]
            for k in jax.random.split(jax.random.key(1), 30)]
    assert all(hits)
    res = jaxprune.prune(params, jax.random.key(4), {"l0": 0.9}, method="pvc")
    assert 17 in res.kept["l0"]


def test_pvc_dead_neuron_gets_zero_probability_under_relu_but_not_sigmoid():
    v = _view()
    pts = np.asarray(v.points).copy()
    pts[1] = 0.0                                           # neuron 1: W = 0, b = 0
    view = LayerView(points=jnp.asarray(pts), outgoing=v.outgoing, is_bias=v.is_bias)
    assert _score("pvc", view)[1] == 0.0
    assert _score("pvc", view, activation="sigmoid")[1] > 0.0  # σ(0) = ½ reaches the next layer


def test_pvc_all_zero_outgoing_falls_back_to_uniform():
    view = LayerView(points=_view().points, outgoing=jnp.zeros((3, 2)), is_bias=IS_BIAS)
    np.testing.assert_allclose(_score("pvc", view), np.full(3, 1 / 3))


# --------------------------------------------------------------------------------------------
# Shrunk network == masked & re-weighted original, for every method (LeNet-5 with convs)
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def lenet5():
    model = LeNet5(widths=(6, 16, 40, 30))
    return model, model.init(jax.random.key(1), jnp.zeros((1, 28, 28, 1)))


@pytest.mark.parametrize("method, sampling, opts", [
    ("l1_norm", None, {}),
    ("l2_norm", None, {}),
    ("pvc", None, {"beta": 28.0}),
    ("pvc", "deterministic", {"activation": "gelu", "normalization": "per_output"}),
])
@pytest.mark.slow
def test_shrunk_equals_masked_and_reweighted_original(lenet5, method, sampling, opts):
    model, v = lenet5
    res = jaxprune.prune(v, jax.random.key(2), 0.6, model=model, method=method,
                         sampling=sampling, input_shape=(28, 28, 1), **opts)
    small = res.model(model)
    masked = surgery.mask(v, res.groups, res.kept, res.scales)
    x = jax.random.normal(jax.random.key(3), (8, 28, 28, 1))
    np.testing.assert_allclose(small.apply(res.params, x), model.apply(masked, x),
                               rtol=1e-4, atol=1e-5)
    assert small.widths != model.widths
    for name, (before, after) in res.report["neurons"].items():
        assert len(res.kept[name]) == after and res.sensitivities[name].shape == (before,)
    if res.report["sampling"] == "deterministic":
        assert all(np.all(s == 1) for s in res.scales.values())
    else:
        assert any(not np.allclose(s, 1) for s in res.scales.values())
    if method in ("l1_norm", "l2_norm"):  # scores are the producer kernels' norms, conv or dense
        p = v["params"]
        for name in res.kept:
            width = res.report["neurons"][name][0]
            k = np.asarray(p[name]["kernel"], np.float64).reshape(-1, width)  # out axis last
            ref = np.abs(k).sum(0) if method == "l1_norm" else np.sqrt((k * k).sum(0))
            np.testing.assert_allclose(res.sensitivities[name], ref, rtol=1e-5)


# --------------------------------------------------------------------------------------------
# Bias-free producers (ResNet-style conv -> BatchNorm): every kernel entry is scored
# --------------------------------------------------------------------------------------------
class BiasFreeCNN(nn.Module):
    """conv(4, no bias) -> BN -> relu -> conv(5, no bias) -> BN -> relu -> mean -> dense(3)."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        for i, width in enumerate((4, 5)):
            x = nn.Conv(width, (3, 3), use_bias=False, name=f"conv{i}")(x)
            x = nn.relu(nn.BatchNorm(use_running_average=not train, name=f"bn{i}")(x))
        return nn.Dense(3, name="head")(jnp.mean(x, axis=(1, 2)))


@pytest.fixture(scope="module")
def bias_free_cnn():
    model = BiasFreeCNN()
    return model, model.init(jax.random.key(7), jnp.zeros((1, 6, 6, 2)))


def _kernel_rows(variables, name, width):
    k = np.asarray(variables["params"][name]["kernel"], np.float64)
    assert k.shape[-1] == width
    return k.reshape(-1, width).T                           # (C, kh·kw·C_in): one row per filter


def _bias_free_prune(model_and_vars, method, **opts):
    model, v = model_and_vars
    return jaxprune.prune(v, jax.random.key(0), {"conv0": 0.5, "conv1": 0.4}, model=model,
                          method=method, input_shape=(6, 6, 2), **opts)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["l1_norm", "l2_norm"])
def test_norms_count_every_kernel_entry_of_bias_free_convs(bias_free_cnn, method):
    res = _bias_free_prune(bias_free_cnn, method)
    assert set(res.kept) == {"conv0", "conv1"}
    groups = {g.name: g for g in res.groups}
    for name, width in (("conv0", 4), ("conv1", 5)):
        view = layer_view(bias_free_cnn[1], groups[name])
        assert view.points.shape == (width, 9 * (2 if name == "conv0" else 4))
        assert not view.is_bias.any()                      # no bias column to drop
        w = _kernel_rows(bias_free_cnn[1], name, width)
        ref = np.abs(w).sum(1) if method == "l1_norm" else np.sqrt((w * w).sum(1))
        np.testing.assert_allclose(res.sensitivities[name], ref, rtol=1e-5)
        # dropping the last kernel entry (the old has_bias=True default) would be visible
        dropped = w[:, :-1]
        wrong = np.abs(dropped).sum(1) if method == "l1_norm" else np.sqrt((dropped ** 2).sum(1))
        assert not np.allclose(res.sensitivities[name], wrong, rtol=1e-5)
    # include_bias is a no-op without bias columns
    inc = _bias_free_prune(bias_free_cnn, method, include_bias=True)
    for name in res.kept:
        np.testing.assert_array_equal(inc.sensitivities[name], res.sensitivities[name])


def test_pvc_on_bias_free_convs_uses_the_whole_kernel_and_no_bias(bias_free_cnn):
    model, v = bias_free_cnn
    res = _bias_free_prune(bias_free_cnn, "pvc", beta=3.0, sampling="deterministic")
    groups = {g.name: g for g in res.groups}
    for name, width in (("conv0", 4), ("conv1", 5)):
        out = np.asarray(layer_view(v, groups[name]).outgoing)  # |w_kj| as the method sees it
        q = _pvc_reference(_kernel_rows(v, name, width).T, [], out, 3.0, "relu", "total")
        np.testing.assert_allclose(res.sensitivities[name], q, rtol=2e-5, atol=1e-7)
# --------------------------------------------------------------------------------------------
# Bad options are clear errors
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("opts, match", [
    ({"beta": -1.0}, "beta"),
    ({"beta": 0.0}, "beta"),
    ({"beta": float("nan")}, "beta"),
    ({"beta": float("inf")}, "beta"),
    ({"beta": True}, "beta"),
    ({"beta": "1"}, "beta"),
    ({"activation": "tanh"}, "activation"),
    ({"normalization": "sum"}, "normalization"),
])
def test_pvc_bad_options(opts, match):
    with pytest.raises(ValueError, match=match):
        jaxprune.prune(_three(), jax.random.key(0), {"l0": 0.34}, method="pvc", **opts)


@pytest.mark.parametrize("method", ["l1_norm", "l2_norm"])
def test_norm_bad_options(method):
    with pytest.raises(ValueError, match="include_bias must be a bool"):
        jaxprune.prune(_three(), jax.random.key(0), {"l0": 0.34}, method=method,
                       include_bias=1)
    # unknown option names are not silently ignored: the error names them and the valid ones
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['beta'\].*include_bias"):
        jaxprune.prune(_three(), jax.random.key(0), {"l0": 0.34}, method=method, beta=2.0)


@pytest.mark.parametrize("method", ["l1_norm", "l2_norm", "pvc"])
def test_has_bias_option_is_gone(method):
    with pytest.raises(ValueError, match="has_bias"):  # the view says where the bias is
        jaxprune.prune(_three(), jax.random.key(0), {"l0": 0.34}, method=method, has_bias=False)


@pytest.mark.parametrize("method", ["l1_norm", "l2_norm", "pvc"])
@pytest.mark.parametrize("is_bias, match", [
    (np.ones(3, bool), "no kernel"),                    # every column marked as bias
    (np.array([False, True]), "is_bias"),               # wrong length
    (np.array([0, 0, 1]), "is_bias"),                   # not bool
])
def test_bad_is_bias(method, is_bias, match):
    view = LayerView(points=_view().points, outgoing=_view().outgoing, is_bias=is_bias)
    with pytest.raises(ValueError, match=match):
        _score(method, view)
