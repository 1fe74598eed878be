"""The README's Python examples run as written."""
import pathlib
import re

import pytest

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def _run_example(heading: str) -> dict:
    """Execute the first Python block after ``heading``; its globals."""
    text = README.read_text()
    block = re.search(r"```python\n(.*?)```", text[text.index(heading):], re.S).group(1)
    scope: dict = {}
    exec(compile(block, "README.md", "exec"), scope)  # noqa: S102 - the documented example
    return scope


@pytest.mark.slow
def test_pruning_your_own_model_example_runs():
    scope = _run_example("## Pruning your own model")
    assert scope["result"].report["frozen"]["Dense_1"] == "channel axis removed"
    assert scope["result"].widths["Dense_0"] < 256


def test_nnx_example_runs():
    scope = _run_example("### Flax NNX")
    assert scope["small"].l1.out_features == scope["result"].widths["l1"] < 256


def test_vit_example_runs():
    scope = _run_example("## Transformers")
    heads = {k: v for k, v in scope["result"].widths.items() if "query" in k}
    assert heads and all(v < 4 for v in heads.values())
