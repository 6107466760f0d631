"""`cbamlab report RUNS_DIR`: (re)write report.md and report.html from finished run directories."""
from __future__ import annotations

from ..report import tables
from ..report.render import markdown_table
from ..report.writer import write_report


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "report", help="write report.md and report.html from a folder of runs",
        description="Read every run directory under RUNS_DIR (as written by cbamlab compare or cbamlab train), "
                    "group them by dataset and recipe, and write report.md, report.html (figures embedded) and "
                    "figures/*.png. Never trains; unfinished runs are listed and left out.",
        epilog="docs: docs/compare.md#reading-the-report")
    p.add_argument("runs_dir", metavar="RUNS_DIR", help="folder holding run directories")
    p.add_argument("--out", metavar="DIR", help="where to write the report (default: RUNS_DIR)")
    p.add_argument("-q", "--quiet", action="store_true", help="log warnings only")
    p.set_defaults(func=run)


def run(args) -> int:
    paths = write_report(args.runs_dir, args.out)
    for c in paths.comparisons:
        print(f"\n{c.title}\n")
        print(markdown_table(*tables.table(c.rows)))
        for line in c.sentences:
            print(f"- {line}")
    print(f"\nreport: {paths.markdown} and {paths.html} ({len(paths.figures)} figures)")
    return 0
