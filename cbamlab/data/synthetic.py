"""Seeded random images for tests and benchmarks only: each class is a smooth random prototype plus noise, so a
model can learn it, and the same seed always gives the same pixels."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .types import TensorSplit

DEFAULTS = {"num_train": 1000, "num_test": 200, "num_classes": 10, "in_chans": 3, "image_size": (32, 32)}


def make_synthetic(num_train: int = 1000, num_test: int = 200, num_classes: int = 10, in_chans: int = 3,
                   image_size=(32, 32), seed: int = 0, noise: float = 40.0) -> tuple[TensorSplit, TensorSplit]:
    """(train, test) uint8 splits; labels cycle through the classes so every class is present."""
    h, w = image_size
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand(num_classes, in_chans, max(h // 4, 2), max(w // 4, 2), generator=gen)
    protos = F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False) * 200 + 28  # (K, C, H, W)

    def draw(n: int) -> TensorSplit:
        labels = torch.arange(n) % num_classes
        labels = labels[torch.randperm(n, generator=gen)]
        x = protos[labels] + torch.randn(n, in_chans, h, w, generator=gen) * noise
        return TensorSplit(x.round().clamp(0, 255).to(torch.uint8), labels)

    return draw(num_train), draw(num_test)


def read(source, name: str = "synthetic", *, include_test: bool = True):
    """(train, test or None, classes) of the default synthetic set; `source` is locate's description."""
    train, test = make_synthetic(DEFAULTS["num_train"], DEFAULTS["num_test"], DEFAULTS["num_classes"],
                                 DEFAULTS["in_chans"], DEFAULTS["image_size"])
    classes = [f"class{i}" for i in range(DEFAULTS["num_classes"])]
    return train, (test if include_test else None), classes
