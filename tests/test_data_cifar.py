"""CIFAR-10/100 readers on files written in the exact standard python-batch format; the restricted unpickler."""
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from cbamlab.data import load_dataset
from cbamlab.data.cifar import load_pickle
from cbamlab.errors import DataError


PROTOCOL = {"value": 2}  # 2: what Python 2 wrote the official files with; 4 checked too


def dump(path, obj):
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=PROTOCOL["value"])


def batch(n, num_classes, rng, label_key=b"labels"):
    """A batch as the official files hold it: bytes keys, data uint8 (N, 3072) red-green-blue planes, list labels."""
    return {b"batch_label": b"training batch", label_key: [int(v) for v in rng.integers(0, num_classes, n)],
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            b"filenames": [f"img_{i}.png".encode() for i in range(n)]}


def write_cifar10(root, sizes=(7, 5), n_test=6, seed=0):
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
    dump(folder / "batches.meta", {b"label_names": names, b"num_cases_per_batch": 10000, b"num_vis": 3072})
    batches = []
    for i, n in enumerate(sizes, 1):
        batches.append(batch(n, 10, rng))
        dump(folder / f"data_batch_{i}", batches[-1])
    test = batch(n_test, 10, rng)
    dump(folder / "test_batch", test)
    return folder, batches, test


@pytest.mark.parametrize("protocol", [2, 4])
def test_cifar10_pixels_labels_and_channel_order(tmp_path, protocol, monkeypatch):
    monkeypatch.setitem(PROTOCOL, "value", protocol)
    folder, batches, test = write_cifar10(tmp_path)
    b = load_dataset("cifar10", tmp_path)
    assert b.info.source == str(folder)
    assert b.info.classes[:3] == ["airplane", "automobile", "bird"] and b.info.num_classes == 10
    assert b.train.images.shape == (12, 3, 32, 32) and b.train.images.dtype == torch.uint8
    data = np.concatenate([x[b"data"] for x in batches])
    labels = sum((x[b"labels"] for x in batches), [])
    assert b.train.labels.tolist() == labels
    # channel-major rows: the first 1024 bytes are the red plane, row by row
    np.testing.assert_array_equal(b.train.images[3, 0].numpy(), data[3, :1024].reshape(32, 32))
    np.testing.assert_array_equal(b.train.images[3, 2].numpy(), data[3, 2048:].reshape(32, 32))
    np.testing.assert_array_equal(b.test.images.reshape(6, -1).numpy(), test[b"data"])
    assert b.test.labels.tolist() == test[b"labels"]
    mean = data.reshape(12, 3, -1).mean(axis=(0, 2)) / 255
    np.testing.assert_allclose(b.info.mean, mean, rtol=1e-9)


def test_cifar100_fine_labels(tmp_path):
    rng = np.random.default_rng(1)
    folder = tmp_path / "cifar100"
    folder.mkdir()
    names = [f"c{i}".encode() for i in range(100)]
    dump(folder / "meta", {b"fine_label_names": names, b"coarse_label_names": names[:20]})
    train = batch(30, 100, rng, b"fine_labels")
    train[b"coarse_labels"] = [0] * 30
    dump(folder / "train", train)
    dump(folder / "test", batch(10, 100, rng, b"fine_labels"))
    b = load_dataset("cifar100", tmp_path)  # found as root/<name>
    assert b.info.num_classes == 100 and b.info.classes[99] == "c99"
    assert b.train.labels.tolist() == train[b"fine_labels"] and len(b.test) == 10


def test_include_test_false_never_opens_test_batch(tmp_path):
    folder, _, _ = write_cifar10(tmp_path)
    (folder / "test_batch").write_bytes(b"\x80\x02garbage")
    with pytest.raises(DataError, match="test_batch"):
        load_dataset("cifar10", tmp_path)
    assert load_dataset("cifar10", tmp_path, include_test=False).test is None


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_importing_anything_else_is_refused_and_nothing_runs(tmp_path):
    folder, _, _ = write_cifar10(tmp_path)
    marker = tmp_path / "pwned"
    dump(folder / "data_batch_2", {b"data": _Evil(marker), b"labels": []})
    with pytest.raises(DataError, match="refused to import (posix|os|nt).system"):
        load_dataset("cifar10", tmp_path)
    assert not marker.exists()
    with pytest.raises(DataError, match="refused"):
        dump(tmp_path / "x", {"f": torch.nn.Linear})  # any class, even a harmless one
        load_pickle(tmp_path / "x")


@pytest.mark.parametrize("bad,match", [
    ({b"data": np.zeros((4, 3000), np.uint8), b"labels": [0] * 4}, r"shape \(N, 3072\)"),
    ({b"data": np.zeros((4, 3072), np.float32), b"labels": [0] * 4}, r"uint8"),
    ({b"data": np.zeros((4, 3072), np.uint8), b"labels": [0] * 3}, "4 images but 3 labels"),
    ({b"data": np.zeros((4, 3072), np.uint8), b"labels": [0, 1, 2, 10]}, r"labels must be in \[0, 10\)"),
    ({b"data": np.zeros((4, 3072), np.uint8)}, "missing 'labels'"),
    ([1, 2, 3], "expected a dict"),
])
def test_malformed_batches_are_clear_errors(tmp_path, bad, match):
    folder, _, _ = write_cifar10(tmp_path)
    dump(folder / "data_batch_1", bad)
    with pytest.raises(DataError, match=match):
        load_dataset("cifar10", tmp_path)


def test_truncated_pickle_and_missing_meta(tmp_path):
    folder, _, _ = write_cifar10(tmp_path)
    data = (folder / "data_batch_1").read_bytes()
    (folder / "data_batch_1").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="data_batch_1"):
        load_dataset("cifar10", tmp_path)
    (folder / "batches.meta").unlink()
    with pytest.raises(DataError, match="batches.meta"):
        load_dataset("cifar10", tmp_path)


def test_download_goes_through_torchvision_into_root(tmp_path, monkeypatch):
    import torchvision.datasets as tvd

    calls = []

    class FakeCIFAR10:  # stands in for the network: leaves what torchvision's download leaves behind
        def __init__(self, root, train, download):
            calls.append((root, train, download))
            write_cifar10(Path(root))

    monkeypatch.setattr(tvd, "CIFAR10", FakeCIFAR10)
    with pytest.raises(DataError, match="not found"):
        load_dataset("cifar10", tmp_path / "dl")
    b = load_dataset("cifar10", tmp_path / "dl", download=True)
    assert calls == [(str(tmp_path / "dl"), True, True)]
    assert (len(b.train), len(b.test)) == (12, 6)
