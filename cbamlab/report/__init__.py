"""Reports: pure functions from run directories (read through `cbamlab.runs`) to tables, figures and
report.md / report.html. Never trains, and never imports `experiments`: the CLI asks for a report after a
comparison or a search.

`write_report(runs_dir, out_dir=None)` is the entry point; `groups`, `stats`, `tables`, `plots` and `writer` are
the parts; `tune_report.write_tune_report(study_dir)` reports a tuning study, `explain.write_explain_report` and
`explain_seeds.write_seeds_report` an explain folder. Every report is a `document.Document`, written as markdown
and as one self-contained HTML page by `render`; every figure becomes PNG through `mpl.png_bytes`.
"""
from __future__ import annotations

from .writer import write_report

__all__ = ["write_report"]
