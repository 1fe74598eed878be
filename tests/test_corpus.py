"""Byte-level text corpora (jaxprune.corpus through jaxprune.data.load): windows and their
next bytes equal the raw bytes, splits, laziness (memory map, lazy subsets), sharding,
deterministic batches, fingerprints and one-line errors. Tiny corpora built in tmp_path."""
import concurrent.futures
import doctest
import gzip
import hashlib
import os
import pathlib

import numpy as np
import pytest

from jaxprune import corpus, data

REAL = pathlib.Path(os.environ.get("JAXPRUNE_DATA_DIR", "")) / "pystdlib"


def _text(n: int, seed: int) -> bytes:
    """``n`` bytes over all 256 values (not only ASCII)."""
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


@pytest.fixture
def cache(tmp_path, monkeypatch) -> pathlib.Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _corpus(root: pathlib.Path, name: str = "tiny", sizes=(1000, 301, 129), sums=False):
    folder = root / name
    folder.mkdir(parents=True)
    raw = {}
    for i, (split, n) in enumerate(zip(("train", "valid", "test"), sizes)):
        raw[split] = _text(n, i)
        (folder / f"{split}.txt.gz").write_bytes(gzip.compress(raw[split]))
    if sums:
        (folder / "SHA256SUMS").write_text("".join(
            f"{hashlib.sha256((folder / f'{s}.txt.gz').read_bytes()).hexdigest()}  {s}.txt.gz\n"
            for s in raw))
    return raw


@pytest.mark.parametrize("seq_len", [1, 8, 32])
def test_windows_and_next_bytes_equal_the_raw_bytes(tmp_path, cache, seq_len):
    raw = _corpus(tmp_path)["train"]
    ds = data.load("tiny", "train", tmp_path, seq_len=seq_len)
    n = (len(raw) - 1) // seq_len
    assert (ds.name, ds.num_classes, len(ds)) == ("tiny", 256, n)
    assert ds.images.shape == ds.labels.shape == (n, seq_len)
    assert ds.images.dtype == ds.labels.dtype == np.int32
    flat = np.frombuffer(raw, np.uint8).astype(np.int32)
    x, y = np.asarray(ds.images), np.asarray(ds.labels)
    assert x.dtype == y.dtype == np.int32
    np.testing.assert_array_equal(x, flat[:n * seq_len].reshape(n, seq_len))
    np.testing.assert_array_equal(y, flat[1:n * seq_len + 1].reshape(n, seq_len))
    # indexing as on the array: ints (negative too), slices, index and boolean arrays, tuples
    np.testing.assert_array_equal(ds.images[-1], x[-1])
    np.testing.assert_array_equal(ds.images[3:9:2], x[3:9:2])
    np.testing.assert_array_equal(ds.labels[[5, 0, 5]], y[[5, 0, 5]])
    mask = np.arange(n) % 3 == 0
    np.testing.assert_array_equal(ds.images[mask], x[mask])
    np.testing.assert_array_equal(ds.images[2, :3], x[2, :3])
    np.testing.assert_array_equal(ds.images[1:4, -1], x[1:4, -1])
    with pytest.raises(IndexError):
        ds.images[n]


def test_default_seq_len_splits_and_alias(tmp_path, cache):
    raw = _corpus(tmp_path, sizes=(2000, 600, 257))
    assert data.DEFAULT_SEQ_LEN == 256
    sizes = {s: len(data.load("tiny", s, tmp_path)) for s in ("train", "valid", "test")}
    assert sizes == {s: (len(raw[s]) - 1) // 256 for s in raw} == {"train": 7, "valid": 2,
                                                                      "test": 1}
    valid = data.load("tiny", "validation", tmp_path, seq_len=10)
    np.testing.assert_array_equal(valid.images[0], np.frombuffer(raw["valid"][:10], np.uint8))
    assert data.evaluation_split("tiny") == "test"
    train, test = data.load_splits("tiny", tmp_path, limit_train=3, seq_len=16)
    assert (len(train), train.images.shape[1], len(test)) == (3, 16, (257 - 1) // 16)
    assert isinstance(train.images, corpus.ByteWindows)


def test_environment_variable_is_the_default_root(tmp_path, cache, monkeypatch):
    _corpus(tmp_path, name="othername")
    monkeypatch.setenv("JAXPRUNE_DATA_DIR", str(tmp_path))
    assert data.load("othername", "test", seq_len=4).name == "othername"


def test_images_are_lazy_over_a_memory_map(tmp_path, cache):
    raw = _corpus(tmp_path)["train"]
    ds = data.load("tiny", "train", tmp_path, seq_len=8)
    for arr in (ds.images, ds.labels):
        assert not isinstance(arr, np.ndarray) and isinstance(arr, corpus.ByteWindows)
        assert isinstance(arr.source, np.memmap)
        assert pathlib.Path(arr.source.filename).parent == cache / "jaxprune" / "text"
    unpacked = list((cache / "jaxprune" / "text").iterdir())
    assert [p.name.split("-")[0] for p in unpacked] == ["train.txt"]
    assert unpacked[0].read_bytes() == raw
    before = unpacked[0].stat().st_mtime_ns  # a second load maps the cached copy
    data.load("tiny", "train", tmp_path, seq_len=8)
    assert unpacked[0].stat().st_mtime_ns == before
    # subsets and heads stay lazy and compose; their rows equal the array's
    x = np.asarray(ds.images)
    sub = ds.subset(np.array([10, 3, 3, 50]))
    assert isinstance(sub.images, corpus.ByteWindows) and isinstance(sub.labels,
                                                                      corpus.ByteWindows)
    assert sub.images.source is ds.images.source
    np.testing.assert_array_equal(np.asarray(sub.images), x[[10, 3, 3, 50]])
    np.testing.assert_array_equal(sub.subset([3, 0]).images[:], x[[50, 10]])
    np.testing.assert_array_equal(data.head(ds, 4).labels[:], np.asarray(ds.labels)[:4])
    a, b = data.train_val_split(ds, 0.25, seed=1)
    assert len(a) + len(b) == len(ds) and isinstance(a.images, corpus.ByteWindows)
    assert data.sample_images(ds, 5, seed=0).shape == (5, 8)


@pytest.mark.parametrize("count", [1, 3, 7])
def test_shards_are_disjoint_contiguous_and_cover(tmp_path, cache, count):
    _corpus(tmp_path)
    ds = data.load("tiny", "train", tmp_path, seq_len=10)  # 99 windows
    x = np.asarray(ds.images)
    parts = [data.shard(ds, i, count) for i in range(count)]
    assert all(isinstance(p.images, corpus.ByteWindows) for p in parts)
    np.testing.assert_array_equal(np.concatenate([np.asarray(p.images) for p in parts]), x)
    np.testing.assert_array_equal(np.concatenate([np.asarray(p.labels) for p in parts]),
                                  np.asarray(ds.labels))
    sizes = [len(p) for p in parts]
    assert sum(sizes) == len(ds) and max(sizes) - min(sizes) <= 1
    equal = [len(data.shard(ds, i, count, equal=True)) for i in range(count)]
    assert equal == [len(ds) // count] * count
    with pytest.raises(ValueError, match="process_index"):
        data.shard(ds, count, count)


def test_batches_are_deterministic_and_shardable(tmp_path, cache):
    _corpus(tmp_path)
    ds = data.load("tiny", "train", tmp_path, seq_len=8)
    x, y = np.asarray(ds.images), np.asarray(ds.labels)

    def epoch(**kw):
        return list(data.batches(ds, 12, seed=3, epoch=1, **kw))

    first, again = epoch(), epoch()
    assert len(first) == len(ds) // 12
    order = np.random.default_rng([3, 1]).permutation(len(ds))
    for i, ((bx, by), (ax, ay)) in enumerate(zip(first, again)):
        np.testing.assert_array_equal(bx, ax)
        np.testing.assert_array_equal(by, ay)
        rows = order[i * 12:(i + 1) * 12]
        np.testing.assert_array_equal(bx, x[rows])
        np.testing.assert_array_equal(by, y[rows])
        assert bx.dtype == by.dtype == np.int32
    shards = [epoch(shard=(k, 3)) for k in range(3)]  # each process reads its rows only
    for i, (bx, by) in enumerate(first):
        np.testing.assert_array_equal(np.concatenate([s[i][0] for s in shards]), bx)
        np.testing.assert_array_equal(np.concatenate([s[i][1] for s in shards]), by)


def test_fingerprint_reads_nothing_and_tells_windows_apart(tmp_path, cache, monkeypatch):
    _corpus(tmp_path)
    ds = data.load("tiny", "train", tmp_path, seq_len=8)
    fp = data.fingerprint(ds)
    assert isinstance(fp, str) and len(fp) == 64
    assert data.fingerprint(data.load("tiny", "train", tmp_path, seq_len=8)) == fp
    others = {data.fingerprint(data.load("tiny", "train", tmp_path, seq_len=9)),
              data.fingerprint(data.load("tiny", "valid", tmp_path, seq_len=8)),
              data.fingerprint(data.head(ds, 10)), data.fingerprint(ds.subset([1, 0]))}
    assert fp not in others and len(others) == 4
    # neither reads the windows (bytes are always finite)
    def no_reading(*args, **kwargs):
        raise AssertionError("the corpus was read")

    monkeypatch.setattr(corpus.ByteWindows, "__getitem__", no_reading)
    monkeypatch.setattr(corpus.ByteWindows, "__array__", no_reading)
    assert data.fingerprint(ds) == fp
    data.check_finite(ds)


def test_folder_without_the_split_files_is_one_line(tmp_path, cache):
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "train.txt.gz").write_bytes(gzip.compress(b"abc" * 100))
    with pytest.raises(ValueError) as err:
        data.load("notes", "train", tmp_path)
    msg = str(err.value)
    assert "\n" not in msg and str(folder) in msg
    assert "must hold train.txt.gz, valid.txt.gz, test.txt.gz" in msg
    assert "valid.txt.gz, test.txt.gz" in msg.split("must hold")[0]  # what it lacks
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"empty lacks train.txt.gz.*must hold"):
        data.load("empty", "valid", tmp_path)
    with pytest.raises(ValueError, match="unknown dataset 'absent'.*train.txt.gz"):
        data.load("absent", "train", tmp_path)
    with pytest.raises(ValueError, match="must hold"):
        data.load("absent", "train", tmp_path, source="text")


def test_truncated_or_non_gzip_split_is_one_line(tmp_path, cache):
    raw = _corpus(tmp_path)
    path = tmp_path / "tiny" / "valid.txt.gz"
    path.write_bytes(gzip.compress(raw["valid"])[:-20])
    with pytest.raises(ValueError, match=r"valid.txt.gz: .*truncated gzip") as err:
        data.load("tiny", "valid", tmp_path)
    assert "\n" not in str(err.value)
    path.write_bytes(raw["valid"][:200])
    with pytest.raises(ValueError, match=r"not gzip"):
        data.load("tiny", "valid", tmp_path)
    assert not list(cache.rglob("*.partial")) and not list(cache.rglob("valid*"))
    assert len(data.load("tiny", "test", tmp_path, seq_len=4)) == 32  # the others still load


def test_concurrent_unpacks_agree(tmp_path, cache):
    raw = _corpus(tmp_path, sizes=(300_000, 301, 129))["train"]
    path = tmp_path / "tiny" / "train.txt.gz"
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: corpus.unpack(path), range(4)))
    assert len({r for r in results}) == 1 and results[0][0].read_bytes() == raw
    assert results[0][1] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert [p.name for p in results[0][0].parent.iterdir()] == [results[0][0].name]


def test_bad_arguments_and_short_splits(tmp_path, cache):
    _corpus(tmp_path, sizes=(1000, 301, 5))
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="seq_len"):
            data.load("tiny", "train", tmp_path, seq_len=bad)
    with pytest.raises(ValueError, match="splits 'train', 'valid'"):
        data.load("tiny", "dev", tmp_path)
    with pytest.raises(ValueError, match=r"5 bytes, too few for one window of seq_len=8"):
        data.load("tiny", "test", tmp_path, seq_len=8)
    assert len(data.load("tiny", "test", tmp_path, seq_len=4)) == 1
    with pytest.raises(ValueError, match="text corpora only"):
        data.load("mnist", "train", tmp_path, seq_len=8)
    with pytest.raises(ValueError, match="decompresses to more than 100 bytes"):
        corpus.read_split(tmp_path / "tiny", "train", 8, max_bytes=100)


def test_sha256sums_are_checked(tmp_path, cache):
    raw = _corpus(tmp_path, sums=True)
    assert len(data.load("tiny", "train", tmp_path, seq_len=8)) == (len(raw["train"]) - 1) // 8
    (tmp_path / "tiny" / "test.txt.gz").write_bytes(gzip.compress(b"other text" * 50))
    with pytest.raises(ValueError, match="SHA256 mismatch"):
        data.load("tiny", "test", tmp_path)
    assert len(data.load("tiny", "test", tmp_path, verify_checksums=False, seq_len=8)) > 0


def test_image_datasets_are_not_taken_for_text(tmp_path, cache):
    (tmp_path / "mnist").mkdir()  # an IDX folder (here empty) stays an IDX folder
    with pytest.raises(FileNotFoundError, match="IDX"):
        data.load("mnist", "train", tmp_path, source="idx")
    assert not corpus.is_text_corpus(tmp_path / "mnist")


def test_module_docstring_example_runs(cache):
    result = doctest.testmod(corpus)
    assert result.attempted > 0 and result.failed == 0


@pytest.mark.skipif(not (REAL / "valid.txt.gz").is_file(), reason="no pystdlib corpus")
def test_real_pystdlib_valid_split(cache):
    ds = data.load("pystdlib", "valid", REAL.parent, seq_len=256)
    raw = gzip.decompress((REAL / "valid.txt.gz").read_bytes())
    assert len(ds) == (len(raw) - 1) // 256 > 1000
    last = len(ds) - 1
    assert bytes(np.asarray(ds.images[last], np.uint8)) == raw[last * 256:last * 256 + 256]
    assert bytes(np.asarray(ds.labels[0], np.uint8)) == raw[1:257]
    assert raw.startswith(b"# file: ")
