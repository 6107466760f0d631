"""IDX reader (MNIST, Fashion-MNIST) on files written in the exact standard format, and on the Debian files.
Where the files are looked for: test_data_locate.py."""
import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from cbamlab.data import load_dataset, locate
from cbamlab.data.idx import read_idx
from cbamlab.errors import DataError

DEBIAN = Path("/usr/share/datasets/fashion-mnist")


def write_idx(path: Path, arr: np.ndarray, gz: bool) -> Path:
    """LeCun's format: 0, 0, type 0x08 (ubyte), ndim, big-endian uint32 dims, then the bytes."""
    assert arr.dtype == np.uint8
    data = bytes([0, 0, 0x08, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


def write_mnist(folder: Path, n_train=50, n_test=20, gz=True, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        write_idx(folder / f"{prefix}-images-idx3-ubyte", images, gz)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", labels, gz)
        out[prefix] = (images, labels)
    return out


@pytest.fixture(autouse=True)
def _no_env(monkeypatch, tmp_path):
    monkeypatch.delenv("CBAMLAB_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


@pytest.mark.parametrize("gz", [True, False])
def test_mnist_reads_gz_and_raw_files(tmp_path, gz):
    want = write_mnist(tmp_path / "m", gz=gz)
    b = load_dataset("mnist", tmp_path / "m")
    assert b.info.in_chans == 1 and b.info.image_size == (28, 28) and b.info.num_classes == 10
    assert b.train.images.shape == (50, 1, 28, 28) and b.train.images.dtype == torch.uint8
    np.testing.assert_array_equal(b.train.images[:, 0].numpy(), want["train"][0])
    np.testing.assert_array_equal(b.train.labels.numpy(), want["train"][1])
    np.testing.assert_array_equal(b.test.images[:, 0].numpy(), want["t10k"][0])
    np.testing.assert_array_equal(b.test.labels.numpy(), want["t10k"][1])
    assert b.info.source == str(tmp_path / "m")


def test_read_idx_other_types_and_shapes(tmp_path):
    arr = (np.arange(24).reshape(2, 3, 4) - 5).astype(">i4")
    p = tmp_path / "x.idx"
    p.write_bytes(bytes([0, 0, 0x0C, 3]) + struct.pack(">3I", 2, 3, 4) + arr.tobytes())
    got = read_idx(p)
    assert got.shape == (2, 3, 4)
    np.testing.assert_array_equal(got, arr.astype(np.int32))


def test_include_test_false_never_opens_test_files(tmp_path):
    write_mnist(tmp_path, gz=False)
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(b"garbage")
    with pytest.raises(DataError, match="bad magic"):
        load_dataset("mnist", tmp_path)
    b = load_dataset("mnist", tmp_path, include_test=False)
    assert b.test is None and len(b.train) == 50


def test_lookup_order_root_then_env_then_torchvision_layout(tmp_path, monkeypatch):
    write_mnist(tmp_path / "env" / "mnist" / "MNIST" / "raw", n_train=30)
    monkeypatch.setenv("CBAMLAB_DATA", str(tmp_path / "env"))
    assert load_dataset("mnist", include_test=False).train.images.shape[0] == 30
    write_mnist(tmp_path / "root" / "mnist", n_train=40)  # root/<name> wins over $CBAMLAB_DATA
    b = load_dataset("mnist", tmp_path / "root", include_test=False)
    assert len(b.train) == 40 and b.info.source == str(tmp_path / "root" / "mnist")


def test_not_found_lists_the_expected_files_and_how_to_get(tmp_path):
    with pytest.raises(DataError) as e:
        load_dataset("mnist", tmp_path / "nowhere")
    msg = str(e.value)
    assert msg.startswith(f"mnist not found in data.root={tmp_path / 'nowhere'}: expected train-images-idx3-ubyte[.gz]")
    assert "t10k-labels-idx1-ubyte[.gz]" in msg and "data.download: true" in msg and "\n" not in msg
    assert locate("mnist", tmp_path / "nowhere")[0] is None


@pytest.mark.parametrize("damage,match", [
    (lambda b: b"\x00\x01" + b[2:], "bad magic"),
    (lambda b: b[:-10], "truncated"),
    (lambda b: b + b"\x00" * 3, "beyond the declared shape"),
    (lambda b: b[:6], "truncated IDX header"),
])
def test_malformed_idx_files_are_clear_errors(tmp_path, damage, match):
    write_mnist(tmp_path, gz=False)
    p = tmp_path / "train-images-idx3-ubyte"
    p.write_bytes(damage(p.read_bytes()))
    with pytest.raises(DataError, match=match):
        load_dataset("mnist", tmp_path)


def test_bad_gzip_and_count_mismatch(tmp_path):
    write_mnist(tmp_path, gz=True)
    good = (tmp_path / "train-labels-idx1-ubyte.gz").read_bytes()
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError, match="not a valid gzip"):
        load_dataset("mnist", tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(49, np.uint8), gz=True)
    with pytest.raises(DataError, match="50 images but 49 labels"):
        load_dataset("mnist", tmp_path)


def test_missing_label_file(tmp_path):
    write_mnist(tmp_path, gz=True)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="missing t10k-labels-idx1-ubyte"):
        load_dataset("mnist", tmp_path)


@pytest.mark.slow
@pytest.mark.skipif(not (DEBIAN / "train-images-idx3-ubyte.gz").is_file(), reason="dataset-fashion-mnist not installed")
def test_fashion_mnist_debian_files_equal_torchvision_reading(tmp_path):
    from torchvision.datasets.mnist import read_image_file, read_label_file

    b = load_dataset("fashion_mnist")
    assert b.info.source == str(DEBIAN)
    assert (len(b.train), len(b.test)) == (60000, 10000)
    assert b.info.num_classes == 10 and b.info.in_chans == 1 and b.info.image_size == (28, 28)
    assert b.train.images.shape == (60000, 1, 28, 28)
    for split, prefix in ((b.train, "train"), (b.test, "t10k")):
        for kind in ("images-idx3", "labels-idx1"):
            raw = tmp_path / f"{prefix}-{kind}-ubyte"
            raw.write_bytes(gzip.decompress((DEBIAN / f"{raw.name}.gz").read_bytes()))
        tv_images = read_image_file(str(tmp_path / f"{prefix}-images-idx3-ubyte"))
        tv_labels = read_label_file(str(tmp_path / f"{prefix}-labels-idx1-ubyte"))
        assert torch.equal(split.images[:, 0], tv_images)
        assert torch.equal(split.labels, tv_labels.long())
    assert torch.bincount(b.train.labels).tolist() == [6000] * 10
    assert abs(b.info.mean[0] - 0.2860) < 1e-3 and abs(b.info.std[0] - 0.3530) < 1e-3


def test_download_goes_through_torchvision_then_reads_its_layout(tmp_path, monkeypatch):
    import torchvision.datasets as tvd

    calls = []

    class FakeMNIST:  # stands in for the network: writes what torchvision's download leaves behind
        def __init__(self, root, train, download):
            calls.append((root, train, download))
            write_mnist(Path(root) / "MNIST" / "raw", n_train=12, n_test=4)

    monkeypatch.setattr(tvd, "MNIST", FakeMNIST)
    with pytest.raises(DataError, match="not found"):
        load_dataset("mnist", tmp_path / "dl")
    b = load_dataset("mnist", tmp_path / "dl", download=True)
    assert calls[0] == (str(tmp_path / "dl"), True, True)
    assert (len(b.train), len(b.test)) == (12, 4) and b.info.source == str(tmp_path / "dl" / "MNIST" / "raw")
