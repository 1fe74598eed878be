"""Configured methods, the plan's config objects and the two result types.

``prune(..., method=jaxprune.methods.NAME(**options))`` and ``prune(..., method="NAME",
**options)`` are one call; options are checked when the method is built; ``Refit`` /
``Certificate`` equal their flat keywords; each kind of method returns its own result type."""
import dataclasses
import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxprune
from jaxprune import methods
from jaxprune.models import LeNet300100

SHAPE = (6, 6, 1)


@pytest.fixture(scope="module")
def net():
    model = LeNet300100(widths=(12, 8))
    variables = model.init(jax.random.key(0), jnp.zeros((1, *SHAPE)))
    data = np.asarray(jax.random.normal(jax.random.key(1), (6, *SHAPE)))
    return model, variables, data


def _toy_train_set(n=32):
    from jaxprune.data import ArrayDataset
    rng = np.random.default_rng(0)
    return ArrayDataset(rng.normal(size=(n, *SHAPE)).astype(np.float32),
                        rng.integers(0, 10, n).astype(np.int32), 10, "toy")


def _options(name) -> dict:
    """Options away from the defaults where a method has them (and Frank-Wolfe's training
    set, one step of 32 examples), so that the two call forms are compared on options."""
    other = {"projection_dim": 3, "include_bias": True, "scope": "global", "beta": 2.0,
             "block_elements": 4096, "chunk_elements": 4096, "neuron_budget": "sensitivity",
             "train_ds": _toy_train_set(), "batch_size": 32, "score_by": "momentum"}
    return {k: v for k, v in other.items() if k in methods.get(name).options()}


def _same(a, b):
    assert type(a) is type(b)
    for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    for name in a.kept:
        np.testing.assert_array_equal(np.asarray(a.kept[name]), np.asarray(b.kept[name]))
    assert a.report == b.report


@pytest.mark.parametrize("name", methods.names())
def test_the_object_and_the_name_with_options_give_the_same_prune(net, name):
    model, variables, data = net
    cls = methods.get(name)
    opts = _options(name)
    informed = cls.needs_data or cls.uses_data
    common = dict(model=model, input_shape=SHAPE, data=data if informed else None)
    by_name = jaxprune.prune(variables, 3, 0.5, method=name, **opts, **common)
    by_object = jaxprune.prune(variables, 3, 0.5, method=cls(**opts), **common)
    _same(by_name, by_object)
    assert getattr(methods, name) is cls and by_name.report["method"] == name


@pytest.mark.parametrize("name", methods.names())
def test_every_method_has_a_typed_signature_and_rejects_unknown_options(name):
    cls = methods.get(name)
    params = inspect.signature(cls).parameters
    assert set(params) == set(cls.options())
    assert all(p.annotation is not inspect.Parameter.empty for p in params.values())
    with pytest.raises(ValueError, match="unknown option.*its options are") as err:
        cls.configure({"no_such_option": 1})
    assert "\n" not in str(err.value)


def test_bad_option_values_are_refused_when_the_method_is_built():
    for build, match in ((lambda: methods.coreset(projection="svd"), "projection"),
                         (lambda: methods.coreset(projection_dim=0), "projection_dim"),
                         (lambda: methods.coreset(peel_compile="O3"), "peel_compile"),
                         (lambda: methods.l1_norm(include_bias=1), "include_bias"),
                         (lambda: methods.magnitude(scope="net"), "scope"),
                         (lambda: methods.pvc(beta=-1.0), "beta"),
                         (lambda: methods.pfp(block_elements=0), "block_elements"),
                         (lambda: methods.sipp(neuron_budget="all"), "neuron_budget"),
                         (lambda: methods.frank_wolfe(train_ds=None, score_by="x"), "score_by")):
        with pytest.raises(ValueError, match=match):
            build()
    with pytest.raises(ValueError, match="needs the option.*train_ds"):
        methods.frank_wolfe.configure({})


def test_options_with_a_configured_method_and_unknown_methods_are_one_line_errors(net):
    model, variables, _ = net
    for kwargs, match in ((dict(method=methods.coreset(), projection_dim=3), "constructor"),
                          (dict(method=3), "method must be"),
                          (dict(method="nope"), "unknown pruning method"),
                          (dict(method="magnitude", sampling="sparsity_first"),
                           "defines sampling='deterministic'")):
        with pytest.raises(ValueError, match=match) as err:
            jaxprune.prune(variables, 0, 0.5, model=model, input_shape=SHAPE, **kwargs)
        assert "\n" not in str(err.value)


def test_a_user_method_registers_as_a_dataclass():
    @methods.register
    @dataclasses.dataclass(frozen=True)
    class Widest(methods.Method):
        """Keeps the channels with the largest outgoing weight."""
        power: float = 1.0
        name = "test_widest"

        def score(self, key, views):
            return [jnp.max(v.outgoing, axis=1) ** self.power for v in views]

    params = {"a": {"kernel": jnp.ones((3, 8)), "bias": jnp.zeros(8)},
              "b": {"kernel": jnp.arange(16.0).reshape(8, 2), "bias": jnp.zeros(2)}}
    res = jaxprune.prune(params, 0, {"a": 0.5}, method="test_widest", power=2.0)
    assert res.kept["a"].tolist() == [4, 5, 6, 7]
    assert methods.get("test_widest")(power=2.0) == Widest(power=2.0)
    with pytest.raises(ValueError, match="Method dataclass"):
        methods.register(object)


def test_refit_and_certificate_objects_equal_their_flat_keywords(net):
    model, variables, data = net
    common = dict(model=model, input_shape=SHAPE, data=data)
    flat = jaxprune.prune(variables, 0, 0.5, reconstruct="lstsq", ridge=1e-2, certificate=True,
                          **common)
    grouped = jaxprune.prune(variables, 0, 0.5, reconstruct=jaxprune.Refit(ridge=1e-2),
                             certificate=jaxprune.Certificate(), **common)
    _same(flat, grouped)
    assert flat.report["reconstruct"] == grouped.report["reconstruct"]
    assert set(flat.report["certificate"]) == set(grouped.report["certificate"])
    for kwargs, match in ((dict(reconstruct=jaxprune.Refit(), ridge=1.0), "Refit"),
                          (dict(reconstruct="lstsq", ridge=-1.0), "ridge"),
                          (dict(certificate="yes"), "certificate")):
        with pytest.raises(ValueError, match=match):
            jaxprune.prune(variables, 0, 0.5, **kwargs, **common)


def test_each_kind_returns_its_own_result_type(net):
    model, variables, _ = net
    channels = jaxprune.prune(variables, 0, 0.5, model=model, input_shape=SHAPE)
    weights = jaxprune.prune(variables, 0, 0.5, method="magnitude", model=model,
                             input_shape=SHAPE)
    assert isinstance(channels, jaxprune.ChannelResult) and channels.kind == "channels"
    assert isinstance(weights, jaxprune.WeightResult) and weights.kind == "weights"
    assert all(isinstance(r, jaxprune.PruneResult) for r in (channels, weights))
    assert all(np.ndim(k) == 1 for k in channels.kept.values())       # kept channel indices
    assert weights.kept is weights.keep and weights.groups is weights.layers
    for name, keep in weights.keep.items():                            # kept entry masks
        assert keep.dtype == bool
        assert weights.widths[name] == int(keep.any(axis=0).sum())
    assert weights.model(model) is model


def test_which_peeling_kernel_ran_is_in_the_report(net):
    model, variables, _ = net
    res = jaxprune.prune(variables, 0, 0.5, model=model, input_shape=SHAPE, peel_batch="vmap",
                         peel_compile="optimised", projection_dim=2)
    assert set(res.report["method_info"]["peel_kernel"].values()) == {"vmap/optimised"}
