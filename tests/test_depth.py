"""Depth pruning (jaxprune.depth): residual blocks found in the jaxpr, scored by block
influence or by the norm of their output producers, and removed whole.

Models defined here: a pre-norm decoder over int tokens with a ``num_layers`` field (rebuilt
with fewer blocks), the same blocks listed in ``setup`` with no count field (skipped), a
residual NNX MLP whose branches span two lists (masked), NNX blocks in an
``nnx.List`` (rebuilt shorter), the byte LM of jaxprune.models.lm, a model without residual branches, and a small CIFAR ResNet
from jaxprune.models (per-stage ``num_blocks`` and per-block ``widths``).
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxprune import _nnx
from jaxprune._tree import leaves_with_paths, shape_mismatches
from jaxprune.depth import Skipped, prune_depth
from jaxprune.models import CifarResNet

VOCAB, DIM, SEQ = 24, 16, 6


class Block(nn.Module):
    """Pre-norm block: ``x + attn(ln_0(x))``, ``x + mlp(ln_1(x))`` (causal, one head)."""

    @nn.compact
    def __call__(self, x):
        h = nn.LayerNorm(name="ln_0")(x)
        q, k, v = (nn.Dense(DIM, name=n)(h) for n in ("q", "k", "v"))
        s = jnp.einsum("btd,bsd->bts", q, k) / np.sqrt(DIM)
        mask = jnp.tril(jnp.ones((x.shape[1], x.shape[1]), bool))
        a = jax.nn.softmax(jnp.where(mask, s, -1e9), axis=-1)
        x = x + nn.Dense(DIM, name="out")(jnp.einsum("bts,bsd->btd", a, v))
        h = nn.gelu(nn.Dense(2 * DIM, name="up")(nn.LayerNorm(name="ln_1")(x)))
        return x + nn.Dense(DIM, name="down")(h)


class Decoder(nn.Module):
    num_layers: int = 4

    @nn.compact
    def __call__(self, tokens):
        x = nn.Embed(VOCAB, DIM, name="embed")(tokens)
        for i in range(self.num_layers):
            x = Block(name=f"layer_{i}")(x)
        return nn.Dense(VOCAB, name="head")(nn.LayerNorm(name="norm")(x))


class Listed(nn.Module):
    """The decoder's blocks as an explicit list: no field gives their number."""

    def setup(self):
        self.embed = nn.Embed(VOCAB, DIM)
        self.blocks = [Block(), Block(), Block()]
        self.head = nn.Dense(VOCAB)

    def __call__(self, tokens):
        x = self.embed(tokens)
        for b in self.blocks:
            x = b(x)
        return self.head(x)


def tokens(n, seed=0):
    return np.random.default_rng(seed).integers(0, VOCAB, (n, SEQ)).astype(np.int32)


def init(model, seed=0):
    return model.init(jax.random.key(seed), tokens(1))


def silence(variables, block, scale=0.0):
    """``variables`` with ``block``'s output projections (out, down) multiplied by ``scale``."""
    p = jax.tree.map(lambda x: x, variables)
    for name in ("out", "down"):
        p["params"][block][name] = jax.tree.map(lambda w: w * scale,
                                                p["params"][block][name])
    return p


def n_params(tree):
    return sum(np.size(x) for _, x in leaves_with_paths(tree))


def block_influence(model, variables, x, block_names):
    """BI of each block from its captured input and output (1 - cos over the last axis,
    mean over tokens and examples)."""
    def capture(v, x):
        seen = {}

        def grab(next_fun, args, kwargs, context):
            out = next_fun(*args, **kwargs)
            if context.method_name == "__call__" and context.module.name in block_names:
                seen[context.module.name] = (args[0], out)
            return out

        with nn.intercept_methods(grab):
            model.apply(v, x)
        return seen

    result = {}
    for name, (a, b) in jax.jit(capture)(variables, x).items():
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        cos = (a * b).sum(-1) / np.sqrt((a * a).sum(-1) * (b * b).sum(-1))
        result[name] = float(np.mean(1 - cos))
    return result


def run(module, variables, x):
    return jax.jit(module.apply)(variables, x)


def init_shapes(module, x):
    return jax.eval_shape(module.init, jax.random.key(0), x)


def test_rebuilt_decoder_is_the_masked_one_with_fewer_layers():
    model = Decoder()
    v = init(model)
    r = prune_depth(v, 2, model=model, example_inputs=tokens(2), score="norm")
    assert r.form == "rebuilt" and r.fields == {"num_layers": 2}
    small = r.model(model)
    assert small.num_layers == 2
    assert not shape_mismatches(init_shapes(small, tokens(1)), r.params)
    x = tokens(5, seed=3)
    np.testing.assert_allclose(run(small, r.params, x), run(model, r.masked, x),
                               rtol=1e-5, atol=1e-5)
    # independent: renumber the kept blocks by hand and run a 2-layer decoder
    kept = [f"layer_{i}" for i in range(4) if f"layer_{i}" not in r.removed]
    hand = {k: w for k, w in v["params"].items() if not k.startswith("layer_")}
    hand.update({f"layer_{j}": v["params"][name] for j, name in enumerate(kept)})
    np.testing.assert_allclose(run(Decoder(2), {"params": hand}, x),
                               run(model, r.masked, x), rtol=1e-5, atol=1e-5)
    removed = sum(n_params(v["params"][name]) for name in r.removed)
    assert r.report["params_before"] == n_params(v)
    assert r.report["params_after"] == n_params(r.params) == n_params(v) - removed
    assert r.report["params_dead"] == 0


def test_masked_zeroes_only_the_output_producers_of_removed_blocks():
    model = Decoder()
    v = init(model)
    r = prune_depth(v, 1, model=model, example_inputs=tokens(2), score="norm")
    (block,) = r.removed
    changed = {p for (p, a), (_, b) in zip(leaves_with_paths(v), leaves_with_paths(r.masked))
               if not np.array_equal(a, b)}
    zeroed = {("params", block, layer, w) for layer in ("out", "down")
              for w in ("kernel", "bias")}
    assert {("params", block, "out", "kernel"), ("params", block, "down", "kernel")} \
        <= changed <= zeroed
    assert all(not np.any(x) for p, x in leaves_with_paths(r.masked) if p in zeroed)
    assert r.units[block] == (f"{block}/ln_0+q+k+v+out", f"{block}/ln_1+up+down")


def test_identity_block_scores_lowest_and_goes_first():
    model = Decoder()
    v = silence(init(model), "layer_2")
    x = tokens(8, seed=1)
    for score in ("block_influence", "norm"):
        r = prune_depth(v, 1, model=model, data=x, score=score)
        assert r.removed == ("layer_2",)
        assert r.scores["layer_2"] == pytest.approx(0.0, abs=1e-6)
        assert min(r.scores.values()) == r.scores["layer_2"]
        assert all(s > 1e-4 for name, s in r.scores.items() if name != "layer_2")
    # removing an identity block changes nothing
    np.testing.assert_allclose(run(model, r.masked, x), run(model, v, x), atol=1e-6)


def test_block_influence_matches_captured_block_inputs_and_outputs():
    model = Decoder()
    v = init(model, seed=2)
    x = tokens(7, seed=4)
    r = prune_depth(v, 1, model=model, data=x, batch_size=7)
    expected = block_influence(model, v, x, set(r.scores))
    assert set(expected) == set(r.scores)
    for name, value in expected.items():
        assert r.scores[name] == pytest.approx(value, rel=1e-4, abs=1e-6)


def test_batched_influence_equals_one_batch_and_is_deterministic():
    model = Decoder()
    v = init(model, seed=5)
    x = tokens(7, seed=6)
    whole = prune_depth(v, 1, model=model, data=x, batch_size=7)
    parts = prune_depth(v, 1, model=model, data=x, batch_size=3)  # 3 + 3 + 1
    again = prune_depth(v, 1, model=model, data=x, batch_size=3)
    for name in whole.scores:
        assert parts.scores[name] == pytest.approx(whole.scores[name], rel=1e-5, abs=1e-7)
    assert parts.scores == again.scores and parts.removed == again.removed


def test_norm_score_scales_with_the_output_producers():
    model = Decoder()
    v = init(model, seed=7)
    base = prune_depth(v, 1, model=model, example_inputs=tokens(2), score="norm").scores
    for name, value in base.items():
        square = sum(float(np.sum(np.square(w))) for layer in ("out", "down")
                     for w in jax.tree.leaves(v["params"][name][layer]))
        assert value == pytest.approx(np.sqrt(square / DIM), rel=1e-5)
    scaled = silence(v, "layer_0", 0.25)
    r = prune_depth(scaled, 2, model=model, example_inputs=tokens(2), score="norm")
    assert r.scores["layer_0"] == pytest.approx(0.25 * base["layer_0"], rel=1e-5)
    assert "layer_0" in r.removed
    lowest = sorted(r.scores, key=r.scores.get)[:2]
    assert set(r.removed) == set(lowest)


def test_listed_blocks_are_skipped_and_their_params_leave():
    model = Listed()
    v = init(model)
    r = prune_depth(v, 1, model=model, example_inputs=tokens(2), score="norm")
    assert r.form == "skipped"
    (block,) = r.removed
    assert block not in r.params["params"] and block in r.masked["params"]
    small = r.model(model)
    assert isinstance(small, Skipped)
    assert not shape_mismatches(init_shapes(small, tokens(1)), r.params)
    x = tokens(4, seed=2)
    np.testing.assert_allclose(run(small, r.params, x), run(model, r.masked, x),
                               rtol=1e-5, atol=1e-5)
    assert r.report["params_after"] == n_params(v) - n_params(v["params"][block])


def test_branch_unit_is_masked_and_counts_its_params():
    model = Decoder(num_layers=2)
    v = init(model)
    r = prune_depth(v, 1, model=model, example_inputs=tokens(2), score="norm", unit="branch")
    assert len(r.scores) == 4 and r.form == "masked"
    assert r.report["params_after"] == r.report["params_before"] == n_params(v)
    assert r.report["params_dead"] > 0
    x = tokens(3)
    np.testing.assert_allclose(run(r.model(model), r.params, x), run(model, r.masked, x))


def test_errors():
    model = Decoder(num_layers=2)
    v = init(model)
    ex = tokens(2)
    with pytest.raises(ValueError, match="needs data"):
        prune_depth(v, 1, model=model, example_inputs=ex)
    with pytest.raises(ValueError, match="smaller than the number"):
        prune_depth(v, 2, model=model, example_inputs=ex, score="norm")
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="non-negative int"):
            prune_depth(v, bad, model=model, example_inputs=ex, score="norm")
    with pytest.raises(ValueError, match="score must be"):
        prune_depth(v, 1, model=model, example_inputs=ex, score="bi")
    with pytest.raises(ValueError, match="unit must be"):
        prune_depth(v, 1, model=model, example_inputs=ex, score="norm", unit="layer")
    with pytest.raises(ValueError, match="needs model="):
        prune_depth(v, 1, example_inputs=ex, score="norm")
    with pytest.raises(ValueError, match="does not match the params"):
        prune_depth(v, 1, model=Decoder(num_layers=3), example_inputs=ex, score="norm")
    with pytest.raises(ValueError, match="positive int"):
        prune_depth(v, 1, model=model, data=ex, batch_size=0)

    class Plain(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(3)(nn.relu(nn.Dense(5)(x)))

    plain = Plain()
    with pytest.raises(ValueError, match="no residual branch"):
        prune_depth(plain.init(jax.random.key(0), jnp.ones((1, 4))), 1, model=plain,
                    input_shape=(4,), score="norm")


def test_zero_removes_nothing_and_bare_params_come_back_bare():
    model = Decoder(num_layers=2)
    v = init(model)
    r = prune_depth(v["params"], 0, model=model, example_inputs=tokens(2), score="norm")
    assert r.removed == () and r.form == "masked"
    assert r.report["params_after"] == n_params(v)
    assert set(r.params) == set(v["params"]) and set(r.masked) == set(v["params"])


class PostNorm(nn.Module):
    """``x = LayerNorm(x + mlp(x))``: a block without the branch is ``LayerNorm(x)``."""
    num_layers: int = 3

    @nn.compact
    def __call__(self, x):
        for i in range(self.num_layers):
            h = nn.Dense(DIM, name=f"down_{i}")(nn.relu(nn.Dense(2 * DIM, name=f"up_{i}")(x)))
            x = nn.LayerNorm(name=f"norm_{i}")(x + h)
        return x


def test_post_norm_branch_is_masked_not_dropped():
    model = PostNorm()
    x = np.random.default_rng(0).normal(size=(3, DIM)).astype(np.float32)
    v = model.init(jax.random.key(0), x[:1])
    r = prune_depth(v, 1, model=model, input_shape=(DIM,), score="norm")
    # the block's LayerNorm stays: no smaller module reproduces the masked one
    assert r.form == "masked" and len(r.scores) == 3
    (branch,) = r.removed
    i = branch.split("+")[0].split("_")[-1]
    assert r.units[branch] == (f"up_{i}+down_{i}",)
    assert r.report["params_dead"] == n_params(v["params"][f"up_{i}"]) \
        + n_params(v["params"][f"down_{i}"])
    assert r.report["params_after"] == n_params(v)


class NnxResMLP(nnx.Module):
    def __init__(self, width=8, depth=3, *, rngs):
        self.inp = nnx.Linear(4, width, rngs=rngs)
        self.norms = nnx.List([nnx.LayerNorm(width, rngs=rngs) for _ in range(depth)])
        self.fcs = nnx.List([nnx.Linear(width, width, rngs=rngs) for _ in range(depth)])
        self.out = nnx.Linear(width, 2, rngs=rngs)

    def __call__(self, x):
        x = self.inp(x)
        for norm, fc in zip(self.norms, self.fcs):
            x = x + fc(nnx.relu(norm(x)))
        return self.out(x)


def test_nnx_module_is_masked():
    net = NnxResMLP(rngs=nnx.Rngs(0))
    x = np.random.default_rng(0).normal(size=(6, 4)).astype(np.float32)
    r = prune_depth(net, 1, data=x, score="block_influence")
    assert r.form == "masked" and len(r.scores) == 3
    small = r.model()
    assert isinstance(small, nnx.Module)
    linen = _nnx.as_linen(net)
    np.testing.assert_allclose(small(jnp.asarray(x)), jax.jit(lambda v, x: linen.apply(v, x, train=False))(r.masked, x),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_resnet_blocks_are_rebuilt_per_stage():
    model = CifarResNet(widths=(4,) * 6, stage_widths=(4, 8), num_blocks=(3, 3),
                        num_classes=3)
    v = model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)))
    v = {"params": v["params"], "batch_stats": jax.tree.map(
        lambda s: s + 0.1 * jax.random.uniform(jax.random.key(1), s.shape),
        v["batch_stats"])}
    x = np.random.default_rng(0).normal(size=(5, 8, 8, 3)).astype(np.float32)
    r = prune_depth(v, 2, model=model, data=x, batch_size=2)
    # the first block of stage 2 changes shape (option-A shortcut): not a residual branch
    assert "block2_0" not in r.scores and len(r.scores) == 5
    assert r.form == "rebuilt" and sum(r.fields["num_blocks"]) == 4
    assert len(r.fields["widths"]) == 4
    small = r.model(model)
    assert not shape_mismatches(init_shapes(small, jnp.zeros((1, 8, 8, 3))), r.params)
    np.testing.assert_allclose(run(small, r.params, x), run(model, r.masked, x),
                               rtol=1e-5, atol=1e-5)
    assert all(0.0 <= s <= 2.0 for s in r.scores.values())
    # data-free at init (BatchNorm scale 1, bias 0): one per feature whatever the width
    fresh = model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)))
    norms = prune_depth(fresh, 1, model=model, input_shape=(8, 8, 3), score="norm").scores
    assert norms == pytest.approx({name: 1.0 for name in norms})
    removed = sum(n_params(v["params"][b]) for b in r.removed)
    assert r.report["params_after"] == n_params(v["params"]) - removed


@pytest.mark.slow
def test_language_model_loses_whole_layers():
    from jaxprune.models.lm import LM
    lm = LM(dim=16, num_layers=3, num_heads=2, num_kv_heads=1, mlp_dim=32, max_len=8)
    x = np.random.default_rng(0).integers(0, lm.vocab_size, (5, 8)).astype(np.int32)
    v = lm.init(jax.random.key(0), x[:1])
    v = silence_lm(v, "block_1")
    r = prune_depth(v, 1, model=lm, data=x, batch_size=2)
    assert r.removed == ("block_1",) and r.form == "rebuilt"
    assert r.fields == {"num_layers": 2}
    assert set(r.units) == {"block_0", "block_1", "block_2"}
    small = r.model(lm)
    assert not shape_mismatches(init_shapes(small, x[:1]), r.params)
    np.testing.assert_allclose(run(small, r.params, x), run(lm, v, x), rtol=1e-5, atol=1e-5)


def silence_lm(variables, block):
    """``variables`` with the output projections of ``block``'s branches (attention ``out``,
    MLP ``down``) zeroed."""
    params = jax.tree.map(lambda x: x, variables)
    for sub, last in (("attn", "out"), ("mlp", "down")):
        layer = params["params"][block][sub][last]
        params["params"][block][sub][last] = jax.tree.map(jnp.zeros_like, layer)
    return params


class NnxBlock(nnx.Module):
    def __init__(self, width, *, rngs):
        self.norm = nnx.LayerNorm(width, rngs=rngs)
        self.fc = nnx.Linear(width, width, rngs=rngs)

    def __call__(self, x):
        return x + self.fc(nnx.relu(self.norm(x)))


class NnxStack(nnx.Module):
    """Blocks in an ``nnx.List``, run ``self.depth`` of them."""

    def __init__(self, width=8, depth=3, *, rngs):
        self.depth = depth
        self.inp = nnx.Linear(4, width, rngs=rngs)
        self.blocks = nnx.List([NnxBlock(width, rngs=rngs) for _ in range(depth)])
        self.out = nnx.Linear(width, 2, rngs=rngs)

    def __call__(self, x):
        x = self.inp(x)
        for i in range(self.depth):
            x = self.blocks[i](x)
        return self.out(x)


def test_nnx_list_of_blocks_is_rebuilt_shorter():
    net = NnxStack(rngs=nnx.Rngs(1))
    for w in (net.blocks[1].fc.kernel, net.blocks[1].fc.bias):
        w[...] = jnp.zeros_like(w[...])
    x = np.random.default_rng(1).normal(size=(6, 4)).astype(np.float32)
    r = prune_depth(net, 1, data=x)
    assert r.removed == ("blocks/1",) and r.form == "rebuilt"
    assert r.fields == {"depth": 2}
    small = r.model()
    assert small.depth == 2 and len(small.blocks) == 2 and len(net.blocks) == 3
    assert r.report["params_after"] == n_params(r.params) \
        == n_params(_nnx.variables_of(net)["params"]) - n_params(r.params["params"]["blocks"]["1"])
    np.testing.assert_allclose(small(jnp.asarray(x)), net(jnp.asarray(x)), rtol=1e-5, atol=1e-6)
