"""Datasets as in-memory NumPy arrays, and deterministic batching/augmentation.

Sources (nothing ever downloads):

* **IDX files** for MNIST-format datasets ('mnist', 'fashion_mnist'): the four standard files
  ``{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz`` (un-gzipped names also accepted) in
  ``<root>/<name>/``, where ``<root>`` is ``data_dir`` or the ``JAXPRUNE_DATA_DIR``
  environment variable. Magic numbers (2051 images / 2049 labels), dimensions and byte
  counts are checked; if a ``SHA256SUMS`` file (``<hex>  <filename>`` lines, as written by
  ``sha256sum``) lies beside them, the files listed in it are verified too.
* **TFDS** for everything else (and for MNIST-format names when no IDX directory exists):
  ``tfds.data_source(name, split, data_dir, download=False)`` (ArrayRecord format, which
  needs no TensorFlow, only the ``[data]`` extra: ``pip install 'jaxprune[data]'``). The
  dataset must already be prepared, e.g. ``tfds build cifar10``.
  ImageNet ('imagenet2012') needs the manual TFDS preparation (the archives downloaded by
  hand into ``<tfds_dir>/downloads/manual/``); images are resized (shorter side to
  ``image_size / 0.875``) and centre-cropped to ``image_size``. Loading a whole ImageNet
  split into float32 memory is not feasible: use a sliced split such as
  ``'validation[:5000]'``.

* **Text corpora** (byte level, :mod:`jaxprune.corpus`): any folder ``<root>/<name>/`` that
  holds ``train.txt.gz``, ``valid.txt.gz`` and ``test.txt.gz`` (the name is the folder's).
  ``load(name, split, root, seq_len=256)`` gives non-overlapping windows of ``seq_len`` bytes
  as ``images`` and the same windows shifted by one byte as ``labels`` (both ``int32``
  ``(N, seq_len)``, ``N = (bytes - 1) // seq_len``, 256 classes), read lazily from a
  memory-mapped copy unpacked once into the user cache folder; splits 'train', 'valid'
  (alias 'validation') and 'test'. For example, with ``$JAXPRUNE_DATA_DIR/pystdlib/``::

      ds = load("pystdlib", "valid", seq_len=128)
      x, y = next(batches(ds, 32, seed=0))      # int32 (32, 128) bytes and next bytes
      mine = shard(ds, process_index, process_count)   # a contiguous block, still lazy

Normalisation: ``(x / 255 − mean) / std`` with the standard constants in ``NORMALIZATION``
(MNIST-like: one grey channel; CIFAR/ImageNet: per channel).
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import importlib
import os
import pathlib
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from jaxprune.cache import user_cache_dir
from jaxprune.corpus import (
    DEFAULT_SEQ_LEN,
    NUM_BYTES,
    SPLIT_FILES,
    ByteWindows,
    is_text_corpus,
    read_split,
    shard,
)
from jaxprune.corpus import fingerprint as _text_fingerprint

__all__ = [
    "ArrayDataset",
    "LazyImages",
    "NORMALIZATION",
    "NUM_CLASSES",
    "DATASETS",
    "load",
    "read_idx",
    "open_idx",
    "normalize",
    "train_val_split",
    "batches",
    "num_batches",
    "crop_flip",
    "evaluation_split",
    "head",
    "load_splits",
    "sample_images",
    "fingerprint",
    "check_finite",
    "ByteWindows",
    "DEFAULT_SEQ_LEN",
    "shard",
]

NUM_CLASSES = {
    "mnist": 10,
    "fashion_mnist": 10,
    "cifar10": 10,
    "cifar100": 100,
    "imagenet2012": 1000,
}
DATASETS = tuple(NUM_CLASSES)
IDX_DATASETS = ("mnist", "fashion_mnist")

#: (mean, std) of pixel values in [0, 1].
NORMALIZATION: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "mnist": ((0.1307,), (0.3081,)),
    "fashion_mnist": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "imagenet2012": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}

_IDX_MAGIC = {"images": 2051, "labels": 2049}
_IDX_PREFIX = {"train": "train", "test": "t10k"}
_HOWTO = {
    "mnist": "https://ossci-datasets.s3.amazonaws.com/mnist/ (mirror of "
    "http://yann.lecun.com/exdb/mnist/)",
    "fashion_mnist": "https://github.com/zalandoresearch/fashion-mnist (data/fashion/)",
}


@dataclasses.dataclass(frozen=True)
class ArrayDataset:
    """Images ``float32 (N, H, W, C)`` normalised, labels ``int32 (N,)``."""

    images: np.ndarray | LazyImages | ByteWindows
    labels: np.ndarray | ByteWindows
    num_classes: int
    name: str

    def __post_init__(self):
        if len(self.images) != len(self.labels):
            raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices: Any) -> ArrayDataset:
        idx = np.asarray(indices)
        return dataclasses.replace(
            self, images=_take(self.images, idx), labels=_take(self.labels, idx)
        )


def _take(arr, idx: np.ndarray):
    """Rows ``idx`` of ``arr``, still read on demand when ``arr`` is."""
    return arr.take(idx) if isinstance(arr, (LazyImages, ByteWindows)) else arr[idx]


class LazyImages:
    """Images read on demand: ``images[idx]`` reads and normalises only rows ``idx``.

    Stands in for the float32 ``images`` array of an :class:`ArrayDataset` made by
    ``load(..., lazy=True)``: ``shape``, ``dtype``, ``len`` and NumPy indexing (an int, a
    slice or an index array) behave as on the array, and ``np.asarray`` reads everything.
    ``read(indices) -> uint8 (k, H, W, C)`` is the source (rows of an IDX file held as uint8,
    or records of a TFDS ``data_source``).
    """

    def __init__(self, read: Callable[[np.ndarray], np.ndarray], shape: tuple, name: str):
        self._read, self.shape, self._name = read, tuple(shape), name
        self.dtype = np.dtype(np.float32)
        self.ndim = len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, idx):
        if isinstance(idx, tuple):
            return self[idx[0]][(slice(None),) + idx[1:]]
        if isinstance(idx, (int, np.integer)):
            return self[np.asarray([idx])][0]
        rows = np.arange(len(self))[idx]
        return normalize(self._read(rows), self._name)

    def take(self, rows) -> LazyImages:
        """The images at ``rows``, still read on demand."""
        rows = np.arange(len(self))[np.asarray(rows)]
        return LazyImages(
            lambda idx: self._read(rows[idx]), (len(rows),) + self.shape[1:], self._name
        )

    def __array__(self, dtype=None, copy=None):
        out = self[:]
        return out if dtype is None else out.astype(dtype)


# --------------------------------------------------------------------------------- IDX files


def _how_to_get(name: str, root: Any) -> str:
    src = _HOWTO.get(name, "the dataset's home page")
    return (
        f"Get the four IDX files (train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
        f"t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz) from {src}, put them in "
        f"{root}/{name}/ and pass data_dir= (or set JAXPRUNE_DATA_DIR) to the folder that "
        f"holds {name}/; or prepare it for TFDS once with `tfds build {name}`."
    )


def _idx_header(
    path: pathlib.Path, head: bytes, expected_magic: int | None
) -> tuple[int, tuple[int, ...], int]:
    """``(header bytes, dims, file size)`` an unsigned-byte IDX file whose first bytes are
    ``head`` announces; a wrong magic number or a cut header is a ``ValueError``."""
    if len(head) < 4:
        raise ValueError(f"{path}: too short for an IDX header ({len(head)} bytes)")
    magic = int.from_bytes(head[:4], "big")
    if expected_magic is not None and magic != expected_magic:
        raise ValueError(
            f"{path}: bad IDX magic number {magic} (expected {expected_magic}); "
            "not the right IDX file or corrupt"
        )
    if head[0] != 0 or head[1] != 0 or head[2] != 0x08:
        raise ValueError(
            f"{path}: bad IDX magic number {magic}: only unsigned-byte IDX "
            "files (0x0008xx) are supported"
        )
    ndim = head[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(head) < header:
        raise ValueError(f"{path}: truncated IDX header ({ndim} dims, {len(head)} bytes)")
    dims = tuple(int.from_bytes(head[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return header, dims, header + int(np.prod(dims, dtype=np.int64))


def _idx_layout(
    path: pathlib.Path, head: bytes, size: int, expected_magic: int | None
) -> tuple[int, tuple[int, ...]]:
    """``(header bytes, dims)`` of an unsigned-byte IDX file of ``size`` bytes whose first
    bytes are ``head``; a wrong magic number, header or byte count is a ``ValueError``."""
    header, dims, expected = _idx_header(path, head[:size], expected_magic)
    if size != expected:
        kind = "truncated" if size < expected else "has trailing bytes"
        raise ValueError(
            f"{path}: file {kind}: {size} bytes but header {dims} needs {expected}; re-download it"
        )
    return header, dims


def _is_gzip(path: pathlib.Path) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == b"\x1f\x8b"


def _bad_gzip(path, err) -> ValueError:
    return ValueError(f"{path}: corrupt or truncated gzip data ({err}); re-download it")


def _read_up_to(stream, n: int) -> bytes:
    parts, left = [], n
    while left > 0:
        block = stream.read(left)
        if not block:
            break
        parts.append(block)
        left -= len(block)
    return b"".join(parts)


def _gunzip_idx(path: pathlib.Path, expected_magic: int | None, sink) -> tuple[int, tuple]:
    """Decompress the gzipped IDX file ``path`` into ``sink(bytes)``, checking its header
    first and never producing more than the size the header announces (a small archive that
    would expand to gigabytes is refused after one byte too many). ``(header, dims)``."""
    try:
        with gzip.open(path, "rb") as src:
            head = _read_up_to(src, 4)
            head += _read_up_to(src, 4 * head[3]) if len(head) == 4 else b""
            header, dims, expected = _idx_header(path, head, expected_magic)
            sink(head)
            left = expected - len(head)
            while left > 0:
                block = src.read(min(left, 1 << 22))
                if not block:
                    raise ValueError(
                        f"{path}: file truncated: {expected - left} bytes but "
                        f"header {dims} needs {expected}; re-download it"
                    )
                sink(block)
                left -= len(block)
            if src.read(1):
                raise ValueError(
                    f"{path}: file has trailing bytes: more than the {expected} "
                    f"bytes header {dims} needs; re-download it"
                )
    except (EOFError, OSError, gzip.BadGzipFile) as e:
        raise _bad_gzip(path, e) from None
    return header, dims


def read_idx(path: str | os.PathLike, expected_magic: int | None = None) -> np.ndarray:
    """Read one (optionally gzipped) unsigned-byte IDX file into a ``uint8`` array.

    Raises ``FileNotFoundError`` if missing, ``ValueError`` if the magic number, the header
    or the byte count is wrong (truncated or corrupt file); a gzipped file is decompressed
    only up to the size its header announces.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"IDX file not found: {path}")
    if _is_gzip(path):
        raw = bytearray()
        header, dims = _gunzip_idx(path, expected_magic, raw.extend)
        return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)
    raw = path.read_bytes()
    header, dims = _idx_layout(path, raw[: 4 + 4 * 255], len(raw), expected_magic)
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _sha256(path: pathlib.Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _unpacked(path: pathlib.Path, expected_magic: int | None = None) -> pathlib.Path:
    """The decompressed copy of the gzipped ``path`` in the user cache folder
    (``$XDG_CACHE_HOME/jaxprune/idx``), keyed on the archive's SHA-256 and written once
    (streamed up to the size its header announces, then renamed into place, so processes that
    unpack at the same time do not see each other's partial files; nothing is left on an
    error)."""
    target = pathlib.Path(user_cache_dir("idx")) / f"{path.stem}-{_sha256(path)[:32]}"
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f"{target.name}.{os.getpid()}.partial")
    try:
        with open(partial, "wb") as dst:
            _gunzip_idx(path, expected_magic, dst.write)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return target


def open_idx(path: str | os.PathLike, expected_magic: int | None = None) -> np.ndarray:
    """An unsigned-byte IDX file as a read-only ``np.memmap``: only the rows indexed are read
    from disk. A gzipped file is first unpacked once into the user cache folder. Errors as
    :func:`read_idx`."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"IDX file not found: {path}")
    flat = _unpacked(path, expected_magic) if _is_gzip(path) else path
    with open(flat, "rb") as f:
        head = f.read(4 + 4 * 255)
    header, dims = _idx_layout(path, head, flat.stat().st_size, expected_magic)
    return np.memmap(flat, dtype=np.uint8, mode="r", offset=header, shape=dims)


def _read_sha256sums(folder: pathlib.Path) -> dict[str, str]:
    sums = folder / "SHA256SUMS"
    out: dict[str, str] = {}
    if sums.is_file():
        for line in sums.read_text().splitlines():
            parts = line.strip().split(None, 1)
            if len(parts) == 2:
                out[parts[1].lstrip("*").strip()] = parts[0].lower()
    return out


def _find_idx(folder: pathlib.Path, stem: str, name: str, root: Any) -> pathlib.Path:
    for cand in (folder / f"{stem}.gz", folder / stem):
        if cand.is_file():
            return cand
    raise FileNotFoundError(
        f"missing IDX file {folder / (stem + '.gz')}. " + _how_to_get(name, root)
    )


def _load_idx(name: str, split: str, root: pathlib.Path, verify: bool, lazy: bool) -> ArrayDataset:
    if split not in _IDX_PREFIX:
        raise ValueError(f"IDX datasets have splits 'train' and 'test', got {split!r}")
    folder = root / name
    if not folder.is_dir():
        raise FileNotFoundError(f"no directory {folder}. " + _how_to_get(name, root))
    prefix = _IDX_PREFIX[split]
    sums = _read_sha256sums(folder) if verify else {}
    arrays = {}
    for kind, stem in (
        ("images", f"{prefix}-images-idx3-ubyte"),
        ("labels", f"{prefix}-labels-idx1-ubyte"),
    ):
        path = _find_idx(folder, stem, name, root)
        if path.name in sums:
            with open(path, "rb") as f:
                digest = hashlib.file_digest(f, "sha256").hexdigest()
            if digest != sums[path.name]:
                raise ValueError(
                    f"{path}: SHA256 mismatch (got {digest}, SHA256SUMS says "
                    f"{sums[path.name]}); the file is corrupt. " + _how_to_get(name, root)
                )
        try:
            reader = open_idx if lazy and kind == "images" else read_idx
            arrays[kind] = reader(path, _IDX_MAGIC[kind])
        except ValueError as e:
            raise ValueError(f"{e}. " + _how_to_get(name, root)) from None
    images, labels = arrays["images"], arrays["labels"]
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise ValueError(
            f"{folder}: inconsistent IDX shapes images {images.shape}, labels "
            f"{labels.shape}. " + _how_to_get(name, root)
        )
    if labels.size and labels.max() >= NUM_CLASSES[name]:
        raise ValueError(f"{folder}: label {labels.max()} out of range for {name}")
    if lazy:  # memory-mapped uint8 rows, read and normalised when indexed
        pixels = images
        images = LazyImages(
            lambda rows: np.asarray(pixels[rows])[..., None], (*pixels.shape, 1), name
        )
    else:
        images = normalize(images[..., None], name)
    return ArrayDataset(images, labels.astype(np.int32), NUM_CLASSES[name], name)


# ------------------------------------------------------------------------------ text corpora


def _load_text(
    name: str, split: str, folder: pathlib.Path, verify: bool, seq_len: int
) -> ArrayDataset:
    sums = _read_sha256sums(folder) if verify else {}
    inputs, labels = read_split(folder, split, seq_len, checksums=sums)
    return ArrayDataset(inputs, labels, NUM_BYTES, name)


def _plain_name(name: str) -> bool:
    """``name`` is one folder name (no separator, not '.' or '..')."""
    return name not in ("", ".", "..") and not any(sep in name for sep in "/\\")


# ------------------------------------------------------------------------------------- TFDS


def _optional(module: str, purpose: str):
    """Import ``module`` of the ``[data]`` extra, or say in one line how to install it."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name != module.split(".")[0]:
            raise
        raise ModuleNotFoundError(
            f"{purpose} needs {e.name}: pip install 'jaxprune[data]'", name=e.name
        ) from None


def _resize_center_crop(img: np.ndarray, size: int) -> np.ndarray:
    Image = _optional("PIL.Image", "resizing ImageNet images")

    if img.ndim == 2:
        img = img[..., None]
    if img.shape[-1] == 1:
        img = np.repeat(img, 3, axis=-1)
    h, w = img.shape[:2]
    short = int(round(size / 0.875))
    scale = short / min(h, w)
    nh, nw = max(size, int(round(h * scale))), max(size, int(round(w * scale)))
    im = Image.fromarray(np.ascontiguousarray(img[..., :3])).resize((nw, nh), Image.BILINEAR)
    arr = np.asarray(im)
    top, left = (nh - size) // 2, (nw - size) // 2
    return arr[top : top + size, left : left + size]


def _load_tfds(name: str, split: str, data_dir: Any, image_size: int, lazy: bool) -> ArrayDataset:
    try:
        tfds = _optional("tensorflow_datasets", f"loading {name!r} through TFDS")
    except ModuleNotFoundError as e:
        if name not in IDX_DATASETS:
            raise
        idx = _how_to_get(name, data_dir or "$JAXPRUNE_DATA_DIR")
        raise ModuleNotFoundError(f"{e} (or read its IDX files: {idx})", name=e.name) from None

    try:
        src = tfds.data_source(name, split=split, data_dir=data_dir, download=False)
    except Exception as e:  # noqa: BLE001 — TFDS raises many types for "not prepared"
        hint = (
            " ImageNet needs manual preparation: put the ILSVRC2012 archives in "
            "<tfds_data_dir>/downloads/manual/ and run `tfds build imagenet2012 "
            "--file_format=array_record`."
            if name == "imagenet2012"
            else f" Prepare it once with `tfds build {name} --file_format=array_record` "
            "(or tfds.data_source(..., download=True)) on a machine with network access."
        )
        extra = (
            ""
            if name not in IDX_DATASETS
            else " Alternatively: " + _how_to_get(name, data_dir or "$JAXPRUNE_DATA_DIR")
        )
        raise FileNotFoundError(
            f"TFDS dataset {name!r} split {split!r} is not available "
            f"offline ({type(e).__name__}: {e}).{hint}{extra}"
        ) from e
    n = len(src)
    if n == 0:
        raise ValueError(f"TFDS {name!r} split {split!r} is empty")

    def records(keys, source=src):
        try:
            return source.__getitems__([int(k) for k in keys])
        except (TypeError, AttributeError):
            return [source[int(k)] for k in keys]

    def image(record):
        img = np.asarray(record["image"])
        img = _resize_center_crop(img, image_size) if name == "imagenet2012" else img
        return img[..., None] if img.ndim == 2 else img

    def read(rows):
        return np.stack([image(r) for r in records(rows)])

    chunks = [np.arange(a, min(n, a + 1024)) for a in range(0, n, 1024)]
    if lazy:  # one pass for the labels (images left encoded); images are read on demand
        try:
            label_src = tfds.data_source(
                name,
                split=split,
                data_dir=data_dir,
                download=False,
                decoders={"image": tfds.decode.SkipDecoding()},
            )
            label_src[0]  # SkipDecoding needs TensorFlow
        except Exception:  # noqa: BLE001 — a source without partial decoding: decode all
            label_src = src
        labels = np.asarray([int(r["label"]) for c in chunks for r in records(c, label_src)])
        first = read(np.arange(1))
        return ArrayDataset(
            LazyImages(read, (n,) + first.shape[1:], name),
            labels.astype(np.int32),
            NUM_CLASSES[name],
            name,
        )
    images, labels = [], []
    for c in chunks:
        recs = records(c)
        images.append(np.stack([image(r) for r in recs]))
        labels.extend(int(r["label"]) for r in recs)
    return ArrayDataset(
        normalize(np.concatenate(images), name),
        np.asarray(labels, np.int32),
        NUM_CLASSES[name],
        name,
    )


# ----------------------------------------------------------------------------------- public


def normalize(images_uint8: np.ndarray, name: str) -> np.ndarray:
    """``(x / 255 − mean) / std`` per channel, as float32 (chunked to bound memory)."""
    mean, std = (np.asarray(v, np.float32) for v in NORMALIZATION[name])
    out = np.empty(images_uint8.shape, np.float32)
    step = 8192
    for i in range(0, len(images_uint8), step):
        x = images_uint8[i : i + step].astype(np.float32) / np.float32(255.0)
        out[i : i + step] = (x - mean) / std
    return out


def load(
    name: str,
    split: str = "train",
    data_dir: str | os.PathLike | None = None,
    *,
    source: str = "auto",
    verify_checksums: bool = True,
    image_size: int = 224,
    lazy: bool = False,
    seq_len: int | None = None,
) -> ArrayDataset:
    """Load a dataset split as a normalised :class:`ArrayDataset`.

    ``name``: one of ``DATASETS``, or the name of a text corpus folder ``<root>/<name>/``
    holding ``train.txt.gz``, ``valid.txt.gz``, ``test.txt.gz`` (:mod:`jaxprune.corpus`:
    windows of ``seq_len`` bytes, default 256, and their next bytes; always read lazily;
    ``source='text'`` insists on it). ``split``: 'train'/'test' (IDX), any TFDS split string
    otherwise. ``source``: 'auto' (a text corpus if ``<root>/<name>/`` holds a
    ``*.txt.gz`` split file or ``name`` is no known dataset; IDX if ``<root>/<name>/`` exists
    for an MNIST-format name; else TFDS), 'idx', 'tfds' or 'text'. ``data_dir`` (default
    ``$JAXPRUNE_DATA_DIR``) is the IDX root and is also handed to TFDS as its data dir.
    Never downloads.

    ``lazy=True``: the images are a :class:`LazyImages` that reads and normalises only the
    rows asked for (TFDS records by index through ``tfds.data_source``; IDX rows of a
    memory-mapped file, :func:`open_idx`), so a process that feeds one shard of every batch
    reads only its rows.
    """
    if source not in ("auto", "idx", "tfds", "text"):
        raise ValueError(f"source must be 'auto', 'idx', 'tfds' or 'text', got {source!r}")
    root = data_dir if data_dir is not None else os.environ.get("JAXPRUNE_DATA_DIR")
    folder = pathlib.Path(root) / name if root is not None and _plain_name(name) else None
    if source == "text" or (
        source == "auto"
        and folder is not None
        and (is_text_corpus(folder) or (name not in NUM_CLASSES and folder.is_dir()))
    ):
        if folder is None:
            raise ValueError(
                f"a text corpus is read from <data_dir>/{name}/ holding "
                f"{', '.join(SPLIT_FILES.values())}: "
                + (
                    "pass data_dir= or set JAXPRUNE_DATA_DIR"
                    if root is None
                    else f"{name!r} is not a folder name"
                )
            )
        return _load_text(
            name, split, folder, verify_checksums, DEFAULT_SEQ_LEN if seq_len is None else seq_len
        )
    if seq_len is not None:
        raise ValueError(f"seq_len applies to text corpora only, not to {name!r}")
    if name not in NUM_CLASSES:
        where = (
            "data_dir/$JAXPRUNE_DATA_DIR unset"
            if root is None
            else f"no folder {folder}"
            if folder is not None
            else "not a folder name"
        )
        raise ValueError(
            f"unknown dataset {name!r}; known: {', '.join(DATASETS)}, or a text "
            f"corpus folder <data_dir>/<name>/ holding "
            f"{', '.join(SPLIT_FILES.values())} ({where})"
        )
    if source == "idx" or (
        source == "auto"
        and name in IDX_DATASETS
        and root is not None
        and (pathlib.Path(root) / name).is_dir()
    ):
        if name not in IDX_DATASETS:
            raise ValueError(f"{name!r} has no IDX reader; IDX datasets: {IDX_DATASETS}")
        if root is None:
            raise FileNotFoundError(
                "no data_dir given and JAXPRUNE_DATA_DIR unset. " + _how_to_get(name, "<root>")
            )
        return _load_idx(name, split, pathlib.Path(root), verify_checksums, lazy)
    return _load_tfds(name, split, None if root is None else str(root), image_size, lazy)


def evaluation_split(name: str) -> str:
    """The split a model is tested on: 'validation' for ImageNet (its test labels are not
    public), 'test' otherwise."""
    return "validation" if name == "imagenet2012" else "test"


def _in_memory(ds: ArrayDataset) -> np.ndarray | None:
    """The images of ``ds`` when they are an in-memory array (``None``: read on demand)."""
    return ds.images if isinstance(ds.images, np.ndarray) else None


def fingerprint(ds: ArrayDataset) -> str | None:
    """SHA-256 of a dataset's images and labels (``None`` for images read on demand, which
    are not read whole for this). A text corpus (:class:`ByteWindows`) is fingerprinted
    without reading it: its archive's SHA-256, ``seq_len`` and rows."""
    if isinstance(ds.images, ByteWindows):
        return _text_fingerprint(ds.images, ds.labels)
    images = _in_memory(ds)
    if images is None:
        return None
    digest = hashlib.sha256(f"{images.dtype.str}{images.shape}".encode())
    for start in range(0, len(images), 4096):
        digest.update(np.ascontiguousarray(images[start : start + 4096]).tobytes())
    digest.update(np.ascontiguousarray(ds.labels).tobytes())
    return digest.hexdigest()


def check_finite(ds: ArrayDataset, what: str = "the data") -> None:
    """``ValueError`` naming the first example whose in-memory float images hold NaN or
    inf (images read on demand come from uint8 files, text corpora are bytes: neither is
    checked)."""
    images = _in_memory(ds)
    if images is None or not np.issubdtype(images.dtype, np.floating):
        return
    for start in range(0, len(images), 4096):
        chunk = images[start : start + 4096]
        bad = ~np.isfinite(chunk.reshape(len(chunk), -1)).all(axis=1)
        if bad.any():
            first = start + int(np.argmax(bad))
            raise ValueError(
                f"{what} ({ds.name}) holds NaN/inf values, first in example "
                f"{first}; clean or drop those examples"
            )


def head(ds: ArrayDataset, n: int | None) -> ArrayDataset:
    """The first ``n`` examples of ``ds`` (all of them for ``n=None`` or ``n >= len(ds)``)."""
    return ds if n is None or n >= len(ds) else ds.subset(np.arange(n))


def load_splits(
    name: str,
    data_dir: str | os.PathLike | None = None,
    *,
    limit_train: int | None = None,
    limit_test: int | None = None,
    need_train: bool = True,
    lazy_train: bool = False,
    seq_len: int | None = None,
) -> tuple[ArrayDataset | None, ArrayDataset]:
    """``(train or None, evaluation split)`` of ``name``, each cut to its first
    ``limit_*`` examples (the training split read on demand with ``lazy_train``; a text
    corpus always is, in windows of ``seq_len`` bytes). Raises like :func:`load`."""
    extra: dict[str, Any] = {} if seq_len is None else {"seq_len": seq_len}
    train = (
        head(load(name, "train", data_dir, lazy=lazy_train, **extra), limit_train)
        if need_train
        else None
    )
    return train, head(load(name, evaluation_split(name), data_dir, **extra), limit_test)


def sample_images(ds: ArrayDataset, size: int, seed: int, limit: int | None = None) -> np.ndarray:
    """``min(size, n)`` images drawn without replacement (seeded by ``seed``) from the first
    ``n = limit`` examples (all by default), in dataset order."""
    n = len(ds) if limit is None else min(limit, len(ds))
    idx = np.sort(np.random.default_rng(seed).choice(n, size=min(size, n), replace=False))
    return np.asarray(ds.images[idx])


def train_val_split(
    ds: ArrayDataset, val_size: int | float, seed: int = 0
) -> tuple[ArrayDataset, ArrayDataset]:
    """Deterministic random held-out split; ``val_size`` is a count or a fraction in (0, 1).

    Both parts keep the original example order (sorted indices).
    """
    n = len(ds)
    k = int(round(val_size * n)) if isinstance(val_size, float) else int(val_size)
    if not 0 <= k <= n:
        raise ValueError(f"val_size={val_size} out of range for {n} examples")
    perm = np.random.default_rng([int(seed), 0x5EED]).permutation(n)
    return ds.subset(np.sort(perm[k:])), ds.subset(np.sort(perm[:k]))


def num_batches(ds: ArrayDataset | int, batch_size: int, drop_remainder: bool = True) -> int:
    n = ds if isinstance(ds, int) else len(ds)
    return n // batch_size if drop_remainder else -(-n // batch_size)


def crop_flip(
    images: np.ndarray,
    rng: np.random.Generator,
    pad: int = 4,
    *,
    rows: slice | None = None,
    total: int | None = None,
) -> np.ndarray:
    """Random ``pad``-padded crop back to the input size plus random horizontal flip.

    Vectorised over the batch (one gather). Padding is zero in *normalised* space (the
    dataset mean colour). ``images`` may be rows ``rows`` of a batch of ``total`` examples:
    the offsets and flips are drawn for the whole batch and sliced, so each example gets the
    same crop whichever process holds it.
    """
    b, h, w, _ = images.shape
    total = b if total is None else int(total)
    rows = slice(0, b) if rows is None else rows
    oy = rng.integers(0, 2 * pad + 1, size=total)[rows]
    ox = rng.integers(0, 2 * pad + 1, size=total)[rows]
    flip = (rng.random(total) < 0.5)[rows]
    padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    rows_ = oy[:, None] + np.arange(h)[None, :]
    cols_fwd = np.arange(w)[None, :]
    cols = ox[:, None] + np.where(flip[:, None], w - 1 - cols_fwd, cols_fwd)
    return padded[np.arange(b)[:, None, None], rows_[:, :, None], cols[:, None, :]]


_AUGMENTS: dict[str, Callable[..., np.ndarray]] = {
    "crop_flip": crop_flip,
}


def batches(
    ds: ArrayDataset,
    batch_size: int,
    *,
    seed: int = 0,
    epoch: int = 0,
    shuffle: bool = True,
    augment: str | Callable | None = None,
    drop_remainder: bool = True,
    shard: tuple[int, int] = (0, 1),
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Iterate ``(images, labels)`` NumPy batches of one epoch.

    The order is a permutation drawn from ``(seed, epoch)`` (or the stored order with
    ``shuffle=False``); the augmentation of batch ``i`` is drawn from ``(seed, epoch, i)``,
    so an epoch is reproducible and independent of how much of it was consumed.
    ``augment``: None, 'crop_flip' or a callable ``(images, rng) -> images``.

    ``shard=(index, count)``: yield only rows ``[index*b/count, (index+1)*b/count)`` of every
    global batch of ``b = batch_size`` examples (``b`` divisible by ``count``), reading only
    those rows of ``ds``: the part one process of a multi-process run feeds. The global
    batches, and the built-in augmentations, do not depend on ``count``; a callable
    ``augment`` sees only the local rows and gets its own stream per shard.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    if isinstance(augment, str) and augment not in _AUGMENTS:
        raise ValueError(f"unknown augment {augment!r}; known: {list(_AUGMENTS)}")
    index, count = (int(v) for v in shard)
    if count < 1 or not 0 <= index < count or batch_size % count:
        raise ValueError(
            f"shard={shard} needs 0 <= index < count and batch_size={batch_size} divisible by count"
        )
    if count > 1 and not drop_remainder:
        raise ValueError("a sharded epoch needs drop_remainder=True (equal shards)")
    local = batch_size // count
    rows = slice(index * local, (index + 1) * local)
    n = len(ds)
    order = (
        np.random.default_rng([int(seed), int(epoch)]).permutation(n) if shuffle else np.arange(n)
    )
    for i in range(num_batches(n, batch_size, drop_remainder)):
        idx = order[i * batch_size : (i + 1) * batch_size]
        size = len(idx)
        if count > 1:
            idx = idx[rows]
        x, y = ds.images[idx], ds.labels[idx]
        if isinstance(augment, str):
            x = _AUGMENTS[augment](
                x,
                np.random.default_rng([int(seed), int(epoch), i, 1]),
                rows=rows if count > 1 else None,
                total=size,
            )
        elif augment is not None:
            stream = [int(seed), int(epoch), i, 1] + ([index, count] if count > 1 else [])
            x = augment(x, np.random.default_rng(stream))
        yield x, y
