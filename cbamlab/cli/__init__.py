"""The `cbamlab` command. The only place that prints for the user and maps errors to exit codes.

Each subcommand lives in its own module here with `register(subparsers)`; the handler it sets with
`set_defaults(func=...)` takes the parsed args and returns an exit status. A `CbamlabError` (bad input)
becomes one line `error: ...` on stderr and exit status 2, with no traceback.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

from ..errors import CbamlabError

# Order is the order of `cbamlab --help`.
COMMAND_MODULES = ("train", "evaluate", "predict", "export", "compare", "report", "tune",
                   "explain", "summary", "datasets")


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as one `error:` line and exit status 2."""

    def error(self, message):
        self.exit(2, f"error: {self.prog}: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

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


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    setup_logging(getattr(args, "quiet", False), getattr(args, "verbose", False))
    try:
        return int(args.func(args) or 0)
    except CbamlabError as e:
        msg = " ".join(str(e).split("\n")).strip()
        print(f"error: {msg}", file=sys.stderr)
        return 2
    except FileNotFoundError as e:
        print(f"error: no such file or folder: {e.filename or e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `cbamlab summary --list | head`: the reader left, which is not an error
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
