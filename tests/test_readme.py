"""The README's "Pruning your own model" example runs as written."""
import pathlib
import re

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_pruning_your_own_model_example_runs():
    text = README.read_text()
    section = text[text.index("## Pruning your own model"):]
    block = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    scope: dict = {}
    exec(compile(block, "README.md", "exec"), scope)  # noqa: S102 - the documented example
    assert scope["result"].report["frozen"]["Dense_1"] == "channel axis removed"
    assert scope["result"].widths["Dense_0"] < 256


def test_nnx_example_runs():
    text = README.read_text()
    section = text[text.index("### Flax NNX"):]
    block = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    scope: dict = {}
    exec(compile(block, "README.md", "exec"), scope)  # noqa: S102 - the documented example
    assert scope["small"].l1.out_features == scope["result"].widths["l1"] < 256


def test_vit_example_runs():
    text = README.read_text()
    section = text[text.index("## Transformers"):]
    block = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    scope: dict = {}
    exec(compile(block, "README.md", "exec"), scope)  # noqa: S102 - the documented example
    heads = {k: v for k, v in scope["result"].widths.items() if "query" in k}
    assert heads and all(v < 4 for v in heads.values())
