"""Augmentation presets per dataset family, resolved to an `AugmentSpec` with per-field overrides."""
from __future__ import annotations

from dataclasses import fields, replace

from ..errors import ConfigError, unknown
from .augment import AugmentSpec

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
    "imagefolder": "imagenet",
    "synthetic": "none",
}


def list_presets() -> list[str]:
    return ["auto", *PRESETS]


def _coerce(name: str, kind, value):
    """Check one override against the field's type; ints are accepted for floats, nothing else is converted."""
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
    # crop_scale: a (min, max) pair of area fractions
    if (not isinstance(value, (list, tuple)) or len(value) != 2
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
            or not 0 < value[0] <= value[1] <= 1):
        raise ConfigError(f"augmentation '{name}' must be [min, max] with 0 < min <= max <= 1, got {value!r}")
    return (float(value[0]), float(value[1]))


def resolve_augment(preset: str = "auto", dataset: str | None = None, **overrides) -> AugmentSpec:
    """The `AugmentSpec` of `preset` ("auto" picks the dataset's family preset), with fields overridden.

    Overrides whose value is None are ignored, so a config can pass every optional field through.
    """
    if preset == "auto":
        if dataset not in AUTO:
            raise unknown("dataset", dataset, AUTO)
        preset = AUTO[dataset]
    if preset not in PRESETS:
        raise unknown("augmentation preset", preset, list_presets())
    known = {f.name: f.type for f in fields(AugmentSpec)}
    values = dict(PRESETS[preset])
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
