"""The `cbamlab` command. The only place that prints for the user and maps errors to exit codes.

Each subcommand lives in its own module here with `register(subparsers)`; the handler it sets with
`set_defaults(func=...)` takes the parsed args and returns an exit status. A `CbamlabError` (bad input)
becomes one line `error: ...` on stderr and exit status 2, with no traceback.
"""
from __future__ import annotations

import argparse
import errno
import importlib
import logging
import os
import signal
import sys
import threading

from .. import __version__
from ..errors import CbamlabError

# Order is the order of `cbamlab --help`.
COMMAND_MODULES = ("train", "evaluate", "predict", "export", "compare", "report", "tune",
                   "explain", "summary", "datasets", "native")


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as one `error:` line and exit status 2."""

    def error(self, message):
        self.exit(2, f"error: {self.prog}: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="cbamlab", description="Build, train, compare and explain ResNets with CBAM attention.")
    parser.add_argument("--version", action="version", version=f"cbamlab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f".{name}", __name__)
        except ModuleNotFoundError as e:  # a command whose module is not written yet
            if e.name == f"{__name__}.{name}":
                continue
            raise
        module.register(sub)
    return parser


def setup_logging(quiet: bool = False, verbose: bool = False) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose else logging.INFO)
    logging.basicConfig(level=level, format="%(message)s", stream=sys.stderr, force=True)


# Errors of the machine around a command (a full disk, a read-only folder, a path through a file): what to say.
_OS_ERRORS = {
    errno.ENOSPC: "no space left on the device (writing {f}); free some space and run it again (files are replaced "
                  "only once written whole; a run continues with --resume)",
    errno.EDQUOT: "disk quota exceeded (writing {f}); free some space and run it again",
    errno.EROFS: "{f}: read-only file system; write somewhere else (e.g. another --out)",
    errno.EACCES: "{f}: permission denied; write somewhere else (e.g. another --out) or fix its permissions",
    errno.EPERM: "{f}: operation not permitted; write somewhere else (e.g. another --out)",
    errno.ENOTDIR: "{f}: a part of this path is a file, not a folder",
    errno.EEXIST: "{f} exists and is not a folder",
    errno.EISDIR: "{f} is a folder; give a file name",
    errno.ENAMETOOLONG: "{f}: file name too long",
}


def os_error_message(e: OSError) -> str | None:
    """The one-line message for an OSError the user's machine caused, or None for any other (a bug: traceback)."""
    text = _OS_ERRORS.get(e.errno)
    if text is None:
        return None
    return text.format(f=e.filename if e.filename is not None else "a file")


class Terminated(KeyboardInterrupt):
    """SIGTERM (a job scheduler, `kill`) raised as a kind of Ctrl-C, so that every `finally` runs (temp files
    removed, the run directory's claim released) and a run continues later with --resume."""


def _on_sigterm(signum, frame):
    raise Terminated


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    setup_logging(getattr(args, "quiet", False), getattr(args, "verbose", False))
    main_thread = threading.current_thread() is threading.main_thread()
    before = signal.signal(signal.SIGTERM, _on_sigterm) if main_thread else None
    try:
        return _run(args)
    finally:
        if main_thread and before is not None:
            signal.signal(signal.SIGTERM, before)


def _run(args) -> int:
    try:
        return int(args.func(args) or 0)
    except CbamlabError as e:
        msg = " ".join(str(e).split("\n")).strip()
        print(f"error: {msg}", file=sys.stderr)
        return 2
    except FileNotFoundError as e:
        print(f"error: no such file or folder: {e.filename or e}", file=sys.stderr)
        return 2
    except Terminated:
        print("error: terminated", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `cbamlab summary --list | head`: the reader left, which is not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as e:
        msg = os_error_message(e)
        if msg is None:
            raise
        print(f"error: {msg}", file=sys.stderr)
        return 2
