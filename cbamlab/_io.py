"""Atomic file writes (temp file in the same folder + fsync + rename) and safe loading of torch and image files.

A reader never sees a half-written file, and a crash mid-write leaves the previous version in place. The file
gets the mode a plain `open(path, "w")` would give it (the user's umask for a new file, the old mode when
replacing one), not the temp file's 0600, so colleagues sharing a runs folder can read the runs. A failed write
(disk full, read-only, no permission) removes its temp file and raises an OSError naming the file it was
writing; a temp file left by a killed process (`.NAME.xxxxxxxx.tmp`) is found by `stale_temp_files`.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import pickle
import re
import stat
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable

import torch
from PIL import Image

from .errors import CheckpointError, DataError

log = logging.getLogger(__name__)

# PIL's guard against a decompression bomb (a small file that decodes to gigabytes), with its limits stated here:
# an image of more than MAX_IMAGE_PIXELS pixels (about 13,400 x 13,400) is refused; one of more than
# LARGE_IMAGE_PIXELS (about 9,500 x 9,500) is read, with a log line. Both are PIL's default limits.
LARGE_IMAGE_PIXELS = 89_478_485
MAX_IMAGE_PIXELS = 2 * LARGE_IMAGE_PIXELS
_TEMP_PREFIX, _TEMP_SUFFIX = ".", ".tmp"
_TEMP_NAME = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp$")  # tempfile.mkstemp's 8 random characters


def _umask() -> int:
    """The process umask, read without changing it where Linux allows (os.umask sets it while reading it)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode(path: str | os.PathLike) -> int:
    """The permission bits `open(path, "w")` leaves: the existing file's, else 0666 less the umask."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        return 0o666 & ~_umask()


def atomic_write(path: str | os.PathLike, write: Callable[[Any], None], mode: str = "wb") -> Path:
    """Call `write(fileobj)` on a temp file beside `path`, then rename it over `path` (mode: see `file_mode`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    perms = file_mode(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f"{_TEMP_PREFIX}{path.name}.", suffix=_TEMP_SUFFIX, dir=path.parent)
    except OSError as e:
        raise OSError(e.errno, e.strerror, str(path)) from None  # name the file asked for, not the temp file
    try:
        if hasattr(os, "fchmod"):  # mkstemp makes 0600; not on Windows, which has no such bits
            os.fchmod(fd, perms)
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(e, OSError) and e.errno is not None and e.filename in (None, tmp):
            raise OSError(e.errno, e.strerror or os.strerror(e.errno), str(path)) from None
        raise
    return path


def stale_temp_files(folder) -> list[Path]:
    """The temp files `atomic_write` left in `folder` (not below it) when its process was killed mid-write.
    Only the holder of the folder (a claimed run directory) may remove them: another process could be writing."""
    try:
        return sorted(p for p in Path(folder).iterdir() if _TEMP_NAME.match(p.name) and p.is_file())
    except (FileNotFoundError, NotADirectoryError):
        return []


def write_bytes(path, data: bytes) -> Path:
    return atomic_write(path, lambda f: f.write(data), "wb")


def write_text(path, text: str) -> Path:
    return atomic_write(path, lambda f: f.write(text), "w")


def write_json(path, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(o):
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


class _Recorder:
    """A file's write() that keeps the OSError it raised: torch.save reports a failed write (a full disk) as a
    RuntimeError of its zip writer ("unexpected pos ..."), which `torch_save` turns back into that OSError."""

    def __init__(self, f):
        self.f, self.error = f, None

    def write(self, data) -> int:
        try:
            return self.f.write(data)
        except OSError as e:
            self.error = e
            raise

    def flush(self) -> None:
        self.f.flush()


def torch_save(path, obj: Any) -> Path:
    """torch.save to `path` atomically. Keep `obj` to tensors and plain containers so it loads weights-only."""
    def write(f) -> None:
        out = _Recorder(f)
        try:
            torch.save(obj, out)
        except RuntimeError:
            if out.error is not None:
                raise out.error from None
            raise

    return atomic_write(path, write, "wb")


def torch_load_safe(path, map_location="cpu", *, mmap: bool = False) -> Any:
    """torch.load with weights_only=True: a pickle that would import or call anything is refused, nothing runs.
    mmap=True maps the tensors' storage instead of reading it (cheap when only the plain values are wanted)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no such file: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else "unpickling refused"
        raise CheckpointError(f"{path}: refused to load (only plain tensors and containers are allowed): {first}") from None
    except (RuntimeError, EOFError, ValueError, OSError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: not a readable torch file ({first})") from None


def too_large(path, error: Exception) -> DataError:
    """The one error for an image over MAX_IMAGE_PIXELS, from PIL's DecompressionBombError (or ours, worded alike)."""
    pixels = re.search(r"\((\d+) pixels\)", str(error))
    size = f"{int(pixels.group(1)):,} pixels" if pixels else "too many pixels"
    return DataError(f"{path}: {size}, over the image size limit of {MAX_IMAGE_PIXELS:,} pixels "
                     "(a guard against decompression bombs); downscale it first")


@contextlib.contextmanager
def image_size_guard(path):
    """Open images of `path` inside this block under the stated size limits: over MAX_IMAGE_PIXELS a DataError
    naming the file (PIL's DecompressionBombError), over LARGE_IMAGE_PIXELS one log line (PIL's raw warning)."""
    before = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = LARGE_IMAGE_PIXELS  # PIL refuses above twice this, warns above it
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", Image.DecompressionBombWarning)
            try:
                yield
            except Image.DecompressionBombError as e:
                raise too_large(path, e) from None
    finally:
        Image.MAX_IMAGE_PIXELS = before
    for w in caught:
        if issubclass(w.category, Image.DecompressionBombWarning):
            pixels = re.search(r"\((\d+) pixels\)", str(w.message))
            log.warning("%s: a large image (%s pixels, over %s): reading it takes time and memory", path,
                        f"{int(pixels.group(1)):,}" if pixels else "many", f"{LARGE_IMAGE_PIXELS:,}")
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
