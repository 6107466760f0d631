"""Reports: pure functions from run directories (read through `engine.rundir`) to tables, figures and
report.md / report.html. Never trains, and never imports `experiments`: the CLI asks for a report after a
comparison or a search.

`write_report(runs_dir, out_dir=None)` is the entry point; `groups`, `stats`, `tables`, `plots` and `writer` are
the parts; `tune_report.write_tune_report(study_dir)` reports a tuning study.
"""
from __future__ import annotations

from .writer import write_report

__all__ = ["write_report"]
