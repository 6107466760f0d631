"""The images to explain: N drawn from a split of the run's dataset (fixed seed, stratified by class), or files.

Inputs are prepared as the model sees them in evaluation: the run's image size, channels, mean and std (image
files as `cbamlab predict` reads them). `display` keeps the same pixels un-normalised, in [0, 1], for figures.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..data import load_dataset, normalize_batch
from ..data.types import TensorSplit
from ..inference.predict import load_input_batch
from ..errors import CbamlabError, unknown

log = logging.getLogger(__name__)

SPLITS = ("test", "val", "train")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


@dataclass
class ImageSet:
    x: torch.Tensor        # (N, C, H, W) float32, normalised as in evaluation
    labels: np.ndarray     # (N,) int64 class index, -1 where unknown (a file outside a class folder)
    files: list[str]       # (N,) where each image came from: a path, or "<dataset>/<split>/<index>"
    display: np.ndarray    # (N, H, W, C) float32 in [0, 1]
    source: str            # one line for the report


def stratified_pick(labels: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """`n` indices, classes taken in turn (first image of every class, then the second, ...), each class shuffled
    by a generator from `seed`: every class is represented as evenly as the split allows."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x1A6E]))
    pools = [rng.permutation(np.flatnonzero(labels == k)) for k in np.unique(labels)]
    picked: list[int] = []
    depth = 0
    while len(picked) < n:
        picked += [int(p[depth]) for p in pools if depth < len(p)][:n - len(picked)]
        depth += 1
    return np.asarray(picked, dtype=np.int64)


def _display(x: torch.Tensor, mean, std) -> np.ndarray:
    c = x.shape[1]
    img = x * torch.tensor(std, dtype=x.dtype).view(1, c, 1, 1) + torch.tensor(mean, dtype=x.dtype).view(1, c, 1, 1)
    return img.clamp(0, 1).permute(0, 2, 3, 1).numpy().astype(np.float32)


def class_indices(names, classes: list[str]) -> list[int]:
    """The indices of class `names`; an unknown name is an error that lists the known ones."""
    out = []
    for name in names:
        if str(name) not in classes:
            raise unknown("class", str(name), classes)
        out.append(classes.index(str(name)))
    return out


def from_split(cfg, data: dict, split: str = "test", n: int = 64, classes=None, seed: int = 0) -> ImageSet:
    """`n` images of `split` ("test", "val", "train") of the dataset the run `cfg` was trained on."""
    if split not in SPLITS:
        raise unknown("split", split, SPLITS)
    if n < 1:
        raise CbamlabError(f"--n must be >= 1, got {n}")
    d = cfg.data
    bundle = load_dataset(d.name, d.root, download=False, image_size=d.image_size, val_fraction=d.val_fraction,
                          seed=cfg.seed, include_test=split == "test")
    part = getattr(bundle, split)
    if part is None:
        raise CbamlabError(f"dataset '{d.name}' has no {split} split for this run (data.val_fraction="
                           f"{d.val_fraction}); use --split test or train")
    if list(bundle.info.image_size) != list(data["image_size"]) or bundle.info.in_chans != data["in_chans"]:
        raise CbamlabError(f"dataset '{d.name}' now reads as {bundle.info.in_chans}x{list(bundle.info.image_size)}, "
                           f"the run was trained on {data['in_chans']}x{list(data['image_size'])}")
    labels = part.labels.numpy()
    pool = np.arange(len(labels))
    if classes:
        pool = pool[np.isin(labels, class_indices(classes, list(data["classes"])))]
    if n > len(pool):
        what = f"the {split} split of {d.name}" + (f" for classes {', '.join(map(str, classes))}" if classes else "")
        raise CbamlabError(f"--n {n} is larger than {what}, which has {len(pool)} images")
    index = pool[stratified_pick(labels[pool], n, seed)]
    mean = torch.tensor(data["mean"], dtype=torch.float32)
    std = torch.tensor(data["std"], dtype=torch.float32)
    if isinstance(part, TensorSplit):
        x = normalize_batch(part.images[torch.from_numpy(index)], mean, std)
    else:  # image files (imagefolder): read as `cbamlab predict` reads them
        x = torch.cat([_read(part.samples[int(i)][0], data) for i in index])
    files = [part.samples[int(i)][0] if not isinstance(part, TensorSplit) else f"{d.name}/{split}/{int(i)}"
             for i in index]
    log.info("%d images of the %s split of %s, stratified by class (seed %d)", n, split, d.name, seed)
    return ImageSet(x, labels[index].astype(np.int64), files, _display(x, data["mean"], data["std"]),
                    f"{n} images of the {split} split of {d.name}, drawn with seed {seed}, stratified by class")


def _read(path, data: dict) -> torch.Tensor:
    """One file as the model's input (1, C, H, W), with the run's preprocessing record when the run has one."""
    extra = {"preprocess": data["preprocess"]} if data.get("preprocess") is not None else {}
    return load_input_batch(path, data["in_chans"], data["image_size"], data["mean"], data["std"], **extra)


def _expand(paths) -> list[Path]:
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise CbamlabError(f"{p}: no PNG or JPEG images in this folder")
            files += found
        elif p.is_file():
            files.append(p)
        else:
            raise CbamlabError(f"no such image file or folder: {p}")
    return files


def from_files(paths, data: dict) -> ImageSet:
    """Image files, or folders of them (searched recursively). An image's true class is the name of its folder when
    that is one of the run's classes, else unknown (-1)."""
    if not paths:
        raise CbamlabError("no images given")
    classes = list(data["classes"])
    files = _expand(paths)
    x = torch.cat([_read(f, data) for f in files])
    labels = np.asarray([classes.index(f.parent.name) if f.parent.name in classes else -1 for f in files])
    return ImageSet(x, labels.astype(np.int64), [str(f) for f in files], _display(x, data["mean"], data["std"]),
                    f"{len(files)} image files")
