"""Calibration-aware criteria (``wanda_sp``, ``flap``), streaming statistics, FLAP's bias
compensation and the refit of einsum consumers.

The references recompute every score in NumPy with explicit loops over channels, features and
outputs, from the weights and the layer inputs (computed in NumPy for the MLP, captured by
:func:`jaxprune.views.layer_inputs` for the attention and conv models).
"""
import flax.linen as nn
from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxprune
from jaxprune import _flax, _nnx, calibration, methods, reconstruct, structure, views

# flap scores without the bias step, which prune applies itself; these tests apply it by hand
NO_COMPENSATION = jaxprune.methods.flap(bias_compensation=False)


class MLP(nn.Module):
    hidden: tuple = (6, 5)
    use_bias: bool = True

    @nn.compact
    def __call__(self, x):
        for i, w in enumerate(self.hidden):
            x = nn.relu(nn.Dense(w, use_bias=self.use_bias, name=f"l{i}")(x))
        return nn.Dense(3, use_bias=self.use_bias, name="head")(x)


class TinyCNN(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(4, (3, 3), padding="SAME", name="c0")(x))
        x = nn.relu(nn.Conv(5, (3, 3), strides=(2, 2), padding="VALID", name="c1")(x))
        return nn.Dense(2, name="head")(x.reshape(x.shape[0], -1))


class TinyLM(nn.Module):
    """Token model: embed → causal attention (q/k/v DenseGeneral to (heads, head_dim), an
    einsum-style out-projection DenseGeneral over (heads, head_dim)) → SwiGLU MLP → head."""
    vocab: int = 11
    dim: int = 8
    heads: int = 3
    head_dim: int = 4
    hidden: int = 12

    @nn.compact
    def __call__(self, tok):
        x = nn.Embed(self.vocab, self.dim, name="embed")(tok)
        shape = (self.heads, self.head_dim)
        q = nn.DenseGeneral(shape, name="q")(x)
        k = nn.DenseGeneral(shape, name="k")(x)
        v = nn.DenseGeneral(shape, name="v")(x)
        logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(self.head_dim)
        causal = jnp.tril(jnp.ones((tok.shape[1], tok.shape[1]), bool))
        att = jax.nn.softmax(jnp.where(causal, logits, -1e9), axis=-1)
        o = jnp.einsum("bhqk,bkhd->bqhd", att, v)
        x = x + nn.DenseGeneral(self.dim, axis=(-2, -1), name="o")(o)
        g = nn.Dense(self.hidden, name="gate")(x)
        u = nn.Dense(self.hidden, name="up")(x)
        x = x + nn.Dense(self.dim, name="down")(nn.silu(g) * u)
        return nn.Dense(self.vocab, name="out")(x)


LM_RATIO = {"q:1": 0.34, "gate": 0.5}  # one head of three, half the SwiGLU units


def _perturbed(variables, seed=0):
    """Nonzero biases everywhere (Flax initialises them at 0), so mean terms matter."""
    leaves, tree = jax.tree.flatten(variables)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    return jax.tree.unflatten(tree, [leaf + 0.3 * jax.random.normal(k, leaf.shape)
                                     for leaf, k in zip(leaves, keys)])


def _mlp(seed=0, n=24, **kw):
    model = MLP(**kw)
    x = np.asarray(jax.random.normal(jax.random.key(seed + 1), (n, 4)), np.float32)
    return model, _perturbed(model.init(jax.random.key(seed), x), seed), x


def _lm(seed=0, n=6, t=5):
    model = TinyLM()
    tok = np.asarray(jax.random.randint(jax.random.key(seed + 1), (n, t), 0, model.vocab),
                     np.int32)
    return model, _perturbed(model.init(jax.random.key(seed), tok), seed), tok


def _groups(model, v, data):
    spec = _flax.Example.of(data).abstract(1) if data.dtype.kind == "i" else data.shape[1:]
    struct = structure.trace_groups(lambda w, inp: _flax.apply_inference(model, w, inp, {}),
                                    v, _flax.as_example(spec).zeros(2))
    return {g.name: g for g in struct.groups}


def _scores(method, model, v, data, group, statistics):
    inp = _flax.Example.of(data) if data.dtype.kind == "i" else data
    view, = views.channel_views(v, [group], model, inp, {}, statistics=statistics,
                                batch_size=4)
    return np.asarray(methods.get(method)().score(jax.random.key(0), [view])[0])


# --------------------------------------------------------------------------------------------
# NumPy references
# --------------------------------------------------------------------------------------------
def _ref(rows_of_channel, x, w, kind):
    """``Σ_{f owned by j} stat(X_f) Σ_k g(W[f, k])``; ``x``: (rows, F), ``w``: (F, K),
    ``rows_of_channel``: the feature indices of each channel."""
    out = []
    for feats in rows_of_channel:
        total = 0.0
        for f in feats:
            if kind == "wanda_sp":
                total += np.sqrt(np.sum(x[:, f] ** 2)) * np.sum(np.abs(w[f]))
            else:
                total += np.var(x[:, f]) * np.sum(w[f] ** 2)
        out.append(total)
    return np.asarray(out)


@pytest.mark.parametrize("method", ["wanda_sp", "flap"])
@pytest.mark.parametrize("statistics", [False, True])
def test_mlp_scores_match_numpy(method, statistics):
    model, v, x = _mlp()
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), v["params"])
    h0 = np.maximum(x @ p["l0"]["kernel"] + p["l0"]["bias"], 0)
    h1 = np.maximum(h0 @ p["l1"]["kernel"] + p["l1"]["bias"], 0)
    groups = _groups(model, v, x)
    for name, h, w in (("l0", h0, p["l1"]["kernel"]), ("l1", h1, p["head"]["kernel"])):
        want = _ref([[j] for j in range(h.shape[1])], h, w, method)
        got = _scores(method, model, v, x, groups[name], statistics)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["wanda_sp", "flap"])
def test_einsum_out_projection_scores_whole_heads(method):
    model, v, tok = _lm()
    groups = _groups(model, v, tok)
    heads = next(g for g in groups.values() if g.consumers
                 and g.consumers[0].path == ("params", "o", "kernel"))
    o_in = views.layer_inputs(model, v, _flax.Example.of(tok))[("o",)]  # (N, T, H, hd)
    w = np.asarray(v["params"]["o"]["kernel"], np.float64)            # (H, hd, dim)
    n_heads, hd = w.shape[:2]
    want = _ref([[j * hd + d for d in range(hd)] for j in range(n_heads)],
                o_in.reshape(-1, n_heads * hd), w.reshape(n_heads * hd, -1), method)
    for statistics in (False, True):
        got = _scores(method, model, v, tok, heads, statistics)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["wanda_sp", "flap"])
def test_conv_consumer_pools_positions_and_window(method):
    model = TinyCNN()
    x = np.asarray(jax.random.normal(jax.random.key(3), (5, 7, 7, 2)), np.float32)
    v = _perturbed(model.init(jax.random.key(0), x))
    group = _groups(model, v, x)["c0"]
    a = views.layer_inputs(model, v, x)[("c1",)]          # (N, 7, 7, 4)
    k = np.asarray(v["params"]["c1"]["kernel"], np.float64)  # (3, 3, 4, 5)
    w = np.moveaxis(k, 2, 0).reshape(4, -1)                  # channel -> window × outputs
    want = _ref([[j] for j in range(4)], a.reshape(-1, 4), w, method)
    for statistics in (False, True):
        np.testing.assert_allclose(_scores(method, model, v, x, group, statistics), want,
                                   rtol=1e-4, atol=1e-6)


# --------------------------------------------------------------------------------------------
# Streaming statistics
# --------------------------------------------------------------------------------------------
def _all_at_once(model, v, data, paths):
    captured = views.layer_inputs(model, v, data)
    shapes = calibration.input_statistics(model, v, data, paths, batch_size=100)
    return {p: calibration.from_inputs(captured[p], len(shapes[p].shape), gram=True,
                                       axis=shapes[p].axis) for p in paths}


@pytest.mark.parametrize("case", ["mlp", "lm", "cnn"])
def test_streaming_statistics_equal_all_at_once(case):
    if case == "mlp":
        model, v, data = _mlp(n=10)
    elif case == "lm":
        model, v, tok = _lm(n=7)
        data = _flax.Example.of(tok)
    else:
        model = TinyCNN()
        data = np.asarray(jax.random.normal(jax.random.key(3), (7, 7, 7, 2)), np.float32)
        v = _perturbed(model.init(jax.random.key(0), data))
    paths = [p for p in views.layer_inputs(model, v, data)]
    want = _all_at_once(model, v, data, paths)
    for batch in (1, 3):  # several batches, the last one padded
        got = calibration.input_statistics(model, v, data, paths, batch_size=batch, gram=True)
        for p in paths:
            g, w = got[p], want[p]
            assert g.shape == w.shape and g.axis == w.axis and g.count == w.count
            scale = 1.0 + np.max(np.abs(w.gram))
            np.testing.assert_allclose(g.mean, w.mean, atol=1e-5 * scale)
            np.testing.assert_allclose(g.m2, w.m2, rtol=1e-4, atol=1e-5 * scale)
            np.testing.assert_allclose(g.gram, w.gram, rtol=1e-4, atol=1e-5 * scale)
            np.testing.assert_allclose(g.norm, w.norm, rtol=1e-4, atol=1e-5)


def _depth_memory(blocks):
    """(statistics program, all-at-once capture program) memory of a ``blocks``-deep LM."""
    from jaxprune.models.lm import LM
    model = LM(dim=16, num_layers=blocks, num_heads=4, num_kv_heads=2, mlp_dim=32, max_len=16)
    tok = np.asarray(jax.random.randint(jax.random.key(0), (4, 16), 0, 256), np.int32)
    v = model.init(jax.random.key(1), tok[:1])
    data = _flax.Example.of(tok)
    paths = list(_flax.kernel_modules(model, v, data.take(0, 1)))
    streamed = calibration.planned_memory(model, v, data, paths, batch_size=4)
    static = _flax.hashable(model)
    held = _flax._capture.lower(static, (), v, jax.tree.map(jnp.asarray, data)).compile()
    return streamed, held.memory_analysis()


def test_streaming_memory_is_one_blocks_activations_at_any_depth():
    """The statistics forward's live activations do not grow with the number of blocks (XLA
    reuses each block's buffers once the next block has read them), while capturing every
    layer's input at once holds activations in proportion to the depth."""
    (s2, h2), (s6, h6) = _depth_memory(2), _depth_memory(6)
    assert s6.temp <= 1.02 * s2.temp, (s2, s6)
    assert s6.output < h6.output_size_in_bytes / 4          # sums, not activations
    grown = h6.output_size_in_bytes - h2.output_size_in_bytes
    assert grown >= 1.5 * h2.output_size_in_bytes, (h2, h6)  # ~3x the layers' inputs


def test_merge_is_the_statistics_of_the_union():
    rng = np.random.default_rng(0)
    a, b = rng.normal(3.0, 2.0, (5, 4)), rng.normal(-1.0, 0.5, (9, 4))
    merged = calibration.merge(calibration.from_inputs(a, gram=True),
                               calibration.from_inputs(b, gram=True))
    whole = calibration.from_inputs(np.concatenate([a, b]), gram=True)
    for field in ("mean", "m2", "gram"):
        np.testing.assert_allclose(getattr(merged, field), getattr(whole, field), rtol=1e-10)
    np.testing.assert_allclose(merged.variance, np.var(np.concatenate([a, b]), axis=0))


def test_feature_axes_reads_the_module_or_refuses_ambiguity():
    assert calibration.feature_axes((8, 3, 4), (2, 5, 8), nn.DenseGeneral((3, 4))) == (0, 1)
    assert calibration.feature_axes((3, 4, 8), (2, 5, 3, 4),
                                    nn.DenseGeneral(8, axis=(-2, -1))) == (0, 2)
    assert calibration.feature_axes((3, 3, 4, 5), (2, 7, 7, 4), nn.Conv(5, (3, 3))) == (2, 1)
    assert calibration.feature_axes((4, 4, 4), (2, 4, 4), nn.Einsum((4, 4, 4),
                                                                    "btd,dhk->bthk")) == (0, 1)
    with pytest.raises(ValueError, match="cannot tell which axes"):
        calibration.feature_axes((4, 4, 4), (2, 4, 4), None)
    # a layer that declares no contraction is refused even where the shapes would fit
    with pytest.raises(ValueError, match="ConvTranspose"):
        calibration.feature_axes((3, 5), (2, 3), nn.ConvTranspose(5, (1,)))
    with pytest.raises(ValueError, match="cannot tell which axes"):
        calibration.feature_axes((4, 4, 4), (2, 4, 4), nn.Einsum((4, 4, 4), "bij,jki->bk"))


# --------------------------------------------------------------------------------------------
# prune(..., method="wanda_sp" / "flap")
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["wanda_sp", "flap"])
def test_prune_mlp_smaller_equals_masked(method):
    model, v, x = _mlp()
    res = jaxprune.prune(v, 0, {"l0": 0.5, "l1": 0.4}, method=method, model=model, data=x)
    assert res.widths == {"l0": 3, "l1": 3}
    small = res.model(model)
    np.testing.assert_allclose(small.apply(res.params, x), model.apply(res.masked, x),
                               rtol=1e-5, atol=1e-5)
    # the kept channels are the top scores of each group
    for name, kept in res.kept.items():
        s = res.sensitivities[name]
        assert np.min(s[kept]) >= np.max(np.delete(s, kept))


@pytest.mark.parametrize("method", ["wanda_sp", "flap"])
def test_prune_token_lm_heads_and_swiglu(method):
    model, v, tok = _lm()
    res = jaxprune.prune(v, 0, LM_RATIO, method=method, model=model, data=tok,
                         prune_residual=True)
    assert res.widths == {"q:1": 2, "gate": 6}
    assert res.params["params"]["o"]["kernel"].shape == (2, 4, 8)
    small = res.model(model)
    np.testing.assert_allclose(small.apply(res.params, tok), model.apply(res.masked, tok),
                               rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("method", ["wanda_sp", "flap"])
def test_without_data_is_one_line_error(method):
    model, v, _ = _mlp()
    with pytest.raises(ValueError) as err:
        jaxprune.prune(v, 0, 0.5, method=method, model=model, input_shape=(4,))
    assert "data" in str(err.value) and "\n" not in str(err.value)
    view = methods.LayerView(jnp.zeros((3, 2)), jnp.zeros((3, 2)))
    with pytest.raises(ValueError, match="data-informed") as err:
        methods.get(method)().score(jax.random.key(0), [view])
    assert "\n" not in str(err.value)


# --------------------------------------------------------------------------------------------
# FLAP's bias compensation
# --------------------------------------------------------------------------------------------
def test_flap_compensation_keeps_the_consumer_mean_and_small_equals_masked():
    model, v, x = _mlp(hidden=(6,))
    res = jaxprune.prune(v, 0, {"l0": 0.5}, method=NO_COMPENSATION, model=model, data=x)
    comp = calibration.compensate(res, model, x, batch_size=5)
    inside = jaxprune.prune(v, 0, {"l0": 0.5}, method="flap", model=model, data=x)
    for a, b in zip(jax.tree.leaves(inside.params), jax.tree.leaves(comp.params)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)  # prune applies it itself
    rep = comp.report["bias_compensation"]
    assert list(rep["compensated"]) == ["head"] and not rep["skipped"]
    small = comp.model(model)
    out = np.asarray(small.apply(comp.params, x))
    np.testing.assert_allclose(out, model.apply(comp.masked, x), rtol=1e-5, atol=1e-5)
    dense = np.asarray(model.apply(v, x))
    before = np.asarray(small.apply(res.params, x))
    # the head is linear in its input: its output mean on the data is the dense one again
    np.testing.assert_allclose(out.mean(0), dense.mean(0), rtol=1e-4, atol=1e-4)
    assert np.abs(before.mean(0) - dense.mean(0)).max() > 1e-3
    # only the consumer's bias moved
    before = dict(jaxprune._tree.leaves_with_paths(res.params))
    after = dict(jaxprune._tree.leaves_with_paths(comp.params))
    assert [p for p in before if not np.array_equal(before[p], after[p])] == [
        ("params", "head", "bias")]


def test_flap_compensation_on_heads_and_consumers_that_lost_outputs():
    model, v, tok = _lm()
    res = jaxprune.prune(v, 0, LM_RATIO, method=NO_COMPENSATION, model=model, data=tok,
                         prune_residual=True)
    comp = calibration.compensate(res, model, tok)
    assert {"o", "down"} <= set(comp.report["bias_compensation"]["compensated"])
    small = comp.model(model)
    np.testing.assert_allclose(small.apply(comp.params, tok), model.apply(comp.masked, tok),
                               rtol=1e-4, atol=1e-4)


def test_flap_compensation_without_bias_is_reported_not_dropped():
    model, v, x = _mlp(hidden=(6,), use_bias=False)
    res = jaxprune.prune(v, 0, {"l0": 0.5}, method=NO_COMPENSATION, model=model, data=x)
    with pytest.warns(UserWarning, match="head"):
        comp = calibration.compensate(res, model, x)
    assert "no bias" in comp.report["bias_compensation"]["skipped"]["head"]
    for a, b in zip(jax.tree.leaves(res.params), jax.tree.leaves(comp.params)):
        np.testing.assert_array_equal(a, b)


# --------------------------------------------------------------------------------------------
# Refit of einsum consumers
# --------------------------------------------------------------------------------------------
class FloatAttention(nn.Module):
    """Float input (N, T, 5) → Dense → q/k/v DenseGeneral (heads, head_dim) → attention →
    DenseGeneral out-projection over (heads, head_dim) → Dense head."""

    @nn.compact
    def __call__(self, x):
        h = nn.relu(nn.Dense(8, name="inp")(x))
        q, k, v = (nn.DenseGeneral((3, 4), name=n)(h) for n in ("q", "k", "v"))
        att = jax.nn.softmax(jnp.einsum("bqhd,bkhd->bhqk", q, k) / 2.0, axis=-1)
        o = jnp.einsum("bhqk,bkhd->bqhd", att, v)
        y = nn.relu(nn.DenseGeneral(6, axis=(-2, -1), name="o")(o))
        return nn.Dense(2, name="out")(y.mean(axis=1))


@pytest.mark.slow
def test_refit_einsum_consumers_through_prune():
    model = FloatAttention()
    x = np.asarray(jax.random.normal(jax.random.key(4), (40, 5, 5)), np.float32)
    v = _perturbed(model.init(jax.random.key(0), x))
    ratio = {"inp": 0.5, "q:1": 0.34, "o": 0.5}
    plain = jaxprune.prune(v, 0, ratio, method="wanda_sp", model=model, data=x)
    res = jaxprune.prune(v, 0, ratio, method="wanda_sp", model=model, data=x,
                         reconstruct="lstsq")
    rep = res.report["reconstruct"]
    # q/k/v lost input features and whole heads, o lost heads and outputs, out lost inputs
    assert set(rep["layers"]) == {"q", "k", "v", "o", "out"} and not rep["skipped"]
    for name, errs in rep["layers"].items():
        assert errs["rel_err_after"] <= errs["rel_err_before"] + 1e-6, name
    assert jax.tree.map(np.shape, res.params) == jax.tree.map(np.shape, plain.params)
    small = res.model(model)
    assert np.all(np.isfinite(small.apply(res.params, x)))


@pytest.mark.slow
def test_refit_token_lm_einsum_out_projection_solves_its_normal_equations():
    model, v, tok = _lm(n=16)
    res = jaxprune.prune(v, 0, LM_RATIO, method="flap", model=model, data=tok,
                         prune_residual=True)
    small = res.model(model)
    consumers = reconstruct.consumer_paths(res.groups, res.kept)
    new, rep = reconstruct.refit(model, v, small, res.params, consumers, tok, ridge=0.0,
                                 groups=res.groups, kept=res.kept)
    assert set(rep["layers"]) == {"o", "down"} and not rep["skipped"]
    for errs in rep["layers"].values():
        assert errs["rel_err_after"] <= errs["rel_err_before"] + 1e-6
    assert jax.tree.map(np.shape, new) == jax.tree.map(np.shape, res.params)
    # o is fit first, on the inputs of the small network as pruned: the residual of the
    # least-squares fit is orthogonal to every input feature and to the bias column
    x = views.layer_inputs(small, res.params, _flax.Example.of(tok))[("o",)]
    x = np.asarray(x, np.float64).reshape(-1, np.prod(x.shape[-2:]))
    target = _dense_o_output(model, v, tok).reshape(x.shape[0], -1)
    w = np.asarray(new["params"]["o"]["kernel"], np.float64)
    b = np.asarray(new["params"]["o"]["bias"], np.float64)
    resid = x @ w.reshape(x.shape[1], -1) + b - target
    a = np.concatenate([x, np.ones((x.shape[0], 1))], axis=1)
    assert np.abs(a.T @ resid).max() <= 1e-4 * np.abs(a).max() * np.abs(target).sum(0).max()


def _dense_o_output(model, v, tok):
    out = {}

    def record(module, _x, y):
        if _flax.module_path(module) == ("o",):
            out["y"] = y

    with _flax.kernel_calls(record):
        model.apply(v, tok)
    return np.asarray(out["y"], np.float64)


class NnxAttention(nnx.Module):
    """:class:`FloatAttention` in NNX: ``nnx.LinearGeneral`` q/k/v, an ``nnx.Einsum``
    out-projection ``"bqhd,hdk->bqk"``."""

    def __init__(self, rngs):
        self.inp = nnx.Linear(5, 8, rngs=rngs)
        self.q, self.k, self.v = (nnx.LinearGeneral(8, (3, 4), rngs=rngs) for _ in range(3))
        self.o = nnx.Einsum("bqhd,hdk->bqk", (3, 4, 6), (6,), rngs=rngs)
        self.out = nnx.Linear(6, 2, rngs=rngs)

    def __call__(self, x):
        h = nnx.relu(self.inp(x))
        q, k, v = self.q(h), self.k(h), self.v(h)
        att = jax.nn.softmax(jnp.einsum("bqhd,bkhd->bhqk", q, k) / 2.0, axis=-1)
        return self.out(nnx.relu(self.o(jnp.einsum("bhqk,bkhd->bqhd", att, v))).mean(1))


@pytest.mark.slow
def test_nnx_einsum_refit_and_flap_compensation():
    module = NnxAttention(nnx.Rngs(0))
    x = np.asarray(jax.random.normal(jax.random.key(4), (30, 5, 5)), np.float32)
    ratio = {"q:1": 0.34, "inp": 0.5}
    res = jaxprune.prune(module, 0, ratio, method=NO_COMPENSATION, data=x,
                         reconstruct="lstsq")
    rep = res.report["reconstruct"]
    assert set(rep["layers"]) == {"q", "k", "v", "o"} and not rep["skipped"]
    for errs in rep["layers"].values():
        assert errs["rel_err_after"] <= errs["rel_err_before"] + 1e-6
    comp = calibration.compensate(res, None, x)
    assert {"q", "k", "v", "o"} <= set(comp.report["bias_compensation"]["compensated"])
    small, masked = comp.module, comp.masked
    assert small.o.kernel.shape == (2, 4, 6)
    np.testing.assert_allclose(small(x), masked(x), rtol=1e-4, atol=1e-5)
    # the streamed statistics score the NNX layers as the captured activations do
    model, v = _nnx.as_linen(module), _nnx.variables_of(module)
    heads = next(g for g in comp.groups if g.name == "q:1")
    for method in ("wanda_sp", "flap"):
        np.testing.assert_allclose(_scores(method, model, v, x, heads, True),
                                   _scores(method, model, v, x, heads, False), rtol=1e-4)


def test_flap_after_selection_and_options():
    model, v, x = _mlp(hidden=(6,))
    res = jaxprune.prune(v, 0, {"l0": 0.5}, method=NO_COMPENSATION, model=model, data=x)
    flap = methods.get("flap")
    assert flap(bias_compensation=False).after_selection(res, model, x) is res
    done = flap().after_selection(res, model, x)
    direct = calibration.compensate(res, model, x)
    for a, b in zip(jax.tree.leaves(done.params), jax.tree.leaves(direct.params)):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    for bad in (dict(batch_size=0), dict(batch_size=2.5), dict(bias_compensation="yes")):
        with pytest.raises(ValueError) as err:
            flap(**bad)
        assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="batch_size"):
        methods.get("wanda_sp")(batch_size=-1)
