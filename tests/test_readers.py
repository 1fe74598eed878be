"""Readers bound their work and verify what they cache: a gzip bomb behind a valid IDX header
is refused after the announced size (nothing cached), the unpacked-IDX cache is keyed on the
archive's checksum, and saved arrays carry checksums verified on load."""
import gzip
import os
import pathlib
import tracemalloc
import zlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxprune import checkpoint, data, runs


def _idx(images: np.ndarray) -> bytes:
    head = bytes([0, 0, 8, images.ndim]) + b"".join(int(d).to_bytes(4, "big")
                                                     for d in images.shape)
    return head + images.tobytes()


def _bomb(path: pathlib.Path, expanded: int) -> None:
    """A valid header for 10 images of 28x28, then ``expanded`` bytes of zeros, gzipped
    without ever holding the expanded bytes in memory."""
    comp = zlib.compressobj(1, zlib.DEFLATED, 31)
    zeros = bytes(1 << 20)
    with open(path, "wb") as f:
        f.write(comp.compress(_idx(np.zeros((10, 28, 28), np.uint8))))
        for _ in range(expanded >> 20):
            f.write(comp.compress(zeros))
        f.write(comp.flush())


def test_a_gzip_bomb_is_refused_with_bounded_memory_and_nothing_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    bomb = tmp_path / "train-images-idx3-ubyte.gz"
    _bomb(bomb, 96 << 20)
    assert bomb.stat().st_size < 2 << 20
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match="trailing bytes"):
            data.read_idx(bomb, 2051)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20, peak
    with pytest.raises(ValueError, match="trailing bytes"):
        data.open_idx(bomb, 2051)
    cached = [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]
    assert cached == []


def test_the_unpacked_cache_follows_the_archive_not_its_size_and_mtime(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    path = tmp_path / "train-images-idx3-ubyte.gz"
    first = np.full((4, 28, 28), 7, np.uint8)
    second = np.full((4, 28, 28), 9, np.uint8)
    path.write_bytes(gzip.compress(_idx(first), mtime=0))
    stamp = path.stat().st_mtime_ns
    np.testing.assert_array_equal(data.open_idx(path, 2051), first)
    changed = gzip.compress(_idx(second), mtime=0)
    assert len(changed) == path.stat().st_size                  # same size ...
    path.write_bytes(changed)
    os.utime(path, ns=(stamp, stamp))                            # ... and same mtime
    np.testing.assert_array_equal(data.open_idx(path, 2051), second)


def test_a_flipped_bit_in_saved_arrays_is_refused_on_load(tmp_path):
    model = nn.Dense(64)
    checkpoint.save_model(tmp_path / "m", model,
                          model.init(jax.random.key(0), jnp.ones((1, 256))))
    checkpoint.load_model(tmp_path / "m")
    fingerprint = runs.fingerprint(tmp_path / "m")
    files = [p for p in (tmp_path / "m" / "variables").rglob("*") if p.is_file()]
    biggest = max(files, key=lambda p: p.stat().st_size)        # the kernel's chunk
    raw = bytearray(biggest.read_bytes())
    raw[len(raw) // 2] ^= 1
    biggest.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=r"do not match the checksums.*params/kernel"):
        checkpoint.load_model(tmp_path / "m")
    assert runs.fingerprint(tmp_path / "m") != fingerprint     # a resume would see it too
