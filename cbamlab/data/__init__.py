"""Datasets read from their real formats, the in-memory tensor pipeline, batch augmentations and presets."""
from .augment import AugmentSpec, augment_batch, normalize_batch
from .loaders import Loaders, make_loaders
from .memory import MemoryLoader
from .presets import PRESETS, list_presets, resolve_augment
from .registry import DATASETS, get_spec, list_datasets, load_dataset, locate
from .synthetic import make_synthetic
from .types import DataBundle, DatasetInfo, FileSplit, TensorSplit

__all__ = [
    "load_dataset", "list_datasets", "locate", "get_spec", "DATASETS",
    "DataBundle", "DatasetInfo", "TensorSplit", "FileSplit",
    "AugmentSpec", "resolve_augment", "list_presets", "PRESETS", "augment_batch", "normalize_batch",
    "make_loaders", "Loaders", "MemoryLoader", "make_synthetic",
]
