"""Where each dataset is read from and how to get it: the search places, the torchvision download hand-off and
each dataset's "how to get it" text, once. The readers (idx.py, cifar.py, folder.py, digits.py, synthetic.py)
only read the source found here.

An explicit data.root is the only place looked at: the root itself and root/<name>, each also in the layout a
torchvision download leaves there (root/FashionMNIST/raw, root/cifar-10-batches-py). A root that lacks the files
is an error listing the files expected there, never a silent fallback to another copy (a mistyped path must not
train on other data). Without a root: $CBAMLAB_DATA/<name>, then a system package's folder (Debian's
dataset-fashion-mnist), then the download cache. A download goes to the root, else $CBAMLAB_DATA/<name>, else the
cache, through torchvision (which verifies the checksums).
"""
from __future__ import annotations

import importlib.metadata
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Callable

from ..errors import DataError, unknown

log = logging.getLogger(__name__)


def _sklearn() -> str:
    return f"scikit-learn {importlib.metadata.version('scikit-learn')} (embedded)"


@dataclass(frozen=True)
class Source:
    """How a dataset is found. kind "files": searched for in the places above; "root": data.root itself (an
    image folder; its reader checks the layout); "builtin": no files (`describe()` says where it comes from)."""

    how_to_get: str
    kind: str = "files"
    layouts: tuple[str, ...] = ("",)   # subfolders of a place that may hold the files ("": the place itself)
    system: str | None = None          # a system package's folder
    download: str | None = None        # the torchvision.datasets class that fetches it
    download_train: tuple[bool, ...] = (True, False)  # its `train=` arguments to fetch everything
    describe: Callable[[], str] | None = None


SOURCES: dict[str, Source] = {
    "digits": Source("embedded in scikit-learn; nothing to do", kind="builtin", describe=_sklearn),
    "mnist": Source("put the four IDX files (train-images-idx3-ubyte.gz, ...) in data.root or $CBAMLAB_DATA/mnist, "
                    "or set data.download: true", layouts=("", "MNIST/raw"), download="MNIST"),
    "fashion_mnist": Source("apt install dataset-fashion-mnist, or put the four IDX files in data.root or "
                            "$CBAMLAB_DATA/fashion_mnist, or set data.download: true",
                            layouts=("", "FashionMNIST/raw"), system="/usr/share/datasets/fashion-mnist",
                            download="FashionMNIST"),
    "cifar10": Source("unpack cifar-10-python.tar.gz into data.root or $CBAMLAB_DATA/cifar10, or set "
                      "data.download: true", layouts=("", "cifar-10-batches-py"), download="CIFAR10",
                      download_train=(True,)),  # one archive holds both splits
    "cifar100": Source("unpack cifar-100-python.tar.gz into data.root or $CBAMLAB_DATA/cifar100, or set "
                       "data.download: true", layouts=("", "cifar-100-python"), download="CIFAR100",
                       download_train=(True,)),
    "imagefolder": Source("set data.root to a folder with train/<class>/* and val/<class>/* images", kind="root"),
    "synthetic": Source("generated; for tests and benchmarks only", kind="builtin",
                        describe=lambda: "generated (seed 0)"),
}


def source(name: str) -> Source:
    if name not in SOURCES:
        raise unknown("dataset", name, SOURCES)
    return SOURCES[name]


def how_to_get(name: str) -> str:
    return source(name).how_to_get


def cache_dir(name: str) -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "cbamlab" / name


def places(name: str, root=None) -> list[Path]:
    """The folders looked at, in order: under an explicit root only; else $CBAMLAB_DATA/<name>, the system
    folder, the cache. Each place in each layout."""
    src = source(name)
    if root:
        bases = [Path(root), Path(root) / name]
    else:
        bases = [Path(os.environ["CBAMLAB_DATA"]) / name] if os.environ.get("CBAMLAB_DATA") else []
        bases += [Path(src.system)] if src.system else []
        bases.append(cache_dir(name))
    return [base / layout if layout else base for base in bases for layout in src.layouts]


def locate(name: str, root, reader: ModuleType) -> tuple[str | None, list[str]]:
    """(where `name` would be read from, or None; the places looked at), without reading it. `reader` is the
    dataset's reader module (its `present(folder, name)` says whether a folder holds the files)."""
    src = source(name)
    if src.kind == "builtin":
        return src.describe(), []
    if src.kind == "root":
        if not root:
            return None, ["data.root (not set)"]
        return (str(Path(root)) if reader.present(Path(root), name) else None), [str(Path(root))]
    looked = places(name, root)
    for folder in looked:
        if reader.present(folder, name):
            return str(folder), [str(p) for p in looked]
    unset = [] if root or os.environ.get("CBAMLAB_DATA") else ["data.root (not set)", "$CBAMLAB_DATA (not set)"]
    return None, unset + [str(p) for p in looked]


def download_target(name: str, root) -> Path:
    """Where a download goes: data.root, else $CBAMLAB_DATA/<name>, else the cache folder."""
    if root:
        return Path(root)
    return Path(os.environ["CBAMLAB_DATA"]) / name if os.environ.get("CBAMLAB_DATA") else cache_dir(name)


def download(name: str, root) -> None:
    """Fetch `name` through its torchvision dataset class (which verifies checksums); errors in one line."""
    import torchvision.datasets  # heavy, and only a download needs it

    src = source(name)
    if src.download is None:
        raise DataError(f"{name} cannot be downloaded; to get it: {src.how_to_get}")
    cls = getattr(torchvision.datasets, src.download)
    target = download_target(name, root)
    log.info("downloading %s to %s through torchvision (checksum verified)", name, target)
    try:
        for train in src.download_train:
            cls(str(target), train=train, download=True)
    except Exception as e:  # network, checksum or disk errors: one line for the user
        first = str(e).splitlines()[0] if str(e) else repr(e)
        raise DataError(f"could not download {name} to {target}: {first}") from None


def find(name: str, root, reader: ModuleType, *, download_missing: bool = False) -> str:
    """The source `locate` finds for `name` (after a download when missing and `download_missing`), else a
    DataError: under an explicit root it lists the files expected there, otherwise the places looked at; both
    say how to get the data."""
    src = source(name)
    if src.kind == "root" and not root:
        raise DataError(f"{name} needs data.root: {src.how_to_get}")
    if src.kind == "root":
        return str(Path(root))  # the reader checks the layout and names what is missing
    found, looked = locate(name, root, reader)
    if found is None and download_missing and src.download:
        download(name, root)
        found, looked = locate(name, root, reader)
    if found is not None:
        return found
    if root:
        where = " or ".join(str(p) for p in places(name, root))
        raise DataError(f"{name} not found in data.root={root}: expected {', '.join(reader.expected_files(name))} "
                        f"in {where}; nothing outside data.root is used when it is set; to get it: {src.how_to_get}")
    raise DataError(f"{name} not found; looked in {', '.join(looked)}; to get it: {src.how_to_get}")
