"""The file list of an image folder split (`<split>/<class>/**/<image>`): listed without opening a file, optionally
kept in an index file.

Listing costs one `scandir` per directory and a sort per class, so start-up grows with the number of files listed,
never with their content (a corrupt file is found when it is first read; see folder.py). Files are chosen by
extension, as torchvision's ImageFolder does.

With `index_cache`, the list goes to `<cache>/imagefolder/index/<hash of the folder path>.json` with the
modification time (ns) of every directory listed. A later run that finds all those times unchanged reads the
index and lists nothing: adding, removing or renaming a file or folder changes its parent directory's time. An
index is not written while a directory changed less than `SETTLE_S` ago, since a change within the filesystem's
time resolution could then go unseen.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path

from .. import _io
from ..errors import DataError
from .locate import cache_dir

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset((".jpg", ".jpeg", ".jfif", ".png", ".ppm", ".pgm", ".pbm", ".bmp", ".tif", ".tiff",
                              ".webp", ".gif"))
INDEX_VERSION = 1
SETTLE_S = 2.0


def _walk(top: str) -> tuple[list[str], dict[str, int], int]:
    """(image files under `top` relative to it, sorted; {directory relative to `top`: mtime_ns}; other files)."""
    files, dirs, ignored = [], {}, 0
    stack = [""]
    while stack:
        rel = stack.pop()
        path = os.path.join(top, rel)
        dirs[rel] = os.stat(path).st_mtime_ns
        with os.scandir(path) as entries:
            for e in entries:
                if e.name.startswith("."):
                    continue
                name = os.path.join(rel, e.name)
                if e.is_dir():
                    stack.append(name)
                elif os.path.splitext(e.name)[1].lower() in IMAGE_EXTENSIONS:
                    files.append(name)
                else:
                    ignored += 1
    files.sort()
    return files, dirs, ignored


def list_folder(folder: Path) -> dict:
    """{"classes": [...], "files": {class: [files relative to the class folder]}, "dirs": {dir: mtime_ns}, ...}."""
    if not folder.is_dir():
        raise DataError(f"no such folder: {folder}")
    with os.scandir(folder) as entries:
        classes = sorted(e.name for e in entries if e.is_dir() and not e.name.startswith("."))
    listing = {"version": INDEX_VERSION, "folder": str(folder.resolve()), "classes": classes, "files": {},
               "dirs": {"": os.stat(folder).st_mtime_ns}, "ignored": 0}
    for name in classes:
        files, dirs, ignored = _walk(str(folder / name))
        listing["files"][name] = files
        listing["dirs"].update({os.path.join(name, d) if d else name: t for d, t in dirs.items()})
        listing["ignored"] += ignored
    return listing


def index_path(folder: Path) -> Path:
    key = hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:24]
    return cache_dir("imagefolder") / "index" / f"{key}.json"


def _read_index(folder: Path) -> dict | None:
    """The cached listing of `folder` if one exists and no directory in it changed since; else None."""
    path = index_path(folder)
    try:
        listing = json.loads(path.read_text())
        if listing["version"] != INDEX_VERSION or listing["folder"] != str(folder.resolve()):
            return None
        for rel, mtime in listing["dirs"].items():
            if os.stat(folder / rel).st_mtime_ns != mtime:
                log.info("file index %s is out of date (%s changed): listing the folder again", path, folder / rel)
                return None
        if not isinstance(listing["files"], dict) or listing["classes"] != sorted(listing["files"]):
            return None
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as e:  # unreadable, not JSON, or another layout
        log.warning("ignoring the file index %s (%s)", path, e)
        return None
    return listing


def _write_index(folder: Path, listing: dict) -> None:
    newest = max(listing["dirs"].values())
    if time.time_ns() - newest < SETTLE_S * 1e9:
        log.info("file index of %s not written: the folder changed less than %.0f s ago", folder, SETTLE_S)
        return
    path = _io.write_text(index_path(folder), json.dumps(listing, separators=(",", ":")))
    log.info("file index of %s written to %s", folder, path)


def scan(folder: Path, classes: list[str] | None = None, *, index_cache: bool = False
         ) -> tuple[list[str], list[tuple[str, int]]]:
    """(classes, samples [(path, label)]) of one split folder; `classes` given for val (must be known ones)."""
    folder = Path(folder)
    t0 = time.perf_counter()
    listing = _read_index(folder) if index_cache else None
    if listing is not None:
        log.info("file list of %s read from its index %s", folder, index_path(folder))
    else:
        listing = list_folder(folder)
        if index_cache:
            _write_index(folder, listing)
    found = listing["classes"]
    if not found:
        raise DataError(f"{folder}: no class folders (expected {folder}/<class>/<image files>)")
    if classes is None:
        classes = found
    else:
        extra = sorted(set(found) - set(classes))
        if extra:
            raise DataError(f"{folder}: classes not in train: {', '.join(extra)}")
    index = {c: i for i, c in enumerate(classes)}
    samples = []
    for name in found:
        files = listing["files"][name]
        if not files:
            raise DataError(f"{folder / name}: empty class (no image files: "
                            f"{', '.join(sorted(IMAGE_EXTENSIONS))})")
        base, label = str(folder / name), index[name]
        samples += [(os.path.join(base, f), label) for f in files]
    if listing["ignored"]:
        log.info("%s: ignored %d file(s) without an image extension", folder, listing["ignored"])
    log.info("%s: %d image files in %d classes (%.2f s)", folder, len(samples), len(found),
             time.perf_counter() - t0)
    return classes, samples
