"""imagefolder: data.root/train/<class>/* and data.root/val/<class>/* (the ImageNet layout); image files chosen by
extension (folder_index.IMAGE_EXTENSIONS), JPEG decoded by torchvision, the rest by PIL (decode.py).

Start-up lists the folders without opening a file (folder_index.py, with an optional cached index). Files are
verified lazily: a corrupt or unreadable file met while training or evaluating is skipped, counted, named once in
the log and kept in the loader's `skipped` list (fit writes them to summary.json); it never stops a run.

`make_loaders` picks one of two pipelines by `data.memory_budget_gb`. A folder whose decoded images fit is decoded
once into memory with `eval_preprocess` and then runs through the in-memory pipeline (memory.py). A larger one
streams through `FolderLoader`: persistent DataLoader workers decode each file and resize it (`eval_preprocess`,
or a RandomResizedCrop of the full image when the augmentation asks for one); the other augmentations run on the
batch, on the device, with the in-memory pipeline's code and random draws, so both paths give the same batches
except for RandomResizedCrop (alternating flips too: they follow each file's index in the split). Each sample's
crop is drawn from its own seed, itself drawn from (seed, epoch), so the batches do not depend on the number of
workers.
"""
from __future__ import annotations

import logging
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torchvision.transforms.v2 import functional as TF

from . import shard
from .augment import AugmentSpec, alternate_flips, augment_batch, flip_phase, normalize_batch, resized_crop_box
from .decode import DEFAULT_DECODER, read_image, reason
from .folder_index import scan
from .memory import single_thread
from .stats import epoch_seed
from .types import EpochLoader, FileSplit

log = logging.getLogger(__name__)

MEAN = (0.485, 0.456, 0.406)  # ImageNet's, the usual choice for photographs
STD = (0.229, 0.224, 0.225)
EVAL_CROP_RATIO = 0.875  # resize the shorter side to size / 0.875, then center-crop (224 from 256)
SAMPLE_SEED_STREAM = 1 << 30  # epoch_seed stream of the per-sample seeds, apart from the augmentation streams


def present(root: Path, name: str = "imagefolder") -> bool:
    return (Path(root) / "train").is_dir()


def read(root, name: str = "imagefolder", *, include_test=True, index_cache: bool = False):
    """(train, test (the val folder) or None, classes) of data.root (locate.py checks it is set). The val folder is
    not listed when include_test=False."""
    root = Path(root)
    classes, train = scan(root / "train", index_cache=index_cache)
    test = FileSplit(scan(root / "val", classes, index_cache=index_cache)[1]) if include_test else None
    return FileSplit(train), test, classes


def eval_resize(image_size) -> int:
    """The shorter side's length before the central crop: min(h, w) / 0.875 (256 for 224)."""
    return int(round(min(image_size) / EVAL_CROP_RATIO))


def eval_preprocess(img: torch.Tensor, image_size, resize_shorter: int | None = None) -> torch.Tensor:
    """uint8 (C, H, W) -> uint8 (C, h, w): the shorter side resized to `resize_shorter` (default `eval_resize`;
    bilinear, antialiased), then the central (h, w) crop (256 then 224 for ImageNet). The one preprocessing of
    folder images for evaluation, prediction (data/preprocess.py: a run's recorded sizes) and the in-memory copy
    of a folder."""
    h, w = image_size
    img = TF.resize(img, [resize_shorter or eval_resize(image_size)], antialias=True)
    return TF.center_crop(img, [h, w])


class FolderDataset(torch.utils.data.Dataset):
    """Item (index, sample_seed) -> (uint8 (3, h, w), label, None), or (None, label, (path, reason)) for a file that
    cannot be read. With `crop_scale` the image is a RandomResizedCrop of the full file, drawn from `sample_seed`.

    The paths are kept as one bytes object and an offsets array, not a list of Python strings: a forked worker
    that reads a list touches every item's reference count and so copies its pages, which at ImageNet's 1.28 M
    files grows each worker by the size of the list over an epoch (pytorch/pytorch#13246)."""

    def __init__(self, samples: list[tuple[str, int]], image_size, crop_scale=None, decoder: str = DEFAULT_DECODER):
        encoded = [os.fsencode(path) for path, _ in samples]
        self._paths = b"".join(encoded)
        self._offsets = np.cumsum([0] + [len(e) for e in encoded], dtype=np.int64)
        self._labels = np.array([label for _, label in samples], dtype=np.int64)
        self.image_size = tuple(image_size)
        self.crop_scale = crop_scale
        self.decoder = decoder

    def __len__(self):
        return len(self._labels)

    def sample(self, index: int) -> tuple[str, int]:
        start, stop = self._offsets[index], self._offsets[index + 1]
        return os.fsdecode(self._paths[start:stop]), int(self._labels[index])

    def __getitem__(self, key):
        index, sample_seed = key
        path, label = self.sample(index)
        try:
            img = read_image(path, self.decoder)  # uint8 (3, H, W)
        except Exception as e:  # PIL and libjpeg raise many types for a corrupt or unreadable file
            return None, label, (path, reason(e))
        if self.crop_scale is None:
            return eval_preprocess(img, self.image_size), label, None
        gen = torch.Generator().manual_seed(sample_seed)
        top, left, h, w = resized_crop_box(img.shape[-2], img.shape[-1], self.crop_scale, gen)
        return TF.resized_crop(img, top, left, h, w, list(self.image_size), antialias=True), label, None


def collate(items):
    """(uint8 (B, 3, h, w) of the readable files or None, their labels, bool (n,): which of the n items were
    readable, [(path, reason) of the others])."""
    good = [(x, y) for x, y, _ in items if x is not None]
    x = torch.stack([x for x, _ in good]) if good else None
    y = torch.tensor([y for _, y in good], dtype=torch.int64)
    readable = torch.tensor([x is not None for x, _, _ in items], dtype=torch.bool)
    return x, y, readable, [bad for _, _, bad in items if bad is not None]


class EpochKeys(torch.utils.data.Sampler):
    """The (index, sample seed) pairs of the current epoch. It runs in the main process, so persistent workers
    follow a new order as soon as the loader replaces `order` and `seeds`."""

    def __init__(self):
        self.order = self.seeds = torch.empty(0, dtype=torch.int64)

    def __len__(self):
        return len(self.order)

    def __iter__(self):
        for start in range(0, len(self.order), 8192):  # never a Python list of a whole ImageNet epoch
            yield from zip(self.order[start:start + 8192].tolist(), self.seeds[start:start + 8192].tolist())


class FolderLoader(EpochLoader):
    """Same interface as MemoryLoader: (x float32 normalised (B, 3, H, W), y int64 (B,)) on `device`.

    `skipped` lists the unreadable files met so far, each once, in the order met. A batch loses its unreadable
    files; a training batch left with fewer than two images is dropped (BatchNorm cannot train on one).
    With `world` > 1 (DDP) rank `rank` reads and decodes only its share (`shard.Share`), each image with the
    seed it has in one process, and a batch of one is kept (every rank must take the same number of steps).
    """

    def __init__(self, split: FileSplit, batch_size: int, *, image_size, mean, std, device="cpu",
                 augment: AugmentSpec | None = None, shuffle: bool = False, seed: int = 0, workers: int = 2,
                 decoder: str = DEFAULT_DECODER, rank: int = 0, world: int = 1):
        augment = augment if (shuffle and augment is not None and augment.active) else None
        crop_scale = augment.crop_scale if augment is not None and augment.resized_crop else None
        if augment is not None:
            augment = replace(augment, resized_crop=False)  # done per sample, on the full image
        self.augment = augment if augment is not None and augment.active else None
        self.dataset = FolderDataset(split.samples, image_size, crop_scale, decoder)
        self.batch_size = int(batch_size)
        self.device = torch.device(device)
        self.shuffle, self.seed, self.epoch, self.workers = shuffle, int(seed), 0, int(workers)
        self.mean = torch.as_tensor(mean, dtype=torch.float32, device=self.device)
        self.std = torch.as_tensor(std, dtype=torch.float32, device=self.device)
        self.skipped: list[str] = []
        self._skipped_set: set[str] = set()
        self._keys = EpochKeys()
        self._loader = None
        n = len(self.dataset)
        self._num_batches = (n + self.batch_size - 1) // self.batch_size
        if shuffle and self._num_batches > 1 and n % self.batch_size == 1:
            self._num_batches -= 1  # BatchNorm cannot train on a batch of one
        self.share = shard.Share(n, self.batch_size, self._num_batches, rank, world, train=shuffle)
        self._num_batches = self.share.num_batches

    @property
    def num_samples(self) -> int:
        return len(self.dataset)

    def _dataloader(self):
        if self._loader is None:  # made once: its workers live as long as this loader
            self._loader = torch.utils.data.DataLoader(
                self.dataset, batch_size=self.share.batch_size, sampler=self._keys, num_workers=self.workers,
                collate_fn=collate, persistent_workers=self.workers > 0, pin_memory=self.device.type == "cuda")
        return self._loader

    def _skip(self, bad) -> None:
        for path, why in bad:
            if path not in self._skipped_set:
                self._skipped_set.add(path)
                self.skipped.append(path)
                log.warning("skipped unreadable image %s (%s); %d skipped so far", path, why, len(self.skipped))

    def __iter__(self):
        gen = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
        n = len(self.dataset)
        order = torch.randperm(n, generator=gen) if self.shuffle else torch.arange(n)
        self._keys.order = order[:self.share.used]
        seeds = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch, SAMPLE_SEED_STREAM))
        self._keys.seeds = torch.randint(0, 2**62, (len(self._keys.order),), generator=seeds)
        if self.share.world > 1:  # DDP: this rank's share; its batch augmentations from its own stream
            pos = self.share.positions
            self._keys.order, self._keys.seeds = self._keys.order[pos], self._keys.seeds[pos]
            gen.manual_seed(epoch_seed(self.seed, self.epoch, self.share.stream))
        alternate = self.augment is not None and self.augment.alternate_hflip
        phase = flip_phase(n, self.seed) if alternate else None
        bs = self.share.batch_size
        for i, (x, y, readable, bad) in enumerate(self._dataloader()):  # x uint8 (B, 3, H, W)
            self._skip(bad)
            if x is None or (self.shuffle and len(x) < 2 and self.share.world == 1):
                continue
            x = x.to(self.device, non_blocking=True)
            flips = None
            if alternate:  # the dataset indices of this batch's readable files: the sampler's i-th slice
                flips = alternate_flips(phase, self._keys.order[i * bs:(i + 1) * bs][readable], self.epoch)
            with single_thread():
                if self.augment is not None:
                    x = augment_batch(x, self.augment, gen, self.mean, self.std, flips)
                else:
                    x = normalize_batch(x, self.mean, self.std)
            yield x, y.to(self.device, non_blocking=True)
