"""imagefolder: data.root/train/<class>/* and data.root/val/<class>/* (the ImageNet layout), any image PIL reads.

Files are checked once when the dataset is loaded; unreadable ones are skipped with one warning that names them
and gives the count, so an epoch never crashes on a bad file. Per-sample torchvision transforms v2 run in
DataLoader workers; each sample's random draws come from a seed drawn from (seed, epoch), so the batches do not
depend on the number of workers.
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch
from PIL import Image

from ..errors import DataError
from .augment import AugmentSpec, normalize_batch, random_erasing
from .stats import epoch_seed
from .types import EpochLoader, FileSplit

log = logging.getLogger(__name__)

MEAN = (0.485, 0.456, 0.406)  # ImageNet's, the usual choice for photographs
STD = (0.229, 0.224, 0.225)
EVAL_CROP_RATIO = 0.875  # resize the shorter side to size / 0.875, then center-crop (224 from 256)


def locate(root=None) -> tuple[str | None, list[str]]:
    if not root:
        return None, ["data.root (not set)"]
    train = Path(root) / "train"
    return (str(Path(root)) if train.is_dir() else None), [str(train)]


def _readable(path: Path) -> bool:
    try:
        with Image.open(path) as im:
            im.verify()
        return True
    except Exception:  # PIL raises many types for bad files
        return False


def scan(folder: Path, classes: list[str] | None = None) -> tuple[list[str], list[tuple[str, int]], list[str]]:
    """(classes, samples, unreadable files) of one split folder; `classes` given for val (must be known ones)."""
    if not folder.is_dir():
        raise DataError(f"no such folder: {folder}")
    found = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not found:
        raise DataError(f"{folder}: no class folders (expected {folder}/<class>/<image files>)")
    if classes is None:
        classes = found
    else:
        extra = sorted(set(found) - set(classes))
        if extra:
            raise DataError(f"{folder}: classes not in train: {', '.join(extra)}")
    index = {c: i for i, c in enumerate(classes)}
    samples, bad = [], []
    for name in found:
        files = sorted(p for p in (folder / name).rglob("*") if p.is_file() and not p.name.startswith("."))
        good = [p for p in files if _readable(p)]
        bad += [str(p) for p in files if p not in set(good)]
        if not good:
            raise DataError(f"{folder / name}: empty class (no readable image files)")
        samples += [(str(p), index[name]) for p in good]
    return classes, samples, bad


def load(root=None, *, include_test=True):
    """(train, test (the val folder) or None, classes, root). The val folder is not scanned when include_test=False."""
    if not root:
        raise DataError("imagefolder needs data.root: a folder with train/<class>/* and val/<class>/*")
    root = Path(root)
    classes, train, bad = scan(root / "train")
    test = None
    if include_test:
        _, test_samples, bad_test = scan(root / "val", classes)
        bad += bad_test
        test = FileSplit(test_samples)
    if bad:
        log.warning("skipped %d unreadable image file(s): %s", len(bad), ", ".join(bad))
    return FileSplit(train), test, classes, root


def build_transform(image_size: tuple[int, int], augment: AugmentSpec | None):
    """torchvision v2 per-sample transforms: PIL image -> uint8 (3, H, W) tensor (normalised later, on the device)."""
    from torchvision.transforms import v2

    h, w = image_size
    eval_resize = v2.Resize(int(round(min(h, w) / EVAL_CROP_RATIO)), antialias=True)
    if augment is None or not augment.active:
        steps = [eval_resize, v2.CenterCrop((h, w))]
    else:
        steps = ([v2.RandomResizedCrop((h, w), scale=augment.crop_scale, antialias=True)] if augment.resized_crop
                 else [eval_resize, v2.CenterCrop((h, w))])
        if augment.crop_padding:
            steps.append(v2.RandomCrop((h, w), padding=augment.crop_padding))
        if augment.hflip:
            steps.append(v2.RandomHorizontalFlip())
        if augment.vflip:
            steps.append(v2.RandomVerticalFlip())
        if augment.rotation:
            steps.append(v2.RandomRotation(augment.rotation))
        if augment.translate:
            steps.append(v2.RandomAffine(degrees=0, translate=(augment.translate / w, augment.translate / h)))
    return v2.Compose([*steps, v2.PILToTensor()])


class FolderDataset(torch.utils.data.Dataset):
    """Items are indexed by (index, sample_seed); the seed fixes that sample's random transform."""

    def __init__(self, split: FileSplit, transform):
        self.samples = split.samples
        self.transform = transform

    def __len__(self):
        return len(self.samples)

    def _load(self, index: int, sample_seed: int):
        path, label = self.samples[index]
        with Image.open(path) as im:
            img = im.convert("RGB")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(sample_seed)
            return self.transform(img), label

    def __getitem__(self, key):
        index, sample_seed = key
        for step in range(len(self.samples)):  # a file that broke after the check: use the next one
            i = (index + step) % len(self.samples)
            try:
                return self._load(i, sample_seed)
            except Exception as e:
                log.warning("skipped unreadable image %s (%s)", self.samples[i][0], e)
        raise DataError("no readable image left in the dataset")


class FolderLoader(EpochLoader):
    """Same interface as MemoryLoader: (x float32 normalised (B, 3, H, W), y int64 (B,)) on `device`."""

    def __init__(self, split: FileSplit, batch_size: int, *, image_size, mean, std, device="cpu",
                 augment: AugmentSpec | None = None, shuffle: bool = False, seed: int = 0, workers: int = 2):
        self.dataset = FolderDataset(split, build_transform(tuple(image_size), augment if shuffle else None))
        self.batch_size = int(batch_size)
        self.device = torch.device(device)
        self.erasing = augment.erasing if (shuffle and augment is not None) else 0.0
        self.shuffle, self.seed, self.epoch, self.workers = shuffle, int(seed), 0, int(workers)
        self.mean = torch.as_tensor(mean, dtype=torch.float32, device=self.device)
        self.std = torch.as_tensor(std, dtype=torch.float32, device=self.device)
        n = len(self.dataset)
        self._num_batches = (n + self.batch_size - 1) // self.batch_size
        if shuffle and self._num_batches > 1 and n % self.batch_size == 1:
            self._num_batches -= 1  # BatchNorm cannot train on a batch of one

    @property
    def num_samples(self) -> int:
        return len(self.dataset)

    def __iter__(self):
        gen = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
        n = len(self.dataset)
        order = torch.randperm(n, generator=gen) if self.shuffle else torch.arange(n)
        order = order[:self._num_batches * self.batch_size].tolist()
        seeds = torch.randint(0, 2**62, (len(order),), generator=gen).tolist()
        loader = torch.utils.data.DataLoader(
            self.dataset, batch_size=self.batch_size, sampler=list(zip(order, seeds)), num_workers=self.workers,
            pin_memory=self.device.type == "cuda")
        for x, y in loader:  # x uint8 (B, 3, H, W)
            x = normalize_batch(x.to(self.device, non_blocking=True), self.mean, self.std)
            if self.erasing:
                x = random_erasing(x, self.erasing, gen)
            yield x, y.to(self.device, dtype=torch.int64)
