"""The comparison report: report.md (figures as PNG files in figures/ beside it) and a self-contained report.html
from run directories alone, as one `Document` that `render` writes. Never trains; regenerate any time with
`cbamlab report RUNS_DIR`.
"""
from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..runs import Run
from . import ablation, budget, class_plots, convergence, plots, render, tables
from .document import Bullets, Details, Document, Figure, Note, Section, Table, Text, slug
from .groups import Group, group_differences, load_groups

TITLE = "cbamlab comparison report"
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
PER_SEED_INTRO = "Test top-1 % per seed (the pairs behind each difference):"
SWEEP_INTRO = ("The same recipe trained for different numbers of epochs, its schedule fitted to each; the sections "
               "above hold each budget's comparison.")

RECIPE_KEYS = (("train", "epochs"), ("train", "time_budget_min"), ("train", "batch_size"), ("optim", "name"), ("optim", "lr"),
               ("optim", "momentum"), ("optim", "weight_decay"), ("schedule", "name"), ("data", "augment"),
               ("data", "image_size"), ("data", "val_fraction"))


@dataclass
class Comparison:
    """One group's comparison: its table rows and sentences, the convergence and ablation tables, its figures."""
    title: str
    slug: str
    group: Group
    rows: list[tables.Row]
    sentences: list[str]
    recipe_line: str
    notes: list[str] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    last_epochs: convergence.Convergence | None = None
    ablation: list[ablation.Row] = field(default_factory=list)


@dataclass
class Sweep:
    """Runs of one recipe at several budgets (train.epochs): `budget.points` and their figure."""
    title: str
    slug: str
    points: list[budget.Point]
    figure: Figure
    machines: list[str] = field(default_factory=list)


@dataclass
class ReportPaths:
    markdown: Path
    html: Path
    figures: list[Path]
    comparisons: list[Comparison]
    sweeps: list[Sweep] = field(default_factory=list)


def _recipe_line(recipe: dict) -> str:
    parts = []
    for section, key in RECIPE_KEYS:
        value = (recipe.get(section) or {}).get(key) if isinstance(recipe.get(section), dict) else None
        if value is not None:
            parts.append(f"{section}.{key}={value}")
    return ", ".join(parts)


def _figures(group: Group, name: str) -> list[Figure]:
    figs = [Figure(f"{name}-accuracy.png", "Top-1 accuracy per epoch, train and held-out, for each variant.",
                   plots.accuracy_curves(group)),
            Figure(f"{name}-loss.png", "Cross-entropy loss per epoch, train and held-out.", plots.loss_curves(group)),
            Figure(f"{name}-lr.png", "Learning rate per epoch.", plots.lr_schedule(group)),
            Figure(f"{name}-minutes.png", "Held-out top-1 against training wall-clock minutes (this machine).",
                   plots.accuracy_vs_minutes(group))]
    png = convergence.close_up(group)
    if png is not None:
        figs.append(Figure(f"{name}-last-epochs.png", "Held-out top-1 over the last epochs, each seed and the mean.",
                           png))
    for variant in group.variants:
        baseline = group.baseline_for(variant)
        if baseline is not None:
            png = class_plots.per_class_accuracy(group, variant, baseline)
            if png is not None:
                figs.append(Figure(f"{name}-per-class-{slug(variant)}.png",
                                   f"Per-class test accuracy, {variant} against {baseline}.", png))
    png = class_plots.confusion_matrices(group)
    if png is not None:
        figs.append(Figure(f"{name}-confusion.png", "Confusion matrices (rows: true class).", png))
    return figs


def build_comparisons(groups: list[Group]) -> list[Comparison]:
    out = []
    per_dataset: dict[str, list[Group]] = {}
    for g in groups:
        per_dataset.setdefault(g.dataset, []).append(g)
    for dataset, gs in per_dataset.items():
        for i, g in enumerate(gs, start=1):
            name, title, notes = slug(dataset), dataset, []
            if len(gs) > 1:
                name, title = f"{name}-recipe{i}", f"{dataset}, recipe {i} of {len(gs)}"
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
            out.append(Comparison(title=title, slug=name, group=g, rows=rows, sentences=tables.sentences(rows),
                                  recipe_line=_recipe_line(g.recipe) + f"; seeds {', '.join(map(str, seeds))}",
                                  notes=notes, last_epochs=convergence.convergence(g), ablation=ablation.rows(g)))
    return out


def build_sweeps(groups: list[Group]) -> list[Sweep]:
    out = []
    for gs in budget.sweeps(groups):
        dataset = gs[0].dataset
        name = slug(dataset) + "-budget"
        if any(s.slug == name for s in out):
            name += f"{len(out) + 1}"
        pts, where = budget.points(gs), budget.machines(gs[0])
        caption = "Final test top-1 against training minutes, one point per budget (the mean of its seeds)."
        out.append(Sweep(title=f"{dataset}: accuracy against the training budget", slug=name, points=pts,
                         figure=Figure(f"{name}.png", caption, budget.figure(pts, dataset, "; ".join(where))),
                         machines=where))
    return out


def comparison_section(c: Comparison) -> Section:
    blocks = [Text(f"Recipe: {c.recipe_line}."), Note(c.notes), Table(*tables.table(c.rows), css="main"),
              *map(Text, tables.holm_note([(r.baseline, r.delta_top1) for r in c.rows])),
              Bullets(c.sentences), Text(PER_SEED_INTRO), Table(*tables.per_seed(c.group))]
    if c.ablation:
        blocks += [Text(ablation.intro(c.group)), Table(*ablation.table(c.ablation)),
                   *map(Text, tables.holm_note([(r.reference, r.delta_top1) for r in c.ablation])),
                   Bullets(ablation.sentences(c.ablation))]
    if c.last_epochs is not None:
        blocks += [Text(CONVERGENCE_INTRO.format(split=c.last_epochs.split)),
                   Table(*convergence.table(c.last_epochs)), Bullets(convergence.sentences(c.last_epochs))]
    blocks += c.figures
    blocks.append(Details("Full recipe", yaml.safe_dump(c.group.recipe, sort_keys=True), "yaml"))
    return Section(c.title, blocks, anchor=c.slug)


def document(comparisons: list[Comparison], sweeps: list[Sweep], unfinished: list[Run], source: str,
             stamp: str) -> Document:
    intro = [Text(f"Generated {stamp} from `{source}` by `cbamlab report`."), Text(HOW_TO_READ, css="howto")]
    if len(comparisons) > 1:
        intro.append(Text(f"The runs form {len(comparisons)} separate comparisons (dataset, recipe); each is read "
                          "on its own.", css="note"))
    sections = [comparison_section(c) for c in comparisons]
    sections += [Section(w.title, [Text(SWEEP_INTRO), Text(f"Trained on: {'; '.join(w.machines)}."),
                                   Table(*budget.table(w.points)), w.figure], anchor=w.slug)
                 for w in sweeps]
    if unfinished:
        sections.append(Section("Unfinished runs (left out)", [Bullets([f"`{r.path}`" for r in unfinished])],
                                anchor="unfinished"))
    return Document(TITLE, intro, sections)


def write_report(runs_dir: str | Path, out_dir: str | Path | None = None) -> ReportPaths:
    """Read every run under `runs_dir`, group, and write report.md, report.html and figures/ into `out_dir`
    (default: `runs_dir`). Raises CbamlabError for an empty or foreign folder."""
    runs_dir = Path(runs_dir)
    out_dir = Path(out_dir) if out_dir is not None else runs_dir
    groups, unfinished = load_groups(runs_dir)
    comparisons = build_comparisons(groups)
    for c in comparisons:
        c.figures = _figures(c.group, c.slug)
    sweeps = build_sweeps(groups)
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    written = render.write(document(comparisons, sweeps, unfinished, str(runs_dir), stamp), out_dir, "report")
    return ReportPaths(markdown=written.markdown, html=written.html, figures=written.figures,
                       comparisons=comparisons, sweeps=sweeps)
