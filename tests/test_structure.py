"""Channel-group discovery by jaxpr tracing, parameter/MAC counts, and surgery equivalence."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxprune import metrics, structure, surgery
from jaxprune.models import LeNet5, LeNet300100


class ConvBNNet(nn.Module):
    """conv → BN → relu → conv → relu → pool → flatten → dense → dense (defined only here)."""
    widths: tuple = (4, 6, 5)

    @nn.compact
    def __call__(self, x, train=False):
        x = nn.Conv(self.widths[0], (3, 3), name="c0")(x)
        x = nn.BatchNorm(use_running_average=not train, name="bn0")(x)
        x = nn.relu(x)
        x = nn.relu(nn.Conv(self.widths[1], (3, 3), padding="VALID", name="c1")(x))
        x = nn.max_pool(x, (2, 2), (2, 2))
        x = x.reshape((x.shape[0], -1))
        x = nn.relu(nn.Dense(self.widths[2], name="d0")(x))
        return nn.Dense(3, name="out")(x)

    def prunable_layers(self):
        return ("c0", "c1", "d0")


class TinyResNet(nn.Module):
    """A residual CNN the project did not write: stem + one basic block + head."""

    @nn.compact
    def __call__(self, x, train=False):
        x = nn.relu(nn.Conv(4, (3, 3), name="stem")(x))
        y = nn.relu(nn.Conv(3, (3, 3), name="inner")(x))
        y = nn.Conv(4, (3, 3), name="outc")(y)
        x = nn.relu(x + y)
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(3, name="head")(x)


class ConcatNet(nn.Module):
    """Two branches concatenated along the features and read by one Dense layer."""

    @nn.compact
    def __call__(self, x, train=False):
        a = nn.relu(nn.Dense(4, name="a")(x))
        b = nn.relu(nn.Dense(5, name="b")(x))
        h = jnp.concatenate([a, b], axis=-1)
        h = nn.relu(nn.Dense(6, name="c")(h))
        return nn.Dense(2, name="out")(h)


def _init(model, shape, seed=0):
    v = model.init(jax.random.key(seed), jnp.zeros((1, *shape)))
    # non-trivial BatchNorm statistics so that equivalence tests exercise them
    if "batch_stats" in v:
        v = dict(v)
        v["batch_stats"] = jax.tree_util.tree_map(
            lambda a: a + jax.random.uniform(jax.random.key(seed + 1), a.shape, minval=0.1, maxval=1.0),
            v["batch_stats"])
    return v


@pytest.mark.slow
def test_lenet300_groups_follow_the_widths():
    model = LeNet300100(widths=(37, 23, 11))
    v = _init(model, (28, 28, 1))
    st = structure.from_model(model, v, (28, 28, 1))
    by = {g.name: g for g in st.groups}
    assert [by[n].size for n in model.prunable_layers()] == [37, 23, 11]
    assert all(by[n].prunable for n in model.prunable_layers())
    assert not by["head"].prunable and "output" in by["head"].reason
    g = by["dense_1"]
    assert {s.path for s in g.members} == {("params", "dense_1", "bias")}
    assert [s.path for s in g.consumers] == [("params", "dense_2", "kernel")]


def test_conv_flatten_dense_layout_and_batchnorm_members():
    model = ConvBNNet()
    v = _init(model, (10, 10, 2))
    st = structure.from_model(model, v, (10, 10, 2))
    by = {g.name: g for g in st.groups}
    members = {s.path for s in by["c0"].members}
    assert members == {("params", "c0", "bias"), ("params", "bn0", "scale"), ("params", "bn0", "bias"),
                       ("batch_stats", "bn0", "mean"), ("batch_stats", "bn0", "var")}
    (cons,) = by["c1"].consumers
    # 10x10 -> VALID 3x3 -> 8x8 -> pool -> 4x4: each filter owns 16 rows (outer), inner 1
    assert (cons.path, cons.axis, cons.outer, cons.inner) == (("params", "d0", "kernel"), 0, 16, 1)
    assert st.kernel_positions[("params", "c0", "kernel")] == 100
    assert st.kernel_positions[("params", "c1", "kernel")] == 64


def test_residual_add_ties_producers_into_one_group():
    model = TinyResNet()
    v = _init(model, (6, 6, 2))
    st = structure.from_model(model, v, (6, 6, 2))
    by = {g.name: g for g in st.groups}
    tied = by["stem"]
    assert tied.residual and {s.path[1] for s in tied.producers} == {"stem", "outc"}
    assert {s.path[1] for s in tied.consumers} == {"inner", "head"}
    assert by["inner"].prunable and not by["inner"].residual


def test_concatenated_branches_are_read_at_their_offsets():
    model = ConcatNet()
    v = _init(model, (7,))
    st = structure.from_model(model, v, (7,))
    by = {g.name: g for g in st.groups}
    assert by["a"].prunable and by["b"].prunable and by["c"].prunable
    (ca,), (cb,) = by["a"].consumers, by["b"].consumers
    assert ca.path == cb.path and {ca.offset, cb.offset} == {0, by["a"].size}


@pytest.mark.parametrize("model,shape", [(LeNet300100(widths=(20, 10)), (28, 28, 1)),
                                         (LeNet5(widths=(4, 6, 12, 8)), (28, 28, 1)),
                                         (ConvBNNet(), (10, 10, 2))])
def test_counts_match_independent_counts_of_the_shrunk_network(model, shape):
    v = _init(model, shape)
    st = structure.from_model(model, v, shape)
    rng = np.random.default_rng(0)
    keep = {g.name: np.sort(rng.choice(g.size, size=max(1, g.size // 2), replace=False))
            for g in st.groups if g.prunable}
    widths = {n: len(k) for n, k in keep.items()}
    small = surgery.shrink(v, st.groups, keep)
    small_model = model.clone(widths=tuple(widths[n] for n in model.prunable_layers()))
    out = small_model.apply(small, jnp.zeros((2, *shape)))  # the shapes fit the smaller module
    assert out.shape == (2, model.apply(v, jnp.zeros((1, *shape))).shape[-1])
    assert st.count_params(widths) == metrics.param_count(small["params"])
    assert 2 * st.count_macs(widths) == metrics.flops(small_model, small, shape)
    assert 2 * st.count_macs() == metrics.flops(model, v, shape)


@pytest.mark.parametrize("model,shape", [(LeNet5(widths=(4, 6, 12, 8)), (28, 28, 1)),
                                         (ConcatNet(), (7,)), (TinyResNet(), (6, 6, 2)),
                                         (ConvBNNet(), (10, 10, 2))])
def test_vectorised_counts_equal_the_counts_of_the_new_shapes(model, shape):
    """``count_params`` / ``count_macs`` (a product table over groups) equal the sums over
    ``new_shapes`` at any widths, any subset of groups and any paths."""
    import math
    v = _init(model, shape)
    st = structure.from_model(model, v, shape)
    rng = np.random.default_rng(0)
    for _ in range(10):
        widths = {g.name: int(rng.integers(1, g.size + 1)) for g in st.groups
                  if rng.random() < 0.7}
        shapes = st.new_shapes(widths)
        paths = {p for p in st.shapes if rng.random() < 0.5}
        assert st.count_params(widths) == sum(
            math.prod(s) for p, s in shapes.items() if p[0] == "params")
        assert st.count_params(widths, paths) == sum(
            math.prod(s) for p, s in shapes.items() if p[0] == "params" and p in paths)
        assert st.count_params(widths, collection="batch_stats") == sum(
            math.prod(s) for p, s in shapes.items() if p[0] == "batch_stats")
        assert st.count_macs(widths) == sum(
            math.prod(shapes[p]) * n for p, n in st.kernel_positions.items())


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("model,shape", [(LeNet300100(widths=(20, 10)), (28, 28, 1)),
                                         (ConvBNNet(), (10, 10, 2)),
                                         (TinyResNet(), (6, 6, 2))])
def test_masked_equals_shrunk(model, shape, seed):
    """Zeroing removed channels and re-weighting kept ones == the physically smaller network."""
    v = _init(model, shape, seed)
    st = structure.from_model(model, v, shape)
    rng = np.random.default_rng(seed)
    keep, scales = {}, {}
    for g in st.groups:
        if g.prunable:
            k = int(rng.integers(1, g.size + 1))
            keep[g.name] = np.sort(rng.choice(g.size, size=k, replace=False))
            scales[g.name] = rng.uniform(0.5, 2.0, size=k)
    x = jax.random.normal(jax.random.key(seed), (5, *shape))
    masked = surgery.mask(v, st.groups, keep, scales)
    small = surgery.shrink(v, st.groups, keep, scales)
    if hasattr(model, "prunable_layers"):
        small_model = model.clone(widths=tuple(len(keep[n]) for n in model.prunable_layers()))
    else:  # TinyResNet has fixed widths: only check via a masked second shrink
        small_model = None
    ref = model.apply(masked, x)
    if small_model is not None:
        np.testing.assert_allclose(small_model.apply(small, x), ref, rtol=1e-4, atol=1e-5)
    # shapes shrink exactly as the structure predicts
    new_shapes = st.new_shapes({n: len(k) for n, k in keep.items()})
    for p, leaf in jax.tree_util.tree_flatten_with_path(small)[0]:
        assert tuple(leaf.shape) == new_shapes[structure.path_of(p)]


def test_shrink_rejects_empty_and_bad_indices():
    model = LeNet300100(widths=(8, 4))
    v = _init(model, (28, 28, 1))
    st = structure.from_model(model, v, (28, 28, 1))
    with pytest.raises(ValueError, match="zero width"):
        surgery.shrink(v, st.groups, {"dense_0": np.array([], int)})
    with pytest.raises(ValueError, match="distinct"):
        surgery.shrink(v, st.groups, {"dense_0": np.array([1, 1])})
    with pytest.raises(KeyError, match="unknown channel groups"):
        surgery.shrink(v, st.groups, {"nope": np.array([0])})


def test_from_params_understands_a_dense_chain_and_rejects_the_rest():
    params = {"l0": {"kernel": jnp.ones((5, 4)), "bias": jnp.ones(4)},
              "l1": {"kernel": jnp.ones((4, 3)), "bias": jnp.ones(3)},
              "l2": {"kernel": jnp.ones((3, 2))}}
    st, _ = structure.from_params({"params": params})
    assert [(g.name, g.size, g.prunable) for g in st.groups] == [
        ("l0", 4, True), ("l1", 3, True), ("l2", 2, False)]
    with pytest.raises(ValueError, match="no known structure"):
        structure.from_params({"params": {"c": {"kernel": jnp.ones((3, 3, 1, 4))}}})
    with pytest.raises(ValueError, match="do not chain"):
        structure.from_params({"params": {"a": {"kernel": jnp.ones((5, 4))},
                                          "b": {"kernel": jnp.ones((3, 2))}}})
