"""Channel groups that couple layers beyond a plain chain: depthwise convs (MobileNetV2),
modules called twice, slicing, ``DenseGeneral``/einsum contractions and concatenations.

Each test builds a small Flax module (its widths are fields), traces it, prunes every
prunable group to about half with random kept channels and re-weights, and checks that the
physically smaller module (the same class with the smaller widths) on the shrunk variables
equals the original module on the masked variables; groups that must not be pruned are
frozen with a clear reason.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxprune import metrics, structure, surgery
from test_residual import _nontrivial


def _init(model, shape, seed=0):
    """Random parameters with non-trivial BatchNorm scale/bias/statistics."""
    return _nontrivial(model.init(jax.random.key(seed), jnp.zeros((1, *shape))), seed)


def _by_name(st):
    return {g.name: g for g in st.groups}


def _check(model, shape, small, seed=0, flops=True):
    """Prune every prunable group of ``model`` to about half; ``small(widths)`` is the module
    at the group widths ``{name: width}``. Returns the structure."""
    v = _init(model, shape, seed)
    st = structure.from_model(model, v, shape)
    rng = np.random.default_rng(seed)
    keep = {g.name: rng.choice(g.size, size=max(1, g.size // 2), replace=False)
            for g in st.groups if g.prunable}  # unsorted: surgery keeps channel order
    scales = {n: rng.uniform(0.5, 2.0, size=len(k)) for n, k in keep.items()}
    assert keep, "nothing to prune"
    widths = {n: len(k) for n, k in keep.items()}
    small_model = small(widths)
    small_vars = surgery.shrink(v, st.groups, keep, scales)
    masked = surgery.mask(v, st.groups, keep, scales)
    x = jax.random.normal(jax.random.key(seed + 1), (3, *shape))
    want = model.apply(masked, x)
    np.testing.assert_allclose(small_model.apply(small_vars, x), want, rtol=2e-4, atol=2e-5)
    assert not np.allclose(want, model.apply(v, x), atol=1e-3)  # pruning did something
    # the shrunk arrays have the shapes of a fresh small module, as the structure predicts
    fresh = jax.eval_shape(small_model.init, jax.random.key(0), jnp.zeros((1, *shape)))
    shapes = {structure.path_of(p): tuple(a.shape)
              for p, a in jax.tree_util.tree_flatten_with_path(fresh)[0]}
    got = {structure.path_of(p): tuple(np.shape(a))
           for p, a in jax.tree_util.tree_flatten_with_path(small_vars)[0]}
    assert got == shapes == st.new_shapes(widths)
    assert st.count_params(widths) == metrics.param_count(small_vars["params"])
    if flops:
        assert 2 * st.count_macs() == metrics.flops(model, v, shape)
        assert 2 * st.count_macs(widths) == metrics.flops(small_model, small_vars, shape)
    return st


def relu6(x):
    return jnp.minimum(jax.nn.relu(x), 6.0)


# ------------------------------------------------------------------ depthwise / grouped

class DepthwiseAdd(nn.Module):
    """``dw(conv_a(x)) + conv_b(x)``: the depthwise conv ties its input and output channels,
    so conv_a and conv_b are one group and the depthwise kernel/bias are its members."""
    w: tuple = (16, 5)
    mult: int = 1
    add: bool = True

    @nn.compact
    def __call__(self, x, train=False):
        c = self.w[0]
        a = nn.Conv(c, (3, 3), name="conv_a")(x)
        y = nn.Conv(c * self.mult, (3, 3), feature_group_count=c, name="dw")(a)
        if self.add:
            y = y + nn.Conv(c * self.mult, (3, 3), name="conv_b")(x)
        y = nn.relu(nn.Conv(self.w[1], (1, 1), name="proj")(nn.relu(y)))
        return nn.Dense(3, name="head")(jnp.mean(y, axis=(1, 2)))


@pytest.mark.slow
def test_depthwise_ties_input_and_output_channels():
    st = _check(DepthwiseAdd(), (6, 6, 3),
                lambda w: DepthwiseAdd(w=(w["conv_a"], w["proj"])))
    by = _by_name(st)
    g = by["conv_a"]
    assert g.prunable and set(g.producer_modules) == {"conv_a", "conv_b"}
    members = {s.path for s in g.members}
    assert {("params", "dw", "kernel"), ("params", "dw", "bias")} <= members
    assert [s.path[1] for s in g.consumers] == ["proj"]
    assert st.kernel_positions[("params", "dw", "kernel")] == 36


@pytest.mark.slow
def test_depthwise_channel_multiplier_is_an_inner_layout():
    """``m`` outputs per input channel: channel ``c`` owns outputs ``c·m + j`` (inner = m)."""
    st = _check(DepthwiseAdd(w=(6, 5), mult=2, add=False), (6, 6, 3),
                lambda w: DepthwiseAdd(w=(w["conv_a"], w["proj"]), mult=2, add=False))
    g = _by_name(st)["conv_a"]
    assert g.prunable
    dw = next(s for s in g.members if s.path == ("params", "dw", "kernel"))
    assert (dw.axis, dw.outer, dw.inner) == (3, 1, 2)
    (proj,) = g.consumers
    assert (proj.path[1], proj.axis, proj.inner) == ("proj", 2, 1 * 2)
    # conv_b's 12 channels cannot be tied to 6 channels x 2 outputs each: frozen
    model = DepthwiseAdd(w=(6, 5), mult=2)
    st = structure.from_model(model, _init(model, (6, 6, 3)), (6, 6, 3))
    g = _by_name(st)["conv_a"]
    assert not g.prunable and "incompatible element-wise merge" in g.reason
    assert not _by_name(st)["conv_b"].prunable


@pytest.mark.slow
def test_grouped_convolution_freezes_and_nothing_downstream_is_misread():
    class Grouped(nn.Module):
        @nn.compact
        def __call__(self, x, train=False):
            a = nn.relu(nn.Conv(8, (3, 3), name="a")(x))
            y = nn.Conv(8, (3, 3), feature_group_count=2, name="g")(a)
            y = nn.relu(y + nn.Conv(8, (1, 1), name="b")(x))
            return nn.Dense(3, name="head")(jnp.mean(y, axis=(1, 2)))

    model = Grouped()
    st = structure.from_model(model, _init(model, (5, 5, 2)), (5, 5, 2))
    by = _by_name(st)
    assert not by["a"].prunable and "grouped convolution" in by["a"].reason
    # the grouped conv's own output channels (and b, added to them) are frozen too
    assert not by["b"].prunable and "grouped convolution" in by["b"].reason
    assert all(("params", "g", "bias") not in {s.path for s in g.members} for g in st.groups
               if g.prunable)


class InvertedResidual(nn.Module):
    """MobileNetV2: 1x1 expand → BN → relu6 → 3x3 depthwise → BN → relu6 → 1x1 project → BN,
    with a residual add when the shapes match (blocks 0 and 2), a strided block without."""
    w: tuple = (12, 10, 14, 6, 8)  # three expand widths, two residual stream widths

    @nn.compact
    def __call__(self, x, train=False):
        bn = lambda name: nn.BatchNorm(use_running_average=not train, name=name)  # noqa: E731
        x = relu6(bn("stem_bn")(nn.Conv(self.w[3], (3, 3), name="stem")(x)))
        for i, (stride, out) in enumerate([(1, self.w[3]), (2, self.w[4]), (1, self.w[4])]):
            e = self.w[i]
            y = relu6(bn(f"b{i}_bn1")(nn.Conv(e, (1, 1), name=f"b{i}_expand")(x)))
            y = nn.Conv(e, (3, 3), (stride, stride), feature_group_count=e, name=f"b{i}_dw")(y)
            y = relu6(bn(f"b{i}_bn2")(y))
            y = bn(f"b{i}_bn3")(nn.Conv(out, (1, 1), use_bias=False, name=f"b{i}_project")(y))
            x = x + y if stride == 1 and x.shape == y.shape else y
        return nn.Dense(3, name="head")(jnp.mean(x, axis=(1, 2)))


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_mobilenet_v2_inverted_residual(seed):
    model = InvertedResidual()
    st = _check(model, (8, 8, 3), lambda w: InvertedResidual(w=(
        w["b0_expand"], w["b1_expand"], w["b2_expand"], w["stem"], w["b1_project"])), seed)
    by = _by_name(st)
    for i in range(3):
        g = by[f"b{i}_expand"]
        assert g.prunable and not g.residual
        assert {s.path[1:] for s in g.members} >= {
            (f"b{i}_expand", "bias"), (f"b{i}_dw", "kernel"), (f"b{i}_dw", "bias"),
            (f"b{i}_bn1", "scale"), (f"b{i}_bn2", "scale"), (f"b{i}_bn2", "var")}
        assert [s.path[1] for s in g.consumers] == [f"b{i}_project"]
    assert set(by["stem"].producer_modules) == {"stem", "b0_project"}
    assert set(by["b1_project"].producer_modules) == {"b1_project", "b2_project"}


# ------------------------------------------------------------------ weight sharing

class SharedDense(nn.Module):
    """One ``nn.Dense`` applied at two call sites; ``join`` adds or concatenates them."""
    w: tuple = (8, 6)
    join: str = "add"

    @nn.compact
    def __call__(self, x, train=False):
        d = nn.Dense(self.w[1], name="shared")
        a = d(nn.relu(nn.Dense(self.w[0], name="d0")(x)))
        b = d(nn.relu(nn.Dense(self.w[0], name="d1")(x)))
        h = a + b if self.join == "add" else jnp.concatenate([a, b], axis=-1)
        return nn.Dense(3, name="head")(nn.relu(h))


@pytest.mark.parametrize("join", ["add", "concat"])
def test_a_module_called_twice_is_one_group(join):
    model = SharedDense(join=join)
    st = _check(model, (7,), lambda w: SharedDense(w=(w["d0"], w["shared"]), join=join))
    by = _by_name(st)
    assert [g.name for g in st.groups].count("shared") == 1
    s = by["shared"]
    assert s.prunable and [p.path[1] for p in s.producers] == ["shared"]
    assert len(s.consumers) == (1 if join == "add" else 2)  # two offsets of head's input
    tied = by["d0"]  # the shared kernel reads d0 and d1: one group
    assert tied.prunable and set(tied.producer_modules) == {"d0", "d1"}
    assert [c.path[1] for c in tied.consumers] == ["shared"]
    # MACs of both call sites
    assert st.kernel_positions[("params", "shared", "kernel")] == 2


class Recurrent(nn.Module):
    """``h = d(relu(d(e(x))))`` with a square kernel: ``d`` reads its own output."""
    w: tuple = (8,)
    embed: bool = True

    @nn.compact
    def __call__(self, x, train=False):
        h = nn.relu(nn.Dense(self.w[0], name="e")(x)) if self.embed else x
        d = nn.Dense(self.w[0], name="d")
        h = nn.relu(d(nn.relu(d(h))))
        return nn.Dense(3, name="head")(h)


def test_recurrent_square_kernel_ties_its_input_and_output():
    st = _check(Recurrent(), (5,), lambda w: Recurrent(w=(w["e"],)))
    g = _by_name(st)["e"]
    assert set(g.producer_modules) == {"e", "d"} and g.prunable
    assert {(s.path[1], s.axis) for s in g.consumers} == {("d", 0), ("head", 0)}


def test_recurrent_kernel_on_the_network_input_is_frozen():
    model = Recurrent(embed=False)
    st = structure.from_model(model, _init(model, (8,)), (8,))
    g = _by_name(st)["d"]
    assert not g.prunable and "network input" in g.reason


def test_shared_kernel_reading_different_layouts_freezes():
    class Mixed(nn.Module):
        @nn.compact
        def __call__(self, x, train=False):
            d = nn.Dense(4, name="shared")
            a = nn.relu(nn.Conv(2, (3, 3), name="c")(x)).reshape((x.shape[0], -1))  # 2x2x2
            b = nn.relu(nn.Dense(8, name="e")(x.reshape((x.shape[0], -1))))
            return nn.Dense(3, name="head")(nn.relu(d(a) + d(b)))

    model = Mixed()
    st = structure.from_model(model, _init(model, (2, 2, 1)), (2, 2, 1))
    by = _by_name(st)
    for name in ("c", "e"):
        assert not by[name].prunable and "shared parameter" in by[name].reason
    assert by["shared"].prunable


# ------------------------------------------------------------------ slicing, DenseGeneral

class Sliced(nn.Module):
    """Spatial slices/splits keep the channels; a slice of the channel axis freezes."""
    w: tuple = (6, 5)

    @nn.compact
    def __call__(self, x, train=False):
        a = nn.relu(nn.Conv(self.w[0], (3, 3), name="a")(x))
        top, bottom = jnp.split(a[:, 1:, ::2], 2, axis=1)
        y = nn.relu(nn.Conv(self.w[1], (1, 1), name="b")(top + bottom))
        z = nn.Conv(4, (1, 1), name="c")(y)[..., :2]  # c's channels are cut
        z = jax.lax.dynamic_slice_in_dim(z, 1, 2, axis=2)
        return nn.Dense(3, name="head")(jnp.mean(z, axis=(1, 2)))


@pytest.mark.slow
def test_slices_pass_labels_on_uncut_axes_and_freeze_cut_channel_axes():
    st = _check(Sliced(), (9, 8, 2), lambda w: Sliced(w=(w["a"], w["b"])))
    by = _by_name(st)
    assert by["a"].prunable and by["b"].prunable
    assert not by["c"].prunable and "slice cuts a channel axis" in by["c"].reason


class DenseGeneralNet(nn.Module):
    """``DenseGeneral((H, D))`` creates two groups; ``axis=(-2, -1)`` (or a flatten and a
    Dense) reads both. Optional token axis: contractions over the last axes only."""
    w: tuple = (3, 4, 5)
    flat: bool = False
    tokens: bool = False

    @nn.compact
    def __call__(self, x, train=False):
        h, d, f = self.w
        y = nn.relu(nn.DenseGeneral((h, d), name="dg0")(x))
        if self.flat:
            y = nn.relu(nn.Dense(f, name="dg1")(y.reshape((*y.shape[:-2], h * d))))
        else:
            y = nn.relu(nn.DenseGeneral(f, axis=(-2, -1), name="dg1")(y))
        y = nn.relu(nn.DenseGeneral((2, 5), axis=-1, name="dg2")(y))
        y = jnp.einsum("...hf,fk->...hk", y, self.param("mix", nn.initializers.normal(), (5, 4)))
        if self.tokens:
            y = jnp.mean(y, axis=1)
        return nn.Dense(3, name="head")(y.reshape((y.shape[0], -1)))


@pytest.mark.slow
@pytest.mark.parametrize("flat", [False, True])
@pytest.mark.parametrize("tokens", [False, True])
def test_dense_general_contractions(flat, tokens):
    shape = (4, 7) if tokens else (7,)
    model = DenseGeneralNet(flat=flat, tokens=tokens)
    st = _check(model, shape, lambda w: DenseGeneralNet(
        w=(w["dg0:1"], w["dg0:2"], w["dg1"]),
        flat=flat, tokens=tokens), flops=False)
    groups = [g for g in st.groups if g.producers[0].path[1] == "dg0"]
    assert sorted(g.producers[0].axis for g in groups) == [1, 2] and all(g.prunable
                                                                        for g in groups)
    assert {c.path[1] for g in groups for c in g.consumers} == {"dg1"}
    by = _by_name(st)
    # dg2's (2, f) output: its f axis is read by an einsum with a non-kernel operand
    assert not any(g.prunable for g in st.groups if g.producers[0].path[1] == "dg2")
    assert by["dg1"].prunable


# ------------------------------------------------------------------ concatenation

class DenseBlock(nn.Module):
    """DenseNet: each conv reads the concatenation of all earlier outputs; BN over it."""
    w: tuple = (4, 5, 6)

    @nn.compact
    def __call__(self, x, train=False):
        bn = lambda name: nn.BatchNorm(use_running_average=not train, name=name)  # noqa: E731
        h = nn.relu(nn.Conv(self.w[0], (3, 3), name="c0")(x))
        for i in (1, 2):
            y = nn.relu(bn(f"bn{i}")(nn.Conv(self.w[i], (3, 3), name=f"c{i}")(h)))
            h = jnp.concatenate([h, y], axis=-1)
        h = nn.relu(bn("bn_out")(h))
        return nn.Dense(3, name="head")(jnp.mean(h, axis=(1, 2)))


@pytest.mark.slow
def test_densenet_concatenation_along_channels():
    st = _check(DenseBlock(), (6, 6, 2), lambda w: DenseBlock(w=(w["c0"], w["c1"], w["c2"])))
    by = _by_name(st)
    assert all(by[n].prunable for n in ("c0", "c1", "c2"))
    c0 = {(s.path[1], s.offset, s.period) for s in by["c0"].consumers}
    assert c0 == {("c1", 0, None), ("c2", 0, 9), ("head", 0, 15)}
    c2 = {(s.path[1], s.offset, s.period) for s in by["c2"].consumers}
    assert c2 == {("head", 9, 15)}
    assert ("params", "bn_out", "scale") in {s.path for s in by["c1"].members}


class UNet(nn.Module):
    """Down, up (nearest-neighbour repeat) and a skip concatenated along the channels; the
    bottom path is also joined along a spatial axis (not the channels)."""
    w: tuple = (4, 6, 5)

    @nn.compact
    def __call__(self, x, train=False):
        skip = nn.relu(nn.Conv(self.w[0], (3, 3), name="enc")(x))
        down = nn.relu(nn.Conv(self.w[1], (3, 3), (2, 2), name="down")(skip))
        side = nn.relu(nn.Conv(self.w[1], (3, 3), (2, 2), name="side")(skip))
        down = jnp.concatenate([down, side], axis=1)[:, ::2]  # along H: ties down and side
        up = jnp.repeat(jnp.repeat(down, 2, axis=1), 2, axis=2)
        h = jnp.concatenate([up, skip], axis=-1)
        h = nn.relu(nn.Conv(self.w[2], (3, 3), name="dec")(h))
        return nn.Dense(3, name="head")(h.reshape((h.shape[0], -1)))


@pytest.mark.slow
def test_unet_skip_concatenation():
    st = _check(UNet(), (4, 4, 2), lambda w: UNet(w=(w["enc"], w["down"], w["dec"])))
    by = _by_name(st)
    assert set(by["down"].producer_modules) == {"down", "side"} and by["down"].prunable
    assert {(s.path[1], s.offset, s.period) for s in by["enc"].consumers} == {
        ("down", 0, None), ("side", 0, None), ("dec", 6, 10)}
