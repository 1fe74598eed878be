"""Transformers as people write them, pruned: heads behind a reshape, fused qkv, grouped-query
attention with RoPE/RMSNorm/SwiGLU and einsum kernels named ``w``, tied embeddings, token-id
inputs with attention masks, and modules whose fields are unhashable config objects or
closures.

The models are written here in the styles of popular Flax code (BERT, GPT-2, Gemma/Llama),
tiny so each test takes seconds. For each: whole heads are removed, the smaller model's
output equals ``result.masked``'s, and the smaller model's ``init`` creates the pruned shapes.
"""
import warnings

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxprune
from jaxprune import _nnx

VOCAB, T = 37, 6
pytestmark = pytest.mark.filterwarnings("ignore::jaxprune.PruneWarning")


def normal_init(std):
    """A closure, as GPT-2 ports build their initialisers."""
    def init(key, shape, dtype=jnp.float32):
        return std * jax.random.normal(key, shape, dtype)
    return init


# -- BERT style: Dense + reshape heads, a config object, (input_ids, attention_mask) ----------
class BertConfig:
    """A plain config object; ``__eq__`` without ``__hash__`` makes it unhashable."""

    def __init__(self, **kw):
        self.__dict__.update(kw)

    def __eq__(self, other):
        return type(other) is BertConfig and self.__dict__ == other.__dict__


BERT = dict(vocab_size=VOCAB, hidden_size=24, num_attention_heads=4, head_dim=6,
            intermediate_size=20, num_hidden_layers=2, num_labels=3)


class BertSelfAttention(nn.Module):
    config: BertConfig

    @nn.compact
    def __call__(self, h, mask_bias):
        cfg = self.config
        inner = cfg.num_attention_heads * cfg.head_dim
        split = lambda y: y.reshape(y.shape[:2] + (cfg.num_attention_heads, cfg.head_dim))
        q = split(nn.Dense(inner, name="query")(h))
        k = split(nn.Dense(inner, name="key")(h))
        v = split(nn.Dense(inner, name="value")(h))
        w = jax.nn.softmax(jnp.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(cfg.head_dim)
                           + mask_bias, axis=-1)
        return jnp.einsum("bhqk,bkhd->bqhd", w, v).reshape(h.shape[:2] + (inner,))


class BertLayer(nn.Module):
    config: BertConfig

    @nn.compact
    def __call__(self, h, mask_bias):
        cfg = self.config
        a = nn.Dense(cfg.hidden_size, name="attention_output")(
            BertSelfAttention(cfg, name="attention")(h, mask_bias))
        h = nn.LayerNorm(name="attention_norm")(h + a)
        f = nn.gelu(nn.Dense(cfg.intermediate_size, name="intermediate")(h))
        return nn.LayerNorm(name="output_norm")(h + nn.Dense(cfg.hidden_size, name="output")(f))


class Bert(nn.Module):
    config: BertConfig

    @nn.compact
    def __call__(self, input_ids, attention_mask=None, deterministic: bool = True):
        cfg = self.config
        h = nn.Embed(cfg.vocab_size, cfg.hidden_size, name="word_embeddings")(input_ids)
        h = h + self.param("position_embeddings", nn.initializers.normal(0.02),
                           (input_ids.shape[1], cfg.hidden_size))
        h = nn.LayerNorm(name="embeddings_norm")(h)
        if attention_mask is None:
            attention_mask = jnp.ones_like(input_ids)
        mask_bias = jnp.where(attention_mask[:, None, None, :] > 0, 0.0, -1e9)
        for i in range(cfg.num_hidden_layers):
            h = BertLayer(cfg, name=f"layer_{i}")(h, mask_bias)
        pooled = jnp.tanh(nn.Dense(cfg.hidden_size, name="pooler")(h[:, 0]))
        return nn.Dense(cfg.num_labels, name="classifier")(pooled)


# -- GPT-2 style: fused qkv split then reshaped, tied embeddings, closure initialisers --------
class GPT2Attention(nn.Module):
    n_head: int
    kernel_init: object = normal_init(0.02)

    @nn.compact
    def __call__(self, x):
        b, t, c = x.shape
        qkv = nn.Dense(3 * c, kernel_init=self.kernel_init, name="c_attn")(x)
        q, k, v = (y.reshape(b, t, self.n_head, -1) for y in jnp.split(qkv, 3, axis=-1))
        s = jnp.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(q.shape[-1])
        s = jnp.where(nn.make_causal_mask(jnp.ones((b, t)))[:, :1], s, -1e9)
        o = jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(s, -1), v).reshape(b, t, -1)
        return nn.Dense(c, kernel_init=self.kernel_init, name="c_proj")(o)


class GPT2(nn.Module):
    vocab_size: int = VOCAB
    n_embd: int = 16
    n_head: int = 4
    n_layer: int = 2
    kernel_init: object = normal_init(0.02)

    @nn.compact
    def __call__(self, idx):
        wte = nn.Embed(self.vocab_size, self.n_embd, embedding_init=self.kernel_init, name="wte")
        h = wte(idx) + nn.Embed(T, self.n_embd, name="wpe")(jnp.arange(idx.shape[1]))
        for i in range(self.n_layer):
            h = h + GPT2Attention(self.n_head, self.kernel_init, name=f"attn_{i}")(
                nn.LayerNorm(name=f"ln_1_{i}")(h))
            f = nn.gelu(nn.Dense(4 * self.n_embd, kernel_init=self.kernel_init,
                                 name=f"c_fc_{i}")(nn.LayerNorm(name=f"ln_2_{i}")(h)))
            h = h + nn.Dense(self.n_embd, kernel_init=self.kernel_init, name=f"mlp_proj_{i}")(f)
        return wte.attend(nn.LayerNorm(name="ln_f")(h))  # tied input/output embeddings


# -- Gemma/Llama style: GQA, RoPE, RMSNorm, SwiGLU, einsum kernels named `w`, a dict config ----
LLAMA = dict(vocab_size=VOCAB, embed_dim=16, num_heads=6, num_kv_heads=3, head_dim=4,
             hidden_dim=20, num_layers=2)


class Einsum(nn.Module):
    """A kernel of any ``shape`` applied by ``jnp.einsum`` (its parameter is ``w``)."""
    shape: tuple

    @nn.compact
    def __call__(self, eqn, x):
        return jnp.einsum(eqn, x, self.param("w", nn.initializers.normal(0.1), self.shape))


class RMSNorm(nn.Module):
    @nn.compact
    def __call__(self, x):
        scale = self.param("scale", nn.initializers.zeros_init(), (x.shape[-1],))
        x = x * jax.lax.rsqrt(jnp.mean(jnp.square(x), axis=-1, keepdims=True) + 1e-6)
        return x * (1 + scale)


def rope(x, positions, base=10_000):
    """Rotary embedding of ``x`` (B, T, heads, D) by halves, as Gemma writes it."""
    half = x.shape[-1] // 2
    freq = base ** (2 * jnp.arange(half) / x.shape[-1])
    angle = (positions[..., None] / freq)[:, :, None, :]
    x1, x2 = jnp.split(x, 2, axis=-1)
    return jnp.concatenate([x1 * jnp.cos(angle) - x2 * jnp.sin(angle),
                            x2 * jnp.cos(angle) + x1 * jnp.sin(angle)], axis=-1)


class LlamaAttention(nn.Module):
    config: dict

    @nn.compact
    def __call__(self, x, positions):
        cfg = self.config
        h, kv, d, c = cfg["num_heads"], cfg["num_kv_heads"], cfg["head_dim"], cfg["embed_dim"]
        q = Einsum((h, c, d), name="q_einsum")("BTC,HCD->BTHD", x)
        k, v = Einsum((2, kv, c, d), name="kv_einsum")("BTC,SKCD->SBTKD", x)
        q, k = rope(q, positions), rope(k, positions)
        b, t = x.shape[:2]
        q = q.reshape(b, t, kv, h // kv, d)  # query heads grouped by their key/value head
        s = jnp.einsum("BTKGD,BSKD->BKGTS", q, k) / np.sqrt(d)
        s = jnp.where(jnp.tril(jnp.ones((t, t), bool)), s, -1e9)
        o = jnp.einsum("BKGTS,BSKD->BTKGD", jax.nn.softmax(s, -1), v).reshape(b, t, h, d)
        return Einsum((h, d, c), name="attn_vec_einsum")("BTHD,HDC->BTC", o)


class LlamaMLP(nn.Module):
    config: dict

    @nn.compact
    def __call__(self, x):
        c, f = self.config["embed_dim"], self.config["hidden_dim"]
        gate, up = Einsum((2, c, f), name="gating_einsum")("BTC,SCF->SBTF", x)
        return Einsum((f, c), name="linear")("BTF,FC->BTC", nn.silu(gate) * up)


class Llama(nn.Module):
    config: dict

    @nn.compact
    def __call__(self, tokens, positions):
        cfg = self.config
        table = self.param("input_embedding", nn.initializers.normal(1.0),
                           (cfg["vocab_size"], cfg["embed_dim"]))
        x = jnp.take(table, tokens, axis=0) * np.sqrt(cfg["embed_dim"])
        for i in range(cfg["num_layers"]):
            x = x + LlamaAttention(cfg, name=f"attn_{i}")(RMSNorm(name=f"pre_attn_{i}")(x),
                                                           positions)
            x = x + LlamaMLP(cfg, name=f"mlp_{i}")(RMSNorm(name=f"pre_ffw_{i}")(x))
        return RMSNorm(name="final_norm")(x) @ table.T  # tied input/output embeddings


# -- helpers ----------------------------------------------------------------------------------
def _tokens(n=3, seed=0):
    return jax.random.randint(jax.random.key(seed), (n, T), 0, VOCAB, jnp.int32)


def _init(model, *args, **kwargs):
    """Variables of ``model`` with non-zero biases and norm scales (init has zeros/ones),
    initialised in one compiled call."""
    v = jax.jit(model.init)(jax.random.key(0), *args, **kwargs)
    rng = np.random.default_rng(0)
    return jax.tree.map(lambda x: x + 0.2 * rng.standard_normal(x.shape).astype(x.dtype), v)


def _shapes(tree):
    return jax.tree.map(np.shape, tree)


def _check_smaller(model, res, *args, **kwargs):
    """The smaller Linen module computes what the masked dense one does, and its ``init``
    creates the pruned shapes."""
    small = res.model(model)
    np.testing.assert_allclose(jax.jit(small.apply)(res.params, *args, **kwargs),
                               jax.jit(model.apply)(res.masked, *args, **kwargs),
                               rtol=2e-4, atol=2e-5)
    created = jax.eval_shape(small.init, jax.random.key(3), *args, **kwargs)
    assert _shapes(created) == _shapes(res.params)
    return small


def _width(res, path_part):
    (name,) = [n for n in res.widths if path_part in n]
    return res.widths[name]


# -- tests ------------------------------------------------------------------------------------
@pytest.mark.slow  # > 5 s on a shared CPU
def test_bert_heads_behind_a_reshape_prune_with_token_ids_and_a_mask():
    model = Bert(BertConfig(**BERT))
    ids, mask = _tokens(), jnp.ones((3, T), jnp.int32).at[:, -2:].set(0)
    v = _init(model, ids, mask)
    res = jaxprune.prune(v, jax.random.key(1), 0.4, model=model, method="l1_norm",
                         example_inputs={"input_ids": ids, "attention_mask": mask})
    for i in range(2):
        heads = _width(res, f"layer_{i}/attention/query")
        assert heads < 4
        layer = res.params["params"][f"layer_{i}"]
        for n in ("query", "key", "value"):
            assert layer["attention"][n]["kernel"].shape == (24, heads * 6)
            assert layer["attention"][n]["bias"].shape == (heads * 6,)
        assert layer["attention_output"]["kernel"].shape == (heads * 6, 24)
    frozen = res.report["frozen"]
    assert any("attention-like product" in why for why in frozen.values())  # head_dim whole
    small = _check_smaller(model, res, input_ids=ids, attention_mask=mask)
    assert small.module.config is model.config and model.config.num_attention_heads == 4


@pytest.mark.slow
def test_gpt2_fused_qkv_ties_each_head_across_its_three_segments():
    model = GPT2()
    idx = _tokens()
    v = _init(model, idx)
    res = jaxprune.prune(v, jax.random.key(1), 0.4, model=model, method="l1_norm",
                         example_inputs=idx)
    (heads,) = [g for g in res.groups if g.name == "attn_0/c_attn"]
    assert heads.prunable and heads.size == 4
    # head h owns columns s·16 + h·4 + i of the fused kernel in each segment s of q, k, v
    assert sorted((s.offset, s.inner, s.period) for s in heads.producers) == [
        (0, 4, 12), (4, 4, 12), (8, 4, 12)]
    kept = res.widths["attn_0/c_attn"]
    assert kept < 4
    assert res.params["params"]["attn_0"]["c_attn"]["kernel"].shape == (16, 3 * kept * 4)
    assert res.params["params"]["attn_0"]["c_proj"]["kernel"].shape == (kept * 4, 16)
    assert res.report["flops_after"] < res.report["flops_before"]
    _check_smaller(model, res, idx)


@pytest.mark.slow  # > 5 s on a shared CPU
def test_llama_gqa_prunes_whole_kv_groups_and_swiglu_as_one_group():
    model = Llama(dict(LLAMA))
    tokens, positions = _tokens(), jnp.broadcast_to(jnp.arange(T), (3, T))
    v = _init(model, tokens, positions)
    res = jaxprune.prune(v, jax.random.key(1), 0.4, model=model, method="l1_norm",
                         example_inputs=(tokens, positions))
    by = {g.name: g for g in res.groups}
    kv_groups = by["attn_0/kv_einsum:1"]
    assert kv_groups.prunable and kv_groups.size == 3
    assert {s.path[-2] for s in kv_groups.producers} == {"q_einsum", "kv_einsum"}
    swiglu = by["mlp_0/gating_einsum:2"]
    assert swiglu.prunable and swiglu.size == 20
    for i in range(2):
        attn = res.params["params"][f"attn_{i}"]
        kv = attn["kv_einsum"]["w"].shape[1]
        q_heads = attn["q_einsum"]["w"].shape[0]
        assert q_heads % kv == 0 and attn["attn_vec_einsum"]["w"].shape[0] == q_heads
    assert any(attn_w["kv_einsum"]["w"].shape[1] < 3 for attn_w in
               (res.params["params"][f"attn_{i}"] for i in range(2)))
    (stream,) = [g for g in res.groups if g.name == "attn_0/attn_vec_einsum"]
    assert not stream.prunable  # the residual stream (RMSNorm'd, tied embeddings): whole
    _check_smaller(model, res, tokens, positions)


@pytest.mark.slow
def test_data_of_token_ids_feeds_a_data_informed_method():
    model = GPT2(n_layer=1)
    idx = _tokens(8)
    v = _init(model, idx)
    res = jaxprune.prune(v, jax.random.key(1), 0.3, model=model, method="coreset", data=idx)
    assert res.widths["attn_0/c_attn"] <= 4
    _check_smaller(model, res, idx)


def test_a_whole_model_target_out_of_reach_warns_and_caps_every_group():
    model = GPT2(n_layer=1)
    idx = _tokens()
    v = _init(model, idx)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = jaxprune.prune(v, jax.random.key(1), 0.8, model=model, method="l1_norm",
                             example_inputs=idx, allocation="uniform")
    for name, width in res.widths.items():
        size = next(g.size for g in res.groups if g.name == name)
        assert width >= size - int(0.9 * size)
    messages = [str(w.message) for w in caught if issubclass(w.category, jaxprune.PruneWarning)]
    assert any("achieved" in m and "max_ratio" in m for m in messages), messages


# -- NNX: a Gemma-style decoder with GQA and einsum kernels named `w` -------------------------
class NnxEinsum(nnx.Module):
    def __init__(self, shape, *, rngs: nnx.Rngs):
        self.shape = shape
        self.w = nnx.Param(0.1 * jax.random.normal(rngs.params(), shape))

    def __call__(self, eqn, x):
        return jnp.einsum(eqn, x, self.w[...])


class NnxRMSNorm(nnx.Module):
    def __init__(self, dim, *, rngs: nnx.Rngs):
        self.scale = nnx.Param(0.2 * jax.random.normal(rngs.params(), (dim,)))

    def __call__(self, x):
        x = x * jax.lax.rsqrt(jnp.mean(jnp.square(x), axis=-1, keepdims=True) + 1e-6)
        return x * (1 + self.scale[...])


class NnxAttention(nnx.Module):
    def __init__(self, cfg, *, rngs: nnx.Rngs):
        c, self.num_heads, self.num_kv_heads, self.head_dim = (
            cfg["embed_dim"], cfg["num_heads"], cfg["num_kv_heads"], cfg["head_dim"])
        h, kv, d = self.num_heads, self.num_kv_heads, self.head_dim
        self.q_einsum = NnxEinsum((h, c, d), rngs=rngs)
        self.kv_einsum = NnxEinsum((2, kv, c, d), rngs=rngs)
        self.attn_vec_einsum = NnxEinsum((h, d, c), rngs=rngs)

    def __call__(self, x, positions):
        b, t = x.shape[:2]
        kv, g, d = self.num_kv_heads, self.num_heads // self.num_kv_heads, self.head_dim
        q = rope(self.q_einsum("BTC,HCD->BTHD", x), positions).reshape(b, t, kv, g, d)
        k, v = self.kv_einsum("BTC,SKCD->SBTKD", x)
        s = jnp.einsum("BTKGD,BSKD->BKGTS", q, rope(k, positions)) / np.sqrt(d)
        s = jnp.where(jnp.tril(jnp.ones((t, t), bool)), s, -1e9)
        o = jnp.einsum("BKGTS,BSKD->BTKGD", jax.nn.softmax(s, -1), v)
        return self.attn_vec_einsum("BTHD,HDC->BTC", o.reshape(b, t, kv * g, d))


class NnxDecoder(nnx.Module):
    def __init__(self, cfg, *, rngs: nnx.Rngs):
        c, f = cfg["embed_dim"], cfg["hidden_dim"]
        self.embedder = nnx.Embed(cfg["vocab_size"], c, rngs=rngs)
        self.norms = nnx.List([NnxRMSNorm(c, rngs=rngs) for _ in range(3)])
        self.attn = NnxAttention(cfg, rngs=rngs)
        self.gating = NnxEinsum((2, c, f), rngs=rngs)
        self.linear = NnxEinsum((f, c), rngs=rngs)

    def __call__(self, tokens, positions):
        x = self.embedder(tokens)
        x = x + self.attn(self.norms[0](x), positions)
        gate, up = self.gating("BTC,SCF->SBTF", self.norms[1](x))
        x = x + self.linear("BTF,FC->BTC", nnx.silu(gate) * up)
        return self.embedder.attend(self.norms[2](x))  # tied embeddings


@pytest.mark.slow  # > 5 s on a shared CPU
def test_nnx_gqa_decoder_with_einsum_kernels_named_w_prunes_kv_groups():
    module = NnxDecoder(dict(LLAMA), rngs=nnx.Rngs(0))
    tokens, positions = _tokens(), jnp.broadcast_to(jnp.arange(T), (3, T))
    res = jaxprune.prune(module, jax.random.key(1), 0.4, method="l1_norm",
                         example_inputs=(tokens, positions))
    kv = res.widths["attn/kv_einsum:1"]
    small, masked = res.module, res.masked
    assert kv < 3 and small.attn.num_kv_heads == kv and small.attn.num_heads == 2 * kv
    assert small.attn.q_einsum.w.shape == (2 * kv, 16, 4)
    assert res.widths["gating:2"] < 20
    np.testing.assert_allclose(small(tokens, positions), masked(tokens, positions),
                               rtol=2e-4, atol=2e-5)
    assert module.attn.num_heads == 6  # the input is untouched


def test_a_rule_teaches_the_tracer_a_primitive():
    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            h = jax.lax.erf_inv(0.5 * jnp.tanh(nn.Dense(8, name="hidden")(x)))
            return nn.Dense(2, name="out")(h)

    model = Net()
    v = _init(model, jnp.ones((1, 5)))
    res = jaxprune.prune(v, jax.random.key(1), 0.3, model=model, input_shape=(5,))
    assert "unsupported op 'erf_inv'" in res.report["frozen"]["hidden"]
    res = jaxprune.prune(v, jax.random.key(1), 0.3, model=model, input_shape=(5,),
                         rules={"erf_inv": jaxprune.structure.RULES["tanh"]})
    assert res.widths["hidden"] < 8
    _check_smaller(model, res, jnp.ones((3, 5)))


class NnxBertLayer(nnx.Module):
    """``nnx.Linear`` q/k/v reshaped into heads by ``self.num_heads``, a padding mask."""

    def __init__(self, dim=16, num_heads=4, head_dim=3, hidden=20, *, rngs: nnx.Rngs):
        self.embed = nnx.Embed(VOCAB, dim, rngs=rngs)
        self.num_heads, self.head_dim = num_heads, head_dim
        self.query, self.key, self.value = (nnx.Linear(dim, num_heads * head_dim, rngs=rngs)
                                            for _ in range(3))
        self.out = nnx.Linear(num_heads * head_dim, dim, rngs=rngs)
        self.norm = nnx.LayerNorm(dim, rngs=rngs)
        self.up = nnx.Linear(dim, hidden, rngs=rngs)
        self.head = nnx.Linear(hidden, 3, rngs=rngs)

    def __call__(self, input_ids, attention_mask):
        h = self.embed(input_ids)
        b, t = input_ids.shape
        split = lambda y: y.reshape(b, t, self.num_heads, self.head_dim)
        q, k, v = split(self.query(h)), split(self.key(h)), split(self.value(h))
        s = jnp.einsum("bqhd,bkhd->bhqk", q, k) + jnp.where(attention_mask[:, None, None] > 0,
                                                            0.0, -1e9)
        o = jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(s, -1), v).reshape(b, t, -1)
        h = self.norm(h + self.out(o))
        return self.head(nnx.gelu(self.up(h)).mean(axis=1))


@pytest.mark.slow  # > 5 s on a shared CPU
def test_nnx_linear_heads_behind_a_reshape_prune_with_keyword_inputs():
    module = NnxBertLayer(rngs=nnx.Rngs(0))
    module = _nnx.with_variables(module, jax.tree.map(
        lambda x: x + 0.2, _nnx.variables_of(module)))
    ids, mask = _tokens(), jnp.ones((3, T), jnp.int32).at[:, -1].set(0)
    res = jaxprune.prune(module, jax.random.key(1), 0.4, method="l1_norm",
                         example_inputs={"input_ids": ids, "attention_mask": mask})
    heads = res.widths["query"]
    small, masked = res.module, res.masked
    assert heads < 4 and small.num_heads == heads and small.head_dim == 3
    assert small.query.kernel.shape == (16, heads * 3) and small.out.in_features == heads * 3
    np.testing.assert_allclose(small(input_ids=ids, attention_mask=mask),
                               masked(input_ids=ids, attention_mask=mask), rtol=2e-4, atol=2e-5)


class RepeatKVAttention(nn.Module):
    """GQA written with ``jnp.repeat`` of the key/value heads (Llama ports), Dense kernels."""
    num_heads: int = 4
    num_kv_heads: int = 2
    head_dim: int = 3

    @nn.compact
    def __call__(self, x):
        b, t, c = x.shape
        h, kv, d = self.num_heads, self.num_kv_heads, self.head_dim
        q = nn.Dense(h * d, name="q_proj")(x).reshape(b, t, h, d)
        k, v = (jnp.repeat(nn.Dense(kv * d, name=n)(x).reshape(b, t, kv, d), h // kv, axis=2)
                for n in ("k_proj", "v_proj"))
        w = jax.nn.softmax(jnp.einsum("bqhd,bkhd->bhqk", q, k), axis=-1)
        o = jnp.einsum("bhqk,bkhd->bqhd", w, v).reshape(b, t, h * d)
        return nn.Dense(2, name="head")(nn.Dense(c, name="o_proj")(o).mean(axis=1))


@pytest.mark.slow
def test_gqa_with_repeated_key_value_heads_prunes_whole_kv_groups():
    model = RepeatKVAttention()
    x = jax.random.normal(jax.random.key(2), (3, T, 8))
    v = _init(model, x)
    res = jaxprune.prune(v, jax.random.key(1), 0.3, model=model, method="l1_norm",
                         input_shape=(T, 8))
    kv = res.widths["k_proj"]  # a KV group: k and v heads with their two query heads
    assert kv == 1
    assert res.params["params"]["q_proj"]["kernel"].shape == (8, 2 * kv * 3)
    assert any("share a key/value head" in why for why in res.report["frozen"].values())
    # the head counts live only in the reshapes (num_heads · head_dim): found as products
    small = res.model(model)
    top = dict(dict((tuple(path), fields) for path, fields in small.sizes)[()])
    assert (top["num_heads"], top["num_kv_heads"]) == (2 * kv, kv)
    np.testing.assert_allclose(small.apply(res.params, x), model.apply(res.masked, x),
                               rtol=2e-4, atol=2e-5)


@pytest.mark.slow  # > 5 s on a shared CPU
def test_keyword_data_feeds_a_data_informed_method_on_a_module_with_an_unhashable_config():
    """``data=`` as a dict of keyword inputs; the model (a config object in a field) runs
    under ``jax.jit`` as a static argument by identity (``_flax.Held``)."""
    model = Bert(BertConfig(**BERT))
    ids, mask = _tokens(8), jnp.ones((8, T), jnp.int32).at[:, -1].set(0)
    v = _init(model, ids, mask)
    res = jaxprune.prune(v, jax.random.key(1), 0.4, model=model, method="pfp",
                         data={"input_ids": ids, "attention_mask": mask})
    assert res.widths["layer_0/attention/query"] < 4
    _check_smaller(model, res, input_ids=ids, attention_mask=mask)
