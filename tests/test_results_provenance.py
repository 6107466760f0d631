"""The README's result tables come from committed run files: every block

    <!-- results: results/STUDY -->
    ... lines copied from the report ...
    <!-- /results -->

in README.md must be reproduced, line for line, by `cbamlab report results/STUDY` run now on the committed files
(config.yaml, metrics.csv, summary.json, env.json of each run), so a number in the README cannot drift from its
data."""
import re
from pathlib import Path

import pytest

from cbamlab.report.writer import write_report

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"<!-- results: (\S+) -->\n(.*?)<!-- /results -->", re.S)


def blocks():
    return BLOCK.findall((ROOT / "README.md").read_text(encoding="utf-8"))


def test_the_readme_has_result_blocks():
    assert blocks(), "README.md has no <!-- results: ... --> block"


@pytest.mark.parametrize("study,text", blocks(), ids=[b[0] for b in blocks()])
def test_every_readme_result_line_is_what_the_report_computes_now(study, text, tmp_path):
    runs = ROOT / study
    assert runs.is_dir(), f"{study} is not committed"
    report = write_report(runs, tmp_path)
    lines = set(Path(report.markdown).read_text(encoding="utf-8").splitlines())
    quoted = [line for line in text.splitlines() if line.strip()]
    assert quoted, f"the block for {study} is empty"
    missing = [line for line in quoted if line not in lines]
    assert not missing, f"README lines for {study} that `cbamlab report {study}` does not give: {missing}"
