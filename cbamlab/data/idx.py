"""MNIST and Fashion-MNIST from their IDX files (LeCun's format), gzipped or not, read by cbamlab itself.

A reader only: locate.py finds the folder. Decoding the gzipped files is cheap beside an epoch of training, so
decoded arrays are not cached.
"""
from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError
from .types import TensorSplit

FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
         "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
CLASSES = {
    "mnist": [str(i) for i in range(10)],
    "fashion_mnist": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                      "Ankle boot"],
}
# IDX type codes (the third magic byte) -> big-endian numpy dtypes.
DTYPES = {0x08: np.dtype(np.uint8), 0x09: np.dtype(np.int8), 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
          0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def _read_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    if path.suffix != ".gz":
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path}: not a valid gzip file ({e})") from None


def read_idx(path) -> np.ndarray:
    """One IDX file (raw or .gz) as a numpy array of its declared type and shape; malformed files are DataErrors."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"no such IDX file: {path}")
    data = _read_bytes(path)
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in DTYPES:
        raise DataError(f"{path}: not an IDX file (bad magic number {data[:4].hex() or 'empty'})")
    dtype, ndim = DTYPES[data[2]], data[3]
    if ndim == 0 or len(data) < 4 + 4 * ndim:
        raise DataError(f"{path}: truncated IDX header")
    dims = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    expected = int(np.prod(dims)) * dtype.itemsize
    payload = len(data) - 4 - 4 * ndim
    if payload < expected:
        raise DataError(f"{path}: truncated: header declares shape {dims} ({expected} bytes), file holds {payload}")
    if payload > expected:
        raise DataError(f"{path}: {payload - expected} bytes beyond the declared shape {dims}")
    arr = np.frombuffer(data, dtype=dtype, count=int(np.prod(dims)), offset=4 + 4 * ndim).reshape(dims)
    return arr.astype(dtype.newbyteorder("="), copy=False)


def _find_file(folder: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def present(folder: Path, name: str) -> bool:
    """Whether `folder` holds the training images and labels (raw or gzipped)."""
    return all(_find_file(Path(folder), stem) for stem in FILES["train"])


def expected_files(name: str) -> list[str]:
    return [f"{stem}[.gz]" for which in ("train", "test") for stem in FILES[which]]


def read_split(folder, which: str) -> TensorSplit:
    """The 'train' or 't10k' (which='test') images and labels of one folder, checked against each other."""
    folder = Path(folder)
    paths = []
    for stem in FILES[which]:
        path = _find_file(folder, stem)
        if path is None:
            raise DataError(f"{folder}: missing {stem} (or {stem}.gz)")
        paths.append(path)
    images, labels = read_idx(paths[0]), read_idx(paths[1])
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DataError(f"{paths[0]}: expected uint8 images of shape (N, H, W), got {images.dtype} {images.shape}")
    if labels.ndim != 1:
        raise DataError(f"{paths[1]}: expected labels of shape (N,), got {labels.shape}")
    if len(images) != len(labels):
        raise DataError(f"{folder}: {len(images)} images but {len(labels)} labels ({paths[0].name}, {paths[1].name})")
    return TensorSplit(torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64)))


def read(folder, name: str, *, include_test: bool = True):
    """(train, test or None, classes) of the IDX files in `folder`. The t10k files are not opened when
    include_test=False."""
    train = read_split(folder, "train")
    test = read_split(folder, "test") if include_test else None
    classes = CLASSES[name]
    for split, label in ((train, "train"), (test, "test")):
        if split is not None and len(split) and int(split.labels.max()) >= len(classes):
            raise DataError(f"{folder}: {label} label {int(split.labels.max())} out of range for {len(classes)} classes")
    return train, test, classes
