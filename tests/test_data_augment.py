"""Batch augmentations: shapes and ranges kept, reproducible from the seed, crops and flips really move pixels."""
import logging

import pytest
import torch

from cbamlab.data import AugmentSpec, augment_batch, normalize_batch, resolve_augment
from cbamlab.data.augment import _shift, random_erasing
from cbamlab.errors import CbamlabError, ConfigError

MEAN = torch.tensor([0.5, 0.25, 0.75])
STD = torch.tensor([0.2, 0.3, 0.4])


def images(n=64, c=3, h=12, w=10, seed=0):
    return torch.randint(1, 256, (n, c, h, w), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def run(spec, x, seed=0):
    c = x.shape[1]
    return augment_batch(x, spec, torch.Generator().manual_seed(seed), MEAN[:c], STD[:c])


def test_normalize_matches_formula_and_leaves_input():
    x = images()
    y = normalize_batch(x, MEAN, STD)
    want = (x.double() / 255 - MEAN.double().view(1, 3, 1, 1)) / STD.double().view(1, 3, 1, 1)
    assert y.dtype == torch.float32 and torch.allclose(y.double(), want, atol=1e-5)
    xf = x.float()
    normalize_batch(xf, MEAN, STD)
    assert torch.equal(xf, x.float())


def test_shift_moves_pixels_exactly_with_zero_fill():
    x = images(n=2)
    out = _shift(x, torch.tensor([2, -1]), torch.tensor([-3, 0]))
    assert torch.equal(out[0, :, 2:, :-3], x[0, :, :-2, 3:])
    assert (out[0, :, :2] == 0).all() and (out[0, :, :, -3:] == 0).all()
    assert torch.equal(out[1, :, :-1], x[1, :, 1:]) and (out[1, :, -1] == 0).all()


@pytest.mark.parametrize("spec", [
    AugmentSpec(crop_padding=4), AugmentSpec(hflip=True), AugmentSpec(vflip=True), AugmentSpec(rotation=20),
    AugmentSpec(translate=2), AugmentSpec(erasing=1.0), AugmentSpec(resized_crop=True),
    AugmentSpec(crop_padding=4, hflip=True, vflip=True, rotation=15, translate=1, erasing=0.5, resized_crop=True),
])
def test_shapes_ranges_and_reproducibility(spec):
    x = images()
    a, b, c = run(spec, x, seed=1), run(spec, x, seed=1), run(spec, x, seed=2)
    assert a.shape == x.shape and a.dtype == torch.float32
    lo = (0 - MEAN.max()) / STD.min() - 1e-4
    hi = (1 - MEAN.min()) / STD.min() + 1e-4
    assert a.min() >= lo and a.max() <= hi
    assert torch.equal(a, b)  # same generator seed: same batch
    assert not torch.equal(a, c)
    assert not torch.equal(a, normalize_batch(x, MEAN, STD))  # it really changed something


def test_crop_is_a_zero_filled_shift_within_padding():
    x = images(n=32, c=1)
    y = run(AugmentSpec(crop_padding=2), x)
    raw = (y * STD[0] + MEAN[0]) * 255  # back to pixel values (1 channel uses the first mean/std)
    raw = raw.round().to(torch.int64)
    moved = 0
    for i in range(len(x)):
        matches = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)
                   if torch.equal(raw[i:i + 1], _shift(x[i:i + 1], torch.tensor([dy]), torch.tensor([dx])).long())]
        assert len(matches) == 1
        moved += matches[0] != (0, 0)
    assert moved >= 20  # 24 of 25 offsets move pixels


def test_hflip_gives_original_or_mirror_and_both_occur():
    x = images()
    y = run(AugmentSpec(hflip=True), x)
    plain, mirrored = normalize_batch(x, MEAN, STD), normalize_batch(x.flip(3), MEAN, STD)
    is_plain = (y == plain).flatten(1).all(1)
    is_mirror = (y == mirrored).flatten(1).all(1)
    assert (is_plain | is_mirror).all()
    assert 10 < int(is_mirror.sum()) < 54


def test_rotation_and_resized_crop_keep_a_constant_image_constant_inside():
    x = torch.full((8, 1, 16, 16), 200, dtype=torch.uint8)
    y = run(AugmentSpec(resized_crop=True), x)  # the crop box lies inside the image: no padding reaches it
    assert torch.allclose(y, normalize_batch(x, MEAN[:1], STD[:1]), atol=1e-4)
    y = run(AugmentSpec(rotation=30), x)
    centre = y[:, :, 6:10, 6:10]
    assert torch.allclose(centre, normalize_batch(x[:, :, :4, :4], MEAN[:1], STD[:1]), atol=1e-4)
    assert (y[:, :, 0, 0] < centre[:, :, 0, 0]).sum() >= 4  # corners rotate in zero padding


def test_erasing_fills_one_rectangle_with_the_mean():
    x = torch.ones(200, 1, 20, 20)
    out = random_erasing(x.clone(), 1.0, torch.Generator().manual_seed(0))
    erased = (out == 0).flatten(1).sum(1).float() / 400
    assert (erased > 0).all() and (erased <= 0.40).all()
    mask = out[:, 0] == 0
    rows, cols = mask.any(2), mask.any(1)
    assert torch.equal(mask.sum((1, 2)), rows.sum(1) * cols.sum(1))  # a rectangle
    none = random_erasing(x.clone(), 0.0, torch.Generator().manual_seed(0))
    assert torch.equal(none, x)


def test_presets_auto_overrides_and_errors():
    assert resolve_augment("auto", "cifar10") == AugmentSpec(crop_padding=4, hflip=True)
    assert resolve_augment("auto", "digits") == AugmentSpec(translate=1)
    assert resolve_augment("auto", "imagefolder").resized_crop
    assert not resolve_augment("none", "cifar10").active
    spec = resolve_augment("cifar", "cifar10", hflip=False, erasing=0.25, rotation=5, crop_scale=[0.2, 1], vflip=None)
    assert spec == AugmentSpec(crop_padding=4, erasing=0.25, rotation=5.0, crop_scale=(0.2, 1.0))
    with pytest.raises(ConfigError, match="unknown augmentation 'hflp' \\(did you mean hflip"):
        resolve_augment("auto", "cifar10", hflp=True)
    with pytest.raises(CbamlabError, match="unknown augmentation preset 'cifr'"):
        resolve_augment("cifr", "cifar10")
    with pytest.raises(CbamlabError, match="unknown dataset"):
        resolve_augment("auto", "imagenet1k")
    for bad in ({"hflip": 1}, {"crop_padding": 2.5}, {"crop_padding": -1}, {"erasing": 2.0}, {"rotation": 400},
                {"crop_scale": [0.5, 0.2]}, {"rotation": "ten"}):
        with pytest.raises(ConfigError):
            resolve_augment("none", "cifar10", **bad)


def test_auto_on_an_image_folder_follows_the_image_size(caplog):
    with caplog.at_level(logging.INFO, logger="cbamlab.data"):
        small = resolve_augment("auto", "imagefolder", image_size=32)
        tiny = resolve_augment("auto", "imagefolder", image_size=(12, 20))
        edge = resolve_augment("auto", "imagefolder", image_size=64)
        large = resolve_augment("auto", "imagefolder", image_size=(224, 224))
        default = resolve_augment("auto", "imagefolder")
    assert small == AugmentSpec(crop_padding=4, hflip=True)  # CIFAR's pad-4 crop + flip at 32 px
    assert tiny == AugmentSpec(crop_padding=2, hflip=True) and edge == AugmentSpec(crop_padding=8, hflip=True)
    assert large == default == AugmentSpec(resized_crop=True, hflip=True)
    msgs = [r.getMessage() for r in caplog.records]
    assert "augment auto for imagefolder: crop with 4-pixel padding + horizontal flip (32 px" in msgs[0]
    assert "RandomResizedCrop (area 8-100 %) + horizontal flip (224 px" in msgs[3]
    assert resolve_augment("auto", "imagefolder", image_size=32, hflip=False) == AugmentSpec(crop_padding=4)
    assert resolve_augment("none", "imagefolder", image_size=32) == AugmentSpec()
