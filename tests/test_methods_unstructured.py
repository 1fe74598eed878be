"""Unstructured weight pruning: ``magnitude`` and ``sipp`` through ``jaxprune.prune`` and the CLI.

Hand-computed 3-neuron cases, NumPy re-statements of the SiPP sensitivity (Dense and a tiny
conv via a naive loop over positions), exact sparsity, masks, re-weights, determinism, errors.
"""
import importlib
import itertools
import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxprune
from jaxprune import bounds, checkpoint, cli, metrics, models, selection, workflows
from jaxprune.models import LeNet300100
from jaxprune.structure import ConvSpec

sipp = importlib.import_module("jaxprune.methods.sipp")  # the module (methods.sipp is the class)


# ------------------------------------------------------------------------------ references
def sipp_reference(w2, rows):
    """s_ij = max_x g_ij(x) (sipp module doc), plain NumPy loops over points and neurons."""
    d, k = w2.shape
    s = np.zeros((d, k))
    for x in rows:
        for i in range(k):
            p = w2[:, i].astype(np.float64) * x
            pos, neg = p[p > 0].sum(), p[p < 0].sum()
            for j in range(d):
                g = p[j] / pos if p[j] > 0 else (p[j] / neg if p[j] < 0 else 0.0)
                s[j, i] = max(s[j, i], g)
    return s


def naive_patches(x, window, strides, padding):
    """Rows (kernel layout (*window, C) flattened) of every output position of a 2-D conv."""
    n, h, w, c = x.shape
    if padding == "SAME":
        pads = []
        for size, k, st in zip((h, w), window, strides):
            out = -(-size // st)
            total = max((out - 1) * st + k - size, 0)
            pads.append((total // 2, total - total // 2))
    elif padding == "VALID":
        pads = [(0, 0), (0, 0)]
    else:
        pads = padding
    xp = np.pad(x, ((0, 0), *pads, (0, 0)))
    rows = []
    for e in range(n):
        for a in range(0, xp.shape[1] - window[0] + 1, strides[0]):
            for b in range(0, xp.shape[2] - window[1] + 1, strides[1]):
                rows.append(xp[e, a:a + window[0], b:b + window[1], :].reshape(-1))
    return np.asarray(rows)


def chain(sizes, seed=0, scale=None):
    """Bare params of a Dense chain with the given layer sizes."""
    rng = np.random.default_rng(seed)
    params = {}
    for n, (a, b) in enumerate(zip(sizes, sizes[1:])):
        s = 1.0 if scale is None else scale[n]
        params[f"layer_{n}"] = {"kernel": (s * rng.normal(size=(a, b))).astype(np.float32),
                                "bias": rng.normal(size=(b,)).astype(np.float32)}
    return params


def numpy_init(model, input_shape, seed=0):
    """Variables of ``model`` without compiling its init: shapes from ``eval_shape``, values
    ~ N(0, 1/fan_in) (biases N(0, 0.01))."""
    shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, *input_shape)))
    rng = np.random.default_rng(seed)

    def leaf(s):
        fan_in = int(np.prod(s.shape[:-1])) if len(s.shape) > 1 else 1e4
        return (rng.normal(size=s.shape) / np.sqrt(fan_in)).astype(np.float32)

    return jax.tree.map(leaf, shapes)


@pytest.fixture(scope="module")
def lenet300():
    model = LeNet300100(widths=(40, 20))
    v = numpy_init(model, (28, 28, 1))
    x = np.random.default_rng(1).normal(size=(16, 28, 28, 1)).astype(np.float32)
    return model, v, x


@pytest.fixture(scope="module")
def lenet5():
    model = models.get_model("lenet5")
    v = numpy_init(model, (28, 28, 1))
    x = np.maximum(np.random.default_rng(2).normal(size=(6, 28, 28, 1)), 0).astype(np.float32)
    return model, v, x


def kernel_paths(tree):
    return [tuple(str(getattr(k, "key", k)) for k in p)
            for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0]
            if str(getattr(p[-1], "key", p[-1])) == "kernel"]


# ------------------------------------------------------------------------------ hand-computed
W3 = np.array([[1.0, -1.0, 2.0],
               [2.0, 1.0, 0.0],
               [1.0, 0.0, -1.0]], np.float32)          # (inputs j, neurons i)
X3 = np.array([[1.0, 1.0, 0.0],
               [0.0, 1.0, 2.0],
               [-1.0, 1.0, 1.0]], np.float32)          # the third point is signed
# by hand (see the derivation in the test), rows j, columns i
S3 = np.array([[1.0, 1.0, 1.0],
               [2 / 3, 1.0, 0.0],
               [1 / 2, 0.0, 1.0]])


def test_sipp_sensitivities_hand_computed_three_neurons():
    # neuron 0 (w = 1, 2, 1): x1 -> (1, 2, 0)/3; x2 -> (0, 2, 2)/4; x3: products (-1, 2, 1):
    #   positive part 3 -> 2/3, 1/3; negative part -1 -> g_0 = 1.   s = (1, 2/3, 1/2)
    # neuron 1 (w = -1, 1, 0): x1: (-1, 1, 0) -> g = (1, 1, 0); x3: (1, 1, 0)/2.  s = (1, 1, 0)
    # neuron 2 (w = 2, 0, -1): x1 -> (1, 0, 0); x2 -> (0, 0, 1); x3: (-2, 0, -1)/-3.  s = (1, 0, 1)
    np.testing.assert_allclose(sipp.sensitivities(W3, X3), S3, rtol=1e-6)
    np.testing.assert_allclose(sipp_reference(W3, X3), S3, rtol=1e-12)
    # through prune: a chain without a model, the first layer reads the data directly
    params = {"a": {"kernel": W3, "bias": np.zeros(3, np.float32)},
              "b": {"kernel": np.ones((3, 1), np.float32)}}
    res = jaxprune.prune(params, jax.random.key(0), 4 / 9, method="sipp", data=X3)
    np.testing.assert_allclose(res.sensitivities["a"], S3, rtol=1e-6)
    # tail rule, budget 5: every neuron 1 weight, then the 2 largest tails t_i(1):
    # 7/6 (neuron 0), 1 (neuron 1; ties with neuron 2 -> lower index) -> m = (2, 2, 1);
    # neuron 2 keeps one of its two s = 1 weights: the lower index j = 0
    keep = np.array([[1, 1, 1], [1, 1, 0], [0, 0, 0]], bool)
    np.testing.assert_array_equal(res.mask["a"]["kernel"], keep.astype(np.float32))
    np.testing.assert_array_equal(res.params["a"]["kernel"], np.where(keep, W3, 0))
    np.testing.assert_array_equal(res.mask["b"]["kernel"], 1.0)       # output layer dense
    np.testing.assert_array_equal(res.params["b"]["kernel"], params["b"]["kernel"])
    np.testing.assert_array_equal(sipp.tail_budgets(S3, 5), [2, 2, 1])
    # S = (13/6, 2, 2): entry points r / S_i -> 0,0,0, 6/13 (n0), 1/2 (n1), 1/2 (n2), 12/13 (n0)
    np.testing.assert_array_equal(sipp.sensitivity_budgets(S3, 5), [2, 2, 1])
    np.testing.assert_array_equal(sipp.sensitivity_budgets(S3, 7), [3, 2, 2])


def test_magnitude_hand_computed_three_neurons():
    w = np.array([[0.5, -2.0, 0.1],
                  [-0.1, 1.0, 3.0]], np.float32)
    params = {"a": {"kernel": w, "bias": np.array([0.0, 1.0, -1.0], np.float32)},
              "b": {"kernel": np.ones((3, 4), np.float32), "bias": np.zeros(4, np.float32)}}
    res = jaxprune.prune(params, jax.random.key(0), 0.5, method="magnitude")
    keep = np.array([[0, 1, 0], [0, 1, 1]], bool)                     # |w| = 3, 2, 1
    np.testing.assert_array_equal(res.params["a"]["kernel"], np.where(keep, w, 0))
    np.testing.assert_array_equal(res.sensitivities["a"], np.abs(w))
    np.testing.assert_array_equal(res.params["a"]["bias"], params["a"]["bias"])
    np.testing.assert_array_equal(res.mask["a"]["bias"], 1.0)
    assert set(res.params) == {"a", "b"} and "params" not in res.params   # bare stays bare
    # ties -> lower index: |w| = (1, 1, 1 | 1, 2, 2), keep 3 -> the two 2s and index 0
    t = np.array([[1.0, -1.0, 1.0], [-1.0, 2.0, -2.0]], np.float32)
    res = jaxprune.prune({"a": {"kernel": t}, "b": {"kernel": np.ones((3, 1), np.float32)}},
                         jax.random.key(0), 0.5, method="magnitude")
    np.testing.assert_array_equal(res.mask["a"]["kernel"], [[1, 0, 0], [0, 1, 1]])
    assert res.report["achieved_ratio"] == 0.5


def test_layer_budgets_largest_remainder():
    # ratio 0.5 of (10, 7, 3): R = 10; floors 5, 3, 1; the one leftover goes to the larger
    # remainder, tie between 3.5 and 1.5 -> the earlier layer
    assert selection.layer_budgets([10, 7, 3], 0.5) == [5, 3, 2]
    rng = np.random.default_rng(0)
    for _ in range(20):
        sizes = rng.integers(1, 500, size=5).tolist()
        r = float(rng.uniform(0, 0.99))
        keep = selection.layer_budgets(sizes, r, minimum=0)
        assert sum(sizes) - sum(keep) == int(np.floor(r * sum(sizes) + 0.5))
        assert all(abs((n - k) - r * n) < 1 for n, k in zip(sizes, keep))


# ------------------------------------------------------------------------------ sipp formula
def test_sipp_dense_matches_numpy_reference_signed_and_chunked():
    rng = np.random.default_rng(1)
    w = rng.normal(size=(7, 5)).astype(np.float32)
    w[2, 1] = 0.0
    a = rng.normal(size=(2, 3, 7)).astype(np.float32)   # leading axes = separate points
    a[0, 0, :] = 0.0                                    # an all-zero point: 0/0 -> 0
    ref = sipp_reference(w, a.reshape(-1, 7))
    for chunk in (1, 35, 40, 1 << 22):                  # 1 point per chunk ... all at once
        np.testing.assert_allclose(sipp.sensitivities(w, a, chunk_elements=chunk), ref,
                                   rtol=1e-5, atol=1e-7)
    assert ref[2, 1] == 0.0 and ref.max() <= 1.0 + 1e-12


def test_sipp_agrees_with_bounds_for_relu_inputs():
    rng = np.random.default_rng(2)
    w = rng.normal(size=(9, 4)).astype(np.float32)
    a = np.maximum(rng.normal(size=(12, 9)), 0).astype(np.float32)
    s = sipp.sensitivities(w, a)
    for i in range(4):
        expect = (np.asarray(bounds.sipp_sensitivities(jnp.asarray(w[:, i]), jnp.asarray(a)))
                  + np.asarray(bounds.sipp_sensitivities(jnp.asarray(-w[:, i]), jnp.asarray(a))))
        np.testing.assert_allclose(s[:, i], expect, rtol=1e-5, atol=1e-7)


class TinyConv(nn.Module):
    padding: object = "SAME"

    @nn.compact
    def __call__(self, x, train=False):
        x = nn.Conv(3, (3, 2), strides=(2, 1), padding=self.padding, name="conv")(x)
        x = nn.relu(x).reshape((x.shape[0], -1))
        return nn.Dense(2, name="head")(x)


@pytest.mark.parametrize("padding", ["SAME", "VALID", ((1, 0), (0, 1))])
def test_sipp_conv_matches_naive_loop_over_positions(padding):
    model = TinyConv(padding=padding)
    x = np.random.default_rng(3).normal(size=(2, 5, 6, 2)).astype(np.float32)  # signed input
    v = numpy_init(model, (5, 6, 2), seed=4)
    kernel = np.asarray(v["params"]["conv"]["kernel"])                  # (3, 2, 2, 3)
    rows = naive_patches(x, (3, 2), (2, 1), padding)
    ref = sipp_reference(kernel.reshape(-1, 3), rows).reshape(kernel.shape)
    res = jaxprune.prune(v, jax.random.key(0), 0.5, method="sipp", model=model, data=x,
                         chunk_elements=50)                             # forces both chunkings
    np.testing.assert_allclose(res.sensitivities["conv"], ref, rtol=1e-5, atol=1e-7)
    assert list(res.sensitivities) == ["conv"]                          # head = output layer
    spec = ConvSpec((3, 2), (2, 1), padding, (1, 1), (1, 1))
    np.testing.assert_allclose(sipp.sensitivities(kernel, x, spec), ref, rtol=1e-5, atol=1e-7)


# ------------------------------------------------------------------------------ selection rules
def test_tail_budgets_minimise_the_worst_neuron_tail():
    rng = np.random.default_rng(5)
    for trial in range(6):
        s = rng.random((4, 3)) ** 3
        for budget in range(3, 13):
            def worst(m):
                return max(np.sort(s[:, i])[::-1][m[i]:].sum() for i in range(3))
            best = min(worst(m) for m in itertools.product(range(1, 5), repeat=3)
                       if sum(m) == budget)
            m = sipp.tail_budgets(s, budget)
            assert m.sum() == budget and m.min() >= 1 and m.max() <= 4
            assert worst(m) == pytest.approx(best, abs=1e-12)


def test_sparsity_first_reweights_counts_and_proportional_draws():
    rng = np.random.default_rng(6)
    s = rng.random((30, 8)) ** 2
    s[:, 3] = 0.0                                         # an all-zero neuron: uniform q
    s[5, 0] = 0.0
    keep, scale, m, counts, q = sipp.sample_sparsity_first(jax.random.key(0), s, 70)
    assert keep.sum() == 70 and np.all(m >= 1)
    np.testing.assert_array_equal(counts.sum(axis=0), m)          # m_i draws per neuron
    np.testing.assert_array_equal(keep, counts > 0)
    st = np.maximum(s, np.where(s.max(0) > 0, 1e-6 * s.max(0), 1.0))
    np.testing.assert_allclose(q, st / st.sum(0), rtol=1e-12)
    np.testing.assert_allclose(scale[keep], (counts / (m * q))[keep], rtol=1e-12)
    assert np.all(scale[~keep] == 0)
    # m_i = ceil(c S_i) for one multiplier c (ties at the boundary may add one)
    S = np.maximum(s.sum(0), 1e-6 * s.sum(0).max())
    c = max((m - 1) / S)
    assert np.all(m >= np.ceil(c * S - 1e-9)) and np.all(m <= np.floor(c * S + 1e-9) + 1)
    assert m[3] == 1                                               # zero neuron: one draw
    # fixed key -> same result; another key -> another draw
    again = sipp.sample_sparsity_first(jax.random.key(0), s, 70)
    np.testing.assert_array_equal(again[3], counts)
    other = sipp.sample_sparsity_first(jax.random.key(1), s, 70)
    assert other[0].sum() == 70 and not np.array_equal(other[3], counts)


def test_sparsity_first_gives_up_on_an_unreachable_budget_after_bounded_work(monkeypatch):
    """A tiny layer whose budget needs a weight of (floored) probability ~1e-6: at most
    ``MAX_DRAW_BLOCKS`` blocks of draws, then the clear error (before that bound a 3×2 layer
    could draw millions of blocks); a reachable budget of the same layer still samples."""
    s = np.array([[1.0, 1.0], [1.0, 1.0], [0.0, 1.0]])
    blocks = []
    real = sipp._uniforms
    monkeypatch.setattr(sipp, "_uniforms",
                        lambda key, block, shape: blocks.append(block) or real(key, block, shape))
    with pytest.raises(ValueError, match="did not reach"):
        sipp.sample_sparsity_first(jax.random.key(0), s, 6)
    assert len(blocks) == sipp.MAX_DRAW_BLOCKS
    keep = sipp.sample_sparsity_first(jax.random.key(0), s, 5)[0]
    assert keep.sum() == 5 and not keep[2, 0]


# ------------------------------------------------------------------------------ through prune
@pytest.mark.parametrize("method, opts", [
    ("magnitude", {}), ("magnitude", {"scope": "global"}),
    ("sipp", {}), ("sipp", {"sampling": "sparsity_first"}),
    ("sipp", {"neuron_budget": "sensitivity"}),
])
def test_exact_sparsity_zeros_mask_shapes_lenet300(lenet300, method, opts):
    model, v, x = lenet300
    ratio = 0.83
    res = jaxprune.prune(v, jax.random.key(0), ratio, method=method, model=model, data=x,
                         **opts)
    p0, p1 = v["params"], res.params["params"]
    assert set(res.params) == set(v)                                    # variables stay wrapped
    assert jax.tree.structure(p0) == jax.tree.structure(p1) == jax.tree.structure(res.mask)
    for a, b, mk in zip(jax.tree.leaves(p0), jax.tree.leaves(p1), jax.tree.leaves(res.mask)):
        assert a.shape == b.shape == mk.shape and set(np.unique(mk)) <= {0.0, 1.0}
        assert np.all(np.asarray(b)[mk == 0] == 0)                      # masked -> exactly 0
    n = 784 * 40 + 40 * 20                                              # head is not prunable
    removed = sum(int((res.mask[k]["kernel"] == 0).sum()) for k in ("dense_0", "dense_1"))
    assert removed == int(np.floor(ratio * n + 0.5))
    assert res.report["achieved_ratio"] == pytest.approx(removed / n)
    np.testing.assert_array_equal(res.mask["head"]["kernel"], 1.0)
    np.testing.assert_array_equal(p1["head"]["kernel"], p0["head"]["kernel"])
    for leaf in ("dense_0", "dense_1", "head"):
        np.testing.assert_array_equal(p1[leaf]["bias"], p0[leaf]["bias"])
    assert res.report["nonzero_params"] == metrics.nonzero_count(res.params)
    assert res.report["params_before"] == metrics.param_count(v) == 784 * 40 + 40 + 820 + 210
    # the weight-kind fields: kept entries (= the mask), re-weights (none: 1), live neurons
    assert res.kind == "weights" and set(res.kept) == set(res.scales) == {"dense_0", "dense_1"}
    for name in ("dense_0", "dense_1"):
        np.testing.assert_array_equal(res.kept[name], res.mask[name]["kernel"] == 1)
        assert np.all((res.scales[name] > 0) == res.kept[name])
        if res.report["sampling"] == "deterministic":
            np.testing.assert_array_equal(res.scales[name], res.kept[name].astype(np.float32))
        assert res.widths[name] == int(res.kept[name].any(axis=0).sum())
    assert [g.name for g in res.groups] == ["dense_0", "dense_1", "head"]
    assert set(res.sensitivities) == {"dense_0", "dense_1"}
    assert res.report["method"] == method and res.report["target_ratio"] == ratio
    if opts.get("scope") != "global":
        for name, info in res.report["layers"].items():
            assert abs((info["size"] - info["kept"]) - ratio * info["size"]) < 1
    if method == "sipp":                                                # >= 1 weight per neuron
        assert np.all(res.mask["dense_0"]["kernel"].sum(0) >= 1)
        kept = res.mask["dense_1"]["kernel"] == 1
        w = np.asarray(p0["dense_1"]["kernel"])
        if opts.get("sampling") == "sparsity_first":
            # Σ_j (new/w)·q_ij = Σ_j count_ij / m_i = 1 per neuron (re-weight count/(m q))
            s = res.sensitivities["dense_1"]
            st = np.maximum(s, 1e-6 * s.max(0))
            q = st / st.sum(0)
            ratio_w = np.where(kept, np.asarray(p1["dense_1"]["kernel"]) / np.where(kept, w, 1), 0)
            np.testing.assert_allclose((ratio_w * q).sum(0), 1.0, rtol=1e-4)
            assert res.report["draws"]["dense_1"] >= int(kept.sum())
        else:
            np.testing.assert_array_equal(np.asarray(p1["dense_1"]["kernel"])[kept], w[kept])


def test_magnitude_global_uses_one_threshold():
    params = chain([20, 10, 10, 3], seed=3, scale=[0.1, 1.0, 1.0])
    res_g = jaxprune.prune(params, jax.random.key(0), 0.5, method="magnitude", scope="global")
    res_l = jaxprune.prune(params, jax.random.key(0), 0.5, method="magnitude")
    w = [np.abs(params[f"layer_{n}"]["kernel"]) for n in (0, 1)]
    m = [res_g.mask[f"layer_{n}"]["kernel"] == 1 for n in (0, 1)]
    assert sum(int(k.sum()) for k in m) == 150
    assert max(a[~k].max() for a, k in zip(w, m)) <= min(a[k].min() for a, k in zip(w, m))
    assert m[1].mean() > m[0].mean() + 0.4                    # the small-|w| layer loses more
    assert [v["kept"] for v in res_l.report["layers"].values()] == [100, 50]


def test_magnitude_lenet5_masked_network_runs(lenet5):
    model, v, x = lenet5
    res = jaxprune.prune(v, jax.random.key(0), 0.7, method="magnitude", model=model)
    assert list(res.report["layers"]) == ["conv_0", "conv_1", "dense_0", "dense_1"]
    assert res.report["dense_layers"] == ["head"]
    assert all(abs(info["sparsity"] - 0.7) < 1 / info["size"] + 1e-12
               for info in res.report["layers"].values())
    masked = {"params": jax.tree.map(lambda p, mk: p * mk, v["params"], res.mask)}
    np.testing.assert_allclose(model.apply(res.params, x), model.apply(masked, x), rtol=1e-5,
                               atol=1e-6)
    assert res.report["nonzero_params"] < res.report["params_before"] == 61706


def test_sipp_lenet5_deterministic_and_sampled(lenet5):
    model, v, x = lenet5
    det = jaxprune.prune(v, jax.random.key(0), 0.6, method="sipp", model=model, data=x)
    det2 = jaxprune.prune(v, jax.random.key(9), 0.6, method="sipp", model=model, data=x)
    for a, b in zip(jax.tree.leaves(det.params), jax.tree.leaves(det2.params)):
        np.testing.assert_array_equal(a, b)                              # key unused
    assert det.report["sampling"] == "deterministic"
    assert det.sensitivities["conv_0"].shape == (5, 5, 1, 6)
    for name in ("conv_0", "conv_1"):                                     # >= 1 per filter
        k = det.mask[name]["kernel"]
        assert np.all(k.reshape(-1, k.shape[-1]).sum(0) >= 1)
    # per filter, the kept weights are the largest sensitivities
    s = det.sensitivities["conv_1"].reshape(-1, 16)
    kept = det.mask["conv_1"]["kernel"].reshape(-1, 16) == 1
    for i in range(16):
        assert s[kept[:, i], i].min() >= s[~kept[:, i], i].max()
    a = jaxprune.prune(v, jax.random.key(0), 0.6, method="sipp", model=model, data=x,
                       sampling="sparsity_first")
    b = jaxprune.prune(v, jax.random.key(0), 0.6, method="sipp", model=model, data=x,
                       sampling="sparsity_first")
    c = jaxprune.prune(v, jax.random.key(1), 0.6, method="sipp", model=model, data=x,
                       sampling="sparsity_first")
    for x1, x2 in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
        np.testing.assert_array_equal(x1, x2)
    assert any(not np.array_equal(x1, x2)
               for x1, x2 in zip(jax.tree.leaves(a.mask), jax.tree.leaves(c.mask)))
    assert a.report["achieved_ratio"] == c.report["achieved_ratio"] == det.report["achieved_ratio"]


def test_leave_prune_output_and_dict_ratio(lenet300):
    model, v, x = lenet300
    res = jaxprune.prune(v, jax.random.key(0), 0.5, method="magnitude", model=model,
                         leave=("dense_1",), prune_output=True)
    np.testing.assert_array_equal(res.mask["dense_1"]["kernel"], 1.0)
    assert res.mask["head"]["kernel"].sum() == 100 and res.report["dense_layers"] == ["dense_1"]
    res = jaxprune.prune(v, jax.random.key(0), {"dense_1": 0.25}, method="magnitude",
                         model=model)
    assert list(res.report["layers"]) == ["dense_1"]
    assert res.mask["dense_1"]["kernel"].sum() == 600
    np.testing.assert_array_equal(res.mask["dense_0"]["kernel"], 1.0)


def test_errors_are_clear(lenet300):
    model, v, x = lenet300
    with pytest.raises(ValueError, match="data-informed"):
        jaxprune.prune(v, jax.random.key(0), 0.5, method="sipp", model=model)
    for unit in ("neurons", "flops"):
        with pytest.raises(ValueError, match="unit='params'"):
            jaxprune.prune(v, jax.random.key(0), 0.5, method="magnitude", model=model, unit=unit)
    bad = jax.tree.map(np.array, v)
    bad["params"]["dense_0"]["kernel"][3, 4] = np.nan
    for method in ("magnitude", "sipp"):
        with pytest.raises(ValueError, match="non-finite"):
            jaxprune.prune(bad, jax.random.key(0), 0.5, method=method, model=model, data=x)
    with pytest.raises(ValueError, match="sampling='deterministic'"):
        jaxprune.prune(v, jax.random.key(0), 0.5, method="magnitude", model=model,
                       sampling="sparsity_first")
    with pytest.raises(ValueError, match="leave= names unknown layers"):
        jaxprune.prune(v, jax.random.key(0), 0.5, method="magnitude", model=model,
                       leave=("nope",))
    with pytest.raises(ValueError, match="scope"):
        jaxprune.prune(v, jax.random.key(0), 0.5, method="magnitude", model=model, scope="x")
    with pytest.raises(ValueError, match="'tail' is a deterministic rule"):
        jaxprune.prune(v, jax.random.key(0), 0.5, method="sipp", model=model, data=x,
                       sampling="sparsity_first", neuron_budget="tail")
    with pytest.raises(ValueError, match="only a chain of Dense layers"):
        jaxprune.prune({"a": {"kernel": np.ones((2, 2, 1, 3), np.float32)}}, jax.random.key(0),
                       0.5, method="magnitude")


# ------------------------------------------------------------------------------ CLI
def test_cli_prune_evaluate_finetune_keeps_zeros(tmp_path, capsys, data_dir):
    model = LeNet300100(widths=(40, 20))
    v = numpy_init(model, (28, 28, 1))
    dense = tmp_path / "dense"
    checkpoint.save_model(dense, model, v, meta={"dataset": "mnist"})
    common = ["--data-dir", str(data_dir)]
    pruned = tmp_path / "sipp"
    rc = cli.main(["prune", "--checkpoint", str(dense), "--method", "sipp", "--ratio", "0.8",
                   "--data-batch", "16", "--limit-train", "256", "--out", str(pruned), *common])
    out, err = capsys.readouterr()
    assert rc == 0, err
    report = json.loads(out)
    assert report["kind"] == "weights" and report["data_batch"] == 16
    assert report["widths_after"] == [40, 20]
    pm, pv, meta = checkpoint.load_model(pruned)
    assert pm == model and meta["prune"]["method"] == "sipp"
    k0 = np.asarray(pv["params"]["dense_0"]["kernel"])
    zeros = k0 == 0
    k1 = np.asarray(pv["params"]["dense_1"]["kernel"])
    assert zeros.sum() + (k1 == 0).sum() == int(np.floor(0.8 * (784 * 40 + 800) + 0.5))
    rc = cli.main(["evaluate", "--checkpoint", str(pruned), "--limit-test", "50", *common])
    out, err = capsys.readouterr()
    assert rc == 0, err
    ev = json.loads(out)
    assert ev["params"] == metrics.param_count(v)
    assert ev["nonzero_params"] == report["nonzero_params"] == metrics.nonzero_count(pv)
    assert ev["nonzero_params"] < ev["params"]
    ft = tmp_path / "ft"
    rc = cli.main(["finetune", "--checkpoint", str(pruned), "--epochs", "1", "--batch-size",
                   "64", "--limit-train", "128", "--limit-test", "50", "--no-progress",
                   "--out", str(ft), *common])
    out, err = capsys.readouterr()
    assert rc == 0, err
    fm, fv, fmeta = checkpoint.load_model(ft)
    k = np.asarray(fv["params"]["dense_0"]["kernel"])
    assert np.all(k[zeros] == 0) and np.any(k[~zeros] != k0[~zeros])
    assert fmeta["keep_zeros"] is True and workflows.is_unstructured(fmeta)
    assert np.any(np.asarray(fv["params"]["dense_0"]["bias"])
                  != np.asarray(pv["params"]["dense_0"]["bias"]))       # biases still train
    # magnitude with --scope global; --scope is magnitude-only
    rc = cli.main(["prune", "--checkpoint", str(dense), "--method", "magnitude", "--scope",
                   "global", "--ratio", "0.5", "--out", str(tmp_path / "mag")])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert json.loads(out)["achieved_ratio"] == 0.5
    rc = cli.main(["prune", "--checkpoint", str(dense), "--method", "sipp", "--scope",
                   "global", "--ratio", "0.5", "--out", str(tmp_path / "x")])
    assert rc == 2 and "--scope only applies" in capsys.readouterr().err
    assert not workflows.is_unstructured({"dataset": "mnist"})
