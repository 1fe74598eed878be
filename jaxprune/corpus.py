"""Byte-level text corpora: fixed-length windows of bytes, read lazily from a memory map.

A text corpus is a folder ``<root>/<name>/`` (``<root>`` is ``data_dir`` or
``$JAXPRUNE_DATA_DIR``; the dataset's name is the folder's name) that holds the three gzipped
splits ``train.txt.gz``, ``valid.txt.gz`` and ``test.txt.gz`` (any bytes, 0..255; a
``SHA256SUMS`` file beside them is checked as for IDX files). :func:`jaxprune.data.load`
reads one as an :class:`~jaxprune.data.ArrayDataset` of next-byte prediction examples:

* the split is decompressed once into the user cache folder
  (``$XDG_CACHE_HOME/jaxprune/text/<split>.txt-<SHA-256 of the archive>``, at most
  :data:`MAX_SPLIT_BYTES`, written under a temporary name and renamed into place, nothing
  left behind on an error) and memory-mapped as ``uint8``;
* example ``i`` is the non-overlapping window ``i`` of ``L = seq_len`` bytes (default
  :data:`DEFAULT_SEQ_LEN` = 256): ``images[i]`` = bytes ``[i*L, i*L + L)`` and
  ``labels[i]`` = bytes ``[i*L + 1, i*L + L + 1)`` (the next byte of each position), both
  ``int32`` of shape ``(L,)``; a split of ``n`` bytes has ``N = (n - 1) // L`` windows (the
  tail that does not fill one is dropped); ``num_classes`` is 256;
* ``images`` and ``labels`` are :class:`ByteWindows`, array-likes over the memory map:
  ``ds.images[rows]`` copies out only those windows, ``ds.subset(rows)`` / ``take`` stay
  lazy, so a process that feeds its rows of every global batch
  (``data.batches(..., shard=(index, count))``, as ``fit`` does) or one contiguous block
  (:func:`shard`) touches only those pages of the file. Decompressing is the one step that
  reads a whole split (once per machine and archive: later loads map the cached file).

Splits are ``'train'``, ``'valid'`` (alias ``'validation'``) and ``'test'``; the evaluation
split (:func:`jaxprune.data.evaluation_split`) is ``'test'``. :func:`jaxprune.data.fingerprint`
of a text dataset hashes the archive's SHA-256, ``seq_len`` and the rows, never the bytes.

Example (a corpus built on the spot; ``data.load('pystdlib', 'valid', '/path/to/data')``
reads a real one)::

    >>> import gzip, pathlib, tempfile
    >>> import numpy as np
    >>> from jaxprune import corpus, data
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> (root / "tiny").mkdir()
    >>> for split in ("train", "valid", "test"):
    ...     _ = (root / "tiny" / f"{split}.txt.gz").write_bytes(
    ...         gzip.compress(b"hello, bytes! " * 10))
    >>> ds = data.load("tiny", "train", root, seq_len=8)
    >>> ds.name, ds.num_classes, len(ds), ds.images.shape, ds.images.dtype
    ('tiny', 256, 17, (17, 8), dtype('int32'))
    >>> bytes(np.asarray(ds.images[0], np.uint8)), bytes(np.asarray(ds.labels[0], np.uint8))
    (b'hello, b', b'ello, by')
    >>> x, y = next(data.batches(ds, 4, seed=0))
    >>> x.shape, y.shape
    ((4, 8), (4, 8))
    >>> [len(corpus.shard(ds, i, 3)) for i in range(3)]
    [5, 6, 6]
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import pathlib
import tempfile
import zlib
from collections.abc import Mapping
from typing import Any

import numpy as np

from jaxprune.cache import user_cache_dir

__all__ = [
    "ByteWindows",
    "DEFAULT_SEQ_LEN",
    "MAX_SPLIT_BYTES",
    "SPLIT_FILES",
    "NUM_BYTES",
    "is_text_corpus",
    "split_file",
    "unpack",
    "read_split",
    "shard",
    "fingerprint",
]

#: Bytes per example when ``seq_len`` is not given.
DEFAULT_SEQ_LEN = 256
#: Classes of a byte-level corpus (byte values 0..255).
NUM_BYTES = 256
#: A split that decompresses to more bytes than this is refused (a gzip bomb would otherwise
#: fill the cache folder's disk).
MAX_SPLIT_BYTES = 1 << 34
#: The file each split is read from, in the corpus folder.
SPLIT_FILES = {"train": "train.txt.gz", "valid": "valid.txt.gz", "test": "test.txt.gz"}
_ALIASES = {"validation": "valid"}
_MUST_HOLD = ", ".join(SPLIT_FILES.values())


def is_text_corpus(folder: str | os.PathLike) -> bool:
    """True when ``folder`` holds at least one of the split files ``*.txt.gz`` of
    :data:`SPLIT_FILES` (a folder of IDX files or a TFDS folder holds none)."""
    folder = pathlib.Path(folder)
    return folder.is_dir() and any((folder / f).is_file() for f in SPLIT_FILES.values())


def split_file(folder: str | os.PathLike, split: str) -> pathlib.Path:
    """The archive of ``split`` (``'train'``, ``'valid'``/``'validation'``, ``'test'``) in
    the corpus ``folder``; a folder that lacks any of the three split files, or an unknown
    split, is a one-line ``ValueError``."""
    folder = pathlib.Path(folder)
    key = _ALIASES.get(split, split)
    if key not in SPLIT_FILES:
        raise ValueError(
            f"text corpus {folder.name!r} has splits 'train', 'valid' "
            f"('validation') and 'test', got {split!r}"
        )
    missing = [f for f in SPLIT_FILES.values() if not (folder / f).is_file()]
    if missing:
        what = "is not a directory" if not folder.is_dir() else f"lacks {', '.join(missing)}"
        raise ValueError(
            f"{folder} {what}: a text corpus folder must hold {_MUST_HOLD} "
            "(gzipped text, any bytes)"
        )
    return folder / SPLIT_FILES[key]


def _sha256(path: pathlib.Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _gunzip(path: pathlib.Path, sink, max_bytes: int) -> None:
    """Decompress ``path`` into ``sink(bytes)``, refusing more than ``max_bytes``."""
    written = 0
    with gzip.open(path, "rb") as src:
        while True:
            try:
                block = src.read(min(1 << 22, max_bytes + 1 - written))
            except (EOFError, OSError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
                raise ValueError(
                    f"{path}: not gzip, or corrupt or truncated gzip data "
                    f"({type(e).__name__}: {e}); replace it"
                ) from None
            if not block:
                return
            written += len(block)
            if written > max_bytes:
                raise ValueError(
                    f"{path}: decompresses to more than {max_bytes} bytes "
                    "(the limit for one split); refusing it"
                )
            sink(block)


def unpack(
    path: str | os.PathLike, expected_sha256: str | None = None, *, max_bytes: int = MAX_SPLIT_BYTES
) -> tuple[pathlib.Path, str]:
    """``(decompressed copy, SHA-256 of the archive)`` of the gzipped ``path``.

    The copy lies in ``$XDG_CACHE_HOME/jaxprune/text/``, keyed on the archive's SHA-256, and
    is written once: streamed (at most ``max_bytes``) into a file private to this call,
    then renamed into place, so processes (or threads) that unpack at the same time never see
    a partial file; nothing is left behind on an error. A digest that differs from
    ``expected_sha256``, a file that is not gzip, a truncated or corrupt stream, or more than
    ``max_bytes`` of text is a one-line ``ValueError``.
    """
    path = pathlib.Path(path)
    digest = _sha256(path)
    if expected_sha256 is not None and digest != expected_sha256.lower():
        raise ValueError(
            f"{path}: SHA256 mismatch (got {digest}, SHA256SUMS says "
            f"{expected_sha256.lower()}); the file is corrupt, replace it"
        )
    target = pathlib.Path(user_cache_dir("text")) / f"{path.stem}-{digest[:32]}"
    if target.is_file():
        return target, digest
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=f"{target.name}.", suffix=".partial")
    partial = pathlib.Path(name)
    try:
        with os.fdopen(fd, "wb") as dst:
            _gunzip(path, dst.write, max_bytes)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return target, digest


class ByteWindows:
    """Fixed-length byte windows of a memory-mapped split, as an ``int32 (N, seq_len)``
    array-like read on demand.

    Window ``i`` (of the whole split) holds bytes ``[i*L + offset, i*L + offset + L)`` of
    ``source`` (``offset`` 0: model inputs, 1: next-byte labels). ``shape``, ``dtype``,
    ``len`` and NumPy indexing (an int, a slice, an index or boolean array, a tuple) behave
    as on the array and copy out only the windows asked for; :meth:`take` selects rows
    without reading anything; ``np.asarray`` reads everything. ``source`` is the split's
    ``uint8`` ``np.memmap``; ``sha256`` the archive's digest (for :func:`fingerprint`).
    """

    def __init__(
        self,
        source: np.ndarray,
        seq_len: int,
        offset: int = 0,
        rows: np.ndarray | None = None,
        sha256: str = "",
    ):
        if seq_len < 1:
            raise ValueError(f"seq_len must be >= 1, got {seq_len}")
        self.source, self.seq_len, self.offset, self.sha256 = source, int(seq_len), offset, sha256
        self.total = max(0, (len(source) - 1) // self.seq_len)
        span = self.total * self.seq_len
        # a view of the map (nothing is read until indexed), one row per window
        self._windows = np.asarray(source[offset : offset + span]).reshape(self.total, self.seq_len)
        self._rows = None if rows is None else np.asarray(rows, np.int64)
        n = self.total if self._rows is None else len(self._rows)
        self.shape, self.dtype, self.ndim = (n, self.seq_len), np.dtype(np.int32), 2

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return (
            f"ByteWindows(shape={self.shape}, seq_len={self.seq_len}, "
            f"offset={self.offset}, {self.total} windows in the split)"
        )

    def __getitem__(self, idx):
        if isinstance(idx, tuple):
            if not idx:
                return self[:]
            first = self[idx[0]]
            rest = idx[1:] if np.ndim(first) == 1 else (slice(None),) + idx[1:]
            return first[rest]
        rows = idx if self._rows is None else self._rows[idx]
        return np.asarray(self._windows[rows], dtype=np.int32)

    def take(self, rows: Any) -> ByteWindows:
        """The windows at ``rows`` (a 1-D index array, as in ``ArrayDataset.subset``),
        still read on demand."""
        mine = np.arange(self.total) if self._rows is None else self._rows
        sel = mine[np.asarray(rows)]
        if sel.ndim != 1:
            raise ValueError(f"take needs a 1-D array of rows, got shape {sel.shape}")
        return ByteWindows(self.source, self.seq_len, self.offset, sel, self.sha256)

    def __array__(self, dtype=None, copy=None):
        out = self[:]
        return out if dtype is None else out.astype(dtype)

    def identity(self) -> dict:
        """What determines these windows' contents without reading them."""
        return {
            "sha256": self.sha256,
            "seq_len": self.seq_len,
            "offset": self.offset,
            "bytes": len(self.source),
        }

    def rows(self) -> np.ndarray | None:
        """The split's windows these rows are (``None``: all of them, in order)."""
        return None if self._rows is None else self._rows.copy()


def _open(flat: pathlib.Path) -> np.ndarray:
    size = flat.stat().st_size
    return np.memmap(flat, dtype=np.uint8, mode="r") if size else np.zeros(0, np.uint8)


def read_split(
    folder: str | os.PathLike,
    split: str,
    seq_len: int = DEFAULT_SEQ_LEN,
    *,
    checksums: Mapping[str, str] | None = None,
    max_bytes: int = MAX_SPLIT_BYTES,
) -> tuple[ByteWindows, ByteWindows]:
    """``(inputs, labels)`` :class:`ByteWindows` of ``split`` of the corpus ``folder``:
    windows of ``seq_len`` bytes and the same windows shifted by one byte. ``checksums``:
    ``{file name: SHA-256}`` (a ``SHA256SUMS`` file's lines) to check the archive against.
    Errors (one-line ``ValueError``): ``seq_len < 1``, a folder without the three split
    files, an unknown split, a bad archive (see :func:`unpack`), a split too short for one
    window."""
    if isinstance(seq_len, bool) or not isinstance(seq_len, (int, np.integer)) or seq_len < 1:
        raise ValueError(f"seq_len must be an int >= 1, got {seq_len!r}")
    path = split_file(folder, split)
    flat, digest = unpack(path, (checksums or {}).get(path.name), max_bytes=max_bytes)
    source = _open(flat)
    if len(source) < seq_len + 1:
        raise ValueError(
            f"{path}: {len(source)} bytes, too few for one window of "
            f"seq_len={seq_len} (needs seq_len + 1 = {seq_len + 1})"
        )
    return (
        ByteWindows(source, seq_len, 0, sha256=digest),
        ByteWindows(source, seq_len, 1, sha256=digest),
    )


def shard(ds, process_index: int, process_count: int, *, equal: bool = False):
    """The contiguous block ``[index*N/count, (index+1)*N/count)`` of the ``N`` examples of
    ``ds`` (an ``ArrayDataset``; lazy data stays lazy): the blocks of ``count`` processes are
    disjoint and cover ``ds``, and sizes differ by at most one; ``equal=True`` cuts every
    block to ``N // count`` (processes that step in lockstep). For a training loop,
    ``data.batches(..., shard=(index, count))`` (what ``fit`` uses) is the other way: every
    process reads its rows of each shuffled global batch."""
    index, count = int(process_index), int(process_count)
    if count < 1 or not 0 <= index < count:
        raise ValueError(
            f"shard needs 0 <= process_index < process_count, got "
            f"({process_index}, {process_count})"
        )
    n = len(ds)
    start, stop = index * n // count, (index + 1) * n // count
    if equal:
        stop = start + n // count
    return ds.subset(np.arange(start, stop))


def _describe(arr, digest) -> None:
    if isinstance(arr, ByteWindows):
        digest.update(json.dumps(arr.identity(), sort_keys=True).encode())
        rows = arr.rows()
        digest.update(b"all" if rows is None else b"rows" + rows.astype("<i8").tobytes())
    else:
        arr = np.ascontiguousarray(arr)
        digest.update(f"{arr.dtype.str}{arr.shape}".encode() + arr.tobytes())


def fingerprint(images, labels) -> str:
    """SHA-256 of a text dataset's identity: per array the archive's SHA-256, ``seq_len``,
    offset and selected rows (the corpus bytes are not read)."""
    digest = hashlib.sha256(b"jaxprune.corpus/1")
    _describe(images, digest)
    _describe(labels, digest)
    return digest.hexdigest()
