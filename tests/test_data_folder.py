"""imagefolder: the ImageNet layout, start-up without opening a file, corrupt files skipped lazily (counted, named
once), the memory-budget switch, in-memory pixels equal to streamed pixels, persistent workers, bad layouts."""
import logging

import numpy as np
import pytest
import torch
from PIL import Image

from cbamlab.data import decode, load_dataset, make_loaders, resolve_augment
from cbamlab.data.folder import FolderDataset, FolderLoader
from cbamlab.data.loaders import decoded_bytes
from cbamlab.data.memory import MemoryLoader
from cbamlab.errors import DataError


def make_tree(root, classes=("cat", "dog"), n=6, splits=("train", "val"), size=(20, 24)):
    rng = np.random.default_rng(0)
    for split in splits:
        for c in classes:
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                img = Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8))
                img.save(root / split / c / f"{i}.{'png' if i % 2 else 'jpg'}")
    gray = Image.fromarray(rng.integers(0, 256, size, dtype=np.uint8))  # mode L is converted to RGB
    gray.save(root / "train" / classes[0] / "gray.bmp")
    return root


def add_corrupt(root):
    (root / "train" / "cat" / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    (root / "val" / "dog" / "notes.png").write_text("hello")
    return [str(root / "train" / "cat" / "broken.jpg"), str(root / "val" / "dog" / "notes.png")]


def warnings_of(caplog):
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_layout_classes_counts_and_info(tmp_path):
    make_tree(tmp_path)
    (tmp_path / "train" / "cat" / "README.txt").write_text("not an image: ignored, as torchvision does")
    b = load_dataset("imagefolder", tmp_path, image_size=16, val_fraction=0.25, seed=0)
    assert b.info.classes == ["cat", "dog"] and b.info.num_classes == 2 and b.info.in_chans == 3
    assert b.info.image_size == (16, 16)
    assert len(b.train) + len(b.val) == 13 and len(b.test) == 12
    assert sorted(set(b.val.labels.tolist())) == [0, 1]
    assert decoded_bytes(b) == 25 * 3 * 16 * 16


def test_startup_opens_no_image_file(tmp_path, monkeypatch):
    make_tree(tmp_path)
    add_corrupt(tmp_path)

    def refuse(*a, **k):
        raise AssertionError("an image file was opened at start-up")

    monkeypatch.setattr(decode, "_read_bytes", refuse)
    monkeypatch.setattr(Image, "open", refuse)
    b = load_dataset("imagefolder", tmp_path, image_size=16)
    assert len(b.train) == 14 and len(b.test) == 13  # the corrupt files are listed; they are found when read


@pytest.mark.parametrize("budget", [0.0, 1.0])
def test_corrupt_files_skipped_counted_named_once(tmp_path, caplog, budget):
    make_tree(tmp_path)
    bad = add_corrupt(tmp_path)
    b = load_dataset("imagefolder", tmp_path, image_size=16)
    with caplog.at_level(logging.WARNING, logger="cbamlab.data"):
        L = make_loaders(b, 5, augment=resolve_augment("auto", "imagefolder", image_size=16), device="cpu", seed=0,
                         workers=0, memory_budget_gb=budget)
        assert isinstance(L.train, MemoryLoader if budget else FolderLoader)
        for epoch in (1, 2):
            L.train.set_epoch(epoch)
            assert sum(len(y) for _, y in L.train) == 13  # 14 files, one unreadable
            assert sum(len(y) for _, y in L.test) == 12
    assert L.skipped_files() == bad
    text = "\n".join(warnings_of(caplog))
    assert text.count("broken.jpg") == 1 and text.count("notes.png") == 1  # named once, not once per epoch


def test_memory_budget_switch_is_logged(tmp_path, caplog):
    make_tree(tmp_path)
    b = load_dataset("imagefolder", tmp_path, image_size=16)
    need = decoded_bytes(b) / 1e9
    with caplog.at_level(logging.INFO, logger="cbamlab.data"):
        at = make_loaders(b, 4, augment=None, workers=0, memory_budget_gb=need)
        under = make_loaders(b, 4, augment=None, workers=0, memory_budget_gb=need * 0.99)
    assert isinstance(at.train, MemoryLoader) and isinstance(at.test, MemoryLoader)
    assert isinstance(under.train, FolderLoader) and isinstance(under.test, FolderLoader)
    msgs = [r.getMessage() for r in caplog.records if "memory_budget_gb" in r.getMessage()]
    assert len(msgs) == 2 and "25 images decoded at 16x16" in msgs[0]
    assert "within" in msgs[0] and "into memory" in msgs[0]
    assert "over" in msgs[1] and "streaming" in msgs[1] and "persistent" in msgs[1]


def test_in_memory_pixels_equal_streamed_pixels(tmp_path):
    """Eval: the same preprocessing, hence the same pixels. Training with crop + flip: the same batches too."""
    make_tree(tmp_path, size=(30, 21))
    b = load_dataset("imagefolder", tmp_path, image_size=16)
    spec = resolve_augment("auto", "imagefolder", image_size=16, erasing=0.5)
    assert spec.crop_padding == 2 and spec.hflip and not spec.resized_crop
    mem = make_loaders(b, 4, augment=spec, workers=0, seed=5, memory_budget_gb=1.0)
    stream = make_loaders(b, 4, augment=spec, workers=0, seed=5, memory_budget_gb=0.0)
    for a, c in ((mem.test, stream.test), (mem.train, stream.train)):
        a.set_epoch(3)
        c.set_epoch(3)
        pairs = list(zip(a, c))
        assert len(pairs) == len(a) == len(c) > 0
        for (xa, ya), (xc, yc) in pairs:
            assert torch.equal(ya, yc) and torch.equal(xa, xc)


def test_streamed_batches_do_not_depend_on_workers_and_workers_persist(tmp_path):
    make_tree(tmp_path)
    b = load_dataset("imagefolder", tmp_path, image_size=16)
    spec = resolve_augment("imagenet", "imagefolder", rotation=10, erasing=0.5)  # per-sample RandomResizedCrop

    def run(loaders, epoch):
        loaders.train.set_epoch(epoch)
        return [x for x, _ in loaders.train], [x for x, _ in loaders.test]

    l0 = make_loaders(b, 4, augment=spec, seed=3, workers=0, memory_budget_gb=0)
    l2 = make_loaders(b, 4, augment=spec, seed=3, workers=2, memory_budget_gb=0)
    tr0, te0 = run(l0, 1)
    tr2, te2 = run(l2, 1)
    assert tr0[0].shape == (4, 3, 16, 16) and tr0[0].dtype == torch.float32
    assert len(tr0) == len(tr2) == 3  # 13 images: the last batch of one is dropped
    assert all(torch.equal(a, c) for a, c in zip(tr0, tr2)) and all(torch.equal(a, c) for a, c in zip(te0, te2))
    pids = [w.pid for w in l2.train._loader._iterator._workers]
    other, te1 = run(l2, 2)
    assert [w.pid for w in l2.train._loader._iterator._workers] == pids  # not re-spawned for the next epoch
    assert not torch.equal(torch.cat(other), torch.cat(tr0))
    assert all(torch.equal(a, c) for a, c in zip(te0, te1))  # eval: no augmentation, fixed order


def test_include_test_false_does_not_list_val(tmp_path):
    make_tree(tmp_path, splits=("train",))
    assert load_dataset("imagefolder", tmp_path, include_test=False).test is None
    with pytest.raises(DataError, match="no such folder: .*val"):
        load_dataset("imagefolder", tmp_path)


def test_bad_layouts(tmp_path):
    with pytest.raises(DataError, match="needs data.root"):
        load_dataset("imagefolder")
    (tmp_path / "train").mkdir()
    with pytest.raises(DataError, match="no class folders"):
        load_dataset("imagefolder", tmp_path)
    make_tree(tmp_path)
    (tmp_path / "train" / "empty").mkdir()
    (tmp_path / "train" / "empty" / "notes.txt").write_text("no image here")
    with pytest.raises(DataError, match="empty: empty class \\(no image files"):
        load_dataset("imagefolder", tmp_path)
    (tmp_path / "train" / "empty" / "notes.txt").unlink()
    (tmp_path / "train" / "empty").rmdir()
    (tmp_path / "val" / "bird").mkdir()
    with pytest.raises(DataError, match="classes not in train: bird"):
        load_dataset("imagefolder", tmp_path)


def test_a_split_with_no_readable_image_is_an_error(tmp_path):
    make_tree(tmp_path, n=1, splits=("train",))
    for p in (tmp_path / "train").rglob("*.*"):
        p.write_bytes(b"junk")
    b = load_dataset("imagefolder", tmp_path, image_size=8, include_test=False)
    with pytest.raises(DataError, match="no readable image in the train split"):
        make_loaders(b, 2, augment=None, workers=0)


def test_dataset_keeps_paths_compactly_and_gives_them_back(tmp_path):
    make_tree(tmp_path, splits=("train",))
    Image.new("RGB", (5, 7), (250, 10, 10)).save(tmp_path / "train" / "dog" / "chat é 1.png")
    b = load_dataset("imagefolder", tmp_path, image_size=4, include_test=False)
    ds = FolderDataset(b.train.samples, (4, 4))
    assert len(ds) == 14 and [ds.sample(i) for i in range(len(ds))] == b.train.samples
    i = [p for p, _ in b.train.samples].index(str(tmp_path / "train" / "dog" / "chat é 1.png"))
    x, label, bad = ds[(i, 0)]
    assert bad is None and label == 1 and x.shape == (3, 4, 4) and x[0].min() >= 240 and x[1].max() <= 20
