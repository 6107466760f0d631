"""Datasets by name: digits, synthetic, validation split, resizing, statistics, bad arguments."""
import numpy as np
import pytest
import torch

from cbamlab.data import get_spec, list_datasets, load_dataset, make_synthetic
from cbamlab.data.stats import channel_stats, resize_images, stratified_split
from cbamlab.errors import CbamlabError, DataError


def test_digits_real_values_fixed_stratified_split():
    from sklearn.datasets import load_digits

    b = load_dataset("digits")
    assert b.info.name == "digits" and b.info.num_classes == 10 and b.info.in_chans == 1
    assert b.info.image_size == (8, 8) and b.info.classes == [str(i) for i in range(10)]
    assert (len(b.train), len(b.test)) == (get_spec("digits").train_size, get_spec("digits").test_size)
    assert len(b.train) + len(b.test) == 1797
    assert b.train.images.dtype == torch.uint8 and int(b.train.images.max()) == 255
    # every original image appears once, scaled from 0..16 to 0..255
    d = load_digits()
    want = np.rint(d.images * 255 / 16).astype(np.uint8).reshape(1797, -1)
    got = torch.cat([b.train.images, b.test.images]).reshape(1797, -1).numpy()
    assert sorted(map(bytes, got)) == sorted(map(bytes, want))
    counts = torch.bincount(b.test.labels, minlength=10)
    assert (counts >= 35).all() and (counts <= 37).all()  # about 20 % of each class
    again = load_dataset("digits", seed=123)
    assert torch.equal(again.test.images, b.test.images)  # the test split does not follow the run seed


def test_validation_split_is_stratified_seeded_and_disjoint():
    full = load_dataset("digits")
    a = load_dataset("digits", val_fraction=0.2, seed=1)
    a2 = load_dataset("digits", val_fraction=0.2, seed=1)
    c = load_dataset("digits", val_fraction=0.2, seed=2)
    assert torch.equal(a.val.images, a2.val.images) and not torch.equal(a.val.images, c.val.images)
    assert len(a.train) + len(a.val) == len(full.train)
    joined = torch.cat([a.train.images, a.val.images]).reshape(len(full.train), -1)
    assert sorted(map(bytes, joined.numpy())) == sorted(map(bytes, full.train.images.reshape(len(full.train), -1).numpy()))
    frac = torch.bincount(a.val.labels, minlength=10).float() / torch.bincount(full.train.labels, minlength=10)
    assert ((frac - 0.2).abs() < 0.02).all()
    assert torch.equal(a.test.images, full.test.images) and a.info.mean == full.info.mean
    assert load_dataset("digits").val is None


def test_stratified_split_keeps_every_class_on_both_sides():
    labels = torch.tensor([0] * 50 + [1] * 3 + [2] * 2)
    kept, held = stratified_split(labels, 0.1, seed=0)
    assert set(labels[kept].tolist()) == {0, 1, 2} and set(labels[held].tolist()) == {0, 1, 2}
    assert len(set(kept.tolist()) & set(held.tolist())) == 0 and len(kept) + len(held) == 55


def test_include_test_false_and_synthetic_is_seeded():
    b = load_dataset("synthetic", include_test=False)
    assert b.test is None and len(b.train) == 1000 and b.info.image_size == (32, 32) and b.info.in_chans == 3
    assert torch.equal(b.train.images, load_dataset("synthetic").train.images)
    tr, te = make_synthetic(20, 10, num_classes=4, in_chans=1, image_size=(5, 6), seed=1)
    assert tr.images.shape == (20, 1, 5, 6) and set(tr.labels.tolist()) == {0, 1, 2, 3}
    assert not torch.equal(tr.images, make_synthetic(20, 10, 4, 1, (5, 6), seed=2)[0].images)


def test_image_size_resizes_once_at_load():
    b = load_dataset("digits", image_size=16)
    assert b.train.images.shape[-2:] == (16, 16) and b.test.images.shape[-2:] == (16, 16)
    assert b.info.image_size == (16, 16)
    const = torch.full((2, 3, 10, 10), 77, dtype=torch.uint8)
    assert torch.equal(resize_images(const, (4, 7)), torch.full((2, 3, 4, 7), 77, dtype=torch.uint8))


def test_channel_stats_exact():
    x = torch.randint(0, 256, (37, 3, 5, 4), dtype=torch.uint8)
    mean, std = channel_stats(x, chunk=8)
    xs = x.double().numpy() / 255
    np.testing.assert_allclose(mean, xs.mean(axis=(0, 2, 3)), rtol=1e-12)
    np.testing.assert_allclose(std, xs.std(axis=(0, 2, 3)), rtol=1e-9)


@pytest.mark.parametrize("kwargs,match", [
    ({"name": "cifar11"}, "unknown dataset 'cifar11' \\(did you mean cifar10"),
    ({"name": "digits", "val_fraction": 1.0}, "val_fraction"),
    ({"name": "digits", "val_fraction": -0.1}, "val_fraction"),
    ({"name": "digits", "image_size": [8]}, "image_size"),
    ({"name": "digits", "image_size": 0}, "image_size"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(CbamlabError, match=match):
        load_dataset(**kwargs)


def test_registry_lists_the_issue_datasets():
    assert set(list_datasets()) == {"digits", "mnist", "fashion_mnist", "cifar10", "cifar100", "imagefolder",
                                    "synthetic"}
    with pytest.raises(DataError):
        stratified_split(torch.tensor([0, 1]), 0.0, seed=0)
