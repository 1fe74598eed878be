"""The examples in jaxprune's docstrings run as written (``>>>`` lines, checked by
:mod:`doctest`), one test per docstring, over every module of the package.

A docstring example is documentation first: small (a LeNet at most, a few arrays), seconds at
most, deterministic, with no files outside a temporary directory. The examples of the main
public functions are what the API reference shows.
"""

import doctest
import importlib
import pkgutil

import pytest

import jaxprune

FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def _examples() -> list[doctest.DocTest]:
    """Every docstring with an example, in every module of jaxprune (private ones too: the
    public names re-exported from them keep their docstrings there), each found once."""
    finder = doctest.DocTestFinder(exclude_empty=True)
    modules = ["jaxprune"] + [m.name for m in pkgutil.walk_packages(jaxprune.__path__, "jaxprune.")]
    tests, seen = [], set()
    for name in sorted(modules):
        if name.endswith("__main__"):
            continue
        module = importlib.import_module(name)
        for test in finder.find(module):
            if test.examples and test.name not in seen:
                seen.add(test.name)
                tests.append(test)
    return tests


EXAMPLES = _examples()
# examples that trace a whole model more than once (seconds each): outside the unit tier
SLOW = {"jaxprune.hidden", "jaxprune.depth"}


def test_there_are_enough_examples():
    assert len(EXAMPLES) >= 15, [t.name for t in EXAMPLES]


@pytest.mark.parametrize(
    "test",
    [pytest.param(t, marks=pytest.mark.slow) if t.name in SLOW else t for t in EXAMPLES],
    ids=[t.name for t in EXAMPLES],
)
def test_docstring_example(test):
    report: list[str] = []
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    test.globs = dict(test.globs)  # each run starts from the module's namespace
    runner.run(test, out=report.append)
    assert runner.failures == 0, "".join(report)
