"""Reports: pure functions from run directories to tables, figures and report.md / report.html. Never trains.

`write_report(runs_dir, out_dir=None)` is the entry point; `stats`, `tables`, `plots` and `writer` are the parts.
Imported lazily, so `import cbamlab.report.stats` does not pull in matplotlib.
"""
from __future__ import annotations

__all__ = ["write_report"]


def __getattr__(name):
    if name == "write_report":
        from .writer import write_report

        return write_report
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
