"""An exclusive claim on a run directory, so that two processes never write the same run.

`claim_run_dir(path)` takes an OS lock (`fcntl.flock`) on the claim file `<parent>/.<name>.claim`, beside the
run directory (inside it, the file would make a new run's folder look non-empty), and holds it until
released or until the process ends: the kernel drops the lock of a process that dies, even by SIGKILL, so
a crashed run never blocks the next one. The file also names its holder (`process.process_tag` and since when)
for the error another process gets: "<dir> is in use by pid N on HOST". A claim file left behind by a killed
process is taken over (and logged). Released normally, the file is removed. A filesystem without locks is
refused with an error that says so: there no claim could be held.

Within one process a claim is re-entrant: claiming a directory this process already holds returns a nested
handle (e.g. `compare` claims a run, then `fit` claims it again). Released when the last handle is.
"""
from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import threading
import time
from pathlib import Path

from .process import process_tag
from .rundir import RunDirError

log = logging.getLogger(__name__)

_NO_LOCKS = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL, errno.ENOSYS}
_held: dict[Path, "Claim"] = {}  # run dir -> this process's claim
_guard = threading.Lock()


class RunDirInUse(RunDirError):
    """Another live process holds the run directory."""


def claim_path(run_dir) -> Path:
    run_dir = Path(os.path.abspath(run_dir))
    return run_dir.parent / f".{run_dir.name}.claim"


def holder(run_dir) -> dict | None:
    """{host, pid, start, since} of the claim file of `run_dir`, or None when there is none (or it is unreadable)."""
    try:
        info = json.loads(claim_path(run_dir).read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def _in_use(run_dir: Path, info: dict | None) -> RunDirInUse:
    who = f"pid {info.get('pid')} on {info.get('host')}" if info else "another process"
    return RunDirInUse(f"{run_dir} is in use by {who}; wait for it to finish, or use another --out")


def _record() -> bytes:
    return json.dumps({**process_tag(), "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}).encode()


def _remove_made(run_dir: Path, made: list[Path]) -> None:
    """The folders made for the claim file (deepest first), unless the run directory was made in them."""
    for folder in made if not run_dir.exists() else ():
        try:
            folder.rmdir()
        except OSError:  # not empty (another run), or gone
            break


class Claim:
    """A held claim on `run_dir`; a context manager. `taken_over` names the dead holder it replaced, if any."""

    def __init__(self, run_dir: Path, file: Path, fd: int, taken_over: dict | None):
        self.run_dir, self.file, self._fd, self.taken_over = run_dir, file, fd, taken_over
        self._count = 1
        self.made: list[Path] = []  # folders made for the claim file, removed again if the run never started

    def __enter__(self) -> "Claim":
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    @property
    def held(self) -> bool:
        return self._count > 0

    def release(self) -> None:
        with _guard:
            if self._count == 0:
                return
            self._count -= 1
            if self._count:
                return
            _held.pop(self.run_dir, None)
            if _same_file(self._fd, self.file):
                self.file.unlink(missing_ok=True)  # while still locked: a waiter that opened it sees it is stale
            os.close(self._fd)  # drops the lock
            _remove_made(self.run_dir, self.made)


def _same_file(fd: int, path: Path) -> bool:
    try:
        a, b = os.fstat(fd), os.stat(path)
    except FileNotFoundError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def claim_run_dir(run_dir) -> Claim:
    """Claim `run_dir` for this process (creating its parent folder); RunDirInUse (a RunDirError, exit 2 in
    the CLI) when a live process holds it, a RunDirError when its filesystem has no locks."""
    run_dir = Path(os.path.abspath(run_dir))
    with _guard:
        mine = _held.get(run_dir)
        if mine is not None:
            mine._count += 1
            return mine
        file = claim_path(run_dir)
        made = [p for p in (file.parent, *file.parent.parents) if not p.exists()]  # deepest first
        file.parent.mkdir(parents=True, exist_ok=True)
        try:
            claim = _flock(run_dir, file)
        except RunDirError:
            _remove_made(run_dir, made)
            raise
        claim.made = made
        if claim.taken_over:
            log.info("%s: took over the claim left by pid %s on %s (no longer running)", run_dir,
                     claim.taken_over.get("pid"), claim.taken_over.get("host"))
        _held[run_dir] = claim
        return claim


def _read_holder(run_dir: Path, fd: int) -> dict | None:
    for _ in range(20):  # the holder writes its record right after locking
        data = os.pread(fd, 4096, 0)
        if data:
            try:
                return json.loads(data)
            except ValueError:
                pass
        time.sleep(0.05)
    return holder(run_dir)


def _flock(run_dir: Path, file: Path) -> Claim:
    while True:
        fd = os.open(file, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            info = _read_holder(run_dir, fd)
            os.close(fd)
            raise _in_use(run_dir, info) from None
        except OSError as e:
            if e.errno not in _NO_LOCKS:
                os.close(fd)
                raise
            if not os.fstat(fd).st_size:  # made just now: no claim of anyone's
                file.unlink(missing_ok=True)
            os.close(fd)
            raise RunDirError(f"{run_dir}: its filesystem does not support file locks ({os.strerror(e.errno)}), "
                              "which the claim that keeps two processes from writing one run needs; use an --out "
                              "on a filesystem with locks (a local disk, or a shared one mounted with locks)") from None
        if not _same_file(fd, file):  # released (and removed) by its holder meanwhile: lock the new file
            os.close(fd)
            continue
        previous = _read_holder(run_dir, fd) if os.fstat(fd).st_size else None
        os.ftruncate(fd, 0)
        os.pwrite(fd, _record(), 0)
        return Claim(run_dir, file, fd, previous)
