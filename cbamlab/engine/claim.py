"""An exclusive claim on a run directory, so that two processes never write the same run.

`claim_run_dir(path)` takes an OS lock (`fcntl.flock`) on the claim file `<parent>/.<name>.claim`, beside the
run directory (inside it, the file would make a new run's folder look non-empty), and holds it until
released or until the process ends: the kernel drops the lock of a process that dies, even by SIGKILL, so
a crashed run never blocks the next one. The file also names its holder (pid, host, since) for the error
another process gets: "<dir> is in use by pid N on HOST". A claim file left behind by a killed process is
taken over (and logged). Released normally, the file is removed.

On a filesystem without locks (flock fails with ENOLCK or "not supported"), the claim file alone is the
claim: created atomically (O_EXCL), and taken over only when it names a process of this host that is gone;
a claim of another host is then kept until removed by hand, since its process cannot be checked from here.

Within one process a claim is re-entrant: claiming a directory this process already holds returns a nested
handle (e.g. `compare` claims a run, then `fit` claims it again). Released when the last handle is.
"""
from __future__ import annotations

import errno
import json
import logging
import os
import socket
import threading
import time
from pathlib import Path

from .rundir import RunDirError

try:
    import fcntl
except ImportError:  # not POSIX: the claim file alone
    fcntl = None

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
    """{pid, host, since} of the claim file of `run_dir`, or None when there is none (or it is unreadable)."""
    try:
        info = json.loads(claim_path(run_dir).read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _in_use(run_dir: Path, info: dict | None) -> RunDirInUse:
    who = f"pid {info.get('pid')} on {info.get('host')}" if info else "another process"
    return RunDirInUse(f"{run_dir} is in use by {who}; wait for it to finish, or use another --out")


def _record() -> bytes:
    return json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                       "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}).encode()


class Claim:
    """A held claim on `run_dir`; a context manager. `taken_over` names the dead holder it replaced, if any."""

    def __init__(self, run_dir: Path, file: Path, fd: int | None, taken_over: dict | None):
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
            try:
                if self._fd is None or _same_file(self._fd, self.file):
                    self.file.unlink()  # while still locked: a waiter that opened it sees it is stale
            except FileNotFoundError:
                pass
            if self._fd is not None:
                os.close(self._fd)  # drops the lock
            for folder in self.made if not self.run_dir.exists() else ():
                try:
                    folder.rmdir()
                except OSError:  # not empty (another run), or gone
                    break


def _same_file(fd: int, path: Path) -> bool:
    try:
        a, b = os.fstat(fd), os.stat(path)
    except FileNotFoundError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def claim_run_dir(run_dir) -> Claim:
    """Claim `run_dir` for this process (creating its parent folder); RunDirInUse (a RunDirError, exit 2 in
    the CLI) when a live process holds it."""
    run_dir = Path(os.path.abspath(run_dir))
    with _guard:
        mine = _held.get(run_dir)
        if mine is not None:
            mine._count += 1
            return mine
        file = claim_path(run_dir)
        made = [p for p in (file.parent, *file.parent.parents) if not p.exists()]  # deepest first
        file.parent.mkdir(parents=True, exist_ok=True)
        claim = _flock(run_dir, file) if fcntl is not None else None
        if claim is None:
            claim = _exclusive_file(run_dir, file)
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


def _flock(run_dir: Path, file: Path) -> Claim | None:
    """The claim by flock; None when this filesystem has no locks."""
    while True:
        fd = os.open(file, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            info = _read_holder(run_dir, fd)
            os.close(fd)
            raise _in_use(run_dir, info) from None
        except OSError as e:
            os.close(fd)
            if e.errno in _NO_LOCKS:
                return None
            raise
        if not _same_file(fd, file):  # released (and removed) by its holder meanwhile: lock the new file
            os.close(fd)
            continue
        previous = _read_holder(run_dir, fd) if os.fstat(fd).st_size else None
        os.ftruncate(fd, 0)
        os.pwrite(fd, _record(), 0)
        return Claim(run_dir, file, fd, previous)


def _exclusive_file(run_dir: Path, file: Path) -> Claim:
    """The claim by O_EXCL creation alone (no locks here); a claim of a dead process of this host is taken over."""
    taken_over = None
    for _ in range(10):
        try:
            fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            info = holder(run_dir)
            if info is None:  # being written right now, or debris
                time.sleep(0.05)
                info = holder(run_dir)
            stale = (info is not None and info.get("host") == socket.gethostname()
                     and isinstance(info.get("pid"), int) and not _alive(info["pid"]))
            if not stale:
                raise _in_use(run_dir, info) from None
            taken_over = info
            try:
                file.unlink()
            except FileNotFoundError:
                pass
            continue
        try:
            os.write(fd, _record())
        finally:
            os.close(fd)
        return Claim(run_dir, file, None, taken_over)
    raise _in_use(run_dir, holder(run_dir))
