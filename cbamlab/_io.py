"""Atomic file writes (temp file in the same folder + fsync + rename) and safe loading of torch files.

A reader never sees a half-written file, and a crash mid-write leaves the previous version in place. The file
gets the mode a plain `open(path, "w")` would give it (the user's umask for a new file, the old mode when
replacing one), not the temp file's 0600, so colleagues sharing a runs folder can read the runs.
"""
from __future__ import annotations

import json
import os
import stat
import tempfile
from pathlib import Path
from typing import Any, Callable

from .errors import CheckpointError


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
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        if hasattr(os, "fchmod"):  # mkstemp makes 0600; not on Windows, which has no such bits
            os.fchmod(fd, perms)
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


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


def torch_save(path, obj: Any) -> Path:
    """torch.save to `path` atomically. Keep `obj` to tensors and plain containers so it loads weights-only."""
    import torch

    return atomic_write(path, lambda f: torch.save(obj, f), "wb")


def torch_load_safe(path, map_location="cpu") -> Any:
    """torch.load with weights_only=True: a pickle that would import or call anything is refused, nothing runs."""
    import pickle

    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no such file: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else "unpickling refused"
        raise CheckpointError(f"{path}: refused to load (only plain tensors and containers are allowed): {first}") from None
    except (RuntimeError, EOFError, ValueError, OSError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: not a readable torch file ({first})") from None
