"""Has training stopped improving? The held-out top-1 of each variant over its last evaluated epochs, as a table
and a close-up figure, with the per-seed change across that window and its 95 % interval.

A comparison "at convergence" is only that when the networks have stopped gaining; a step schedule hides the
last epochs in a full curve that starts 20 points lower, so the report shows them on their own. The change is
measured per seed (last shown epoch minus first) and summarised like every other difference in the report: mean,
t interval; the sentence says whether the interval lies above zero (still rising), below it (falling) or spans
it (no change that n seeds show), and nothing more.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from matplotlib.ticker import MaxNLocator
import numpy as np

from . import stats
from .groups import Group
from .mpl import plt, png_bytes
from .plots import variant_color

LAST = 5  # epochs in the table
CLOSE_UP = 10  # epochs in the figure


@dataclass
class Row:
    variant: str
    n: int
    top1: list[float]  # mean over seeds at each shown epoch, in %
    change: float  # mean over seeds of (last shown - first shown), in points
    change_ci: tuple[float, float]  # 95 % t interval of that mean (nan with one seed)
    best_epochs: list[int]  # per seed, the evaluated epoch with the highest held-out top-1
    train_minutes: float | None  # mean over seeds of epochs x median epoch time


@dataclass
class Convergence:
    split: str  # "test" or "val"
    epochs: list[int]  # the shown epochs, common to every variant
    rows: list[Row]


def _held_out(group: Group) -> str:
    """'test' when the runs measured the test split per epoch, else 'val'."""
    for runs in group.runs.values():
        for run in runs.values():
            if any(v is not None for v in run.column("test_top1")):
                return "test"
    return "val"


def _curve(run, split: str) -> dict[int, float]:
    """{epoch: held-out top-1} for the epochs this run evaluated (eval.every leaves the others out)."""
    out = {}
    for row in run.metrics:
        value = row.get(f"{split}_top1")
        if value is not None and row.get("epoch") is not None and math.isfinite(float(value)):
            out[int(row["epoch"])] = float(value)
    return out


def train_minutes(run) -> float | None:
    """Epochs x the median epoch time: the run's training cost, robust to an epoch that a pause (a stopped
    process, a busy machine) stretched; None when epoch times were not recorded."""
    times = [row.get("epoch_time_s") for row in run.metrics]
    if not times or any(t is None for t in times):
        return None
    return len(times) * float(np.median([float(t) for t in times])) / 60


def convergence(group: Group, last: int = LAST) -> Convergence | None:
    """The last `last` epochs that every run of the group evaluated; None when fewer than two are common."""
    split = _held_out(group)
    curves = {v: [_curve(group.runs[v][s], split) for s in group.seeds(v)] for v in group.variants}
    common = set.intersection(*(set(c) for cs in curves.values() for c in cs))
    epochs = sorted(common)[-last:]
    if len(epochs) < 2:
        return None
    rows = []
    for v in group.variants:
        cs = curves[v]
        changes = [100 * (c[epochs[-1]] - c[epochs[0]]) for c in cs]
        minutes = [train_minutes(group.runs[v][s]) for s in group.seeds(v)]
        rows.append(Row(
            variant=v, n=len(cs), top1=[100 * stats.mean([c[e] for c in cs]) for e in epochs],
            change=stats.mean(changes), change_ci=stats.t_interval(changes),
            best_epochs=[max(c, key=lambda e: (c[e], -e)) for c in cs],
            train_minutes=None if any(m is None for m in minutes) else stats.mean(minutes)))
    return Convergence(split=split, epochs=epochs, rows=rows)


def _change_cell(row: Row) -> str:
    lo, hi = row.change_ci
    ci = "" if math.isnan(lo) else f" [{lo:+.2f}, {hi:+.2f}]"
    return f"{row.change:+.2f}{ci}"


def minutes_cell(minutes: float | None) -> str:
    """'34.2', or two decimals under a minute (a quick run would read 0.0), or 'n/a'."""
    if minutes is None:
        return "n/a"
    return f"{minutes:.1f}" if minutes >= 1 else f"{minutes:.2f}"


def table(conv: Convergence) -> tuple[list[str], list[list[str]]]:
    first, last = conv.epochs[0], conv.epochs[-1]
    header = (["variant", "n"] + [f"epoch {e}" for e in conv.epochs]
              + [f"change {first} → {last} (points, 95 % CI)", "best epoch per seed",
                 "training min per run (epochs × median epoch)"])
    body = [[r.variant, str(r.n)] + [f"{t:.2f}" for t in r.top1]
            + [_change_cell(r), ", ".join(map(str, r.best_epochs)),
               minutes_cell(r.train_minutes)] for r in conv.rows]
    return header, body


def sentences(conv: Convergence) -> list[str]:
    """What each variant's change over the shown epochs supports: rising, falling, or no change n seeds show."""
    first, last = conv.epochs[0], conv.epochs[-1]
    out = []
    for r in conv.rows:
        lo, hi = r.change_ci
        head = f"{r.variant}: {conv.split} top-1 {r.change:+.2f} points from epoch {first} to {last} (n = {r.n})"
        if math.isnan(lo):
            out.append(f"{head}; one seed, so no interval.")
        elif lo > 0:
            out.append(f"{head}, interval [{lo:+.2f}, {hi:+.2f}] above zero: still improving.")
        elif hi < 0:
            out.append(f"{head}, interval [{lo:+.2f}, {hi:+.2f}] below zero: getting worse.")
        else:
            out.append(f"{head}, interval [{lo:+.2f}, {hi:+.2f}] spans zero: no change that {r.n} seeds show.")
    return out


def close_up(group: Group, last: int = CLOSE_UP) -> bytes | None:
    """Held-out top-1 over the last `last` evaluated epochs: each seed thin, the mean over seeds thick."""
    conv = convergence(group, last)
    if conv is None:
        return None
    fig, ax = plt.subplots(figsize=(6.2, 4.4), layout="tight")
    for v in group.variants:
        color = variant_color(group, v)
        curves = [_curve(group.runs[v][s], conv.split) for s in group.seeds(v)]
        values = np.array([[100 * c[e] for e in conv.epochs] for c in curves])
        for seed_values in values:
            ax.plot(conv.epochs, seed_values, color=color, lw=0.8, alpha=0.35)
        ax.plot(conv.epochs, values.mean(axis=0), color=color, lw=2.2, marker="o", ms=4,
                label=f"{v} (n = {len(curves)})")
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(f"{conv.split} top-1 accuracy (%)")
    ax.set_title(f"The last {len(conv.epochs)} evaluated epochs ({group.dataset})\n"
                 "thin: one seed, thick: mean over seeds")
    ax.legend(loc="best")
    return png_bytes(fig)
