"""Random erasing settings: the erased area fraction lies in erasing_scale, the aspect ratio in erasing_ratio,
the fill is zero (the mean) or per-pixel noise, and the settings are validated."""
import math

import pytest
import torch

from cbamlab.data import AugmentSpec, augment_batch, resolve_augment
from cbamlab.data.augment import random_erasing
from cbamlab.config import load_config
from cbamlab.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")


def rectangles(mask: torch.Tensor) -> list[tuple[int, int]]:
    """(height, width) of the erased rectangle of each image of a (B, H, W) mask; asserts it is one rectangle."""
    out = []
    for m in mask:
        rows, cols = m.any(1), m.any(0)
        eh, ew = int(rows.sum()), int(cols.sum())
        assert int(m.sum()) == eh * ew  # one axis-aligned rectangle
        out.append((eh, ew))
    return out


@pytest.mark.parametrize("scale, ratio", [((0.02, 0.33), (0.3, 3.3)), ((0.1, 0.2), (0.5, 2.0)),
                                          ((0.3, 0.3), (1.0, 1.0))])
def test_area_fraction_and_aspect_lie_in_the_ranges(scale, ratio):
    h = w = 96
    x = torch.ones(300, 1, h, w)
    out = random_erasing(x, 1.0, torch.Generator().manual_seed(0), scale=scale, ratio=ratio)
    rects = rectangles(out[:, 0] == 0)
    assert all(eh > 0 for eh, _ in rects)  # every image erased (p = 1, and the rectangles fit)
    fractions, aspects = [], []
    for eh, ew in rects:
        # sides are rounded to whole pixels: the true (area, aspect) lies within half a pixel of each side
        assert (eh - 0.5) * (ew - 0.5) <= scale[1] * h * w + 1e-9
        assert (eh + 0.5) * (ew + 0.5) >= scale[0] * h * w - 1e-9
        assert (eh - 0.5) / (ew + 0.5) <= ratio[1] + 1e-9 and (eh + 0.5) / (ew - 0.5) >= ratio[0] - 1e-9
        fractions.append(eh * ew / (h * w))
        aspects.append(math.log(eh / ew))
    if scale[0] < scale[1]:  # the whole range is used, not only a corner of it
        span = scale[1] - scale[0]
        assert min(fractions) < scale[0] + 0.15 * span and max(fractions) > scale[1] - 0.15 * span
        lo, hi = math.log(ratio[0]), math.log(ratio[1])
        assert min(aspects) < lo + 0.2 * (hi - lo) and max(aspects) > hi - 0.2 * (hi - lo)


def test_probability_and_rectangles_that_never_fit():
    x = torch.ones(4000, 1, 8, 8)
    out = random_erasing(x.clone(), 0.5, torch.Generator().manual_seed(1))
    share = float((out == 0).flatten(1).any(1).float().mean())
    assert 0.46 < share < 0.54
    tall = random_erasing(x[:50].clone(), 1.0, torch.Generator().manual_seed(1), scale=(0.9, 1.0), ratio=(3.0, 3.3))
    assert torch.equal(tall, x[:50])  # a rectangle 1.6x the image's height never fits: nothing erased


def test_random_fill_is_unit_noise_inside_the_rectangle_only():
    x = torch.full((64, 3, 32, 32), 7.0)
    out = random_erasing(x.clone(), 1.0, torch.Generator().manual_seed(2), noise=True)
    again = random_erasing(x.clone(), 1.0, torch.Generator().manual_seed(2), noise=True)
    assert torch.equal(out, again)  # one generator state, one result
    erased = out != 7.0
    assert torch.equal(erased[:, 0], erased[:, 1]) and torch.equal(erased[:, 0], erased[:, 2])  # all channels
    rectangles(erased[:, 0])
    noise = out[erased]
    assert noise.numel() > 5000 and abs(float(noise.mean())) < 0.05 and abs(float(noise.std()) - 1) < 0.05


def test_augment_batch_uses_the_spec_settings():
    x = torch.full((20, 1, 16, 16), 200, dtype=torch.uint8)
    mean, std = torch.tensor([0.5]), torch.tensor([0.25])
    spec = AugmentSpec(erasing=1.0, erasing_scale=(0.5, 0.5), erasing_ratio=(1.0, 1.0))
    out = augment_batch(x, spec, torch.Generator().manual_seed(0), mean, std)
    assert ((out == 0).flatten(1).sum(1) == 11 * 11).all()  # round(sqrt(0.5 * 256)) = 11 pixels a side, mean fill
    noisy = augment_batch(x, AugmentSpec(erasing=1.0, erasing_value="random"), torch.Generator().manual_seed(0),
                          mean, std)
    assert (noisy != out[0, 0, 0, 0]).flatten(1).any(1).all()


def test_settings_come_from_the_config_and_are_checked():
    cfg = load_config(None, ["data.augment_overrides.erasing=0.5", "data.augment_overrides.erasing_scale=[0.05, 0.2]",
                             "data.augment_overrides.erasing_ratio=[0.5, 2]",
                             "data.augment_overrides.erasing_value=random"])
    spec = resolve_augment(cfg.data.augment, cfg.data.name, **cfg.data.augment_overrides)
    assert (spec.erasing, spec.erasing_scale, spec.erasing_ratio, spec.erasing_value) == \
        (0.5, (0.05, 0.2), (0.5, 2.0), "random")
    assert AugmentSpec().erasing_scale == (0.02, 0.33) and AugmentSpec().erasing_ratio == (0.3, 3.3)  # timm's
    for bad, words in [({"erasing_scale": [0.5, 0.2]}, "erasing_scale"), ({"erasing_scale": [0, 0.3]}, "0 < min"),
                       ({"erasing_scale": [0.1, 1.5]}, "<= 1"), ({"erasing_ratio": [0, 2]}, "erasing_ratio"),
                       ({"erasing_ratio": [3, 1]}, "min <= max"), ({"erasing_value": "noise"}, "zero, random"),
                       ({"erasing_value": 0}, "erasing_value")]:
        with pytest.raises(ConfigError, match=words):
            resolve_augment("fashion", "fashion_mnist", **bad)
