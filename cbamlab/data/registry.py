"""Datasets by name: `{name: DatasetSpec}` and `load_dataset`, which reads, resizes, splits and describes them."""
from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass

from ..errors import DataError, unknown
from .stats import channel_stats, resize_images, stratified_split
from .types import DataBundle, DatasetInfo, TensorSplit

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DatasetSpec:
    """What is known about a dataset before reading it; `module` (in cbamlab.data) has `load` and `locate`."""

    name: str
    module: str
    num_classes: int | None
    in_chans: int
    image_size: tuple[int, int] | None
    train_size: int | None
    test_size: int | None
    how_to_get: str
    in_memory: bool = True


DATASETS: dict[str, DatasetSpec] = {s.name: s for s in (
    DatasetSpec("digits", "digits", 10, 1, (8, 8), 1438, 359, "embedded in scikit-learn; nothing to do"),
    DatasetSpec("mnist", "idx", 10, 1, (28, 28), 60000, 10000,
                "put the four IDX files (train-images-idx3-ubyte.gz, ...) in data.root or $CBAMLAB_DATA/mnist, "
                "or set data.download: true"),
    DatasetSpec("fashion_mnist", "idx", 10, 1, (28, 28), 60000, 10000,
                "apt install dataset-fashion-mnist, or put the four IDX files in data.root or "
                "$CBAMLAB_DATA/fashion_mnist, or set data.download: true"),
    DatasetSpec("cifar10", "cifar", 10, 3, (32, 32), 50000, 10000,
                "unpack cifar-10-python.tar.gz into data.root or $CBAMLAB_DATA/cifar10, or set data.download: true"),
    DatasetSpec("cifar100", "cifar", 100, 3, (32, 32), 50000, 10000,
                "unpack cifar-100-python.tar.gz into data.root or $CBAMLAB_DATA/cifar100, or set data.download: true"),
    DatasetSpec("imagefolder", "folder", None, 3, (224, 224), None, None,
                "set data.root to a folder with train/<class>/* and val/<class>/* images", in_memory=False),
    DatasetSpec("synthetic", "synthetic", 10, 3, (32, 32), 1000, 200, "generated; for tests and benchmarks only"),
)}


def list_datasets() -> list[str]:
    return list(DATASETS)


def get_spec(name: str) -> DatasetSpec:
    if name not in DATASETS:
        raise unknown("dataset", name, DATASETS)
    return DATASETS[name]


def _module(spec: DatasetSpec):
    return importlib.import_module(f"{__package__}.{spec.module}")


def locate(name: str, root=None) -> tuple[str | None, list[str]]:
    """(where the dataset would be read from or None, the places looked at), without reading it."""
    spec = get_spec(name)
    mod = _module(spec)
    return mod.locate(root) if spec.module not in ("idx", "cifar") else mod.locate(name, root)


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
                 seed: int = 0, include_test: bool = True) -> DataBundle:
    """Read dataset `name` and return its train, val (carved from train: stratified, seeded) and test splits.

    With include_test=False the test files are never opened. `image_size` resizes in-memory sets once at load
    time; for imagefolder it is the training crop and eval size. Mean and std come from the whole training file
    (before the validation split), so they do not depend on the seed.
    """
    spec = get_spec(name)
    size = _size(image_size)
    if not 0.0 <= float(val_fraction) < 1.0:
        raise DataError(f"val_fraction must be in [0, 1), got {val_fraction}")
    mod = _module(spec)
    if spec.in_memory:
        if spec.module in ("idx", "cifar"):
            train, test, classes, source = mod.load(name, root, download=download, include_test=include_test)
        else:
            train, test, classes, source = mod.load(root, download=download, include_test=include_test)
        if size is not None:
            train = TensorSplit(resize_images(train.images, size), train.labels)
            test = TensorSplit(resize_images(test.images, size), test.labels) if test is not None else None
        mean, std = channel_stats(train.images)
        in_chans, hw = train.images.shape[1], tuple(train.images.shape[-2:])
    else:
        hw = size or spec.image_size
        train, test, classes, source = mod.load(root, include_test=include_test)
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
