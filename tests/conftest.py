"""Shared test set-up.

Four simulated CPU devices are configured *before* JAX is imported so the data-parallel
tests can check device-count invariance in-process; single-device code is unaffected.
Real MNIST is read from ``../shared/data`` unless ``JAXPRUNE_DATA_DIR`` says otherwise; the
persistent compilation cache is off unless ``JAXPRUNE_CACHE_DIR`` names a folder.
"""
import os
import pathlib

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
_REPO = pathlib.Path(__file__).resolve().parents[1]
os.environ.setdefault("JAXPRUNE_DATA_DIR", str(_REPO.parent / "shared" / "data"))
# hermetic by default: no persistent compilation cache shared between test runs
os.environ.setdefault("JAXPRUNE_CACHE_DIR", "off")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def data_dir() -> pathlib.Path:
    """Directory holding ``mnist/`` IDX files; skips nothing — a missing dir fails loudly."""
    path = pathlib.Path(os.environ["JAXPRUNE_DATA_DIR"])
    if not (path / "mnist").is_dir():
        raise FileNotFoundError(
            f"real MNIST not found under {path}/mnist; set JAXPRUNE_DATA_DIR to the folder "
            "that holds mnist/ (in this workspace: ../shared/data)")
    return path
