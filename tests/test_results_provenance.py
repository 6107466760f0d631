"""The result tables of the README and of the documentation pages come from committed run files: every block

    <!-- results: results/STUDY -->
    ... lines copied from the report ...
    <!-- /results -->

in README.md or docs/*.md must be reproduced, line for line, by `cbamlab report results/STUDY` run now on the committed
files (config.yaml, metrics.csv, summary.json, env.json of each run), so a number in the docs cannot drift from its
data. The measured rows of every "claims vs measurements" table are checked the same way, the cost table of
docs/performance.md against the committed benchmark, and each study figure the pages show against its study's
committed report."""
import itertools
import re
from pathlib import Path

import pytest

from cbamlab.report import tables
from cbamlab.report.explain_seeds import MD, write_seeds_report
from cbamlab.report.groups import load_groups
from cbamlab.report.writer import write_report

ROOT = Path(__file__).resolve().parents[1]
# Every page a reader meets: the README and the documentation site's sources.
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
RESULTS_PAGE = ROOT / "docs" / "results.md"
PERFORMANCE_PAGE = ROOT / "docs" / "performance.md"
BLOCK = re.compile(r"<!-- results: (\S+) -->\n(.*?)<!-- /results -->", re.S)


def name(path: Path) -> str:
    return str(path.relative_to(ROOT))


def blocks():
    """(page, study, quoted text) of every results block on every page."""
    return [(name(doc), study, text) for doc in DOCUMENTS
            for study, text in BLOCK.findall(doc.read_text(encoding="utf-8"))]


def test_the_results_page_has_a_block_for_every_committed_comparison():
    studies = {study for page, study, _ in blocks() if page == name(RESULTS_PAGE)}
    committed = {name(p.parent) for p in (ROOT / "results").glob("*/compare.json")}
    assert committed, "no committed comparison under results/"
    assert committed <= studies, f"committed studies without a results block in docs/results.md: {committed - studies}"


@pytest.mark.parametrize("page,study,text", blocks(), ids=[f"{b[0]}:{b[1]}" for b in blocks()])
def test_every_quoted_result_line_is_what_the_report_computes_now(page, study, text, tmp_path):
    runs = ROOT / study
    assert runs.is_dir(), f"{study} is not committed"
    report = write_report(runs, tmp_path)
    lines = set(Path(report.markdown).read_text(encoding="utf-8").splitlines())
    quoted = [line for line in text.splitlines() if line.strip()]
    assert quoted, f"the block for {study} in {page} is empty"
    missing = [line for line in quoted if line not in lines]
    assert not missing, f"{page} lines for {study} that `cbamlab report {study}` does not give: {missing}"


CLAIMS = re.compile(r"<!-- claims vs measurements -->\n(.*?)<!-- /claims -->", re.S)


def claims_rows(path: Path | None = None):
    """The measured rows of every claims table (of `path` alone when given), each with its page's name first."""
    out = []
    for doc in [path] if path else DOCUMENTS:
        for block in CLAIMS.findall(doc.read_text(encoding="utf-8")):
            rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in block.splitlines()[2:] if line]
            out += [[name(doc), *r] for r in rows if r[-1].startswith("measured: ")]
    return out


@pytest.mark.parametrize("path", [ROOT / "README.md", RESULTS_PAGE], ids=name)
def test_the_claims_tables_have_measured_rows(path):
    assert claims_rows(path), f"{name(path)} has no claims table with a measured row"


@pytest.mark.parametrize("row", claims_rows(), ids=[f"{r[0]}:{r[-1]}" for r in claims_rows()])
def test_every_measured_cell_beside_the_claims_is_what_the_report_computes(row):
    """A measured row names its study and plain network; its accuracies, Δ with interval and n are the report's
    numbers for that network and its CBAM twin."""
    _, _, plain, accuracies, delta, n, source = row
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


COST_HEADER = "| model, input, batch | plain img/s |"


def test_the_cost_table_is_only_on_the_performance_page():
    pages = [name(doc) for doc in DOCUMENTS
             if any(line.startswith(COST_HEADER) for line in doc.read_text(encoding="utf-8").splitlines())]
    assert pages == [name(PERFORMANCE_PAGE)], f"the cost table is on {pages}"


def test_the_performance_pages_cost_table_is_the_committed_benchmark():
    """Each cell of the "what attention costs" table of docs/performance.md is a number of
    benchmarks/results/bench_attention.md in the mode `cbamlab train` picks there (its rows marked "(default)")."""
    page = PERFORMANCE_PAGE.read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(page) if line.startswith(COST_HEADER))
    lines = list(itertools.takewhile(lambda ln: ln.startswith("|"), page[start + 2:]))
    bench = bench_rows()
    assert len(lines) == 4
    for line in lines:
        cells = [c.strip().strip("*") for c in line.strip().strip("|").split("|")]
        size, shape, batch = [c.strip() for c in cells[0].split(",")]
        (label,) = {k[0] for k in bench if k[0].split("@")[0] == size and k[1:3] == (shape, batch)}  # resnet50@224
        (mode,) = {k[3] for k in bench if k[:3] == (label, shape, batch) and k[3].endswith(" (default)")}
        key = (label, shape, batch, mode)
        plain, se, native, ref, timm = (bench[key + (v,)] for v in ("plain", "se", "cbam_native", "cbam_reference",
                                                                   "timm_cbam"))
        assert cells[1:] == [plain[0], "x" + se[1], "x" + native[1], "x" + ref[1], "x" + timm[1], "x" + native[2]], \
            line


FIGURE = re.compile(r"!\[[^\]]*\]\((?:\.\./)*(results/[^)\s]+/figures/[^)\s]+\.png)\)")


def figures_by_study() -> dict[str, list[str]]:
    """{results/STUDY: the figures of results/STUDY/figures/ that any page shows}. The site serves them from
    results/ itself (docs/hooks.py), so a page and the README name them by the same path."""
    out: dict[str, set] = {}
    for doc in DOCUMENTS:
        for figure in FIGURE.findall(doc.read_text(encoding="utf-8")):
            out.setdefault(str(Path(figure).parent.parent), set()).add(figure)
    return {study: sorted(figs) for study, figs in sorted(out.items())}


def test_the_readme_shows_a_study_figure():
    assert FIGURE.findall((ROOT / "README.md").read_text(encoding="utf-8")), "the README shows no study figure"


@pytest.mark.parametrize("study,figures", figures_by_study().items())
def test_every_result_figure_on_a_page_is_from_the_committed_report_of_its_study(study, figures, tmp_path):
    """A figure a page shows from results/STUDY/figures/ is committed with that study's report.md, and the
    report regenerated now from the committed run files has the same text (bar its time stamp and source line)
    and a figure of that name."""
    missing = [f for f in figures if not (ROOT / f).is_file()]
    assert not missing, f"figures shown but not committed: {missing}"
    fresh = write_report(ROOT / study, tmp_path)
    made = {Path(p).name for p in fresh.figures}
    assert {Path(f).name for f in figures} <= made, (figures, sorted(made))

    def body(path):
        return [line for line in Path(path).read_text(encoding="utf-8").splitlines()
                if not line.startswith("Generated ")]
    assert body(ROOT / study / "report.md") == body(fresh.markdown), f"{study}/report.md is stale: run cbamlab report"


SEEDS_BLOCK = re.compile(r"<!-- explain-seeds: (\S+) -->\n(.*?)<!-- /explain-seeds -->", re.S)


def seeds_blocks():
    """(page, explain folder, quoted text) of every across-seeds explain block on every page."""
    return [(name(doc), folder, text) for doc in DOCUMENTS
            for folder, text in SEEDS_BLOCK.findall(doc.read_text(encoding="utf-8"))]


@pytest.mark.parametrize("page,folder,text", seeds_blocks(), ids=[f"{b[0]}:{b[1]}" for b in seeds_blocks()])
def test_every_quoted_faithfulness_line_is_what_the_seeds_report_computes_now(page, folder, text, tmp_path):
    """An across-seeds faithfulness block quotes explain_seeds.md as `write_seeds_report` writes it now from the
    committed per-seed files (seed<k>/explain.json and scores.csv), and the committed explain_seeds.md is that."""
    source = ROOT / folder
    seeds = sorted(source.glob("seed*/scores.csv"))
    assert len(seeds) >= 2, f"{folder} has no committed per-seed explain files"
    for scores in seeds:
        copy = tmp_path / scores.parent.name
        copy.mkdir()
        for f in ("explain.json", "scores.csv"):
            (copy / f).write_bytes((scores.parent / f).read_bytes())
    md, _ = write_seeds_report(tmp_path)
    fresh = md.read_text(encoding="utf-8")
    assert (source / MD).read_text(encoding="utf-8") == fresh, f"{folder}/{MD} is stale: run cbamlab explain"
    missing = [line for line in text.splitlines() if line.strip() and line not in fresh.splitlines()]
    assert not missing, f"{page} lines for {folder} that the seeds report does not give: {missing}"
