"""Hidden-size pruning (jaxprune.hidden): the residual stream's slots, exactness where the
removed channels are zero, the reported error, determinism, bad input."""
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxprune import structure
from jaxprune._flax import Example
from jaxprune._tree import leaves_with_paths, map_with_paths
from jaxprune.hidden import prune_hidden
from jaxprune.models.lm import LM, NnxLM

SIZES = dict(dim=32, num_layers=2, num_heads=4, num_kv_heads=2, mlp_dim=64, max_len=8)


class Tok(nn.Module):
    """A token model with a learned positional table and, optionally, LayerNorms."""
    norm: bool = False
    dim: int = 12

    @nn.compact
    def __call__(self, tok):
        x = nn.Embed(50, self.dim, name="tok")(tok)
        x = x + nn.Embed(8, self.dim, name="pos")(jnp.arange(tok.shape[1]))
        for i in range(2):
            h = nn.LayerNorm(name=f"ln_{i}")(x) if self.norm else x
            x = x + nn.Dense(self.dim, name=f"down_{i}")(nn.relu(nn.Dense(20, name=f"up_{i}")(h)))
        return nn.Dense(50, name="head")(x)


def _tokens(n=6, vocab=256, seed=0):
    return np.random.default_rng(seed).integers(0, vocab, (n, SIZES["max_len"])).astype(np.int32)


@pytest.fixture(scope="module")
def lm():
    model = LM(**SIZES)
    return model, model.init(jax.random.key(0), _tokens(1))


def _slots(group):
    return {(s.path, s.axis) for s in (*group.producers, *group.members, *group.consumers)}


def _zeroed_stream(variables, channels, d):
    """``variables`` with stream ``channels`` zero everywhere: the embedding columns, every
    producer's output columns (the last axis of a kernel whose other axes are not ``d``)
    and the vectors of size ``d`` (biases added to the stream, norm scales)."""
    def zero(path, x):
        x = np.array(x)
        if x.shape[-1] == d and d not in x.shape[:-1]:
            x[..., channels] = 0
        if path[-1] == "embedding":
            x[:, channels] = 0
        return x
    return map_with_paths(zero, variables)


@pytest.mark.parametrize("tie", [False, True])
def test_every_axis_of_the_stream_width_is_a_slot(tie):
    model = LM(**SIZES, tie_embeddings=tie)
    v = model.init(jax.random.key(1), _tokens(1))
    r = prune_hidden(v, 0.25, model=model, data=_tokens(4))
    d, k = r.width
    (group,) = r.groups
    shapes = {p: np.shape(x) for p, x in leaves_with_paths(v)}
    wide = {(p, a) for p, s in shapes.items() for a, n in enumerate(s) if n == d}
    assert _slots(group) == wide  # SIZES has no other axis of the stream's width
    small = {p: np.shape(x) for p, x in leaves_with_paths(r.params)}
    for p, s in shapes.items():
        assert small[p] == tuple(k if (p, a) in wide else n for a, n in enumerate(s))
    # the roles: the table the tokens index produces the stream, 1-D norm scales are members
    table = [s for s in group.producers if len(shapes[s.path]) == 2
             and shapes[s.path][1 - s.axis] == model.vocab_size]
    assert table and all(len(shapes[s.path]) == 1 for s in group.members)
    assert len(group.members) == 2 * SIZES["num_layers"] + 1
    assert sorted("/".join(p[1:]) for p, _ in [(s.path, 0) for s in group.members]) == \
        sorted(r.report["norm_scales"])
    if tie:  # the tied head reads the stream through the same table
        assert (table[0].path, table[0].axis) in {(s.path, s.axis) for s in group.consumers}
    assert r.model().apply(r.params, _tokens(2)).shape == (2, SIZES["max_len"], 256)


def test_default_tracing_keeps_the_stream_whole(lm):
    """Off by default: the ordinary trace still freezes the residual stream."""
    model, v = lm
    s = structure.from_model(model, v, Example((_tokens(1),)))
    d = SIZES["dim"]
    stream_groups = [g for g in s.groups if g.size == d and g.residual]
    assert stream_groups and not any(g.prunable for g in stream_groups)


def test_positional_table_and_layernorm_are_found():
    net = Tok(norm=True)
    tokens = _tokens(4, vocab=50)
    v = net.init(jax.random.key(0), tokens)
    r = prune_hidden(v, 0.25, model=net, data=tokens)
    (group,) = r.groups
    producers = {"/".join(s.path[1:]) for s in group.producers}
    members = {"/".join(s.path[1:]) for s in group.members}
    assert {"tok/embedding", "pos/embedding"} <= producers
    assert {"ln_0/scale", "ln_0/bias", "ln_1/scale", "ln_1/bias"} <= members
    assert set(r.report["norm_scales"]) == {"ln_0/scale", "ln_1/scale"}  # biases not rescaled
    assert r.model().apply(r.params, tokens).shape == (4, 8, 50)


def test_zero_channels_removed_exactly_without_norms():
    net = Tok(norm=False)
    tokens = _tokens(4, vocab=50)
    v = net.init(jax.random.key(2), tokens)
    dead = [1, 4, 7]
    v = _zeroed_stream(v, dead, net.dim)
    r = prune_hidden(v, len(dead) / net.dim, model=net, data=tokens)
    assert np.setdiff1d(np.arange(net.dim), r.kept[r.groups[0].name]).tolist() == dead
    np.testing.assert_allclose(r.model().apply(r.params, tokens), net.apply(v, tokens),
                               rtol=1e-5, atol=1e-6)
    assert r.scale == 1.0 and r.report["kl"] < 1e-9


def test_zero_channels_under_rmsnorm_change_by_sqrt_d_over_d_prime(lm):
    """RMSNorm divides by sqrt(mean over d channels): with the removed channels zero, the
    kept ones are normalised by sqrt(d/d') less. Rescaling the scales by sqrt(d/d') undoes it
    (up to eps); without it the pruned model equals the dense one with scales * sqrt(d'/d)."""
    model, v = lm
    d = SIZES["dim"]
    dead = list(range(3, d, 4))
    v = _zeroed_stream(v, dead, d)
    v = map_with_paths(lambda p, x: x * 30.0 if p[-1] == "embedding" else x, v)  # eps << ms
    tokens = _tokens(4)
    dense = model.apply(v, tokens)
    r = prune_hidden(v, len(dead) / d, model=model, data=tokens)
    k = r.width[1]
    assert np.setdiff1d(np.arange(d), r.kept[r.groups[0].name]).tolist() == dead
    assert r.scale == pytest.approx(math.sqrt(d / k), rel=1e-6)
    np.testing.assert_allclose(r.model().apply(r.params, tokens), dense, rtol=1e-4, atol=1e-4)
    assert r.report["kl"] < 1e-6
    raw = prune_hidden(v, len(dead) / d, model=model, data=tokens, rescale_norms=False)
    scales = {p for p in (s.path for s in r.groups[0].members)}
    shrunk = map_with_paths(lambda p, x: x * math.sqrt(k / d) if p in scales else x, v)
    np.testing.assert_allclose(raw.model().apply(raw.params, tokens),
                               model.apply(shrunk, tokens), rtol=1e-4, atol=1e-4)
    assert raw.report["kl"] > r.report["kl"]


def test_error_is_finite_zero_at_zero_and_grows_with_the_ratio(lm):
    """On a stream whose channels carry graded energies (as a trained model's do), removing
    more of the weakest channels costs more."""
    model, v = lm
    d = SIZES["dim"]
    energy = np.random.default_rng(1).permutation(0.8 ** np.arange(d))
    v = map_with_paths(lambda p, x: x * energy if np.shape(x)[-1] == d
                       and d not in np.shape(x)[:-1] else x, v)
    tokens = _tokens(6)
    labels = np.roll(tokens, -1, axis=1)
    results = [prune_hidden(v, q, model=model, data=tokens, labels=labels)
               for q in (0.0, 0.25, 0.5, 0.75)]
    kl = [r.report["kl"] for r in results]
    rel = [r.report["relative_error"] for r in results]
    assert all(np.isfinite(kl)) and all(np.isfinite(rel))
    assert kl[0] < 1e-6 and results[0].width == (d, d)
    assert all(a < b for a, b in zip(kl, kl[1:])) and all(a < b for a, b in zip(rel, rel[1:]))
    for r in results:
        assert r.report["approximate"] is True and "approximate" in r.report["note"]
        assert np.isfinite(r.report["bits_per_byte_change"])
        assert r.report["params_after"] < r.report["params_before"] or r.width[0] == r.width[1]


def test_scores_do_not_depend_on_the_batch_size_and_runs_repeat(lm):
    model, v = lm
    tokens = _tokens(7)
    a = prune_hidden(v, 0.25, model=model, data=tokens, batch_size=7)
    b = prune_hidden(v, 0.25, model=model, data=tokens, batch_size=3)  # 3 + 3 + 1
    c = prune_hidden(v, 0.25, model=model, data=tokens, batch_size=3)
    name = a.groups[0].name
    scores = a.scores[name]
    np.testing.assert_allclose(b.scores[name], scores, rtol=1e-5)
    assert scores.sum() == pytest.approx(SIZES["dim"], rel=1e-4)  # shares of the mean square
    np.testing.assert_array_equal(b.kept[name], c.kept[name])
    np.testing.assert_array_equal(b.scores[name], c.scores[name])
    for (p, x), (_, y) in zip(leaves_with_paths(b.params), leaves_with_paths(c.params)):
        np.testing.assert_array_equal(x, y)
    removed = np.setdiff1d(np.arange(SIZES["dim"]), a.kept[name])
    assert scores[removed].max() <= np.delete(scores, removed).min()


def test_round_to_makes_the_width_a_multiple(lm):
    model, v = lm
    r = prune_hidden(v, 0.125, model=model, data=_tokens(3), round_to=8)
    assert r.width == (32, 24) and r.model(model) is r.module
    assert r.model().apply(r.params, _tokens(2)).shape == (2, SIZES["max_len"], 256)


def test_rebuild_changes_only_the_width_field():
    """``max_len`` equal to ``dim`` by chance keeps its value (it sets no stream axis)."""
    model = LM(**{**SIZES, "max_len": SIZES["dim"]})
    tokens = np.random.default_rng(0).integers(0, 256, (3, SIZES["dim"])).astype(np.int32)
    v = model.init(jax.random.key(0), tokens[:1])
    r = prune_hidden(v, 0.5, model=model, data=tokens)
    fields = dict(dict(r.module.sizes).get((), ()))
    assert fields["dim"] == 16 and fields["max_len"] == SIZES["dim"]
    assert r.model().apply(r.params, tokens).shape == (3, SIZES["dim"], 256)


def test_nnx_twin():
    m = NnxLM(**SIZES, rngs=nnx.Rngs(0))
    tokens = _tokens(3)
    r = prune_hidden(m, 0.5, data=tokens)
    assert r.width == (32, 16)
    assert r.model()(tokens).shape == (3, SIZES["max_len"], 256)
    assert np.isfinite(r.report["kl"])


class _Mlp(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(3)(x + nn.Dense(x.shape[-1])(x))


@pytest.mark.parametrize("call, match", [
    (lambda m, v, t: prune_hidden(v, 1.0, model=m, data=t), "ratio"),
    (lambda m, v, t: prune_hidden(v, -0.1, model=m, data=t), "ratio"),
    (lambda m, v, t: prune_hidden(v, True, model=m, data=t), "ratio"),
    (lambda m, v, t: prune_hidden(v, "half", model=m, data=t), "ratio"),
    (lambda m, v, t: prune_hidden(v, 0.5, model=m), "data"),
    (lambda m, v, t: prune_hidden(v, 0.5, data=t), "model"),
    (lambda m, v, t: prune_hidden(v, 0.5, model=m, data=t, batch_size=0), "batch_size"),
    (lambda m, v, t: prune_hidden(v, 0.5, model=m, data=t, labels=t[:1]), "labels"),
    (lambda m, v, t: prune_hidden(v, 0.5, model=m, data=t, labels=t[:, :3]), "labels"),
    (lambda m, v, t: prune_hidden(_Mlp().init(jax.random.key(0), np.ones((1, 4))), 0.5,
                                  model=_Mlp(), data=np.ones((2, 4), np.float32)),
     "no residual stream"),
])
def test_bad_input_is_one_line(lm, call, match):
    model, v = lm
    with pytest.raises(ValueError, match=match) as err:
        call(model, v, _tokens(2))
    assert "\n" not in str(err.value)
