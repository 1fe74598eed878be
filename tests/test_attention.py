"""Attention heads: the tracer ties the head axis of q/k/v into one group, whole heads are pruned.

A ``dot_general`` of two activations (``q·kᵀ``, ``weights @ v``) ties the labels of its
batch axes (the heads) and freezes its contracting and free axes (``head_dim``, sequence).
Covered: the rule on a hand-written attention (``preferred_element_type``, a ``-inf`` mask
through ``jnp.where``, softmax's ``reduce_max``), Linen ``MultiHeadDotProductAttention`` and
NNX ``MultiHeadAttention`` blocks, the Linen/NNX ViT of :mod:`jaxprune.models.vit`
(heads and MLP units pruned, the LayerNorm'd residual stream whole), smaller == masked,
``init`` of the smaller Linen module, and Linen/NNX parity.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxprune
from jaxprune import _nnx, models, structure
from jaxprune.models import NnxViT, ViT

import zoo

METHODS = ["coreset", "l1_norm", "random"]
VIT = dict(patch=4, dim=16, depth=2, heads=4, mlp=24, num_classes=5)
IMAGE = (12, 12, 1)
SEQ = (6, 7)  # tokens x features of the attention blocks
ATTN_WHY = "attention-like product"
pytestmark = pytest.mark.filterwarnings("ignore::jaxprune.PruneWarning")


def _perturbed(variables, seed=0):
    """Non-zero biases and non-unit norm scales (init has zeros/ones)."""
    rng = np.random.default_rng(seed)

    def f(path, x):
        name = getattr(path[-1], "key", str(path[-1]))
        if name in ("bias", "scale", "cls"):
            return x + 0.3 * rng.standard_normal(x.shape).astype(x.dtype)
        return x
    return jax.tree_util.tree_map_with_path(f, variables)


def _x(shape, n=3, seed=2):
    return jax.random.normal(jax.random.key(seed), (n, *shape))


def _shapes(tree):
    return jax.tree.map(np.shape, tree)


# -- the rule -------------------------------------------------------------------------------
def _hand_attention(v, x):
    """q/k/v projections ``(in, H, D)``, scores with ``preferred_element_type``, a causal
    ``-inf`` mask through ``jnp.where``, softmax, ``weights @ v`` and the out projection."""
    p = v["params"]
    q = jnp.einsum("bsi,ihd->bshd", x, p["q"]["kernel"]) + p["q"]["bias"]
    k = jnp.einsum("bsi,ihd->bshd", x, p["k"]["kernel"]) + p["k"]["bias"]
    val = jnp.einsum("bsi,ihd->bshd", x, p["v"]["kernel"]) + p["v"]["bias"]
    s = jax.lax.dot_general(q, k, (((3,), (3,)), ((0, 2), (0, 2))),
                            preferred_element_type=jnp.float32)  # (b, h, q, k)
    causal = jnp.tril(jnp.ones((x.shape[1], x.shape[1]), bool))
    s = jnp.where(causal[None, None], s, -jnp.inf)
    s = s - jax.lax.stop_gradient(s.max(axis=-1, keepdims=True))
    w = jnp.exp(s) / jnp.exp(s).sum(axis=-1, keepdims=True)
    o = jnp.einsum("bhqk,bkhd->bqhd", w, val)
    y = jax.lax.dot_general(o, p["o"]["kernel"], (((2, 3), (0, 1)), ((), ())))
    return y.mean(axis=1) @ p["head"]["kernel"]


def _hand_params(h=3, d=4, din=5):
    r = np.random.default_rng(0)
    kqv = {n: {"kernel": jnp.asarray(r.standard_normal((din, h, d)), jnp.float32),
               "bias": jnp.asarray(r.standard_normal((h, d)), jnp.float32)} for n in "qkv"}
    return {"params": {**kqv, "o": {"kernel": jnp.ones((h, d, 6))},
                       "head": {"kernel": jnp.ones((6, 2))}}}


def test_attention_product_ties_heads_and_freezes_head_dim():
    st = structure.trace_groups(_hand_attention, _hand_params(), jnp.ones((2, 7, 5)))
    by = {g.name: g for g in st.groups}
    heads = by["q:1"]
    assert heads.prunable and not heads.residual and heads.tied, heads.reason
    assert heads.size == 3
    assert sorted((s.path[1], s.axis) for s in heads.producers) == [("k", 1), ("q", 1), ("v", 1)]
    assert sorted((s.path[1:], s.axis, s.inner) for s in heads.members) == [
        (("k", "bias"), 0, 1), (("q", "bias"), 0, 1), (("v", "bias"), 0, 1)]
    assert [(s.path[1], s.axis) for s in heads.consumers] == [("o", 0)]
    for name in ("q:2", "k:2", "v:2"):
        assert not by[name].prunable and ATTN_WHY in by[name].reason
    # the sensitivity points of a head: [Wq_h | bq_h | Wk_h | bk_h | Wv_h | bv_h]; its
    # outgoing weights: the out kernel's (D, out) rows of the head summed over D
    view = jaxprune.views.layer_view(_hand_params(), heads)
    assert view.points.shape == (3, 3 * (5 * 4 + 4))
    assert int(view.is_bias.sum()) == 3 * 4
    np.testing.assert_allclose(view.outgoing, np.full((3, 6), 4.0))


def test_one_key_head_broadcast_to_every_query_head_keeps_heads_prunable():
    """Multi-query attention: ``k`` has one head broadcast over the query heads (uniform
    along the head axis); the query and value heads stay one prunable group without it."""
    params = _hand_params()
    params["params"]["k"] = {"kernel": params["params"]["k"]["kernel"][:, :1],
                             "bias": params["params"]["k"]["bias"][:1]}

    def mqa(v, x):
        p = v["params"]
        q = jnp.einsum("bsi,ihd->bshd", x, p["q"]["kernel"])
        k = jnp.broadcast_to(jnp.einsum("bsi,ihd->bshd", x, p["k"]["kernel"]), q.shape)
        val = jnp.einsum("bsi,ihd->bshd", x, p["v"]["kernel"])
        w = jax.nn.softmax(jnp.einsum("bqhd,bkhd->bhqk", q, k), axis=-1)
        o = jnp.einsum("bhqk,bkhd->bqhd", w, val)
        y = jax.lax.dot_general(o, p["o"]["kernel"], (((2, 3), (0, 1)), ((), ())))
        return y.mean(axis=1) @ p["head"]["kernel"]
    heads = {g.name: g for g in structure.trace_groups(mqa, params, jnp.ones((2, 7, 5))).groups
             }["q:1"]
    assert heads.prunable, heads.reason
    assert sorted(s.path[1] for s in heads.producers) == ["q", "v"]


def test_product_of_activations_without_batch_axes_freezes():
    def gram(v, x):
        h = x @ v["params"]["a"]["kernel"]
        return (h @ h.T) @ h @ v["params"]["b"]["kernel"]
    params = {"params": {"a": {"kernel": jnp.ones((5, 4))}, "b": {"kernel": jnp.ones((4, 2))}}}
    (a,) = [g for g in structure.trace_groups(gram, params, jnp.ones((2, 5))).groups
            if g.name == "a"]
    assert not a.prunable and ATTN_WHY in a.reason


@pytest.mark.slow
def test_shared_layer_tie_is_not_residual_and_pruned_by_default():
    """``shared(a) + shared(b)``: the branches are tied by the shared kernel, not by an add
    of two groups (``shared``'s output is added to itself): pruned without prune_residual."""
    model = zoo.SharedTwoBranches()
    v = _perturbed(model.init(jax.random.key(0), jnp.ones((1, 7))))
    res = jaxprune.prune(v, jax.random.key(1), 0.5, method="l1_norm", model=model,
                         input_shape=(7,))
    by = {g.name: g for g in res.groups}
    tied = by["branch_a"]
    assert tied.tied and not tied.residual and tied.prunable
    assert sorted(tied.producer_modules) == ["branch_a", "branch_b"]
    assert res.widths["branch_a"] < 10 and not by["shared"].residual
    _check_linen(model, v, (7,), res)


# -- Linen and NNX attention blocks ---------------------------------------------------------
class LinenAttnBlock(nn.Module):
    """``inp -> x + MHA(x) (causal mask) -> relu(mlp) -> mean over tokens -> out``."""
    dim: int = 16
    heads: int = 4
    hidden: int = 24

    @nn.compact
    def __call__(self, x):
        h = nn.Dense(self.dim, name="inp")(x)
        mask = nn.make_causal_mask(x[..., 0])
        h = h + nn.MultiHeadDotProductAttention(num_heads=self.heads, qkv_features=32,
                                                name="attn")(h, mask=mask)
        h = nn.relu(nn.Dense(self.hidden, name="mlp")(h))
        return nn.Dense(3, name="out")(h.mean(axis=1))


class NnxAttnBlock(nnx.Module):
    """The NNX twin of :class:`LinenAttnBlock`."""

    def __init__(self, din=SEQ[1], dim=16, heads=4, hidden=24, *, rngs: nnx.Rngs):
        self.inp = nnx.Linear(din, dim, rngs=rngs)
        self.attn = nnx.MultiHeadAttention(num_heads=heads, in_features=dim, qkv_features=32,
                                           decode=False, rngs=rngs)
        self.mlp = nnx.Linear(dim, hidden, rngs=rngs)
        self.out = nnx.Linear(hidden, 3, rngs=rngs)

    def __call__(self, x):
        h = self.inp(x)
        h = h + self.attn(h, mask=nnx.make_causal_mask(x[..., 0]))
        return self.out(nnx.relu(self.mlp(h)).mean(axis=1))


def _linen(model, shape, seed=0):
    return model, _perturbed(model.init(jax.random.key(seed), jnp.ones((1, *shape))))


def _check_linen(model, v, shape, res):
    small = res.model(model)
    x = _x(shape)
    np.testing.assert_allclose(small.apply(res.params, x), model.apply(res.masked, x),
                               rtol=1e-4, atol=1e-5)
    created = small.init(jax.random.key(5), jnp.ones((1, *shape)))
    assert _shapes(created) == _shapes(res.params)
    return small


def _heads_of(params):
    return {path: np.shape(k)[-2] for path, k in
            ((p, leaf) for p, leaf in jaxprune._tree.leaves_with_paths(params))
            if path[-2:-1] in (("query",), ("key",), ("value",)) and path[-1] == "kernel"}


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("prune_residual", [False, True])
def test_linen_mha_block_loses_whole_heads(method, prune_residual):
    model, v = _linen(LinenAttnBlock(), SEQ)
    res = jaxprune.prune(v, jax.random.key(1), 0.5, method=method, model=model,
                         input_shape=SEQ, prune_residual=prune_residual, allocation="uniform")
    heads = res.widths["attn/query:1"]
    assert heads < 4 and res.widths["mlp"] < 24
    attn = res.params["params"]["attn"]
    for n in ("query", "key", "value"):
        assert attn[n]["kernel"].shape[1:] == (heads, 8) and attn[n]["bias"].shape == (heads, 8)
    assert attn["out"]["kernel"].shape[:2] == (heads, 8)
    # the residual stream (inp + attn/out) has no LayerNorm here: pruned only on request
    assert ("inp" in res.widths) == prune_residual
    if not prune_residual:
        assert "tied" in res.report["frozen"]["inp"]
    _check_linen(model, v, SEQ, res)


@pytest.mark.parametrize("method", METHODS)
def test_nnx_mha_block_loses_whole_heads(method):
    module = NnxAttnBlock(rngs=nnx.Rngs(0))
    module = _nnx.with_variables(module, _perturbed(_nnx.variables_of(module)))
    res = jaxprune.prune(module, jax.random.key(1), 0.5, method=method, input_shape=SEQ,
                         prune_residual=True, allocation="uniform")
    small, masked = res.module, res.masked
    heads = res.widths["attn/query:1"]
    attn = small.attn
    assert attn.num_heads == attn.num_kv_heads == heads < 4
    assert attn.qkv_features == heads * attn.head_dim and attn.head_dim == 8
    assert attn.in_features == small.inp.out_features == res.widths["inp"] < 16
    for layer in (attn.query, attn.key, attn.value):
        assert layer.kernel.shape == (*layer.in_features, *layer.out_features)
        assert layer.out_features == (heads, 8)
    assert attn.out.in_features == (heads, 8) and attn.out.out_features == (attn.in_features,)
    small.eval()
    masked.eval()
    x = _x(SEQ)
    np.testing.assert_allclose(small(x), masked(x), rtol=1e-4, atol=1e-5)
    assert module.attn.num_heads == 4  # the input is untouched


# -- ViT ----------------------------------------------------------------------------------
@pytest.mark.slow
def test_vit_is_registered_and_round_trips():
    model = models.get_model("vit")
    assert isinstance(model, ViT) and models.default_input_shape("vit") == (28, 28, 1)
    assert models.model_from_config(models.model_config(model)) == model
    small = ViT(**VIT, pool="mean")
    assert models.model_from_config(models.model_config(small)) == small
    out = model.apply(model.init(jax.random.key(0), jnp.ones((1, 28, 28, 1))),
                      jnp.ones((2, 28, 28, 1)))
    assert out.shape == (2, 10)


@pytest.fixture(scope="module")
def linen_vit():
    return _linen(ViT(**VIT), IMAGE)


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
def test_linen_vit_prunes_heads_and_mlp_not_the_stream(linen_vit, method):
    model, v = linen_vit
    res = jaxprune.prune(v, jax.random.key(1), 0.5, method=method, model=model,
                         input_shape=IMAGE)
    assert set(res.widths) == {f"block_{i}/{n}" for i in range(2)
                               for n in ("attn/query:1", "mlp_0")}
    for i in range(2):
        heads = res.widths[f"block_{i}/attn/query:1"]
        assert heads < 4
        assert res.params["params"][f"block_{i}"]["mlp_0"]["kernel"].shape == (
            16, res.widths[f"block_{i}/mlp_0"])
    assert all(h < 4 for h in _heads_of(res.params).values())
    assert res.params["params"]["pos"].shape == v["params"]["pos"].shape  # stream whole
    assert ATTN_WHY in res.report["frozen"]["block_0/attn/query:2"]
    _check_linen(model, v, IMAGE, res)


def test_linen_vit_residual_stream_is_frozen_by_layernorm(linen_vit):
    model, v = linen_vit
    res = jaxprune.prune(v, jax.random.key(1), 0.5, method="l1_norm", model=model,
                         input_shape=IMAGE, prune_residual=True)
    stream = next(g for g in res.groups if g.name == "embed")
    assert stream.residual and not stream.prunable
    assert "embed" not in res.widths and res.report["frozen"]["embed"] == stream.reason
    assert {("params", "pos"), ("params", "block_1", "attn", "out", "kernel")} <= {
        s.path for s in (*stream.members, *stream.producers)}


def _nnx_vit_from(linen_variables):
    module = NnxViT(**VIT, image=IMAGE, rngs=nnx.Rngs(0))
    assert _shapes(_nnx.variables_of(module)) == _shapes(linen_variables)
    return _nnx.with_variables(module, linen_variables)


@pytest.mark.parametrize("method", METHODS)
def test_nnx_vit_smaller_equals_masked_and_matches_linen(linen_vit, method):
    model, v = linen_vit
    module = _nnx_vit_from(v)
    module.eval()
    x = _x(IMAGE)
    np.testing.assert_allclose(module(x), model.apply(v, x), rtol=1e-4, atol=1e-5)
    res = jaxprune.prune(module, jax.random.key(1), 0.5, method=method, input_shape=IMAGE)
    small, masked = res.module, res.masked
    small.eval()
    masked.eval()
    np.testing.assert_allclose(small(x), masked(x), rtol=1e-4, atol=1e-5)
    for i in range(2):
        attn = getattr(small, f"block_{i}").attn
        assert attn.num_heads == res.widths[f"block_{i}/attn/query:1"] < 4
        assert attn.query.kernel.shape == (16, attn.num_heads, 4)
    # the same weights give the same kept heads and units as the Linen ViT
    ref = jaxprune.prune(v, jax.random.key(1), 0.5, method=method, model=model,
                         input_shape=IMAGE)
    assert ref.widths == res.widths
    assert {k: list(map(int, i)) for k, i in ref.kept.items()} == \
        {k: list(map(int, i)) for k, i in res.kept.items()}
    np.testing.assert_allclose(small(x), ref.model(model).apply(ref.params, x),
                               rtol=1e-4, atol=1e-5)


# Flax announces SelfAttention's deprecation; users' models still use it, so it must prune
@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:SelfAttention will be deprecated:DeprecationWarning")
def test_self_attention_with_input_sized_features_rebuilds_after_its_input_shrinks():
    """``nn.SelfAttention(num_heads=4)`` sizes q/k/v and its output from its input width: the
    rebuilt module keeps those at their dense values while the heads and the input shrink."""
    class Block(nn.Module):
        @nn.compact
        def __call__(self, x):
            h = nn.relu(nn.Dense(24)(x))
            h = nn.SelfAttention(num_heads=4)(h)
            return nn.Dense(3)(h.mean(1))

    m = Block()
    v = m.init(jax.random.key(0), jnp.ones((1, 5, 8)))
    res = jaxprune.prune(v, jax.random.key(1), 0.4, model=m, input_shape=(5, 8),
                         allocation="uniform")
    assert res.widths["Dense_0"] < 24 and res.widths["SelfAttention_0/query:1"] < 4
    x = jax.random.normal(jax.random.key(2), (2, 5, 8))
    np.testing.assert_allclose(res.model(m).apply(res.params, x), m.apply(res.masked, x),
                               rtol=1e-5, atol=1e-5)
