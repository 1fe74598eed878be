"""The persistent compilation cache: on by default for the CLI, off with ``off``, and a second
fresh process compiles nothing new."""
import os
import pathlib
import subprocess
import sys

import jax

import pytest

import jaxprune
from jaxprune import cache

pytestmark = pytest.mark.slow   # starts processes

REPO = pathlib.Path(__file__).resolve().parents[1]
PRUNE = """
import jax, jax.numpy as jnp, jaxprune
from jaxprune.models import LeNet300100
jaxprune.enable_compilation_cache()
m = LeNet300100(widths=(32, 16))
v = m.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))
jax.block_until_ready(jaxprune.prune(v, jax.random.key(1), 0.5, model=m).params)
"""


def test_default_directory_and_off(monkeypatch, tmp_path):
    monkeypatch.setenv("JAXPRUNE_CACHE_DIR", "off")
    assert cache.default_cache_dir() is None and jaxprune.enable_compilation_cache() is None
    monkeypatch.delenv("JAXPRUNE_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache.default_cache_dir() == str(tmp_path / "jaxprune" / "xla")


def test_a_second_fresh_process_finds_every_program_in_the_cache(tmp_path):
    env = dict(os.environ, JAXPRUNE_CACHE_DIR=str(tmp_path / "xla"), XLA_FLAGS="")

    def run():
        subprocess.run([sys.executable, "-c", PRUNE], env=env, cwd=REPO, check=True,
                       capture_output=True, timeout=300)
        return {p.name for p in (tmp_path / "xla").iterdir()}

    first = run()
    assert first, "the cold run stored no compiled program"
    assert run() == first  # the warm run compiled nothing that was not already stored
    assert jax.config.jax_compilation_cache_dir != str(tmp_path / "xla")  # this process: off
