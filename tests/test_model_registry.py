"""The model registry: one register_model call makes a model known to get_model, checkpoints,
the training recipes and ``jaxprune train``; the old tables are views of it."""
import doctest
import json

import flax.linen as nn
import pytest
from flax import nnx

from jaxprune import checkpoint, cli, train
from jaxprune import models as M


class TinyMLP(nn.Module):
    widths: tuple = (16,)
    num_classes: int = 10

    @nn.compact
    def __call__(self, x, train=False):
        x = nn.relu(nn.Dense(self.widths[0], name="dense_0")(x.reshape(x.shape[0], -1)))
        return nn.Dense(self.num_classes, name="head")(x)


class NnxTinyMLP(nnx.Module):
    def __init__(self, widths=(16,), num_classes=10, image=(28, 28, 1), *, rngs):
        self.init_args = (("widths", tuple(widths)), ("num_classes", num_classes),
                          ("image", tuple(image)))
        size = image[0] * image[1] * image[2]
        self.dense_0 = nnx.Linear(size, widths[0], rngs=rngs)
        self.head = nnx.Linear(widths[0], num_classes, rngs=rngs)

    def __call__(self, x, train=False):
        return self.head(nnx.relu(self.dense_0(x.reshape(x.shape[0], -1))))


RECIPE = {"optimizer": "adam", "learning_rate": 3e-3, "epochs": 1, "batch_size": 32}


@pytest.fixture
def tiny():
    entry = M.register_model("tiny_mlp", TinyMLP, (28, 28, 1), recipe=RECIPE, nnx=NnxTinyMLP)
    yield entry
    M.unregister_model("tiny_mlp")


def test_one_call_registers_every_table(tiny):
    assert M.MODELS["tiny_mlp"] is TinyMLP
    assert M.NNX_MODELS["tiny_mlp_nnx"] == (NnxTinyMLP, "tiny_mlp")
    assert {"tiny_mlp", "tiny_mlp_nnx"} <= set(M.model_names())
    assert M.default_input_shape("tiny_mlp_nnx") == (28, 28, 1)
    assert M.linen_twin("tiny_mlp_nnx") == "tiny_mlp"
    for name in ("tiny_mlp", "tiny_mlp_nnx"):
        cfg = train.default_config(name, epochs=3)
        assert (cfg.learning_rate, cfg.batch_size, cfg.epochs) == (3e-3, 32, 3)
    model = M.get_model("tiny_mlp", widths=[8])
    assert model == TinyMLP(widths=(8,))
    assert M.model_from_config(M.model_config(model)) == model
    twin = M.get_model("tiny_mlp_nnx")
    assert isinstance(twin, NnxTinyMLP) and M.model_config(twin)["name"] == "tiny_mlp_nnx"


def test_unregister_removes_the_model_and_its_twin():
    M.register_model("gone", TinyMLP, (28, 28, 1), nnx=NnxTinyMLP)
    M.unregister_model("gone")
    assert "gone" not in M.model_names() and "gone_nnx" not in M.model_names()
    with pytest.raises(ValueError, match="unknown model 'gone'"):
        M.get_model("gone")
    with pytest.raises(TypeError, match="not a registered"):
        M.model_config(TinyMLP())


def test_builtin_models_keep_their_names_and_recipes():
    assert M.model_names()[:8] == ("lenet300", "lenet5", "vgg16", "vgg19", "resnet20",
                                   "resnet56", "resnet50", "vit")
    assert M.model_config(M.get_model("vgg19"))["name"] == "vgg19"
    assert M.model_config(M.get_model("resnet20"))["name"] == "resnet20"
    assert train.default_config("lenet5_nnx") == train.default_config("lenet5")
    assert train.default_config("vit") == train.TrainConfig()
    assert train.default_config("resnet50").label_smoothing == 0.1


@pytest.mark.parametrize("args, kwargs, needle", [
    (("lenet300", TinyMLP, (28, 28, 1)), {}, "already registered"),
    (("x", TinyMLP, (28, 28, 1)), {"nnx": NnxTinyMLP, "recipe": [1]}, "mapping"),
    (("x", TinyMLP, (0, 28)), {}, "positive ints"),
    (("x", TinyMLP, 28), {}, "positive ints"),
    (("x", "TinyMLP", (28, 28, 1)), {}, "callable"),
    (("", TinyMLP, (28, 28, 1)), {}, "non-empty"),
])
def test_bad_registrations_are_one_clear_error(args, kwargs, needle):
    before = M.model_names()
    with pytest.raises(ValueError, match=needle):
        M.register_model(*args, **kwargs)
    assert M.model_names() == before


def test_a_recipe_field_that_is_not_a_train_config_field_is_named():
    M.register_model("typo", TinyMLP, (28, 28, 1), recipe={"epoch": 2})
    try:
        with pytest.raises(ValueError, match="'epoch'.*'typo'"):
            train.default_config("typo")
    finally:
        M.unregister_model("typo")


def test_the_register_model_docstring_example_runs():
    runner = doctest.DocTestRunner()
    for test in doctest.DocTestFinder().find(M.register_model, "register_model"):
        runner.run(test)
    assert runner.tries > 0 and runner.failures == 0
    assert "tiny" not in M.model_names()


@pytest.mark.slow
def test_a_registered_model_trains_from_the_command_line(tiny, tmp_path, capsys, data_dir):
    out = tmp_path / "run"
    rc = cli.main(["train", "--model", "tiny_mlp", "--dataset", "mnist", "--out", str(out),
                   "--data-dir", str(data_dir), "--limit-train", "256", "--limit-test", "64",
                   "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    config = json.loads((out / "config.json").read_text())
    assert {k: config["train_config"][k] for k in RECIPE} == RECIPE
    results = json.loads((out / "results.json").read_text())
    assert results["params"] == 784 * 16 + 16 + 16 * 10 + 10 and results["test_n"] == 64
    model, _, _ = checkpoint.load_model(out)
    assert model == TinyMLP()
