"""Listing an image folder: linear in the files listed, extensions filtered, the cached index used while no directory
changed and listed again when one did."""
import json
import logging
import os
import time

import pytest

from cbamlab.data import folder_index, load_dataset
from cbamlab.data.folder_index import index_path, list_folder, scan


@pytest.fixture(autouse=True)
def cache_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def touch_tree(root, classes=("a", "b", "c", "d"), per_class=3, nested=False):
    for c in classes:
        d = root / c / ("sub" if nested else "")
        d.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            (d / f"{i:05d}.JPG").touch()
    return root


def age(root, seconds=60):
    """Set every directory's mtime `seconds` into the past (a folder that settled before the run)."""
    t = time.time() - seconds
    for d, _, _ in os.walk(root):
        os.utime(d, (t, t))


class FakeEntry:
    def __init__(self, name):
        self.name = name

    def is_dir(self):
        return False


def test_twenty_thousand_entries_filtered_in_linear_time_with_one_stat_per_directory(tmp_path, monkeypatch):
    """The listing algorithm on 20,000 fake entries (creating real files costs more than the test may take)."""
    for c in "abcd":
        (tmp_path / c).mkdir()
    real_scandir, real_stat = os.scandir, os.stat
    stats = []

    class Listing:  # os.scandir's context manager, with 5,000 images and 5 other files per class folder
        def __init__(self, path):
            self.path = str(path)

        def __enter__(self):
            if self.path == str(tmp_path):
                self.real = real_scandir(self.path)
                return self.real.__enter__()
            names = [f"{i:05d}.{'JPEG' if i % 2 else 'png'}" for i in reversed(range(5000))]
            return iter([FakeEntry(n) for n in names] + [FakeEntry(f"x{i}.txt") for i in range(5)])

        def __exit__(self, *exc):
            return self.real.__exit__(*exc) if hasattr(self, "real") else None

    monkeypatch.setattr(folder_index.os, "scandir", Listing)
    def stat(p, *a, **k):  # os.stat is global: record only what the scan asks about the folder
        if str(p).startswith(str(tmp_path)):
            stats.append(str(p))
        return real_stat(p, *a, **k)

    monkeypatch.setattr(folder_index.os, "stat", stat)
    classes, samples = scan(tmp_path)
    assert classes == ["a", "b", "c", "d"] and len(samples) == 20000
    assert samples[0] == (str(tmp_path / "a" / "00000.png"), 0) and samples[-1] == (str(tmp_path / "d" / "04999.JPEG"), 3)
    assert not any("." in os.path.basename(p) for p in stats)  # directories only: no file is stat'ed or opened
    assert len({p.rstrip("/") for p in stats}) == 5 and len(stats) <= 10  # root + 4 class folders: O(folders)


def test_extensions_hidden_files_and_nested_folders(tmp_path):
    touch_tree(tmp_path, classes=("x",), per_class=2, nested=True)
    for name in ("notes.txt", ".hidden.jpg", "y.webp", "z.tiff"):
        (tmp_path / "x" / name).touch()
    (tmp_path / ".git").mkdir()
    listing = list_folder(tmp_path)
    assert listing["classes"] == ["x"] and listing["ignored"] == 1
    assert listing["files"]["x"] == [os.path.join("sub", "00000.JPG"), os.path.join("sub", "00001.JPG"), "y.webp",
                                     "z.tiff"]
    assert set(listing["dirs"]) == {"", "x", os.path.join("x", "sub")}


def test_index_cache_is_written_used_and_invalidated(tmp_path, monkeypatch, caplog):
    root = tmp_path / "data"
    touch_tree(root / "train")
    touch_tree(root / "val", per_class=1)
    age(root)
    b = load_dataset("imagefolder", root, index_cache=True)
    train_idx = index_path(root / "train")
    assert train_idx.is_file() and index_path(root / "val").is_file()
    assert train_idx.parent == tmp_path / "cache" / "cbamlab" / "imagefolder" / "index"
    assert len(json.loads(train_idx.read_text())["files"]["a"]) == 3

    def no_listing(*a, **k):
        raise AssertionError("listed the folder although its index is up to date")

    with monkeypatch.context() as m, caplog.at_level(logging.INFO, logger="cbamlab.data"):
        m.setattr(folder_index.os, "scandir", no_listing)
        again = load_dataset("imagefolder", root, index_cache=True)
    assert again.train.samples == b.train.samples and again.test.samples == b.test.samples
    assert any("read from its index" in r.getMessage() for r in caplog.records)

    (root / "train" / "b" / "new.png").touch()  # changes train/b's mtime
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="cbamlab.data"):
        changed = load_dataset("imagefolder", root, index_cache=True)
    assert len(changed.train) == len(b.train) + 1
    assert str(root / "train" / "b" / "new.png") in [p for p, _ in changed.train.samples]
    assert any("out of date" in r.getMessage() for r in caplog.records)
    assert any("changed less than" in r.getMessage() for r in caplog.records)  # too fresh to be cached yet
    age(root)
    load_dataset("imagefolder", root, index_cache=True)
    assert "new.png" in train_idx.read_text()


def test_without_index_cache_nothing_is_written_and_a_bad_index_is_ignored(tmp_path, caplog):
    root = touch_tree(tmp_path / "train")
    age(root)
    scan(root)
    assert not index_path(root).exists()
    index_path(root).parent.mkdir(parents=True)
    index_path(root).write_text("{not json")
    with caplog.at_level(logging.WARNING, logger="cbamlab.data"):
        classes, samples = scan(root, index_cache=True)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(samples) == 12 and len(warnings) == 1 and "ignoring the file index" in warnings[0]
    assert json.loads(index_path(root).read_text())["classes"] == classes  # rewritten
