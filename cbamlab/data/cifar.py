"""CIFAR-10 and CIFAR-100 from the standard python batches, read with a restricted unpickler.

The unpickler admits only what those files hold (dicts, lists, strings, numbers and numpy arrays, and the latin-1
bytes of a Python 3 protocol-2 pickle); a pickle that names any other global is refused before anything in it
runs. Any dataset in this format loads; checksums of the official release are checked (by torchvision) only when
downloading. A reader only: locate.py finds the folder.
"""
from __future__ import annotations

import io
import pickle
import re
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError
from .types import TensorSplit

LABEL_KEYS = {"cifar10": ("labels", "label_names", "batches.meta"),
              "cifar100": ("fine_labels", "fine_label_names", "meta")}
TEST_FILE = {"cifar10": "test_batch", "cifar100": "test"}

# The numpy functions a pickled ndarray needs, found through numpy itself (their module moved in numpy 2).
_RECONSTRUCT = np.ndarray((0,)).__reduce__()[0]
_SCALAR = np.float64(0).__reduce__()[0]


def _latin1_bytes(text, encoding="utf-8"):
    """What `_codecs.encode` does for bytes pickled by Python 3 at protocol 2, and nothing more."""
    if not isinstance(text, str) or str(encoding).lower() not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError("refused _codecs.encode of anything but a latin-1 string")
    return text.encode("latin1")


_ALLOWED = {
    ("_codecs", "encode"): _latin1_bytes,
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy.core.multiarray", "scalar"): _SCALAR,
    ("numpy._core.multiarray", "scalar"): _SCALAR,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class _PlainUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refused to import {module}.{name}") from None


def load_pickle(path) -> dict:
    """A CIFAR batch file as a dict with str keys; anything but plain data is refused (DataError)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"no such CIFAR batch file: {path}")
    try:
        obj = _PlainUnpickler(io.BytesIO(path.read_bytes()), encoding="bytes").load()
    except pickle.UnpicklingError as e:
        raise DataError(f"{path}: refused or unreadable pickle ({e}); only plain data is allowed") from None
    except (EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError) as e:
        raise DataError(f"{path}: not a readable CIFAR batch ({type(e).__name__}: {e})") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path}: expected a dict, found {type(obj).__name__}")
    return {(k.decode("latin1") if isinstance(k, bytes) else str(k)): v for k, v in obj.items()}


def _train_files(folder: Path, name: str) -> list[Path]:
    if name == "cifar100":
        return [folder / "train"] if (folder / "train").is_file() else []
    files = [p for p in folder.glob("data_batch_*") if re.fullmatch(r"data_batch_\d+", p.name)]
    return sorted(files, key=lambda p: int(p.name.rsplit("_", 1)[1]))


def present(folder: Path, name: str) -> bool:
    """Whether `folder` holds the training batches."""
    return bool(_train_files(Path(folder), name))


def expected_files(name: str) -> list[str]:
    train = "data_batch_1 ... data_batch_5" if name == "cifar10" else "train"
    return [train, TEST_FILE[name], LABEL_KEYS[name][2]]


def read_batch(path, label_key: str, num_classes: int) -> TensorSplit:
    """One batch file: data uint8 (N, 3072) in channel-major order -> (N, 3, 32, 32), checked against labels."""
    d = load_pickle(path)
    if "data" not in d or label_key not in d:
        raise DataError(f"{path}: missing '{'data' if 'data' not in d else label_key}' (keys: {', '.join(sorted(d))})")
    data = d["data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        shape = getattr(data, "shape", type(data).__name__)
        raise DataError(f"{path}: 'data' must be uint8 of shape (N, 3072), got {getattr(data, 'dtype', '')} {shape}")
    try:
        labels = np.asarray(d[label_key], dtype=np.int64)
    except (TypeError, ValueError):
        raise DataError(f"{path}: '{label_key}' is not a list of integers") from None
    if labels.shape != (data.shape[0],):
        raise DataError(f"{path}: {data.shape[0]} images but {labels.size} labels")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(f"{path}: labels must be in [0, {num_classes}), found {labels.min()}..{labels.max()}")
    images = torch.from_numpy(data.reshape(-1, 3, 32, 32).copy())
    return TensorSplit(images, torch.from_numpy(labels))


def read_classes(folder: Path, name: str) -> list[str]:
    _, names_key, meta_file = LABEL_KEYS[name]
    meta = load_pickle(folder / meta_file)
    names = meta.get(names_key)
    if not isinstance(names, list) or not names:
        raise DataError(f"{folder / meta_file}: missing the list '{names_key}'")
    return [n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in names]


def read(folder, name: str, *, include_test: bool = True):
    """(train, test or None, classes) of the batches in `folder`. The test batch is not opened when
    include_test=False."""
    folder = Path(folder)
    classes = read_classes(folder, name)
    label_key = LABEL_KEYS[name][0]
    parts = [read_batch(p, label_key, len(classes)) for p in _train_files(folder, name)]
    if not parts:
        raise DataError(f"{folder}: no training batch ({expected_files(name)[0]})")
    train = TensorSplit(torch.cat([p.images for p in parts]), torch.cat([p.labels for p in parts]))
    test = None
    if include_test:
        test_file = folder / TEST_FILE[name]
        if not test_file.is_file():
            raise DataError(f"{folder}: missing the test file {test_file.name}")
        test = read_batch(test_file, label_key, len(classes))
    return train, test, classes
