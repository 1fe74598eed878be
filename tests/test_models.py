"""Models: build, forward, widths/prunable_layers contract, clone, shrink, config round-trip."""
import json

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxprune import models as M

# Tiny versions of every registered model (fast on CPU) and their input shapes.
TINY = {
    "lenet300": (dict(), (28, 28, 1)),
    "lenet5": (dict(), (28, 28, 1)),
    "vgg16": (dict(widths=(4, 4, 6, 6, 8, 8, 8, 8, 8, 8, 8, 8, 8, 12, 12)), (32, 32, 3)),
    "vgg19": (dict(widths=(4,) * 4 + (6,) * 4 + (8,) * 8), (32, 32, 3)),
    "resnet20": (dict(widths=(3,) * 9, stage_widths=(4, 8, 8)), (16, 16, 3)),
    "resnet56": (dict(widths=(2,) * 27, stage_widths=(4, 6, 8)), (8, 8, 3)),
    "resnet50": (dict(widths=(3,) * 32, stage_widths=(4, 8, 8, 12), stem_width=4,
                      num_classes=10), (32, 32, 3)),
}


def _get(params, path):
    node = params
    for part in path.split("/"):
        node = node[part]
    return node


def _init(model, shape, batch=2, seed=0):
    """Variables with the real init structure/shapes (``eval_shape``), values from NumPy.

    Running the real initialisers compiles many RNG kernels (seconds each on a shared CPU);
    the shapes are what the contract is about, so fill them cheaply: kernels ~ N(0, 1/fan_in),
    biases small random, BN scale 1 / running var 1 / running mean 0.
    """
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.normal(size=(batch,) + shape), jnp.float32)
    abstract = jax.eval_shape(model.init, jax.random.key(0), x)

    def fill(path, leaf):
        key = path[-1].key
        if key == "kernel":
            v = rng.normal(size=leaf.shape) / np.sqrt(np.prod(leaf.shape[:-1]))
        elif key in ("scale", "var"):
            v = np.ones(leaf.shape)
        elif key == "mean":
            v = np.zeros(leaf.shape)
        else:
            v = 0.1 * rng.normal(size=leaf.shape)
        return jnp.asarray(v, leaf.dtype)

    return jax.tree_util.tree_map_with_path(fill, abstract), x


def _count(tree):
    return sum(int(np.size(a)) for a in jax.tree.leaves(tree))


# Registered models without a ``widths`` field (rebuilt by the generic ``Resized`` path; their
# tests live in tests/test_attention.py) and the NNX twins (tests/test_cli_nnx.py).
GENERIC = {"vit", "lm"} | set(M.NNX_MODELS)  # lm: tests/test_lm.py


def test_registry_covers_all_names():
    assert set(TINY) | GENERIC == set(M.model_names())
    for name in ("lenet300", "lenet5", "vgg16", "vgg19", "resnet56", "resnet50"):
        assert name in M.MODELS


def test_unknown_model_lists_names():
    with pytest.raises(ValueError, match="lenet300.*resnet50"):
        M.get_model("alexnet")
    with pytest.raises(ValueError):
        M.default_input_shape("alexnet")


def test_default_input_shapes():
    assert M.default_input_shape("lenet300") == (28, 28, 1)
    assert M.default_input_shape("lenet5") == (28, 28, 1)
    assert M.default_input_shape("vgg16") == (32, 32, 3)
    assert M.default_input_shape("resnet56") == (32, 32, 3)
    assert M.default_input_shape("resnet50") == (224, 224, 3)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(TINY))
def test_forward_prunable_clone_config(name):
    overrides, shape = TINY[name]
    model = M.get_model(name, **overrides)
    variables, x = _init(model, shape)
    params = variables["params"]
    y = model.apply(variables, x)
    assert y.shape == (2, model.num_classes)
    assert np.all(np.isfinite(np.asarray(y)))

    # prunable_layers: one stable path per width, kernel out-dim == width
    paths = model.prunable_layers()
    assert len(paths) == len(model.widths) > 0
    assert len(set(paths)) == len(paths)
    for path, w in zip(paths, model.widths):
        assert _get(params, path)["kernel"].shape[-1] == w, path
    # explicit names only: no auto-named modules anywhere
    flat = flax.traverse_util.flatten_dict(params)
    assert not any("_" in k and k.split("_")[0][:1].isupper() for ks in flat for k in ks)

    # clone with smaller widths: builds, shapes follow the new widths, rest unchanged
    small_w = tuple(max(1, w - 1 - (i % 2)) for i, w in enumerate(model.widths))
    small = model.clone(widths=small_w)
    svars, _ = _init(small, shape)
    for path, w in zip(small.prunable_layers(), small_w):
        assert _get(svars["params"], path)["kernel"].shape[-1] == w
    assert small.prunable_layers() == paths
    sflat = flax.traverse_util.flatten_dict(svars["params"])
    assert set(sflat) == set(flat)
    assert _count(svars["params"]) < _count(params)
    # the non-prunable output layer keeps its shape
    assert sflat[("head", "kernel")].shape[-1] == flat[("head", "kernel")].shape[-1]
    assert small.apply(svars, x).shape == y.shape

    # config round-trip through JSON, for the original and the pruned model
    for m in (model, small):
        cfg = json.loads(json.dumps(M.model_config(m)))
        assert cfg["name"] in M.MODELS
        assert isinstance(cfg["widths"], list)
        back = M.model_from_config(cfg)
        assert back == m
        assert type(back) is type(m)
        assert tuple(back.widths) == tuple(m.widths)
    back = M.model_from_config(json.loads(json.dumps(M.model_config(small))))
    np.testing.assert_allclose(np.asarray(back.apply(svars, x)), np.asarray(small.apply(svars, x)))


def test_model_from_config_requires_name():
    with pytest.raises(ValueError, match="name"):
        M.model_from_config({"widths": [3]})


def test_lenet300100_param_count_and_depth():
    model = M.LeNet300100()
    v = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 28, 28, 1)))
    assert _count(v["params"]) == 266_610
    deep = M.LeNet300100(widths=(50, 40, 30))
    v = jax.eval_shape(deep.init, jax.random.key(0), jnp.zeros((1, 28, 28, 1)))
    assert set(v["params"]) == {"dense_0", "dense_1", "dense_2", "head"}
    assert _count(v["params"]) == 784 * 50 + 50 + 50 * 40 + 40 + 40 * 30 + 30 + 30 * 10 + 10


def test_lenet5_param_count_hand():
    v = jax.eval_shape(M.LeNet5().init, jax.random.key(0), jnp.zeros((1, 28, 28, 1)))
    hand = ((5 * 5 * 1 * 6 + 6) + (5 * 5 * 6 * 16 + 16) + (5 * 5 * 16 * 120 + 120)
            + (120 * 84 + 84) + (84 * 10 + 10))
    assert hand == 61_706
    assert _count(v["params"]) == hand
    assert v["params"]["dense_0"]["kernel"].shape == (400, 120)  # 5·5·16 after SAME conv


def test_reference_param_counts():
    """Counts of the literature: ResNet-56 (option A) 0.85M, ResNet-50 25.56M, VGG by hand."""
    def count(m, shape):
        return _count(jax.eval_shape(m.init, jax.random.key(0), jnp.zeros((1,) + shape))["params"])

    assert count(M.resnet56(), (32, 32, 3)) == 853_018
    assert count(M.resnet50(), (64, 64, 3)) == 25_557_032
    conv = M.vgg.VGG16_CONV
    cin = (3,) + conv[:-1]
    hand = sum(9 * a * b + b + 2 * b for a, b in zip(cin, conv))  # conv + bias + BN scale/bias
    hand += 512 * 512 + 512 + 512 * 512 + 512 + 512 * 10 + 10
    assert count(M.vgg16(), (32, 32, 3)) == hand


def test_shrunk_lenet300_params_equal_masked_network():
    """Slicing kept neurons out of every array == zeroing the dropped ones (surgery contract)."""
    model = M.LeNet300100(widths=(20, 10))
    v, x = _init(model, (28, 28, 1), batch=3)
    p = v["params"]
    keep0, keep1 = np.array([0, 3, 5, 7, 19]), np.array([1, 2, 9])
    small = model.clone(widths=(len(keep0), len(keep1)))
    sp = {"dense_0": {"kernel": p["dense_0"]["kernel"][:, keep0], "bias": p["dense_0"]["bias"][keep0]},
          "dense_1": {"kernel": p["dense_1"]["kernel"][keep0][:, keep1],
                      "bias": p["dense_1"]["bias"][keep1]},
          "head": {"kernel": p["head"]["kernel"][keep1], "bias": p["head"]["bias"]}}
    m0 = np.zeros(20, np.float32); m0[keep0] = 1
    m1 = np.zeros(10, np.float32); m1[keep1] = 1
    masked = jax.tree.map(lambda a: a, p)
    masked["dense_1"]["kernel"] = p["dense_1"]["kernel"] * m0[:, None]
    masked["head"]["kernel"] = p["head"]["kernel"] * m1[:, None]
    np.testing.assert_allclose(np.asarray(small.apply({"params": sp}, x)),
                               np.asarray(model.apply({"params": masked}, x)), rtol=1e-5, atol=1e-5)


def test_shrunk_lenet5_conv_flatten_dense():
    """Pruning conv_1 filters removes the matching NHWC-flattened rows of dense_0."""
    model = M.LeNet5()
    v, x = _init(model, (28, 28, 1), batch=2)
    p = jax.tree.map(np.asarray, v["params"])
    keep = np.array([0, 4, 5, 11, 15])
    small = model.clone(widths=(6, len(keep), 120, 84))
    sp = jax.tree.map(lambda a: a, p)
    sp["conv_1"] = {"kernel": p["conv_1"]["kernel"][..., keep], "bias": p["conv_1"]["bias"][keep]}
    sp["dense_0"] = {"kernel": p["dense_0"]["kernel"].reshape(5, 5, 16, 120)[:, :, keep]
                     .reshape(-1, 120), "bias": p["dense_0"]["bias"]}
    mask = np.zeros(16, np.float32); mask[keep] = 1
    masked = jax.tree.map(lambda a: a, p)
    masked["dense_0"] = {"kernel": (p["dense_0"]["kernel"].reshape(5, 5, 16, 120)
                                    * mask[None, None, :, None]).reshape(-1, 120),
                         "bias": p["dense_0"]["bias"]}
    np.testing.assert_allclose(np.asarray(small.apply({"params": sp}, x)),
                               np.asarray(model.apply({"params": masked}, x)), rtol=1e-5, atol=1e-5)


def test_shrunk_resnet_block_inner_channels():
    """Pruning a basic block's inner channels: conv1 out, bn1, conv2 in — nothing else."""
    overrides, shape = TINY["resnet20"]
    model = M.get_model("resnet20", **overrides)
    v, x = _init(model, shape)
    keep = np.array([0, 2])
    widths = list(model.widths); widths[4] = len(keep)
    small = model.clone(widths=tuple(widths))
    sv = jax.tree.map(np.asarray, v)
    blk = "block2_1"
    b = sv["params"][blk]
    b["conv1"]["kernel"] = b["conv1"]["kernel"][..., keep]
    b["conv2"]["kernel"] = b["conv2"]["kernel"][:, :, keep, :]
    b["bn1"] = {k: a[keep] for k, a in b["bn1"].items()}
    sv["batch_stats"][blk]["bn1"] = {k: a[keep] for k, a in sv["batch_stats"][blk]["bn1"].items()}
    assert small.prunable_layers()[4] == f"{blk}/conv1"
    # make the dropped channel contribute nothing in the full model: zero its conv2 input slice
    full = jax.tree.map(np.asarray, v)
    k2 = full["params"][blk]["conv2"]["kernel"].copy()
    k2[:, :, 1, :] = 0
    full["params"][blk]["conv2"]["kernel"] = k2
    np.testing.assert_allclose(np.asarray(small.apply(sv, x)), np.asarray(model.apply(full, x)),
                               rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_batchnorm_and_dropout_modes():
    model = M.VGG(widths=(4, 6, 8), pool_after=(0, 1), num_dense=1, dropout_rate=0.5)
    v, x = _init(model, (8, 8, 3))
    assert "batch_stats" in v
    y_eval = model.apply(v, x)
    y_train, upd = model.apply(v, x, train=True, mutable=["batch_stats"],
                               rngs={"dropout": jax.random.key(1)})
    assert y_train.shape == y_eval.shape
    assert not np.allclose(np.asarray(y_train), np.asarray(y_eval))
    changed = jax.tree.map(lambda a, b: bool(np.any(np.asarray(a) != np.asarray(b))),
                           upd["batch_stats"], v["batch_stats"])
    assert all(jax.tree.leaves(changed))
    lenet = M.LeNet300100(dropout_rate=0.5)
    lv, lx = _init(lenet, (28, 28, 1))
    np.testing.assert_allclose(np.asarray(lenet.apply(lv, lx)), np.asarray(lenet.apply(lv, lx)))
    yd = lenet.apply(lv, lx, train=True, rngs={"dropout": jax.random.key(2)})
    assert not np.allclose(np.asarray(yd), np.asarray(lenet.apply(lv, lx)))


def test_resnet_shortcut_b_and_validation():
    m = M.resnet20(widths=(2,) * 9, stage_widths=(4, 6, 8), shortcut="B")
    v, x = _init(m, (8, 8, 3))
    assert "shortcut_conv" in v["params"]["block2_0"]
    assert "shortcut_conv" not in v["params"]["block2_1"]
    assert m.apply(v, x).shape == (2, 10)
    a = M.resnet20(widths=(2,) * 9, stage_widths=(4, 6, 8))
    va, _ = _init(a, (8, 8, 3))
    assert "shortcut_conv" not in va["params"]["block2_0"]  # option A: parameter-free
    with pytest.raises(ValueError, match="widths"):
        M.resnet56(widths=(16,) * 5)
    with pytest.raises(ValueError, match="two entries"):
        M.resnet50(widths=(4,) * 16)
    with pytest.raises(ValueError, match="pool_after"):
        M.VGG(widths=(4, 4), pool_after=(5,), num_dense=0)
