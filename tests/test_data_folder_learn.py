"""A small folder of 32 px shapes trains with the automatic augmentation (crop with padding + flip at this size)."""
import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image, ImageDraw

from cbamlab.data import load_dataset, make_loaders, resolve_augment
from cbamlab.data.memory import MemoryLoader

KINDS = ("circle", "square", "triangle", "cross")


def shapes_folder(root, n_train=80, n_val=25, size=32, seed=1):
    """A small coloured shape (radius 4-7 px) at a random place on a dark noise background, as PNG files."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("val", n_val)):
        for kind in KINDS:
            (root / split / kind).mkdir(parents=True)
            for i in range(n):
                img = Image.fromarray(rng.integers(0, 120, (size, size, 3)).astype(np.uint8))
                draw = ImageDraw.Draw(img)
                r = int(rng.integers(4, 8))
                cx, cy = (int(v) for v in rng.integers(r, size - r, 2))
                colour = tuple(int(v) for v in rng.integers(140, 256, 3))
                if kind == "circle":
                    draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
                elif kind == "square":
                    draw.rectangle([cx - r, cy - r, cx + r, cy + r], fill=colour)
                elif kind == "triangle":
                    draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=colour)
                else:
                    w = max(1, r // 3)
                    draw.rectangle([cx - r, cy - w, cx + r, cy + w], fill=colour)
                    draw.rectangle([cx - w, cy - r, cx + w, cy + r], fill=colour)
                img.save(root / split / kind / f"{i}.png")
    return root


def tiny_net():
    def block(cin, cout):
        return [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU()]

    return nn.Sequential(*block(3, 16), nn.MaxPool2d(2), *block(16, 32), nn.MaxPool2d(2), *block(32, 64),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, len(KINDS)))


@pytest.mark.slow  # ~3 s on a quiet core: 10 epochs of 320 images
def test_auto_augmentation_learns_a_small_shapes_folder(tmp_path, one_thread):
    b = load_dataset("imagefolder", shapes_folder(tmp_path), image_size=32)
    spec = resolve_augment("auto", "imagefolder", image_size=b.info.image_size)
    assert spec.crop_padding == 4 and spec.hflip and not spec.resized_crop
    loaders = make_loaders(b, 32, augment=spec, seed=0, workers=0)
    assert isinstance(loaders.train, MemoryLoader)  # 420 images of 32 px: decoded once into memory
    torch.manual_seed(0)
    model = tiny_net()
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    for epoch in range(10):
        model.train()
        loaders.train.set_epoch(epoch)
        for x, y in loaders.train:
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        correct = sum(int((model(x).argmax(1) == y).sum()) for x, y in loaders.test)
    assert correct / loaders.test.num_samples >= 0.85  # chance: 0.25; measured 0.98
