"""The transformer zoo of ``test_transformers`` survives a checkpoint round trip into a fresh
process: each model is pruned, its smaller model saved (``save_model``; NNX: ``save_nnx``),
and one new Python process loads every saved model and runs it on the same inputs; its
outputs equal those of the smaller model in the pruning process.

A model whose fields can be recorded loads with ``trust=`` (its module is not trusted by
default); one whose fields cannot (a config object, a closure ``kernel_init``) loads with
``like=`` the dense module; an NNX module loads from its dense constructor.
"""
import json
import os
import subprocess
import sys
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxprune
import test_transformers as zoo
from jaxprune import checkpoint

TESTS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(TESTS)
pytestmark = pytest.mark.filterwarnings("ignore::jaxprune.PruneWarning")


class Case(NamedTuple):
    build: Callable          # the dense module, built the same way in every process
    args: tuple
    kwargs: dict
    load: str                # "trust", "like" or "nnx": how the fresh process loads it
    fields: dict | None = None


def _cases() -> dict[str, Case]:
    ids, mask = zoo._tokens(), jnp.ones((3, zoo.T), jnp.int32).at[:, -2:].set(0)
    positions = jnp.broadcast_to(jnp.arange(zoo.T), (3, zoo.T))
    x = jax.random.normal(jax.random.key(2), (3, zoo.T, 8))
    bert = dict(zoo.BERT, num_hidden_layers=1)
    llama = dict(zoo.LLAMA, num_layers=1)
    return {
        "bert": Case(lambda: zoo.Bert(zoo.BertConfig(**bert)), (),
                     {"input_ids": ids, "attention_mask": mask}, "like"),
        "gpt2": Case(lambda: zoo.GPT2(n_layer=1), (ids,), {}, "like"),
        "llama": Case(lambda: zoo.Llama(llama), (ids, positions), {}, "trust"),
        "repeat_kv": Case(zoo.RepeatKVAttention, (x,), {}, "trust",
                          {"": {"num_heads": 2, "num_kv_heads": 1}}),
        "nnx_decoder": Case(lambda: zoo.NnxDecoder(llama, rngs=nnx.Rngs(0)),
                            (ids, positions), {}, "nnx"),
        "nnx_bert": Case(lambda: zoo.NnxBertLayer(rngs=nnx.Rngs(0)), (),
                         {"input_ids": ids, "attention_mask": mask}, "nnx"),
    }


def _example(case: Case):
    """The ``example_inputs`` of ``case``: its keyword inputs, or its positional ones."""
    if case.kwargs:
        return case.kwargs
    return case.args if len(case.args) > 1 else case.args[0]


def _prune_and_save(name: str, case: Case, root: str):
    """Prune ``case``'s model, save the smaller one under ``root/name``; its outputs."""
    directory = os.path.join(root, name)
    model = case.build()
    if case.load == "nnx":
        res = jaxprune.prune(model, jax.random.key(1), 0.4, method="l1_norm",
                             example_inputs=_example(case))
        checkpoint.save_nnx(directory, res.module)
        return res, np.asarray(res.module(*case.args, **case.kwargs))
    variables = zoo._init(model, *case.args, **case.kwargs)
    res = jaxprune.prune(variables, jax.random.key(1), 0.4, model=model, method="l1_norm",
                         example_inputs=_example(case))
    small = res.model(model, fields=case.fields)
    checkpoint.save_model(directory, small, res.params)
    return res, np.asarray(small.apply(res.params, *case.args, **case.kwargs))


def reload_all(root: str) -> None:
    """Run in the fresh process: load every saved model under ``root`` and write its outputs
    (``outputs.npz``) and what loading it without consent said (``refusals.json``)."""
    outputs, refusals = {}, {}
    for name, case in _cases().items():
        directory = os.path.join(root, name)
        if case.load == "nnx":
            module = checkpoint.load_nnx(directory, case.build)
            outputs[name] = np.asarray(module(*case.args, **case.kwargs))
            continue
        consent = ({"like": case.build()} if case.load == "like"
                   else {"trust": ("test_transformers",)})
        model, variables, _ = checkpoint.load_model(directory, **consent)
        outputs[name] = np.asarray(model.apply(variables, *case.args, **case.kwargs))
        try:
            checkpoint.load_model(directory)
            refusals[name] = None
        except ValueError as err:
            refusals[name] = str(err)
    np.savez(os.path.join(root, "outputs.npz"), **outputs)
    with open(os.path.join(root, "refusals.json"), "w") as f:
        json.dump(refusals, f)


@pytest.mark.slow  # prunes six models and starts a process
def test_every_zoo_model_loads_in_a_fresh_process_and_computes_the_same(tmp_path):
    root = str(tmp_path)
    cases = _cases()
    expected, results = {}, {}
    for name, case in cases.items():
        results[name], expected[name] = _prune_and_save(name, case, root)
    for name, res in results.items():
        assert res.report["achieved_ratio"] > 0, name          # something was removed
    script = ("import sys; sys.path.insert(0, sys.argv[1]); "
              "import test_transformer_roundtrip as t; t.reload_all(sys.argv[2])")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [REPO, TESTS, os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", script, TESTS, root], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    with np.load(os.path.join(root, "outputs.npz")) as saved:
        got = dict(saved)
    assert set(got) == set(cases)
    for name, want in expected.items():
        assert got[name].shape == want.shape, name
        np.testing.assert_allclose(got[name], want, rtol=1e-6, atol=1e-6, err_msg=name)
    with open(os.path.join(root, "refusals.json")) as f:
        refusals = json.load(f)
    for name, message in refusals.items():       # no consent: a one-line refusal saying how
        assert message is not None and "\n" not in message, name
        how = "like=" if cases[name].load == "like" else "trust=('test_transformers',)"
        assert how in message, (name, message)
