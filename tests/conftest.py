"""Shared test set-up: fast by construction, hermetic per run.

- Devices: four simulated CPU devices exist in every test process (configured before JAX is
  imported), but ``fit`` and the CLI use ONE unless a test asks for more (``JAXPRUNE_DEVICES=1``;
  ``devices=N`` or ``--devices N`` overrides it). The ``devices`` fixture hands a test N devices
  and skips nothing: fewer than N is an error.
- Compilation: every program is compiled with XLA:CPU's cheap options (LLVM optimisation off,
  the classic fusion emitter; :data:`jaxprune.geometry.CHEAP_CPU_OPTIONS`), about half the
  compile time of the suite's many small programs; ``XLA_FLAGS`` naming an optimisation level
  keeps its own. Programs that pin their options (``peel_compile="optimised"``) keep them.
- Compilation cache: JAX's persistent cache is on for the whole run in one fresh directory,
  shared by the xdist workers and by every subprocess the tests start (they inherit
  ``JAXPRUNE_CACHE_DIR``), and removed when the run ends, so nothing survives it.
- Real MNIST is read from ``../shared/data`` unless ``JAXPRUNE_DATA_DIR`` says otherwise.
- Tiers: ``pytest -m "not slow"`` is the unit tier for the inner loop; ``slow`` marks tests that
  train nets, start processes or run experiment scripts.
"""
import os
import pathlib
import shutil
import tempfile

_flags = os.environ.get("XLA_FLAGS", "")
if "device_count" not in _flags:
    _flags += " --xla_force_host_platform_device_count=4"
if "optimization_level" not in _flags:  # the tests compile far more than they run
    _flags += " --xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false"
os.environ["XLA_FLAGS"] = _flags.strip()
os.environ.setdefault("JAXPRUNE_DEVICES", "1")
_REPO = pathlib.Path(__file__).resolve().parents[1]
os.environ.setdefault("JAXPRUNE_DATA_DIR", str(_REPO.parent / "shared" / "data"))
# one cache per run: the controller makes it before the xdist workers start, and the workers
# and subprocesses inherit the variable
_OWN_CACHE = "JAXPRUNE_CACHE_DIR" not in os.environ
if _OWN_CACHE:
    os.environ["JAXPRUNE_CACHE_DIR"] = tempfile.mkdtemp(prefix="jaxprune-test-xla-")

import pytest  # noqa: E402

from jaxprune.cache import enable_compilation_cache  # noqa: E402

enable_compilation_cache()


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the marks into node ids
def pytest_collection_modifyitems(config, items):
    """Scheduling by cost (``--dist loadgroup``): a test that uses a module- or class-scoped
    fixture (a trained net, a parsed script) runs on the worker of its file's other users, so
    the fixture is built once; every other test is handed to whichever worker is free."""
    for item in items:
        defs = getattr(item, "_fixtureinfo", None)
        scopes = {d[-1].scope for d in defs.name2fixturedefs.values()} if defs else set()
        if scopes & {"module", "class", "package"}:
            item.add_marker(pytest.mark.xdist_group(item.module.__name__))


def pytest_unconfigure(config):
    """The controller (not an xdist worker) removes the run's cache directory."""
    if _OWN_CACHE and not hasattr(config, "workerinput"):
        shutil.rmtree(os.environ["JAXPRUNE_CACHE_DIR"], ignore_errors=True)


@pytest.fixture(scope="session")
def data_dir() -> pathlib.Path:
    """Directory holding ``mnist/`` IDX files; skips nothing — a missing dir fails loudly."""
    path = pathlib.Path(os.environ["JAXPRUNE_DATA_DIR"])
    if not (path / "mnist").is_dir():
        raise FileNotFoundError(
            f"real MNIST not found under {path}/mnist; set JAXPRUNE_DATA_DIR to the folder "
            "that holds mnist/ (in this workspace: ../shared/data)")
    return path
