"""Refitting the consumers of pruned groups by ridge least squares (``jaxprune.reconstruct``):
exactness, agreement with NumPy references (lstsq, ridge, im2col), chunking, the error drop
after a real prune, BatchNorm recalibration and the argument checks."""
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxprune
from jaxprune import reconstruct
from jaxprune.models.resnet import CifarResNet


class MLP(nn.Module):
    widths: Sequence[int] = (8, 6)
    out: int = 3

    @nn.compact
    def __call__(self, x):
        x = x.reshape(x.shape[0], -1)
        for i, w in enumerate(self.widths):
            x = nn.relu(nn.Dense(w, name=f"dense_{i}")(x))
        return nn.Dense(self.out, name="head")(x)


class CNN(nn.Module):
    """conv_0 -> relu -> conv_1 (the consumer, configurable) -> flatten -> head."""
    widths: Sequence[int] = (4, 3)
    strides: tuple = (1, 1)
    padding: object = "SAME"
    kernel_dilation: tuple = (1, 1)

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(self.widths[0], (3, 3), name="conv_0")(x))
        x = nn.Conv(self.widths[1], (3, 2), strides=self.strides, padding=self.padding,
                    kernel_dilation=self.kernel_dilation, name="conv_1")(x)
        return nn.Dense(2, name="head")(nn.relu(x).reshape(x.shape[0], -1))


class BNNet(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Dense(5, name="dense_0")(x.reshape(x.shape[0], -1))
        x = nn.BatchNorm(use_running_average=not train, name="bn")(x)
        return nn.Dense(2, name="head")(nn.relu(x))


def _kernel(name):
    return ("params", name, "kernel")


def _drop_hidden(variables, layer, nxt, keep):
    """Small variables: only the output channels ``keep`` of ``layer`` (and the matching input
    rows of ``nxt``), nothing re-weighted."""
    p = jax.tree.map(np.asarray, variables["params"])
    p = {k: dict(v) for k, v in p.items()}
    p[layer]["kernel"] = p[layer]["kernel"][..., keep]
    p[layer]["bias"] = p[layer]["bias"][keep]
    k = p[nxt]["kernel"]
    p[nxt]["kernel"] = k[..., keep, :] if k.ndim > 2 else k[keep]
    return {"params": p}


def _mlp(seed=0, widths=(8, 6), d_in=5):
    m = MLP(widths)
    v = m.init(jax.random.PRNGKey(seed), jnp.zeros((1, d_in)))
    return m, jax.tree.map(np.asarray, v)


def _data(n, *shape, seed=1):
    return np.random.RandomState(seed).randn(n, *shape).astype(np.float32)


def test_duplicate_neurons_are_recovered_exactly():
    """Pruning one of two identical neurons loses nothing the kept one cannot carry: the
    refit finds W[kept] + W[duplicate] and the small network equals the dense one."""
    m, v = _mlp(widths=(8, 6))
    p = v["params"]
    k0, b0 = p["dense_0"]["kernel"].copy(), p["dense_0"]["bias"].copy()
    k0[:, 4:], b0[4:] = k0[:, :4], b0[:4] + 0.1           # neuron 4+j duplicates neuron j
    b0[:4] += 0.1
    dense = {"params": {**p, "dense_0": {"kernel": k0, "bias": b0}}}
    small_vars = _drop_hidden(dense, "dense_0", "dense_1", np.arange(4))
    small = MLP((4, 6))
    x = _data(64, 5)
    new, report = reconstruct.refit(m, dense, small, small_vars, {_kernel("dense_1")}, x,
                                    ridge=0.0)
    rec = report["layers"]["dense_1"]
    assert rec["rel_err_before"] > 0.05
    assert rec["rel_err_after"] < 1e-4
    np.testing.assert_allclose(small.apply(new, x), m.apply(dense, x), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(new["params"]["dense_1"]["kernel"],
                               p["dense_1"]["kernel"][:4] + p["dense_1"]["kernel"][4:],
                               rtol=1e-3, atol=1e-4)


def _dense_reference(dense, small_vars, x):
    """X: what the small network feeds dense_1; Y: the dense network's dense_1 output."""
    ps, pd = small_vars["params"], dense["params"]
    xs = np.maximum(x @ ps["dense_0"]["kernel"] + ps["dense_0"]["bias"], 0)
    xd = np.maximum(x @ pd["dense_0"]["kernel"] + pd["dense_0"]["bias"], 0)
    return (xs.astype(np.float64),
            (xd @ pd["dense_1"]["kernel"] + pd["dense_1"]["bias"]).astype(np.float64))


@pytest.mark.parametrize("ridge", [0.0, 1e-9, 0.3])
def test_dense_refit_matches_numpy(ridge):
    """ridge -> 0: numpy.linalg.lstsq on [X 1]; ridge > 0: the closed form with
    lam = ridge * trace(X^T X) / d and the bias unpenalised."""
    m, dense = _mlp(widths=(8, 6))
    x = _data(200, 5)
    keep = np.array([0, 2, 3, 5, 7])
    small_vars = _drop_hidden(dense, "dense_0", "dense_1", keep)
    new, _ = reconstruct.refit(m, dense, MLP((5, 6)), small_vars, [_kernel("dense_1")], x,
                               ridge=ridge)
    xs, y = _dense_reference(dense, small_vars, x)
    a = np.concatenate([xs, np.ones((len(xs), 1))], axis=1)
    if ridge < 1e-6:
        w = np.linalg.lstsq(a, y, rcond=None)[0]
    else:
        g = a.T @ a
        d = xs.shape[1]
        g[np.arange(d), np.arange(d)] += ridge * np.trace(g[:d, :d]) / d
        w = np.linalg.solve(g, a.T @ y)
    got = new["params"]["dense_1"]
    np.testing.assert_allclose(got["kernel"], w[:-1], rtol=2e-3, atol=2e-4)
    np.testing.assert_allclose(got["bias"], w[-1], rtol=2e-3, atol=2e-4)
    # the other layers are untouched
    np.testing.assert_array_equal(new["params"]["dense_0"]["kernel"],
                                  small_vars["params"]["dense_0"]["kernel"])


def test_chunked_equals_one_shot():
    m, dense = _mlp(widths=(8, 6))
    x = _data(50, 5)
    small_vars = _drop_hidden(dense, "dense_0", "dense_1", np.arange(0, 8, 2))
    args = (m, dense, MLP((4, 6)), small_vars, [_kernel("dense_1")], x)
    a, ra = reconstruct.refit(*args, chunk=7)
    b, rb = reconstruct.refit(*args, chunk=1000)
    for pa, pb in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(pa, pb, rtol=1e-4, atol=1e-5)
    for key in ("rel_err_before", "rel_err_after"):
        assert ra["layers"]["dense_1"][key] == pytest.approx(rb["layers"]["dense_1"][key],
                                                             rel=1e-4)


def test_chunk_shrinks_to_the_activation_budget(monkeypatch):
    m, dense = _mlp(widths=(8, 6))
    x = _data(50, 5)
    small_vars = _drop_hidden(dense, "dense_0", "dense_1", np.arange(0, 8, 2))
    args = (m, dense, MLP((4, 6)), small_vars, [_kernel("dense_1")], x)
    # per example, the kernel layers' inputs and outputs of both networks
    per_example = 4 * ((5 + 8 + 8 + 6 + 6 + 3) + (5 + 4 + 4 + 6 + 6 + 3))
    seen = []
    real_chunks = reconstruct._chunks
    monkeypatch.setattr(reconstruct, "_chunks",
                        lambda images, chunk: seen.append(chunk) or real_chunks(images, chunk))
    b, _ = reconstruct.refit(*args, chunk=1000)
    monkeypatch.setattr(reconstruct, "_CHUNK_BYTES", 3 * per_example)
    a, _ = reconstruct.refit(*args, chunk=1000)
    assert seen[0] == 1000 and set(seen[len(seen) // 2:]) == {3}
    for pa, pb in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(pa, pb, rtol=1e-4, atol=1e-5)


def _im2col(x, window, strides, padding, dilation):
    """NumPy reference: (N, H, W, C) -> (N·P, kh·kw·C) rows in the kernel's (kh, kw, C)
    layout, and the output spatial shape."""
    n, h, w, c = x.shape
    if padding == "SAME":
        pads = []
        for size, k, s, d in zip((h, w), window, strides, dilation):
            out = -(-size // s)
            total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
            pads.append((total // 2, total - total // 2))
    else:
        pads = padding
    xp = np.pad(x, ((0, 0), *pads, (0, 0)))
    span = [(k - 1) * d + 1 for k, d in zip(window, dilation)]
    outs = [(xp.shape[1 + i] - span[i]) // strides[i] + 1 for i in range(2)]
    rows = []
    for i in range(outs[0]):
        for j in range(outs[1]):
            r0, c0 = i * strides[0], j * strides[1]
            patch = xp[:, r0:r0 + span[0]:dilation[0], c0:c0 + span[1]:dilation[1], :]
            rows.append(patch.reshape(n, -1))
    return np.stack(rows, axis=1).reshape(-1, window[0] * window[1] * c), outs


@pytest.mark.parametrize("config", [
    dict(strides=(2, 1), padding="SAME", kernel_dilation=(1, 1)),
    dict(strides=(1, 2), padding=((1, 0), (2, 1)), kernel_dilation=(2, 1)),
])
@pytest.mark.slow
def test_conv_refit_matches_numpy_im2col(config):
    m = CNN((4, 3), **config)
    x = _data(12, 7, 6, 2)
    dense = jax.tree.map(np.asarray, m.init(jax.random.PRNGKey(3), x[:1]))
    keep = np.array([0, 2, 3])
    small_vars = _drop_hidden(dense, "conv_0", "conv_1", keep)
    small = CNN((3, 3), **config)
    new, report = reconstruct.refit(m, dense, small, small_vars, {_kernel("conv_1")}, x,
                                    ridge=0.0, chunk=5)
    # reference: the small conv_0's relu output, im2col'd; the dense conv_1 output as target
    _, inter = small.apply(small_vars, x, capture_intermediates=True, mutable=["intermediates"])
    xs = np.maximum(np.asarray(inter["intermediates"]["conv_0"]["__call__"][0]), 0)
    _, inter = m.apply(dense, x, capture_intermediates=True, mutable=["intermediates"])
    y = np.asarray(inter["intermediates"]["conv_1"]["__call__"][0], np.float64)
    rows, outs = _im2col(xs.astype(np.float64), (3, 2), config["strides"], config["padding"],
                         config["kernel_dilation"])
    assert tuple(outs) == y.shape[1:3]
    a = np.concatenate([rows, np.ones((len(rows), 1))], axis=1)
    w = np.linalg.lstsq(a, y.reshape(-1, y.shape[-1]), rcond=None)[0]
    got = new["params"]["conv_1"]
    np.testing.assert_allclose(got["kernel"], w[:-1].reshape(3, 2, 3, 3), rtol=2e-3, atol=2e-4)
    np.testing.assert_allclose(got["bias"], w[-1], rtol=2e-3, atol=2e-4)
    assert report["layers"]["conv_1"]["rel_err_after"] < report["layers"]["conv_1"][
        "rel_err_before"]


def _trained_mlp(steps=30):
    m, v = _mlp(seed=4, widths=(16, 12), d_in=6)
    x = _data(256, 6, seed=5)
    y = np.sin(x @ np.random.RandomState(6).randn(6, 3)).astype(np.float32)
    opt = optax.adam(1e-2)
    params = v["params"]
    state = opt.init(params)

    @jax.jit
    def step(params, state):
        loss, grad = jax.value_and_grad(lambda p: jnp.mean((m.apply({"params": p}, x) - y)
                                                           ** 2))(params)
        upd, state = opt.update(grad, state)
        return optax.apply_updates(params, upd), state

    for _ in range(steps):
        params, state = step(params, state)
    return m, {"params": params}, x


def test_refit_lowers_the_error_after_pruning():
    m, v, x = _trained_mlp()
    res = jaxprune.prune(v, jax.random.PRNGKey(0), 0.5, model=m, input_shape=(6,),
                         method="l1_norm", unit="neurons")
    small = res.model(m)
    consumers = reconstruct.consumer_paths(res.groups, res.kept)
    assert consumers == {_kernel("dense_1"), _kernel("head")}
    with pytest.raises(ValueError, match="groups= and kept="):  # dense_1 lost outputs too
        reconstruct.refit(m, res.dense_variables, small, res.params, consumers, x)
    new, report = reconstruct.refit(m, res.dense_variables, small, res.params, consumers, x,
                                    groups=res.groups, kept=res.kept)
    assert list(report["layers"]) == ["dense_1", "head"]  # forward order
    for rec in report["layers"].values():
        assert rec["rel_err_after"] < rec["rel_err_before"]
    dense_out = m.apply(res.dense_variables, x)

    def err(p):
        return np.linalg.norm(small.apply(p, x) - dense_out) / np.linalg.norm(dense_out)

    assert err(new) < err(res.params)
    assert report["layers"]["head"]["rel_err_after"] == pytest.approx(err(new), rel=1e-3)
    assert jax.tree.map(np.shape, new) == jax.tree.map(np.shape, res.params)


@pytest.mark.slow
def test_refit_of_a_pruned_cnn_and_bare_params():
    m = CNN((6, 4))
    x = _data(40, 8, 8, 1)
    v = m.init(jax.random.PRNGKey(7), x[:1])
    res = jaxprune.prune(v["params"], jax.random.PRNGKey(1), {"conv_0": 0.5, "conv_1": 0.5},
                         model=m, input_shape=(8, 8, 1), method="l1_norm", unit="neurons")
    small = res.model(m)
    new, report = reconstruct.refit(m, res.dense_variables, small, res.params,
                                    reconstruct.consumer_paths(res.groups, res.kept), x,
                                    groups=res.groups, kept=res.kept, chunk=16)
    assert set(new) == {"conv_0", "conv_1", "head"}  # bare params in, bare params out
    assert list(report["layers"]) == ["conv_1", "head"]
    for rec in report["layers"].values():
        assert rec["rel_err_after"] < rec["rel_err_before"]


def test_batchnorm_recalibration_gives_population_statistics():
    m = BNNet()
    x = _data(30, 4)
    v = jax.tree.map(np.asarray, m.init(jax.random.PRNGKey(2), x[:1]))
    new, report = reconstruct.refit(m, v, m, v, [], x, recalibrate_bn=True, chunk=8)
    assert report["batch_stats"] == ["bn"] and report["layers"] == {}
    h = x @ v["params"]["dense_0"]["kernel"] + v["params"]["dense_0"]["bias"]
    np.testing.assert_allclose(new["batch_stats"]["bn"]["mean"], h.mean(0), rtol=1e-4,
                               atol=1e-5)
    np.testing.assert_allclose(new["batch_stats"]["bn"]["var"], h.var(0), rtol=1e-4,
                               atol=1e-5)
    np.testing.assert_array_equal(new["params"]["head"]["kernel"], v["params"]["head"]["kernel"])
    # inference still uses the running statistics
    assert np.all(np.isfinite(m.apply(new, x)))


@pytest.mark.slow
def test_resnet_blocks_with_batchnorm():
    """A ResNet whose residual blocks' inner channels are pruned (the residual stream is kept):
    every block's second conv is refit, and the whole network's output on S moves closer to
    the dense one's -- more so when the BatchNorm statistics are re-estimated on S too (the
    dense net's own are S's population statistics here, so the comparison is like for like)."""
    m = CifarResNet(widths=(8, 8, 16, 16), stage_widths=(8, 16), num_blocks=(2, 2))
    x = _data(48, 10, 10, 3)
    v = m.init(jax.random.PRNGKey(1), x[:1])
    v, _ = reconstruct.refit(m, v, m, v, [], x, recalibrate_bn=True)
    dense_out = m.apply(v, x)
    errs = {}
    for name, kw in (("plain", {}), ("lstsq", dict(reconstruct="lstsq")),
                     ("lstsq+bn", dict(reconstruct="lstsq", recalibrate_bn=True))):
        res = jaxprune.prune(v, jax.random.PRNGKey(2), 0.5, model=m, data=x, method="l1_norm",
                             **kw)
        out = res.model(m).apply(res.params, x)
        errs[name] = np.linalg.norm(out - dense_out) / np.linalg.norm(dense_out)
        if kw:
            layers = res.report["reconstruct"]["layers"]
            assert set(layers) == {f"{b}/conv2" for b in ("block1_0", "block1_1", "block2_0",
                                                          "block2_1")}
            assert all(r["rel_err_after"] < r["rel_err_before"] for r in layers.values())
    assert errs["lstsq+bn"] < errs["lstsq"] < errs["plain"], errs


class Grouped(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(4, (1, 1), name="conv_0")(x))
        return nn.Conv(4, (3, 3), feature_group_count=2, name="grouped")(x)


def test_unsupported_consumers_are_skipped_with_a_reason():
    m = Grouped()
    x = _data(4, 5, 5, 2)
    v = m.init(jax.random.PRNGKey(0), x[:1])
    new, report = reconstruct.refit(m, v, m, v, {_kernel("grouped")}, x)
    assert report["layers"] == {}
    assert "grouped" in report["skipped"]["grouped"]
    np.testing.assert_array_equal(new["params"]["grouped"]["kernel"],
                                  v["params"]["grouped"]["kernel"])


@pytest.mark.parametrize("change, match", [
    (dict(data=None), "needs data"),
    (dict(data=np.zeros((0, 5), np.float32)), "empty"),
    (dict(data=np.full((4, 5), np.nan, np.float32)), "NaN"),
    (dict(data=np.zeros(5, np.float32)), "batch"),
    (dict(data=np.zeros((4, 7), np.float32)), "cannot run"),
    (dict(consumers=[("params", "nope", "kernel")]), "unknown layers"),
    (dict(consumers="dense_1"), "collection"),
    (dict(ridge=-1.0), "ridge"),
    (dict(ridge=float("nan")), "ridge"),
    (dict(chunk=0), "chunk"),
])
def test_bad_input(change, match):
    m, dense = _mlp()
    small_vars = _drop_hidden(dense, "dense_0", "dense_1", np.arange(4))
    kwargs = dict(consumers=[_kernel("dense_1")], data=_data(4, 5))
    kwargs.update({k: v for k, v in change.items() if k in kwargs})
    options = {k: v for k, v in change.items() if k not in kwargs}
    with pytest.raises(ValueError, match=match):
        reconstruct.refit(m, dense, MLP((4, 6)), small_vars, kwargs["consumers"],
                          kwargs["data"], **options)


# ----------------------------------------------------------------------------- prune(reconstruct=)

@pytest.mark.slow
def test_prune_with_reconstruct_refits_and_masked_follows(tmp_path, capsys, data_dir):
    """``prune(..., data=S, reconstruct="lstsq")``: the consumers are refit (lower error on S
    than the plain prune), ``result.masked`` is the refit network at dense shapes, and the
    report records each layer's error; the CLI does the same from a checkpoint."""
    import json
    from jaxprune import checkpoint, cli
    from jaxprune.models import LeNet300100
    model = LeNet300100(widths=(24, 12))
    v = model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))
    v = jax.tree.map(lambda a: a + 0.05 * jax.random.normal(jax.random.key(1), a.shape), v)
    S = np.asarray(jax.random.uniform(jax.random.key(2), (64, 28, 28, 1)))
    plain = jaxprune.prune(v, jax.random.key(3), 0.5, model=model)
    res = jaxprune.prune(v, jax.random.key(3), 0.5, model=model, data=S, reconstruct="lstsq")
    assert res.widths == plain.widths and res.report["reconstruct"]["layers"]
    for layer in res.report["reconstruct"]["layers"].values():
        assert layer["rel_err_after"] < layer["rel_err_before"]
    small = res.model(model)
    dense_out = model.apply(v, S)
    err = lambda r: float(jnp.linalg.norm(small.apply(r.params, S) - dense_out))  # noqa: E731
    assert err(res) < err(plain)
    np.testing.assert_allclose(small.apply(res.params, S), model.apply(res.masked, S),
                               rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="data="):
        jaxprune.prune(v, jax.random.key(3), 0.5, model=model, reconstruct="lstsq")
    with pytest.raises(ValueError, match="unknown reconstruct"):
        jaxprune.prune(v, jax.random.key(3), 0.5, model=model, data=S, reconstruct="qr")
    with pytest.raises(ValueError, match="ridge"):
        jaxprune.prune(v, jax.random.key(3), 0.5, model=model, data=S, reconstruct="lstsq",
                       ridge=-1.0)
    # the CLI: --reconstruct lstsq with --data-batch images of the checkpoint's dataset
    checkpoint.save_model(tmp_path / "dense", model, v, meta={"dataset": "mnist"})
    rc = cli.main(["prune", "--checkpoint", str(tmp_path / "dense"), "--ratio", "0.5",
                   "--reconstruct", "lstsq", "--data-batch", "64", "--data-dir",
                   str(data_dir), "--limit-train", "512", "--out", str(tmp_path / "small")])
    out = capsys.readouterr()
    assert rc == 0, out.err
    report = json.loads(out.out)
    assert report["reconstruct"]["examples"] == 64 and report["reconstruct"]["layers"]
