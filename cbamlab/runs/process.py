"""Which process a record names, and whether it still runs: the one liveness check.

A record names its process by host, pid and the kernel's start time of that pid (`process_tag`), so a pid the
kernel has since given to another process is not taken for the one recorded (`process_alive`). The claim on a
run directory names its holder so; a tuning study's trials name their worker so, and a trial whose worker is
gone is failed.
"""
from __future__ import annotations

import os
import socket
from pathlib import Path


def _start_time(pid: int) -> str | None:
    """The kernel's start time of process `pid` (Linux: field 22 of /proc/PID/stat); None where not known."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # after the command name, which may hold spaces and ")"


def process_tag() -> dict:
    """This process: {"host", "pid", "start"} (start: None where the system does not tell it)."""
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid, "start": _start_time(pid)}


def process_alive(tag: dict) -> bool | None:
    """Whether the process `tag` names (`process_tag`) still runs: True or False for one of this host, None for
    one of another host (it cannot be checked from here) or a tag without a pid. A pid that runs with another
    start time than recorded was reused: that process is gone. Without a recorded or readable start time, a
    running pid counts as alive."""
    pid = tag.get("pid")
    if tag.get("host") != socket.gethostname() or not isinstance(pid, int) or pid <= 0:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: another user's process, which exists
        pass
    start = _start_time(pid)
    return start is None or tag.get("start") is None or start == tag["start"]
