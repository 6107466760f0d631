"""Writes report.md (figures as PNG files beside it) and a self-contained report.html (figures embedded as
base64 PNG) from run directories alone. Never trains; regenerate any time with `cbamlab report RUNS_DIR`.
"""
from __future__ import annotations

import base64
import datetime as _dt
import html as _html
import logging
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .. import _io
from ..engine.rundir import Run
from . import budget, convergence, plots, tables
from .groups import Group, group_differences, load_groups

log = logging.getLogger(__name__)

HOW_TO_READ = (
    "Accuracy is test top-1/top-5 in %, mean ± sample std over n seeds. Variants with the same seed saw the same "
    "data order and augmentation and started from the same shared weights, so each is compared to its baseline "
    "(the plain twin) by per-seed differences: Δ is their mean in points with a 95 % t interval, p is the paired "
    "t-test, p (sign-flip) the exact paired permutation test (Wilcoxon signed-rank as well once n ≥ 6). In the "
    "sentences ± is the std of the per-seed differences. With n seeds the sign-flip p cannot go below 2/2^n, so a "
    "difference is only called significant when both p-values are below 0.05 (at least 6 seeds, and never when "
    "every seed differs by the same amount), and nothing more is claimed.")

CONVERGENCE_INTRO = ("Has training stopped improving? {split} top-1 % over the last evaluated epochs (mean over "
                     "seeds), and its change across them per seed (mean, 95 % t interval):")

RECIPE_KEYS = (("train", "epochs"), ("train", "batch_size"), ("optim", "name"), ("optim", "lr"),
               ("optim", "momentum"), ("optim", "weight_decay"), ("schedule", "name"), ("data", "augment"),
               ("data", "image_size"), ("data", "val_fraction"))


@dataclass
class Figure:
    name: str
    caption: str
    png: bytes


@dataclass
class Section:
    title: str
    slug: str
    group: Group
    rows: list[tables.Row]
    sentences: list[str]
    recipe_line: str
    notes: list[str] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    last_epochs: convergence.Convergence | None = None


@dataclass
class Sweep:
    """Runs of one recipe at several budgets (train.epochs): `budget.points` and their figure."""
    title: str
    slug: str
    points: list[budget.Point]
    figure: Figure


@dataclass
class ReportPaths:
    markdown: Path
    html: Path
    figures: list[Path]
    sections: list[Section]
    sweeps: list[Sweep] = field(default_factory=list)


def _recipe_line(recipe: dict) -> str:
    parts = []
    for section, key in RECIPE_KEYS:
        value = (recipe.get(section) or {}).get(key) if isinstance(recipe.get(section), dict) else None
        if value is not None:
            parts.append(f"{section}.{key}={value}")
    return ", ".join(parts)


def _figures(group: Group, slug: str) -> list[Figure]:
    figs = [Figure(f"{slug}-accuracy.png", "Top-1 accuracy per epoch, train and held-out, for each variant.",
                   plots.accuracy_curves(group)),
            Figure(f"{slug}-loss.png", "Cross-entropy loss per epoch, train and held-out.", plots.loss_curves(group)),
            Figure(f"{slug}-lr.png", "Learning rate per epoch.", plots.lr_schedule(group)),
            Figure(f"{slug}-minutes.png", "Held-out top-1 against training wall-clock minutes (this machine).",
                   plots.accuracy_vs_minutes(group))]
    png = convergence.close_up(group)
    if png is not None:
        figs.append(Figure(f"{slug}-last-epochs.png", "Held-out top-1 over the last epochs, each seed and the mean.",
                           png))
    for variant in group.variants:
        baseline = group.baseline_for(variant)
        if baseline is not None:
            png = plots.per_class_accuracy(group, variant, baseline)
            if png is not None:
                safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in variant)
                figs.append(Figure(f"{slug}-per-class-{safe}.png",
                                   f"Per-class test accuracy, {variant} against {baseline}.", png))
    png = plots.confusion_matrices(group)
    if png is not None:
        figs.append(Figure(f"{slug}-confusion.png", "Confusion matrices (rows: true class).", png))
    return figs


def build_sections(groups: list[Group]) -> list[Section]:
    sections = []
    per_dataset: dict[str, list[Group]] = {}
    for g in groups:
        per_dataset.setdefault(g.dataset, []).append(g)
    for dataset, gs in per_dataset.items():
        for i, g in enumerate(gs, start=1):
            slug = "".join(c if c.isalnum() or c in "-_" else "_" for c in dataset)
            title = dataset
            notes = []
            if len(gs) > 1:
                slug, title = f"{slug}-recipe{i}", f"{dataset}, recipe {i} of {len(gs)}"
                for j, other in enumerate(gs, start=1):
                    if other is not g:
                        diffs = group_differences(g, other)
                        notes.append(f"Not pooled with recipe {j}: the recipes differ in " + "; ".join(diffs[:8])
                                     + (f"; and {len(diffs) - 8} more" if len(diffs) > 8 else "") + ".")
            seeds = sorted({s for v in g.variants for s in g.seeds(v)})
            uneven = [v for v in g.variants if g.seeds(v) != seeds]
            if uneven:
                notes.append("Not every variant has every seed (" + ", ".join(
                    f"{v}: {g.seeds(v)}" for v in uneven) + "); differences use the seeds both sides have.")
            rows = tables.rows(g)
            sections.append(Section(title=title, slug=slug, group=g, rows=rows, sentences=tables.sentences(rows),
                                    recipe_line=_recipe_line(g.recipe) + f"; seeds {', '.join(map(str, seeds))}",
                                    notes=notes, last_epochs=convergence.convergence(g)))
    return sections


def build_sweeps(groups: list[Group]) -> list[Sweep]:
    out = []
    for gs in budget.sweeps(groups):
        dataset = gs[0].dataset
        slug = "".join(c if c.isalnum() or c in "-_" else "_" for c in dataset) + "-budget"
        if any(s.slug == slug for s in out):
            slug += f"{len(out) + 1}"
        pts = budget.points(gs)
        caption = "Final test top-1 against training minutes, one run per budget."
        out.append(Sweep(title=f"{dataset}: accuracy against the training budget", slug=slug, points=pts,
                         figure=Figure(f"{slug}.png", caption, budget.figure(pts, dataset))))
    return out


SWEEP_INTRO = ("The same recipe trained for different numbers of epochs, its schedule fitted to each; the sections "
               "above hold each budget's comparison.")


def _markdown(sections: list[Section], unfinished: list[Run], source: str, stamp: str,
              sweeps: list[Sweep] = ()) -> str:
    out = ["# cbamlab comparison report", "",
           f"Generated {stamp} from `{source}` by `cbamlab report`.", "", HOW_TO_READ, ""]
    if len(sections) > 1:
        out += [f"The runs form {len(sections)} separate comparisons (dataset, recipe); each is read on its own.", ""]
    for s in sections:
        out += [f"## {s.title}", "", f"Recipe: {s.recipe_line}.", ""]
        out += [f"> {n}" for n in s.notes] + ([""] if s.notes else [])
        out += [tables.markdown(s.rows), ""]
        out += [f"- {line}" for line in s.sentences] + ([""] if s.sentences else [])
        out += ["Test top-1 % per seed (the pairs behind each difference):", "", tables.per_seed_markdown(s.group), ""]
        if s.last_epochs is not None:
            out += [CONVERGENCE_INTRO.format(split=s.last_epochs.split), "", convergence.markdown(s.last_epochs), ""]
            out += [f"- {line}" for line in convergence.sentences(s.last_epochs)] + [""]
        for f in s.figures:
            out += [f"![{f.caption}](figures/{f.name})", "", f"*{f.caption}*", ""]
        out += ["<details><summary>Full recipe</summary>", "", "```yaml",
                yaml.safe_dump(s.group.recipe, sort_keys=True).rstrip(), "```", "", "</details>", ""]
    for w in sweeps:
        out += [f"## {w.title}", "", SWEEP_INTRO, "", budget.markdown(w.points), "",
                f"![{w.figure.caption}](figures/{w.figure.name})", "", f"*{w.figure.caption}*", ""]
    if unfinished:
        out += ["## Unfinished runs (left out)", ""] + [f"- `{r.path}`" for r in unfinished] + [""]
    return "\n".join(out)


_CSS = """body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1280px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}table.results{border-collapse:collapse;font-size:0.82em;margin:1em 0}
table.results th,table.results td{border:1px solid #ccc;padding:4px 8px;text-align:right;white-space:nowrap}
table.results th{background:#f0f0f0}
table.main td:nth-last-child(-n+2){white-space:normal;text-align:left}table.results td:first-child{text-align:left;font-weight:600}
figure{margin:1.5em 0}figure img{max-width:100%;border:1px solid #eee}figcaption{color:#555;font-size:0.9em}
.note{background:#fff6db;border-left:4px solid #e0b000;padding:0.4em 0.8em}.howto{color:#444;font-size:0.95em}
pre{background:#f7f7f7;padding:0.8em;overflow-x:auto}.scroll{overflow-x:auto}"""


def _html_doc(sections: list[Section], unfinished: list[Run], source: str, stamp: str,
              sweeps: list[Sweep] = ()) -> str:
    e = _html.escape
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           "<title>cbamlab comparison report</title>", f"<style>{_CSS}</style></head><body>",
           "<h1>cbamlab comparison report</h1>",
           f"<p>Generated {e(stamp)} from <code>{e(source)}</code> by <code>cbamlab report</code>.</p>",
           f'<p class="howto">{e(HOW_TO_READ)}</p>']
    if len(sections) > 1:
        out.append(f'<p class="note">The runs form {len(sections)} separate comparisons (dataset, recipe); '
                   "each is read on its own.</p>")
    for s in sections:
        out.append(f'<h2 id="{e(s.slug)}">{e(s.title)}</h2>')
        out.append(f"<p>Recipe: {e(s.recipe_line)}.</p>")
        out += [f'<p class="note">{e(n)}</p>' for n in s.notes]
        out.append(f'<div class="scroll">{tables.html(s.rows)}</div>')
        if s.sentences:
            out.append("<ul>" + "".join(f"<li>{e(line)}</li>" for line in s.sentences) + "</ul>")
        out.append("<p>Test top-1 % per seed (the pairs behind each difference):</p>")
        out.append(f'<div class="scroll">{tables.per_seed_html(s.group)}</div>')
        if s.last_epochs is not None:
            out.append(f"<p>{e(CONVERGENCE_INTRO.format(split=s.last_epochs.split))}</p>")
            out.append(f'<div class="scroll">{convergence.html(s.last_epochs)}</div>')
            out.append("<ul>" + "".join(f"<li>{e(line)}</li>" for line in convergence.sentences(s.last_epochs))
                       + "</ul>")
        for f in s.figures:
            data = base64.b64encode(f.png).decode("ascii")
            out.append(f'<figure><img alt="{e(f.caption)}" src="data:image/png;base64,{data}">'
                       f"<figcaption>{e(f.caption)}</figcaption></figure>")
        recipe = yaml.safe_dump(s.group.recipe, sort_keys=True)
        out.append(f"<details><summary>Full recipe</summary><pre>{e(recipe)}</pre></details>")
    for w in sweeps:
        data = base64.b64encode(w.figure.png).decode("ascii")
        out += [f'<h2 id="{e(w.slug)}">{e(w.title)}</h2>', f"<p>{e(SWEEP_INTRO)}</p>",
                f'<div class="scroll">{budget.html(w.points)}</div>',
                f'<figure><img alt="{e(w.figure.caption)}" src="data:image/png;base64,{data}">'
                f"<figcaption>{e(w.figure.caption)}</figcaption></figure>"]
    if unfinished:
        out.append("<h2>Unfinished runs (left out)</h2><ul>"
                   + "".join(f"<li><code>{e(str(r.path))}</code></li>" for r in unfinished) + "</ul>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def write_report(runs_dir: str | Path, out_dir: str | Path | None = None) -> ReportPaths:
    """Read every run under `runs_dir`, group, and write report.md, report.html and figures/ into `out_dir`
    (default: `runs_dir`). Raises CbamlabError for an empty or foreign folder."""
    runs_dir = Path(runs_dir)
    out_dir = Path(out_dir) if out_dir is not None else runs_dir
    groups, unfinished = load_groups(runs_dir)
    sections = build_sections(groups)
    for s in sections:
        s.figures = _figures(s.group, s.slug)
    sweeps = build_sweeps(groups)
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    figures = [f for s in sections for f in s.figures] + [w.figure for w in sweeps]
    figure_paths = [_io.write_bytes(out_dir / "figures" / f.name, f.png) for f in figures]
    md = _io.write_text(out_dir / "report.md", _markdown(sections, unfinished, str(runs_dir), stamp, sweeps))
    page = _io.write_text(out_dir / "report.html", _html_doc(sections, unfinished, str(runs_dir), stamp, sweeps))
    log.info("wrote %s and %s (%d figures)", md, page, len(figure_paths))
    return ReportPaths(markdown=md, html=page, figures=figure_paths, sections=sections, sweeps=sweeps)
