"""The CPU peeling kernel, traced and lowered ahead of time and shipped with the package.

A first coreset prune on the CPU is compile-bound, and tracing and lowering the peeling kernel
(:func:`jaxprune.coreset.batched.peel_map`) costs about as much as XLA's compile of it (on
ResNet-50's point sets: trace 0.5 s + lower 0.4 s against 0.8 s of compile).  So the package
ships it as ``jax.export`` modules: one per point bucket ``n`` (64, 128, …, 16384) at the
default projection's ``d = 10``, each polymorphic in the batch ``b``.  Loading one takes
about 30 ms; XLA still compiles it at first use, with the traced kernel's options, so it
computes bit for bit what the traced kernel computes (``tests/test_shipped_kernel.py``).

A shipped module is used only when it is exactly what tracing would give now: the same jax and
jaxlib versions as when it was written and the same geometry source (a SHA-256 of every module
in ``jaxprune/coreset`` and ``jaxprune/geometry`` but this one).  Otherwise the kernel is
traced as before.  After changing the geometry, rewrite the modules (a test fails until then):

    python -c "from jaxprune.coreset import shipped_kernels; shipped_kernels.write()"
"""

from __future__ import annotations

import functools
import hashlib
import json
import threading
import zlib
from collections.abc import Callable
from pathlib import Path

import jax
import jaxlib.version
import numpy as np

from jaxprune.coreset.batched import peel_map
from jaxprune.geometry import CHEAP_CPU_OPTIONS

DIRECTORY = Path(__file__).parent / "shipped"
"""Where the modules and their ``manifest.json`` live (package data)."""
POINT_BUCKETS = tuple(1 << k for k in range(6, 15))
"""The point-count buckets shipped: 64, 128, …, 16384 (the coreset method's buckets)."""
DIMS = (10,)
"""The point dimensions shipped: the coreset method's default ``projection_dim``."""
_PACKAGE = Path(__file__).parent.parent


def source_hash() -> str:
    """SHA-256 of the geometry's source: every ``.py`` of ``jaxprune/coreset`` and
    ``jaxprune/geometry`` except this module, by relative path."""
    digest = hashlib.sha256()
    for sub in ("coreset", "geometry"):
        for path in sorted((_PACKAGE / sub).glob("*.py")):
            if path.name != Path(__file__).name:
                digest.update(f"{sub}/{path.name}\0".encode())
                digest.update(path.read_bytes())
    return digest.hexdigest()


def stamp() -> dict:
    """What a shipped module must have been written with to be used now."""
    return {
        "jax": jax.__version__,
        "jaxlib": jaxlib.version.__version__,
        "source_sha256": source_hash(),
    }


def file_name(n: int, d: int) -> str:
    """The shipped module's file name for (``n``, ``d``) point sets."""
    return f"peel_map_n{n}_d{d}.jaxexport.z"


@functools.cache
def is_current(directory: Path = DIRECTORY) -> bool:
    """Whether the modules in ``directory`` were written with this :func:`stamp`."""
    try:
        manifest = json.loads((directory / "manifest.json").read_text())
    except (OSError, ValueError):
        return False
    return {k: manifest.get(k) for k in ("jax", "jaxlib", "source_sha256")} == stamp()


def kernel(n: int, d: int, directory: Path = DIRECTORY) -> Callable | None:
    """The shipped :func:`~jaxprune.coreset.batched.peel_map` for (b, ``n``, ``d``) float64
    point sets, jitted with :data:`~jaxprune.geometry.CHEAP_CPU_OPTIONS`; None when there is
    none for this shape or it is not current (module doc).  One jitted function per shape
    and process, also when threads ask at once (the coreset method compiles it on a thread),
    so it compiles once.

    >>> kernel(100, 10) is None   # only power-of-two point buckets are shipped
    True
    """
    with _LOCK:
        return _load(n, d, directory)


_LOCK = threading.Lock()


@functools.cache
def _load(n: int, d: int, directory: Path) -> Callable | None:
    blob = shipped_bytes(n, d, directory) if is_current(directory) else None
    if blob is None:
        return None
    try:
        exported = jax.export.deserialize(bytearray(blob))
    except ImportError:  # jax reads the modules with the flatbuffers package
        return None
    return jax.jit(exported.call, compiler_options=CHEAP_CPU_OPTIONS)


def serialized(n: int, d: int) -> bytes:
    """:func:`~jaxprune.coreset.batched.peel_map` on (b, ``n``, ``d``) float64 point sets as a
    serialized ``jax.export`` module, without source locations (so the bytes depend only on
    the code and the jax version, not on where the package lives)."""
    (b,) = jax.export.symbolic_shape("b")
    limit = jax.config.jax_traceback_in_locations_limit  # pyright: ignore[reportAttributeAccessIssue]
    jax.config.update("jax_traceback_in_locations_limit", 0)
    try:
        with jax.enable_x64(True):
            exported = jax.export.export(jax.jit(peel_map), platforms=("cpu",))(
                jax.ShapeDtypeStruct((b, n, d), np.float64),
                jax.ShapeDtypeStruct((b, n), np.bool_),
            )
            return bytes(exported.serialize())
    finally:
        jax.config.update("jax_traceback_in_locations_limit", limit)


def shipped_bytes(n: int, d: int, directory: Path = DIRECTORY) -> bytes | None:
    """The serialized module shipped for (``n``, ``d``), or None."""
    path = directory / file_name(n, d)
    return zlib.decompress(path.read_bytes()) if path.is_file() else None


def write(directory: Path = DIRECTORY) -> list[Path]:
    """:func:`serialized` for every shipped bucket, zlib-compressed into ``directory``, with a
    ``manifest.json`` of :func:`stamp`; returns the files written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for d in DIMS:
        for n in POINT_BUCKETS:
            path = directory / file_name(n, d)
            path.write_bytes(zlib.compress(serialized(n, d), 9))
            written.append(path)
    manifest = directory / "manifest.json"
    manifest.write_text(
        json.dumps({**stamp(), "kernels": [p.name for p in written]}, indent=1) + "\n"
    )
    is_current.cache_clear()
    _load.cache_clear()
    return [*written, manifest]
