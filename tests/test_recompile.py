"""No accidental recompiles: a second ``prune`` of same-shaped params and the second epoch of
``fit`` build no new XLA program.

Counted from JAX's monitoring events: every new program is lowered to MLIR (one
``/jax/core/compile/jaxpr_to_mlir_module_duration`` event) whether or not its executable then
comes from the persistent compilation cache (which the suite turns on), and compiled by XLA
(``/jax/core/compile/backend_compile_duration``) unless it does.  The programs' names come from
``jax_log_compiles`` so that a failure says what recompiled.
"""
import collections
import contextlib
import logging

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxprune
from jaxprune import train
from jaxprune.data import ArrayDataset
from jaxprune.models import LeNet300100

LOWER = "/jax/core/compile/jaxpr_to_mlir_module_duration"
COMPILE = "/jax/core/compile/backend_compile_duration"


class _Names(logging.Handler):
    """Collects the program names of JAX's "Compiling <name> ..." log lines."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.names = []

    def emit(self, record):
        message = record.getMessage()
        if message.startswith("Compiling "):
            self.names.append(message.split()[1])


@contextlib.contextmanager
def count_compiles():
    """Yields a Counter: ``lowered`` (new programs) and ``compiled`` (XLA compiles), plus the
    ``names`` list of what was compiled."""
    counts = collections.Counter()

    def listen(event, duration, **_):
        if event == LOWER:
            counts["lowered"] += 1
        elif event == COMPILE:
            counts["compiled"] += 1

    names = _Names()
    logger = logging.getLogger("jax")
    level, propagate = logger.level, logger.propagate
    logger.addHandler(names)
    logger.setLevel(logging.WARNING)  # log_compiles writes at WARNING
    logger.propagate = False          # keep the lines out of the test's output
    jax.monitoring.register_event_duration_secs_listener(listen)
    try:
        with jax.log_compiles(True):
            yield counts
    finally:
        jax.monitoring.unregister_event_duration_listener(listen)
        logger.removeHandler(names)
        logger.setLevel(level)
        logger.propagate = propagate
        counts["names"] = names.names


def test_the_counter_sees_a_new_program():
    with count_compiles() as counts:
        jax.jit(lambda x: x * 3 + 1)(np.arange(7.0))  # a new function: a new program
    assert counts["lowered"] == 1 and counts["compiled"] in (0, 1)
    assert any("lambda" in name for name in counts["names"]), counts["names"]


def _perturbed(variables, seed):
    """Same shapes, other values (so nothing can be reused by value)."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda a: a + jnp.asarray(0.01 * rng.standard_normal(a.shape), a.dtype),
                        variables)


class TinyCNN(nn.Module):
    """Two convs and a dense head: conv filters as points, a flatten consumer."""

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(12, (3, 3))(x))
        x = nn.relu(nn.Conv(24, (3, 3), strides=2)(x))
        x = nn.relu(nn.Dense(40)(x.reshape((x.shape[0], -1))))
        return nn.Dense(10)(x)


NETS = {"lenet300": (LeNet300100(widths=(80, 40)), (28, 28, 1)),
        "cnn": (TinyCNN(), (8, 8, 3))}


@pytest.mark.parametrize("net", sorted(NETS))
@pytest.mark.parametrize("method, options", [
    ("coreset", {"projection_dim": 3}),  # 3 dims: every group is big enough to be peeled
    ("l1_norm", {}),
])
@pytest.mark.slow
def test_second_prune_of_same_shapes_compiles_nothing(net, method, options):
    model, shape = NETS[net]
    variables = model.init(jax.random.key(0), jnp.zeros((1, *shape)))
    other = _perturbed(variables, 1)
    res = jaxprune.prune(variables, jax.random.key(1), 0.6, model=model, input_shape=shape,
                         method=method, **options)  # compiles whatever an earlier test did not
    assert res.report["achieved_ratio"] > 0.5
    with count_compiles() as second:
        again = jaxprune.prune(other, jax.random.key(2), 0.6, model=model, input_shape=shape,
                               method=method, **options)
    assert again.report["achieved_ratio"] > 0.5
    assert (second["lowered"], second["compiled"]) == (0, 0), (
        f"second prune built {second['lowered']} new program(s): {second['names']}")


def test_second_prune_reuses_the_traced_structure(monkeypatch):
    """The structure depends only on the module and the shapes: a second prune of same-shaped
    variables of an equal module does not trace the model again, and prunes exactly as a
    fresh trace does; another width is traced anew."""
    from jaxprune import pipeline, structure

    traced = []
    real = structure.trace_groups
    monkeypatch.setattr(structure, "trace_groups",
                        lambda *a, **k: traced.append(1) or real(*a, **k))
    monkeypatch.setattr(pipeline, "_TRACED", collections.OrderedDict())
    model, shape = LeNet300100(widths=(24, 12)), (6, 6, 1)
    variables = model.init(jax.random.key(0), jnp.zeros((1, *shape)))
    other = _perturbed(variables, 1)

    def prune(v, m=model):
        return jaxprune.prune(v, jax.random.key(3), 0.5, model=m, input_shape=shape,
                              method="l1_norm")

    prune(variables)
    cached = prune(other)
    assert len(traced) == 1
    pipeline._TRACED.clear()
    fresh = prune(other)
    assert len(traced) == 2
    assert cached.widths == fresh.widths
    jax.tree.map(np.testing.assert_array_equal, cached.params, fresh.params)
    wider = LeNet300100(widths=(24, 16))
    prune(wider.init(jax.random.key(0), jnp.zeros((1, *shape))), wider)
    assert len(traced) == 3


class MLP(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.relu(nn.Dense(16)(x.reshape((x.shape[0], -1))))
        return nn.Dense(4)(x)


def test_fit_compiles_its_train_step_once():
    """Epoch 2 of ``fit`` (same batch shapes) compiles nothing: the train step, the metrics
    and the host transfers all reuse epoch 1's programs."""
    rng = np.random.default_rng(0)
    ds = ArrayDataset(rng.normal(size=(64, 4, 4, 1)).astype(np.float32),
                      rng.integers(0, 4, 64).astype(np.int32), 4, "tiny")
    cfg = train.TrainConfig(optimizer="sgd", learning_rate=0.1, epochs=2, batch_size=16,
                            seed=0, log_every=2)
    seen = {}

    with count_compiles() as counts:
        def snapshot(epoch, result):
            seen[epoch] = (counts["lowered"], counts["compiled"])

        result = train.fit(MLP(), ds, cfg, devices=1, progress=False, callbacks=[snapshot])
        after = (counts["lowered"], counts["compiled"])
    assert int(result.state["step"]) == 8
    assert seen[1][0] > 0, "epoch 1 compiled nothing: the counter is not listening"
    assert after == seen[2] == seen[1], (
        f"epoch 2 built {seen[2][0] - seen[1][0]} new program(s) "
        f"({seen[2][1] - seen[1][1]} XLA compiles): {counts['names']}")
