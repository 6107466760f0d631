"""imagefolder: the ImageNet layout, corrupt files skipped with one warning, per-sample seeds, bad layouts."""
import logging

import numpy as np
import pytest
import torch
from PIL import Image

from cbamlab.data import load_dataset, make_loaders, resolve_augment
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


def test_layout_classes_counts_and_info(tmp_path):
    make_tree(tmp_path)
    b = load_dataset("imagefolder", tmp_path, image_size=16, val_fraction=0.25, seed=0)
    assert b.info.classes == ["cat", "dog"] and b.info.num_classes == 2 and b.info.in_chans == 3
    assert b.info.image_size == (16, 16)
    assert len(b.train) + len(b.val) == 13 and len(b.test) == 12
    assert sorted(set(b.val.labels.tolist())) == [0, 1]


def test_corrupt_files_skipped_with_one_warning_naming_them(tmp_path, caplog):
    make_tree(tmp_path)
    (tmp_path / "train" / "cat" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (tmp_path / "val" / "dog" / "notes.png").write_text("hello")
    with caplog.at_level(logging.WARNING, logger="cbamlab.data"):
        b = load_dataset("imagefolder", tmp_path, image_size=16)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "skipped 2 unreadable" in warnings[0] and "broken.jpg" in warnings[0] and "notes.png" in warnings[0]
    assert len(b.train) == 13 and len(b.test) == 12
    L = make_loaders(b, 5, augment=resolve_augment("auto", "imagefolder"), device="cpu", seed=0, workers=0)
    assert sum(len(y) for _, y in L.train) == 13


def test_batches_do_not_depend_on_workers_and_eval_is_fixed(tmp_path):
    make_tree(tmp_path)
    b = load_dataset("imagefolder", tmp_path, image_size=16)
    spec = resolve_augment("auto", "imagefolder", rotation=10, erasing=0.5)

    def run(workers, epoch):
        L = make_loaders(b, 4, augment=spec, device="cpu", seed=3, workers=workers)
        L.train.set_epoch(epoch)
        return [x for x, _ in L.train], [x for x, _ in L.test]

    tr0, te0 = run(0, 1)
    tr2, te2 = run(2, 1)
    assert tr0[0].shape == (4, 3, 16, 16) and tr0[0].dtype == torch.float32
    assert all(torch.equal(a, c) for a, c in zip(tr0, tr2)) and len(tr0) == len(tr2) == 3  # 13 images: the last batch of one is dropped
    assert all(torch.equal(a, c) for a, c in zip(te0, te2))
    other, te1 = run(0, 2)
    assert not torch.equal(torch.cat(other), torch.cat(tr0))
    assert all(torch.equal(a, c) for a, c in zip(te0, te1))  # eval: no augmentation, fixed order


def test_include_test_false_does_not_scan_val(tmp_path):
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
    (tmp_path / "train" / "empty" / "junk.jpg").write_bytes(b"junk")
    with pytest.raises(DataError, match="empty: empty class"):
        load_dataset("imagefolder", tmp_path)
    (tmp_path / "train" / "empty" / "junk.jpg").unlink()
    (tmp_path / "train" / "empty").rmdir()
    (tmp_path / "val" / "bird").mkdir()
    with pytest.raises(DataError, match="classes not in train: bird"):
        load_dataset("imagefolder", tmp_path)
