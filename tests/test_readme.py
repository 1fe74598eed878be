"""The README's Python example runs as written (the guides' examples run when the
documentation is built: docs/guides/*.md are executed notebooks)."""
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
def test_readme_example_runs():
    scope = _run_example("## Example")
    assert scope["result"].report["frozen"]["Dense_1"] == "channel axis removed"
    assert scope["result"].widths["Dense_0"] < 256
