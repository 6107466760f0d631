"""MNIST and Fashion-MNIST from their IDX files (LeCun's format), gzipped or not, read by cbamlab itself.

Looked for in data.root, then $CBAMLAB_DATA/<name>, then (Fashion-MNIST) the Debian package's folder, then the
download cache; each place also in torchvision's layout (<place>/FashionMNIST/raw). Decoding the gzipped
Fashion-MNIST training images takes about 0.3 s on one core, so decoded arrays are not cached.
"""
from __future__ import annotations

import gzip
import logging
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError
from .types import TensorSplit

log = logging.getLogger(__name__)

FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
         "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
TORCHVISION = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}
SYSTEM = {"fashion_mnist": "/usr/share/datasets/fashion-mnist"}  # Debian: dataset-fashion-mnist
CLASSES = {
    "mnist": [str(i) for i in range(10)],
    "fashion_mnist": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                      "Ankle boot"],
}
HOW_TO_GET = {
    "mnist": "put the four IDX files in data.root or $CBAMLAB_DATA/mnist, or set data.download: true",
    "fashion_mnist": "apt install dataset-fashion-mnist, put the four IDX files in data.root or "
                     "$CBAMLAB_DATA/fashion_mnist, or set data.download: true",
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


def cache_dir(name: str) -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "cbamlab" / name


def search_places(name: str, root=None, system: str | None = None) -> list[Path]:
    """Where a dataset is looked for, in order: root (and root/<name>), $CBAMLAB_DATA/<name>, a system folder,
    the cache."""
    places = []
    if root:
        places += [Path(root), Path(root) / name]
    if os.environ.get("CBAMLAB_DATA"):
        places.append(Path(os.environ["CBAMLAB_DATA"]) / name)
    if system:
        places.append(Path(system))
    places.append(cache_dir(name))
    return places


def candidates(name: str, root=None) -> list[Path]:
    """The folders looked at, in order (each also in torchvision's layout)."""
    places = search_places(name, root, SYSTEM.get(name))
    out = []
    for p in places:
        out += [p, p / TORCHVISION[name] / "raw"]
    return out


def _notes(root) -> list[str]:
    """The places not looked at because they are not set, so the "not found" error says how to set them."""
    return ([] if root else ["data.root (not set)"]) + ([] if os.environ.get("CBAMLAB_DATA") else ["$CBAMLAB_DATA (not set)"])


def locate(name: str, root=None) -> tuple[str | None, list[str]]:
    """(the first folder holding the training images and labels, or None; the folders looked at)."""
    looked = candidates(name, root)
    for folder in looked:
        if all(_find_file(folder, stem) for stem in FILES["train"]):
            return str(folder), [str(p) for p in looked]
    return None, _notes(root) + [str(p) for p in looked]


def download_target(name: str, root) -> Path:
    """Where a download goes: data.root, else $CBAMLAB_DATA/<name>, else the cache folder."""
    if root:
        return Path(root)
    return Path(os.environ["CBAMLAB_DATA"]) / name if os.environ.get("CBAMLAB_DATA") else cache_dir(name)


def download_with(name: str, root, cls, trains=(True, False)) -> None:
    """Fetch `name` through the torchvision dataset class `cls` (which verifies checksums); errors in one line."""
    target = download_target(name, root)
    log.info("downloading %s to %s through torchvision (checksum verified)", name, target)
    try:
        for train in trains:
            cls(str(target), train=train, download=True)
    except Exception as e:  # network, checksum or disk errors: one line for the user
        raise DataError(f"could not download {name} to {target}: {str(e).splitlines()[0] if str(e) else e!r}") from None


def find_folder(name: str, root, download: bool, locate, fetch, how_to_get: str) -> str:
    """The folder `locate` finds for `name`, after `fetch` when missing and `download` is set; else a DataError
    that lists where it looked and how to get the data."""
    folder, looked = locate(name, root)
    if folder is None and download:
        fetch(name, root)
        folder, looked = locate(name, root)
    if folder is None:
        raise DataError(f"{name} not found; looked in {', '.join(looked)}; to get it: {how_to_get}")
    return folder


def _download(name: str, root) -> None:
    import torchvision.datasets as tvd

    download_with(name, root, tvd.MNIST if name == "mnist" else tvd.FashionMNIST)


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


def load(name: str, root=None, *, download=False, include_test=True):
    """(train, test or None, classes, source folder). The t10k files are not opened when include_test=False."""
    folder = find_folder(name, root, download, locate, _download, HOW_TO_GET[name])
    train = read_split(folder, "train")
    test = read_split(folder, "test") if include_test else None
    classes = CLASSES[name]
    for split, label in ((train, "train"), (test, "test")):
        if split is not None and len(split) and int(split.labels.max()) >= len(classes):
            raise DataError(f"{folder}: {label} label {int(split.labels.max())} out of range for {len(classes)} classes")
    return train, test, classes, folder
