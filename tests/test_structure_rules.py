"""One test per entry kind of the tracer's rule table (``structure.RULES``): each builds a tiny
network around one primitive and checks the channel group of the layer before it: labels that
pass keep the group prunable, anything that mixes or drops channels freezes it."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxprune import structure

DN = ("NHWC", "HWIO", "NHWC")


def _params(conv=False):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((3, 3, 2, 4) if conv else (5, 4)).astype(np.float32)
    return {"a": {"kernel": jnp.asarray(a), "bias": jnp.zeros(4)},
            "c": {"kernel": jnp.ones((5, 4))},
            "g": {"kernel": jnp.ones((3, 3, 1, 4))},
            "g2": {"kernel": jnp.ones((3, 3, 2, 4))}}


def _groups(body, conv=False, head=4):
    """Groups of ``x -> a -> body -> dense head``; ``body(h, p)`` gets the layer-a output."""
    params = _params(conv)
    params["b"] = {"kernel": jnp.ones((head, 2))}
    x = jnp.ones((2, 6, 6, 2) if conv else (2, 5))

    def apply(v, x):
        p = v["params"]
        if conv:
            h = jax.lax.conv_general_dilated(x, p["a"]["kernel"], (1, 1), "SAME",
                                             dimension_numbers=DN) + p["a"]["bias"]
        else:
            h = x @ p["a"]["kernel"] + p["a"]["bias"]
        h = body(h, p)
        return h @ p["b"]["kernel"]

    st = structure.trace_groups(apply, {"params": params}, x)
    return {g.name: g for g in st.groups}


def _spatial_mean(h):
    return h.mean(axis=(1, 2))


PASS = {
    "elementwise": (lambda h, p: jnp.tanh(h) * 2.0 - jnp.maximum(h, 0.0), False),
    "broadcast_in_dim": (lambda h, p: jnp.broadcast_to(h[:, None, :], (2, 3, 4)).sum(1), False),
    "squeeze": (lambda h, p: jax.lax.squeeze(h[:, None, :], (1,)), False),
    "transpose": (lambda h, p: jnp.transpose(h, (0, 3, 1, 2)).sum((2, 3)), True),
    "reduction over other axes": (lambda h, p: _spatial_mean(h), True),
    "windowed (pooling)": (lambda h, p: jax.lax.reduce_window(
        h, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID").max((1, 2)), True),
    "pad (spatial)": (lambda h, p: _spatial_mean(jnp.pad(h, ((0, 0), (1, 1), (1, 1), (0, 0)))),
                      True),
    "depthwise convolution": (lambda h, p: _spatial_mean(jax.lax.conv_general_dilated(
        h, p["g"]["kernel"], (1, 1), "SAME", dimension_numbers=DN, feature_group_count=4)), True),
    "slice / split / dynamic_slice along other axes": (lambda h, p: _spatial_mean(
        jax.lax.dynamic_slice_in_dim(jnp.split(h[:, 2:, ::2], 2, axis=1)[1], 1, 1, axis=2)), True),
    "call (jit, remat, custom_jvp)": (
        lambda h, p: jax.checkpoint(jax.nn.relu)(jax.jit(jnp.tanh)(h)), False),
}

FREEZE = {
    "reshape that splits a channel axis": (
        lambda h, p: h.reshape(2, 2, 2).reshape(2, 4), False, "reshape splits a channel axis"),
    "reduction over the channel axis": (
        lambda h, p: jnp.broadcast_to(h.sum(-1, keepdims=True), (2, 4)), False,
        "channel axis removed"),
    "windowed along the channel axis": (
        lambda h, p: jnp.cumsum(h, axis=-1), False, "cumsum mixes channels"),
    "pad along the channel axis": (
        lambda h, p: jnp.pad(h, ((0, 0), (0, 1)))[:, :4], False, "padded along the channel"),
    "dot_general that is not input @ kernel": (
        lambda h, p: (h @ h.T) @ h, False, "dot_general that is not input @ kernel"),
    "grouped convolution": (
        lambda h, p: _spatial_mean(jax.lax.conv_general_dilated(
            h, p["g2"]["kernel"], (1, 1), "SAME", dimension_numbers=DN, feature_group_count=2)),
        True, "grouped convolution"),
    "slice of the channel axis": (
        lambda h, p: jnp.pad(h[:, 1:], ((0, 0), (0, 1))), False, "slice cuts a channel axis"),
    "split of the channel axis": (
        lambda h, p: jnp.concatenate(jnp.split(h, 2, -1)[::-1], -1), False,
        "split cuts a channel axis"),
    "op without a rule": (
        lambda h, p: jnp.sort(h, -1), False, "unsupported op 'sort'"),
}


@pytest.mark.parametrize("case", list(PASS))
def test_rules_that_keep_the_channels(case):
    body, conv = PASS[case]
    g = _groups(body, conv)["a"]
    assert g.prunable, g.reason
    assert [s.path for s in g.consumers] == [("params", "b", "kernel")]
    assert ("params", "a", "bias") in {s.path for s in g.members}


@pytest.mark.parametrize("case", list(FREEZE))
def test_rules_that_freeze_the_group(case):
    body, conv, reason = FREEZE[case]
    g = _groups(body, conv)["a"]
    assert not g.prunable and reason in g.reason


def test_elementwise_add_ties_producers_into_one_group():
    g = _groups(lambda h, p: jax.nn.relu(h) + jnp.ones((2, 5)) @ p["c"]["kernel"])["a"]
    assert g.residual and g.prunable
    assert {s.path[1] for s in g.producers} == {"a", "c"}


def test_elementwise_product_ties_producers_without_making_them_residual():
    """A gate (SwiGLU's ``silu(a) * c``) ties the two producers into one group, prunable by
    default: only an add/sub is a residual connection."""
    g = _groups(lambda h, p: jax.nn.silu(h) * (jnp.ones((2, 5)) @ p["c"]["kernel"]))["a"]
    assert g.prunable and not g.residual
    assert {s.path[1] for s in g.producers} == {"a", "c"}


def test_reshape_flatten_gives_a_layout():
    groups = _groups(lambda h, p: h.reshape(2, -1), conv=True, head=6 * 6 * 4)
    (cons,) = groups["a"].consumers
    # 6x6 positions x 4 filters flattened channel-last: filter c owns rows o*4 + c
    assert (cons.path, cons.axis, cons.outer, cons.inner) == (("params", "b", "kernel"), 0, 36, 1)
    assert groups["a"].prunable


def test_conv_records_consumer_and_positions():
    params = _params(conv=True)
    params["b"] = {"kernel": jnp.ones((1, 1, 4, 3))}

    def apply(v, x):
        p = v["params"]
        h = jax.lax.conv_general_dilated(x, p["a"]["kernel"], (1, 1), "SAME",
                                         dimension_numbers=DN)
        return jax.lax.conv_general_dilated(jax.nn.relu(h), p["b"]["kernel"], (2, 2), "VALID",
                                            dimension_numbers=DN)

    st = structure.trace_groups(apply, {"params": params}, jnp.ones((2, 6, 6, 2)))
    (cons,) = st.group("a").consumers
    assert (cons.path, cons.axis) == (("params", "b", "kernel"), 2)
    assert st.kernel_positions == {("params", "a", "kernel"): 36, ("params", "b", "kernel"): 9}


def test_the_rule_table_maps_primitive_names_to_callables():
    assert all(isinstance(k, str) and callable(v) for k, v in structure.RULES.items())
    for name in ("add", "dot_general", "conv_general_dilated", "reshape", "transpose",
                 "reduce_sum", "reduce_window_max", "pad", "jit", "custom_jvp_call",
                 "slice", "dynamic_slice", "split", "concatenate"):
        assert name in structure.RULES
    assert "sort" not in structure.RULES
