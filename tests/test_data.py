"""Data: IDX reader (real + synthetic + corrupt files), TFDS via mock_data, batching, splits."""
import gzip
import hashlib
import pathlib
import sys

import numpy as np
import pytest

from jaxprune import data

MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


# ------------------------------------------------------------------------------ helpers

def _idx_bytes(arr: np.ndarray) -> bytes:
    arr = np.asarray(arr, np.uint8)
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in arr.shape)
    return header + arr.tobytes()


def _write_mnist(root: pathlib.Path, name="mnist", n_train=12, n_test=5, seed=0, gz=True):
    rng = np.random.default_rng(seed)
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for split, prefix, n in (("train", "train", n_train), ("test", "t10k", n_test)):
        imgs = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labs = rng.integers(0, 10, size=n, dtype=np.uint8)
        for stem, arr in ((f"{prefix}-images-idx3-ubyte", imgs), (f"{prefix}-labels-idx1-ubyte", labs)):
            raw = _idx_bytes(arr)
            if gz:
                (folder / f"{stem}.gz").write_bytes(gzip.compress(raw))
            else:
                (folder / stem).write_bytes(raw)
        out[split] = (imgs, labs)
    return out


def _indexed_dataset(n=37, shape=(4, 4, 1)):
    """Image i is filled with the value i, so examples can be identified after batching."""
    images = np.broadcast_to(np.arange(n, dtype=np.float32)[:, None, None, None],
                             (n,) + shape).copy()
    return data.ArrayDataset(images, (np.arange(n) % 10).astype(np.int32), 10, "toy")


# ---------------------------------------------------------------------------- real MNIST

@pytest.fixture(scope="module")
def mnist_train(data_dir):
    return data.load("mnist", "train", data_dir=data_dir)


def test_real_mnist_train(mnist_train):
    ds = mnist_train
    assert ds.images.shape == (60000, 28, 28, 1) and ds.images.dtype == np.float32
    assert ds.labels.shape == (60000,) and ds.labels.dtype == np.int32
    assert ds.num_classes == 10 and ds.name == "mnist" and len(ds) == 60000
    assert np.bincount(ds.labels, minlength=10).tolist() == MNIST_TRAIN_COUNTS
    # standard constants normalise the training set to ~zero mean, unit std
    assert abs(float(ds.images.mean())) < 0.01
    assert abs(float(ds.images.std()) - 1.0) < 0.01
    np.testing.assert_allclose(ds.images.min(), (0 - 0.1307) / 0.3081, rtol=1e-6)


def test_real_mnist_test_via_env(monkeypatch, data_dir):
    monkeypatch.setenv("JAXPRUNE_DATA_DIR", str(data_dir))
    ds = data.load("mnist", "test")
    assert ds.images.shape == (10000, 28, 28, 1) and len(ds.labels) == 10000
    assert set(np.unique(ds.labels).tolist()) == set(range(10))


# ----------------------------------------------------------------------- synthetic IDX

@pytest.mark.parametrize("gz", [True, False])
def test_synthetic_idx_roundtrip(tmp_path, gz):
    raw = _write_mnist(tmp_path, "fashion_mnist", gz=gz)
    for split in ("train", "test"):
        ds = data.load("fashion_mnist", split, data_dir=tmp_path)
        imgs, labs = raw[split]
        assert ds.images.shape == imgs.shape + (1,)
        np.testing.assert_array_equal(ds.labels, labs.astype(np.int32))
        expected = (imgs[..., None] / np.float32(255) - 0.2860) / 0.3530
        np.testing.assert_allclose(ds.images, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(data.read_idx(tmp_path / "fashion_mnist" /
                                                ("train-images-idx3-ubyte" + (".gz" if gz else ""))),
                                  raw["train"][0])


def test_checksum_verified(tmp_path):
    _write_mnist(tmp_path)
    folder = tmp_path / "mnist"
    files = sorted(p.name for p in folder.iterdir())
    lines = [f"{hashlib.sha256((folder / f).read_bytes()).hexdigest()}  {f}" for f in files]
    (folder / "SHA256SUMS").write_text("\n".join(lines) + "\n")
    assert len(data.load("mnist", "train", data_dir=tmp_path)) == 12
    bad = lines[0].split()
    lines[0] = ("0" * 64) + "  " + bad[1]
    (folder / "SHA256SUMS").write_text("\n".join(lines) + "\n")
    split = "test" if bad[1].startswith("t10k") else "train"
    with pytest.raises(ValueError, match="SHA256 mismatch"):
        data.load("mnist", split, data_dir=tmp_path)
    assert len(data.load("mnist", split, data_dir=tmp_path, verify_checksums=False)) > 0


def test_truncated_file_errors(tmp_path):
    _write_mnist(tmp_path)
    path = tmp_path / "mnist" / "train-images-idx3-ubyte.gz"
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(raw[:-100]))  # valid gzip, short payload
    with pytest.raises(ValueError, match=r"truncated.*IDX files"):
        data.load("mnist", "train", data_dir=tmp_path)
    path.write_bytes(gzip.compress(raw)[:-50])  # broken gzip stream
    with pytest.raises(ValueError, match="gzip"):
        data.load("mnist", "train", data_dir=tmp_path)
    path.write_bytes(gzip.compress(raw[:10]))  # header cut
    with pytest.raises(ValueError, match="truncated"):
        data.load("mnist", "train", data_dir=tmp_path)


@pytest.mark.parametrize("gz", [True, False])
def test_lazy_idx_is_memory_mapped(tmp_path, monkeypatch, gz):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    raw = _write_mnist(tmp_path, n_train=30, gz=gz)
    eager = data.load("mnist", "train", data_dir=tmp_path)
    lazy = data.load("mnist", "train", data_dir=tmp_path, lazy=True)
    rows = np.array([29, 0, 7, 7])
    np.testing.assert_array_equal(lazy.images[rows], eager.images[rows])
    np.testing.assert_array_equal(lazy.labels, raw["train"][1].astype(np.int32))
    stem = "train-images-idx3-ubyte"
    mapped = data.open_idx(tmp_path / "mnist" / (stem + (".gz" if gz else "")), 2051)
    assert isinstance(mapped, np.memmap)
    np.testing.assert_array_equal(mapped, raw["train"][0])
    unpacked = list((tmp_path / "cache").rglob(f"{stem}-*"))
    if gz:  # unpacked once, into the cache folder, and reused
        assert len(unpacked) == 1 and pathlib.Path(mapped.filename) == unpacked[0]
        before = unpacked[0].stat().st_mtime_ns
        data.open_idx(tmp_path / "mnist" / (stem + ".gz"), 2051)
        assert unpacked[0].stat().st_mtime_ns == before
    else:  # an uncompressed file is mapped where it lies
        assert unpacked == [] and pathlib.Path(mapped.filename).name == stem


def test_lazy_idx_checks_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    _write_mnist(tmp_path, gz=False)
    path = tmp_path / "mnist" / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ValueError, match="truncated"):
        data.load("mnist", "train", data_dir=tmp_path, lazy=True)
    _write_mnist(tmp_path, gz=True)
    gz_path = path.with_name(path.name + ".gz")
    path.unlink()
    gz_path.write_bytes(gz_path.read_bytes()[:-50])
    with pytest.raises(ValueError, match="gzip"):
        data.load("mnist", "train", data_dir=tmp_path, lazy=True)
    assert not list((tmp_path / "cache").rglob("*.partial"))


def test_wrong_magic_errors(tmp_path):
    _write_mnist(tmp_path)
    folder = tmp_path / "mnist"
    # swap: a labels file where the images file should be
    (folder / "train-images-idx3-ubyte.gz").write_bytes(
        (folder / "train-labels-idx1-ubyte.gz").read_bytes())
    with pytest.raises(ValueError, match=r"magic number 2049 \(expected 2051\)"):
        data.load("mnist", "train", data_dir=tmp_path)
    with pytest.raises(ValueError, match="magic"):
        data.read_idx(folder / "train-images-idx3-ubyte.gz", 2051)
    bogus = folder / "bogus"
    bogus.write_bytes(b"\x12\x34\x08\x01" + (3).to_bytes(4, "big") + b"abc")
    with pytest.raises(ValueError, match="magic"):
        data.read_idx(bogus)


def test_missing_file_and_dir_errors(tmp_path):
    _write_mnist(tmp_path)
    (tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz").unlink()
    assert len(data.load("mnist", "train", data_dir=tmp_path)) == 12
    with pytest.raises(FileNotFoundError, match=r"t10k-labels-idx1-ubyte.*Get the four IDX"):
        data.load("mnist", "test", data_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match="JAXPRUNE_DATA_DIR"):
        data.load("mnist", "train", data_dir=tmp_path / "nowhere", source="idx")
    with pytest.raises(FileNotFoundError):
        data.read_idx(tmp_path / "nope.gz")


def test_bad_arguments():
    with pytest.raises(ValueError, match="known"):
        data.load("svhn")
    with pytest.raises(ValueError, match="source"):
        data.load("mnist", source="web")
    with pytest.raises(ValueError, match="IDX"):
        data.load("cifar10", source="idx")


# ----------------------------------------------------------------------------- TFDS mock

def test_tfds_cifar10_mock(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=6):
        ds = data.load("cifar10", "train", data_dir=tmp_path)
    assert ds.images.shape == (6, 32, 32, 3) and ds.images.dtype == np.float32
    assert ds.labels.shape == (6,) and ds.labels.dtype == np.int32
    assert ds.num_classes == 10 and ds.name == "cifar10"
    assert ds.labels.min() >= 0 and ds.labels.max() < 10
    lo = (0 - np.array([0.4914, 0.4822, 0.4465])) / np.array([0.2470, 0.2435, 0.2616])
    hi = (1 - np.array([0.4914, 0.4822, 0.4465])) / np.array([0.2470, 0.2435, 0.2616])
    assert np.all(ds.images >= lo - 1e-5) and np.all(ds.images <= hi + 1e-5)
    assert len(np.unique(ds.images)) > 10  # real (random) pixels, not a constant


def test_tfds_fallback_for_mnist_without_idx_dir(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=4):
        ds = data.load("mnist", "test", data_dir=tmp_path)  # no tmp_path/mnist → TFDS
    assert ds.images.shape == (4, 28, 28, 1) and ds.num_classes == 10


def test_tfds_missing_dataset_is_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="tfds build cifar10"):
        data.load("cifar10", "test", data_dir=tmp_path)



@pytest.mark.parametrize("name, hint", [("cifar10", "loading 'cifar10' through TFDS"),
                                        ("mnist", "IDX files")])
def test_tfds_not_installed_names_the_extra(tmp_path, monkeypatch, name, hint):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # as if not installed
    with pytest.raises(ModuleNotFoundError) as err:
        data.load(name, "test", data_dir=tmp_path)
    assert "pip install 'jaxprune[data]'" in str(err.value) and hint in str(err.value)
    assert "\n" not in str(err.value)


# ------------------------------------------------------------------------ batching etc.

def test_batches_deterministic_and_covering():
    ds = _indexed_dataset(37)
    assert data.num_batches(ds, 8) == 4 and data.num_batches(ds, 8, drop_remainder=False) == 5

    def ids(**kw):
        return [b[0][:, 0, 0, 0].astype(int).tolist() for b in data.batches(ds, 8, **kw)]

    a, b = ids(seed=1, epoch=0), ids(seed=1, epoch=0)
    assert a == b and len(a) == 4 and all(len(x) == 8 for x in a)
    flat = sum(a, [])
    assert len(set(flat)) == 32  # no repeats within an epoch
    assert ids(seed=1, epoch=1) != a and ids(seed=2, epoch=0) != a
    full = ids(seed=1, epoch=0, drop_remainder=False)
    assert sorted(sum(full, [])) == list(range(37)) and len(full[-1]) == 5
    assert ids(shuffle=False, drop_remainder=False)[0] == list(range(8))
    for x, y in data.batches(ds, 8, seed=3):
        np.testing.assert_array_equal(y, x[:, 0, 0, 0].astype(int) % 10)  # labels stay aligned
    with pytest.raises(ValueError):
        list(data.batches(ds, 8, augment="mixup"))


def test_train_val_split_disjoint_deterministic():
    ds = _indexed_dataset(50)
    tr, va = data.train_val_split(ds, 10, seed=0)
    ti = tr.images[:, 0, 0, 0].astype(int)
    vi = va.images[:, 0, 0, 0].astype(int)
    assert len(va) == 10 and len(tr) == 40
    assert set(ti).isdisjoint(vi) and sorted(set(ti) | set(vi)) == list(range(50))
    np.testing.assert_array_equal(tr.labels, ti % 10)
    tr2, va2 = data.train_val_split(ds, 10, seed=0)
    np.testing.assert_array_equal(va2.images, va.images)
    _, va3 = data.train_val_split(ds, 10, seed=1)
    assert set(va3.images[:, 0, 0, 0].astype(int)) != set(vi)
    _, vf = data.train_val_split(ds, 0.2, seed=0)
    assert len(vf) == 10
    with pytest.raises(ValueError):
        data.train_val_split(ds, 51, seed=0)


def test_crop_flip_shape_determinism_and_correctness():
    rng = np.random.default_rng(0)
    images = rng.normal(size=(16, 32, 32, 3)).astype(np.float32)
    ds = data.ArrayDataset(images, np.zeros(16, np.int32), 10, "toy")
    a = [x for x, _ in data.batches(ds, 8, seed=5, epoch=2, augment="crop_flip")]
    b = [x for x, _ in data.batches(ds, 8, seed=5, epoch=2, augment="crop_flip")]
    c = [x for x, _ in data.batches(ds, 8, seed=5, epoch=3, augment="crop_flip")]
    assert all(x.shape == (8, 32, 32, 3) and x.dtype == np.float32 for x in a)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))
    # every output is one 32×32 window of the zero-padded image, possibly mirrored
    out = data.crop_flip(images, np.random.default_rng(1))
    padded = np.pad(images, ((0, 0), (4, 4), (4, 4), (0, 0)))
    n_flip = 0
    for i in range(16):
        matches = [(oy, ox, f) for oy in range(9) for ox in range(9) for f in (False, True)
                   if np.array_equal(out[i], (lambda w: w[:, ::-1] if f else w)(
                       padded[i, oy:oy + 32, ox:ox + 32]))]
        assert matches, i
        n_flip += matches[0][2]
    assert 0 < n_flip < 16


def test_tfds_imagenet_mock_resize_center_crop(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=3):
        ds = data.load("imagenet2012", "validation", data_dir=tmp_path, image_size=48)
    assert ds.images.shape == (3, 48, 48, 3) and ds.num_classes == 1000
    # centre crop of a resized image: a horizontal ramp stays monotone, grey becomes RGB
    ramp = np.tile(np.linspace(0, 255, 100).astype(np.uint8)[None, :], (60, 1))
    out = data._resize_center_crop(ramp, 32)
    assert out.shape == (32, 32, 3)
    assert np.all(np.diff(out[16, :, 0].astype(int)) >= 0)
    assert np.array_equal(out[..., 0], out[..., 2])
