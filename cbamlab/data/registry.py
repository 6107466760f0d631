"""Datasets by name: `{name: DatasetSpec}` and `load_dataset`, which finds (locate.py), reads (the spec's reader
module), resizes, splits and describes them.

Every reader module has `read(source, name, *, include_test) -> (train, test or None, classes)`, where `source` is
what locate.py found; readers of files also have `present(folder, name)` and `expected_files(name)`.
"""
from __future__ import annotations

import importlib
import logging
import numbers
from dataclasses import dataclass

from ..errors import DataError, unknown
from .locate import find, how_to_get
from .locate import locate as _locate
from .stats import channel_stats, resize_images, stratified_split
from .types import DataBundle, DatasetInfo, TensorSplit

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DatasetSpec:
    """What is known about a dataset before reading it; `module` (in cbamlab.data) is its reader."""

    name: str
    module: str
    num_classes: int | None
    in_chans: int
    image_size: tuple[int, int] | None
    train_size: int | None
    test_size: int | None
    in_memory: bool = True

    @property
    def how_to_get(self) -> str:
        return how_to_get(self.name)


DATASETS: dict[str, DatasetSpec] = {s.name: s for s in (
    DatasetSpec("digits", "digits", 10, 1, (8, 8), 1438, 359),
    DatasetSpec("mnist", "idx", 10, 1, (28, 28), 60000, 10000),
    DatasetSpec("fashion_mnist", "idx", 10, 1, (28, 28), 60000, 10000),
    DatasetSpec("cifar10", "cifar", 10, 3, (32, 32), 50000, 10000),
    DatasetSpec("cifar100", "cifar", 100, 3, (32, 32), 50000, 10000),
    DatasetSpec("imagefolder", "folder", None, 3, (224, 224), None, None, in_memory=False),
    DatasetSpec("synthetic", "synthetic", 10, 3, (32, 32), 1000, 200),
)}


def list_datasets() -> list[str]:
    return list(DATASETS)


def get_spec(name: str) -> DatasetSpec:
    if name not in DATASETS:
        raise unknown("dataset", name, DATASETS)
    return DATASETS[name]


def reader(spec: DatasetSpec):
    """The module that reads `spec`'s format (imported on first use: only the readers in use are loaded)."""
    return importlib.import_module(f"{__package__}.{spec.module}")


def locate(name: str, root=None) -> tuple[str | None, list[str]]:
    """(where the dataset would be read from or None, the places looked at), without reading it."""
    return _locate(name, root, reader(get_spec(name)))


def check_val_fraction(value, key: str = "val_fraction", error: type[Exception] = DataError) -> float:
    """The one rule for a validation fraction, asked by `load_dataset` and by the config: a number in [0, 1)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= float(value) < 1.0:
        raise error(f"{key}={value!r}: must be in [0, 1) (the fraction of the training set held out)")
    return float(value)


def _size(image_size) -> tuple[int, int] | None:
    if image_size is None:
        return None
    if isinstance(image_size, int) and not isinstance(image_size, bool):
        size = (image_size, image_size)
    elif isinstance(image_size, (list, tuple)) and len(image_size) == 2:
        size = tuple(image_size)
    else:
        raise DataError(f"image_size must be an integer or [height, width], got {image_size!r}")
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size):
        raise DataError(f"image_size must be positive integers, got {image_size!r}")
    return size


def load_dataset(name: str, root=None, *, download: bool = False, image_size=None, val_fraction: float = 0.0,
                 seed: int = 0, include_test: bool = True, index_cache: bool = False) -> DataBundle:
    """Read dataset `name` and return its train, val (carved from train: stratified, seeded) and test splits.

    With include_test=False the test files are never opened. `image_size` resizes in-memory sets once at load
    time; for imagefolder it is the training crop and eval size. Mean and std come from the whole training file
    (before the validation split), so they do not depend on the seed. `index_cache` keeps an image folder's file
    list in an index file, reread while no directory in the folder changed (folder_index.py).
    """
    spec = get_spec(name)
    size = _size(image_size)
    val_fraction = check_val_fraction(val_fraction)
    mod = reader(spec)
    source = find(name, root, mod, download_missing=download)
    extra = {"index_cache": index_cache} if spec.module == "folder" else {}  # an image folder's cached file list
    train, test, classes = mod.read(source, name, include_test=include_test, **extra)
    if spec.in_memory:
        if size is not None:
            train = TensorSplit(resize_images(train.images, size), train.labels)
            test = TensorSplit(resize_images(test.images, size), test.labels) if test is not None else None
        mean, std = channel_stats(train.images)
        in_chans, hw = train.images.shape[1], tuple(train.images.shape[-2:])
    else:
        hw = size or spec.image_size
        in_chans = 3
        mean, std = mod.MEAN, mod.STD
    val = None
    if val_fraction > 0:
        kept, held = stratified_split(train.labels, float(val_fraction), seed)
        train, val = train.subset(kept), train.subset(held)
    info = DatasetInfo(name=name, num_classes=len(classes), in_chans=int(in_chans), image_size=tuple(hw),
                       classes=list(classes), mean=tuple(mean), std=tuple(std), source=str(source))
    log.debug("dataset %s from %s: train %d, val %s, test %s", name, source, len(train),
              len(val) if val is not None else "-", len(test) if test is not None else "-")
    return DataBundle(info=info, train=train, val=val, test=test)
