"""Augmentation presets per dataset family, resolved to an `AugmentSpec` with per-field overrides.

"auto" on an image folder follows the image size: small images (<= SMALL_IMAGE_MAX px) get a crop with padding
(an eighth of the side, CIFAR's 4 px at 32 px) and a horizontal flip; larger ones ImageNet's RandomResizedCrop +
flip. RandomResizedCrop down to 8 % of a 32 px image crops a small object out of the picture: measured, a 4-class
shapes folder stayed at 28 % after 2 epochs with it.
"""
from __future__ import annotations

import logging
import math
from dataclasses import fields, replace

from ..errors import ConfigError, unknown
from .augment import ALTERNATE, ERASING_VALUES, AugmentSpec

log = logging.getLogger(__name__)

PRESETS: dict[str, dict] = {
    "none": {},
    "digits": {"translate": 1},                          # 8x8 digits: one pixel is already an eighth
    "mnist": {"translate": 2, "rotation": 10.0},         # MNIST-style: small translation and rotation
    "fashion": {"translate": 2, "hflip": True},          # clothes are left-right symmetric
    "cifar": {"crop_padding": 4, "hflip": True},         # He et al. 2016: pad-4 crop + flip
    "cifar_erasing": {"crop_padding": 4, "hflip": True, "erasing": 0.5},
    "imagenet": {"resized_crop": True, "hflip": True},   # RandomResizedCrop + flip
}

# What `auto` means for each dataset.
AUTO: dict[str, str] = {
    "digits": "digits",
    "mnist": "mnist",
    "fashion_mnist": "fashion",
    "cifar10": "cifar",
    "cifar100": "cifar",
    "imagefolder": "by size",  # see _auto_folder
    "synthetic": "none",
}
SMALL_IMAGE_MAX = 64  # px (shorter side of the training size)


def list_presets() -> list[str]:
    return ["auto", *PRESETS]


def _coerce(name: str, kind, value):
    """Check one override against the field's type; ints are accepted for floats, nothing else is converted."""
    if name == "hflip":  # true (random, p = 1/2), false, or airbench's alternating flips
        if not (isinstance(value, bool) or value == ALTERNATE):
            raise ConfigError(f"augmentation 'hflip' must be true, false or {ALTERNATE}, got {value!r}")
        return value
    if kind == "bool" or kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"augmentation '{name}' must be true or false, got {value!r}")
        return value
    if kind == "int" or kind is int:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(f"augmentation '{name}' must be a non-negative integer (pixels), got {value!r}")
        return value
    if kind == "float" or kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ConfigError(f"augmentation '{name}' must be a non-negative number, got {value!r}")
        return float(value)
    if kind == "str" or kind is str:  # erasing_value
        if value not in ERASING_VALUES:
            raise ConfigError(f"augmentation '{name}' must be one of {', '.join(ERASING_VALUES)}, got {value!r}")
        return value
    # crop_scale, erasing_scale: a (min, max) pair of area fractions; erasing_ratio: of aspect ratios
    high = math.inf if name == "erasing_ratio" else 1
    if (not isinstance(value, (list, tuple)) or len(value) != 2
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
            or not 0 < value[0] <= value[1] <= high):
        bound = "" if high == math.inf else f" <= {high}"
        raise ConfigError(f"augmentation '{name}' must be [min, max] with 0 < min <= max{bound}, got {value!r}")
    return (float(value[0]), float(value[1]))


def _auto_folder(image_size) -> tuple[dict, str]:
    """(preset values, why) of "auto" for an image folder trained at `image_size` (None: the 224 default)."""
    if isinstance(image_size, int):
        image_size = (image_size, image_size)
    side = min(image_size) if image_size else 224
    if side <= SMALL_IMAGE_MAX:
        pad = max(1, round(side / 8))
        return ({"crop_padding": pad, "hflip": True},
                f"crop with {pad}-pixel padding + horizontal flip ({side} px images, <= {SMALL_IMAGE_MAX} px)")
    lo = AugmentSpec().crop_scale[0]
    return (dict(PRESETS["imagenet"]),
            f"RandomResizedCrop (area {lo * 100:g}-100 %) + horizontal flip ({side} px images, > {SMALL_IMAGE_MAX} px)")


def resolve_augment(preset: str = "auto", dataset: str | None = None, *, image_size=None,
                    **overrides) -> AugmentSpec:
    """The `AugmentSpec` of `preset` ("auto" picks the dataset's family preset, by `image_size` (an int or (H, W),
    the training size) for an image folder), with fields overridden. The choice "auto" makes is logged.

    Overrides whose value is None are ignored, so a config can pass every optional field through.
    """
    if preset == "auto":
        if dataset not in AUTO:
            raise unknown("dataset", dataset, AUTO)
        if dataset == "imagefolder":
            base, why = _auto_folder(image_size)
        else:
            base, why = dict(PRESETS[AUTO[dataset]]), f"the '{AUTO[dataset]}' preset"
        log.info("augment auto for %s: %s", dataset, why)
    elif preset in PRESETS:
        base = dict(PRESETS[preset])
    else:
        raise unknown("augmentation preset", preset, list_presets())
    known = {f.name: f.type for f in fields(AugmentSpec)}
    values = base
    for name, value in overrides.items():
        if value is None:
            continue
        if name not in known:
            raise ConfigError(str(unknown("augmentation", name, known)))
        values[name] = _coerce(name, known[name], value)
    if values.get("erasing", 0.0) > 1:
        raise ConfigError(f"augmentation 'erasing' is a probability in [0, 1], got {values['erasing']}")
    if values.get("rotation", 0.0) > 180:
        raise ConfigError(f"augmentation 'rotation' is at most 180 degrees, got {values['rotation']}")
    return replace(AugmentSpec(), **values)
