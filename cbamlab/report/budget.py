"""Accuracy against the training budget: the same recipe trained for different numbers of epochs (each run with
its whole schedule fitted to its own length, e.g. one-cycle), final test top-1 against training minutes.

A per-epoch curve of one long run does not say what a shorter budget buys, because a schedule fitted to the
budget anneals earlier; runs at several budgets do. The report finds such runs by itself: groups of one dataset
whose recipes differ only in `train.epochs` (and `eval.every`, which follows it), and whose runs resolved the
per-machine keys alike (`Group.resolved`), form a sweep, shown as a table and a figure.
"""
from __future__ import annotations

import copy
import json
import textwrap
from dataclasses import dataclass

from . import stats
from .convergence import minutes_cell, train_minutes
from .groups import Group, finite, variant_order
from .mpl import plt, png_bytes

BUDGET_KEYS = (("train", "epochs"), ("eval", "every"))


@dataclass
class Point:
    variant: str
    epochs: int
    n: int
    minutes: float | None  # mean over seeds of epochs x median epoch time
    top1: stats.Summary  # final test top-1, fraction


def _without_budget(recipe: dict) -> str:
    r = copy.deepcopy(recipe)
    for section, key in BUDGET_KEYS:
        if isinstance(r.get(section), dict):
            r[section].pop(key, None)
    return json.dumps(r, sort_keys=True, default=str)


def machine_of(run) -> str:
    """The machine a run trained on, as its env.json names it: the device ("cpu (AMD EPYC, 2 threads)") and, where
    recorded, the CPU's family and model (`runtime.cpu_id`), which tell apart CPUs a virtual machine names alike."""
    env = run.env or {}
    name = str(env.get("device") or "an unrecorded machine")
    return f"{name}, {env['cpu_id']}" if env.get("cpu_id") else name


def machines(group: Group) -> list[str]:
    """The machines the group's runs trained on (`machine_of`), sorted."""
    return sorted({machine_of(r) for seeds in group.runs.values() for r in seeds.values()})


def sweeps(groups: list[Group]) -> list[list[Group]]:
    """Per dataset and set of machines, the groups whose recipes differ only in the budget keys, ordered by epochs;
    only sets of two or more budgets count as a sweep."""
    by_key: dict[tuple[str, str, str, tuple[str, ...]], list[Group]] = {}
    for g in groups:
        key = (g.dataset, _without_budget(g.recipe), json.dumps(g.resolved, sort_keys=True, default=str),
               tuple(machines(g)))
        by_key.setdefault(key, []).append(g)
    return [sorted(gs, key=lambda g: int(g.recipe["train"]["epochs"])) for gs in by_key.values() if len(gs) > 1]


def points(sweep: list[Group]) -> list[Point]:
    out = []
    for g in sweep:
        epochs = int(g.recipe["train"]["epochs"])
        for v in g.variants:
            runs = [g.runs[v][s] for s in g.seeds(v)]
            minutes = [train_minutes(r) for r in runs]
            out.append(Point(variant=v, epochs=epochs, n=len(runs),
                             minutes=None if None in minutes else stats.mean(minutes),
                             top1=stats.summarize(finite(r.summary.get("top1") for r in runs))))
    return sorted(out, key=lambda p: (variant_order(p.variant), p.epochs))


def table(pts: list[Point]) -> tuple[list[str], list[list[str]]]:
    header = ["variant", "epochs", "n", "training min per run (epochs × median epoch)", "test top-1 %"]
    body = [[p.variant, str(p.epochs), str(p.n), minutes_cell(p.minutes),
             f"{100 * p.top1.mean:.2f}" + ("" if p.n < 2 else f" ± {100 * p.top1.std:.2f}")] for p in pts]
    return header, body


def figure(pts: list[Point], dataset: str, machine: str = "this machine") -> bytes:
    """Final test top-1 against training minutes, one line per variant, one marker per budget (labelled with its
    epochs); error bars ± 1 std over seeds where n > 1."""
    fig, ax = plt.subplots(figsize=(6.2, 4.4), layout="tight")
    variants = list(dict.fromkeys(p.variant for p in pts))
    cmap = plt.get_cmap("tab10")
    for i, v in enumerate(variants):
        mine = [p for p in pts if p.variant == v and p.minutes is not None]
        if not mine:
            continue
        xs, ys = [p.minutes for p in mine], [100 * p.top1.mean for p in mine]
        errs = [0.0 if p.n < 2 else 100 * p.top1.std for p in mine]
        ax.errorbar(xs, ys, yerr=errs, color=cmap(i % 10), lw=2, marker="o", ms=5, capsize=3,
                    label=f"{v} (n = {'/'.join(str(p.n) for p in mine)})")
        for p, x, y in zip(mine, xs, ys):
            ax.annotate(f"{p.epochs} ep", (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.set_xlabel("training minutes per run\n" + textwrap.fill(f"on {machine}", 80), fontsize=9)
    ax.set_ylabel("test top-1 accuracy (%)")
    ax.set_xlim(left=0)
    ax.set_title(f"Accuracy against the training budget ({dataset})\n"
                 "schedule fitted to each budget, mean ± std of its seeds")
    ax.legend(loc="lower right")
    return png_bytes(fig)
