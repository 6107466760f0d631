"""The README's result tables come from committed run files: every block

    <!-- results: results/STUDY -->
    ... lines copied from the report ...
    <!-- /results -->

in README.md must be reproduced, line for line, by `cbamlab report results/STUDY` run now on the committed files
(config.yaml, metrics.csv, summary.json, env.json of each run), so a number in the README cannot drift from its
data. The measured rows of the README's "claims vs measurements" table are checked the same way."""
import itertools
import re
from pathlib import Path

import pytest

from cbamlab.report import tables
from cbamlab.report.groups import load_groups
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


CLAIMS = re.compile(r"<!-- claims vs measurements -->\n(.*?)<!-- /claims -->", re.S)


def claims_rows():
    (block,) = CLAIMS.findall((ROOT / "README.md").read_text(encoding="utf-8"))
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in block.splitlines()[2:] if line]
    return [r for r in rows if r[-1].startswith("measured: ")]


def test_the_claims_table_has_measured_rows():
    assert claims_rows(), "the README's claims table has no measured row"


@pytest.mark.parametrize("row", claims_rows(), ids=[r[-1] for r in claims_rows()])
def test_every_measured_cell_beside_the_claims_is_what_the_report_computes(row):
    """A measured row names its study and plain network; its accuracies, Δ with interval and n are the report's
    numbers for that network and its CBAM twin."""
    _, plain, accuracies, delta, n, source = row
    study = source[len("measured: "):]
    groups, _ = load_groups(ROOT / study)
    (group,) = [g for g in groups if plain in g.variants and f"{plain}_cbam" in g.variants]
    by_variant = {r.variant: r for r in tables.rows(group)}
    base, cbam = by_variant[plain], by_variant[f"{plain}_cbam"]
    assert accuracies == f"{100 * base.top1.mean:.2f} → {100 * cbam.top1.mean:.2f}"
    d = cbam.delta_top1
    assert delta == f"{100 * d.mean:+.2f} [{100 * d.ci_low:+.2f}, {100 * d.ci_high:+.2f}]"
    assert int(n) == d.n == base.n == cbam.n


def bench_rows():
    """{(size, input, batch, mode, variant): (img/s text, step x plain, latency x plain)} of the committed
    benchmarks/results/bench_attention.md."""
    out = {}
    for line in (ROOT / "benchmarks" / "results" / "bench_attention.md").read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 10 and cells[2].isdigit():
            out[tuple(cells[:5])] = (cells[5], cells[7], cells[9])
    return out


def test_the_readme_cost_table_is_the_committed_benchmark():
    """Each cell of the README's "what attention costs" table is a number of benchmarks/results/bench_attention.md
    in the mode `train.amp=auto` picks here (bf16 + channels_last)."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(readme) if line.startswith("| model, input, batch | plain img/s |"))
    lines = list(itertools.takewhile(lambda ln: ln.startswith("|"), readme[start + 2:]))
    bench = bench_rows()
    assert len(lines) == 4
    for line in lines:
        cells = [c.strip().strip("*") for c in line.strip().strip("|").split("|")]
        size, shape, batch = [c.strip() for c in cells[0].split(",")]
        (label,) = {k[0] for k in bench if k[0].split("@")[0] == size and k[1:3] == (shape, batch)}  # resnet50@224
        key = (label, shape, batch, "bf16_channels_last")
        plain, se, fast, ref, timm = (bench[key + (v,)] for v in ("plain", "se", "cbam_fast", "cbam_reference",
                                                                 "timm_cbam"))
        assert cells[1:] == [plain[0], "x" + se[1], "x" + fast[1], "x" + ref[1], "x" + timm[1], "x" + fast[2]], line


FIGURE = re.compile(r"!\[[^\]]*\]\((results/[^)\s]+/figures/[^)\s]+\.png)\)")


def readme_figures():
    return FIGURE.findall((ROOT / "README.md").read_text(encoding="utf-8"))


@pytest.mark.parametrize("figure", readme_figures())
def test_every_result_figure_in_the_readme_is_from_the_committed_report_of_its_study(figure, tmp_path):
    """A figure the README shows from results/STUDY/figures/ is committed with that study's report.md, and the
    report regenerated now from the committed run files has the same text (bar its time stamp and source line)
    and a figure of that name."""
    committed = ROOT / figure
    study = committed.parent.parent
    assert committed.is_file(), f"{figure} is not committed"
    fresh = write_report(study, tmp_path)
    assert committed.name in {Path(p).name for p in fresh.figures}

    def body(path):
        return [line for line in Path(path).read_text(encoding="utf-8").splitlines()
                if not line.startswith("Generated ")]
    assert body(study / "report.md") == body(fresh.markdown), f"{study.name}/report.md is stale: run cbamlab report"
