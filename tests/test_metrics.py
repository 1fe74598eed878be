"""Metrics: parameter/nonzero counts, MACs/FLOPs against hand counts, latency."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxprune import metrics
from jaxprune import models as M


def _abstract(model, shape):
    return jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1,) + shape))


def test_param_and_nonzero_counts():
    params = {"a": {"kernel": np.ones((3, 4)), "bias": np.zeros(4)},
              "b": {"kernel": np.array([[0.0, 2.0], [3.0, 0.0]])}}
    assert metrics.param_count(params) == 12 + 4 + 4
    assert metrics.nonzero_count(params) == 12 + 0 + 2
    variables = {"params": params, "batch_stats": {"mean": np.ones(100)}}
    assert metrics.param_count(variables) == 20  # batch_stats are not parameters
    assert metrics.nonzero_count(variables) == 14
    assert metrics.sparsity(params) == pytest.approx(6 / 20)
    assert metrics.param_count({}) == 0 and metrics.sparsity({}) == 0.0
    v = _abstract(M.LeNet300100(), (28, 28, 1))
    assert metrics.param_count(v) == 266_610


def test_lenet300100_macs_flops_hand_count():
    model = M.LeNet300100()
    hand = 784 * 300 + 300 * 100 + 100 * 10
    assert metrics.layer_macs(model, None, (28, 28, 1)) == {
        "dense_0": 784 * 300, "dense_1": 300 * 100, "head": 100 * 10}
    assert metrics.macs(model, None, (28, 28, 1)) == hand == 266_200
    assert metrics.flops(model, _abstract(model, (28, 28, 1)), (28, 28, 1)) == 2 * hand
    # pruned model: computed from the real (smaller) shapes; params-only tree accepted too
    small = model.clone(widths=(30, 7))
    sp = _abstract(small, (28, 28, 1))["params"]
    assert metrics.macs(small, sp, (28, 28, 1)) == 784 * 30 + 30 * 7 + 7 * 10


def test_lenet5_macs_hand_count():
    hand = (28 * 28 * 6 * 25 * 1) + (10 * 10 * 16 * 25 * 6) + 400 * 120 + 120 * 84 + 84 * 10
    assert metrics.macs(M.LeNet5(), None, (28, 28, 1)) == hand


class _OddConvNet(nn.Module):
    """Strides, VALID/SAME/explicit padding, feature groups, dense on a 4-D tensor."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Conv(6, (3, 3), strides=(2, 2), padding="VALID", name="c1")(x)       # 15x15x6
        x = nn.relu(x)
        x = nn.Conv(12, (5, 3), padding="SAME", feature_group_count=3, name="c2")(x)  # 15x15x12
        x = nn.Conv(4, (1, 1), strides=(2, 2), padding=((1, 1), (0, 0)), name="c3")(x)  # 9x8x4
        x = nn.Dense(5, name="d_spatial")(x)                                          # 9x8x5
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(3, name="out")(x)


def test_small_conv_net_macs_independent_count():
    def out_len(n, k, s, lo, hi):
        return (n + lo + hi - k) // s + 1

    h1 = out_len(32, 3, 2, 0, 0)
    c1 = h1 * h1 * 6 * (3 * 3 * 3)
    c2 = h1 * h1 * 12 * (5 * 3 * (6 // 3))
    h3, w3 = out_len(h1, 1, 2, 1, 1), out_len(h1, 1, 2, 0, 0)
    c3 = h3 * w3 * 4 * 12
    d = h3 * w3 * 5 * 4
    o = 5 * 3
    per_layer = metrics.layer_macs(_OddConvNet(), None, (32, 32, 3))
    assert per_layer == {"c1": c1, "c2": c2, "c3": c3, "d_spatial": d, "out": o}
    assert metrics.flops(_OddConvNet(), None, (32, 32, 3)) == 2 * (c1 + c2 + c3 + d + o)


def test_reference_macs_of_large_models():
    """Literature values: ResNet-56 ≈ 125M MACs on CIFAR, VGG-16 (CIFAR) ≈ 313M."""
    assert metrics.macs(M.resnet56(), None, (32, 32, 3)) == 125_485_696
    conv = M.vgg.VGG16_CONV
    cin = (3,) + conv[:-1]
    sizes, s = [], 32
    for i in range(len(conv)):
        sizes.append(s)
        if i in M.vgg.VGG16_POOL:
            s //= 2
    hand = sum(hw * hw * 9 * a * b for hw, a, b in zip(sizes, cin, conv))
    hand += 512 * 512 + 512 * 512 + 512 * 10
    assert metrics.macs(M.vgg16(), None, (32, 32, 3)) == hand


def test_measure_latency():
    x = jnp.ones((64, 64))
    t = metrics.measure_latency(lambda a: a @ a, x, repeats=3, warmup=1)
    assert isinstance(t, float) and 0.0 < t < 5.0
    with pytest.raises(ValueError):
        metrics.measure_latency(lambda a: a, x, repeats=0)


def test_compare_latency_interleaves_every_call():
    order = []

    def make(name):
        def f(a):
            order.append(name)
            return a + 1
        return f
    x = jnp.ones((4,))
    out = metrics.compare_latency({"a": (make("a"), (x,)), "b": (make("b"), (x,))},
                                  repeats=3, warmup=2, jit=False)
    assert set(out) == {"a", "b"} and all(isinstance(t, float) and t > 0 for t in out.values())
    # warm-up of each, then strictly alternating timed rounds
    assert order == ["a", "a", "b", "b"] + ["a", "b"] * 3
    with pytest.raises(ValueError):
        metrics.compare_latency({"a": (make("a"), (x,))}, repeats=0)
    with pytest.raises(ValueError):
        metrics.compare_latency({})
