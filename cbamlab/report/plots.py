"""Figures for a comparison group, as PNG bytes (matplotlib, Agg backend: no display needed).

Accuracy-per-epoch curves as in the CBAM paper's training plots (mean over seeds with a ± 1 std band), loss
curves, the learning-rate schedule and accuracy against training minutes (the per-class figures are in
`class_plots`). Every axis is labelled and every figure that shows several variants has a legend.
"""
from __future__ import annotations

import contextlib
import warnings

from matplotlib.ticker import MaxNLocator
import numpy as np

from ..runs import Run  # noqa: E402
from .groups import Group
from .mpl import plt, png_bytes


def variant_color(group: Group, variant: str):
    """The variant's colour, the same in every figure of the group."""
    return plt.get_cmap("tab10")(group.variants.index(variant) % 10)


def _column(run: Run, name: str) -> np.ndarray:
    """A metrics column as floats, NaN where not measured."""
    return np.array([np.nan if v is None else float(v) for v in run.column(name)], dtype=float)


def _stack(runs: list[Run], name: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(epochs, values[seed, epoch]) over the epochs every run has; None when no run measured `name`."""
    cols = [_column(r, name) for r in runs]
    if not cols or all(c.size == 0 or np.all(np.isnan(c)) for c in cols):
        return None
    length = min(c.size for c in cols)
    if length == 0:
        return None
    epochs = _column(runs[0], "epoch")[:length]
    if epochs.size < length or np.any(np.isnan(epochs)):
        epochs = np.arange(1, length + 1, dtype=float)
    return epochs, np.stack([c[:length] for c in cols])


@contextlib.contextmanager
def _nan_quiet():
    """numpy's nan-means without their warnings: an epoch no seed evaluated (eval.every) is NaN, then left out."""
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


def _band(ax, group: Group, variant: str, name: str, scale: float = 1.0, label_suffix: str = "") -> bool:
    runs = [group.runs[variant][s] for s in group.seeds(variant)]
    stacked = _stack(runs, name)
    if stacked is None:
        return False
    epochs, values = stacked
    values = values * scale
    with _nan_quiet():
        mean = np.nanmean(values, axis=0)
        std = np.nanstd(values, axis=0, ddof=1) if values.shape[0] > 1 else None
    keep = np.isfinite(mean)  # epochs not evaluated (eval.every > 1) are left out, not drawn as gaps
    if not keep.any():
        return False
    epochs, mean, values = epochs[keep], mean[keep], values[:, keep]
    std = std[keep] if std is not None else None
    color = variant_color(group, variant)
    ax.plot(epochs, mean, color=color, lw=2, marker="o", ms=3,
            label=f"{variant}{label_suffix} (n = {values.shape[0]})")
    if std is not None:  # ± 1 std, kept within the seeds' own range (a loss band never dips below zero)
        lo = np.maximum(mean - std, np.nanmin(values, axis=0))
        hi = np.minimum(mean + std, np.nanmax(values, axis=0))
        ax.fill_between(epochs, lo, hi, color=color, alpha=0.2, lw=0)
    return True


def _legend_or_note(ax, drawn: bool, note: str, loc: str = "best") -> None:
    """A legend when something was drawn, else `note` in the middle of the empty axes."""
    if drawn:
        ax.legend(loc=loc)
    else:
        ax.text(0.5, 0.5, note, ha="center", va="center", transform=ax.transAxes)


def _test_or_val(group: Group, kind: str) -> str:
    """'test_<kind>' when the runs measured the test split every epoch, else 'val_<kind>'."""
    run = next(iter(next(iter(group.runs.values())).values()))
    test = _column(run, f"test_{kind}")
    return f"test_{kind}" if test.size and not np.all(np.isnan(test)) else f"val_{kind}"


def _epoch_axis(ax) -> None:
    """Whole-number epoch ticks; a one-epoch run gets room around its single tick, not fractional ticks."""
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    lo, hi = ax.get_xlim()
    if hi - lo < 2:
        mid = round((lo + hi) / 2)
        ax.set_xlim(mid - 1, mid + 1)


def _curves(group: Group, metrics: list[tuple[str, str]], ylabel: str, scale: float, title: str,
            log_if_wide: bool = False) -> bytes:
    fig, axes = plt.subplots(1, len(metrics), figsize=(6.2 * len(metrics), 4.4), squeeze=False, layout="tight")
    for ax, (name, label) in zip(axes[0], metrics):
        drawn = [_band(ax, group, v, name, scale) for v in group.variants]
        ax.set_title(label)
        _epoch_axis(ax)
        ys = np.concatenate([np.asarray(ln.get_ydata(), dtype=float) for ln in ax.get_lines()] or [np.zeros(0)])
        ys = ys[np.isfinite(ys) & (ys > 0)]
        if log_if_wide and ys.size and ys.max() / ys.min() > 30:  # one huge early loss would flatten the rest
            ax.set_yscale("log")
            label += " (log scale)"
            ax.set_title(label)
        ax.set_ylabel(ylabel)
        _legend_or_note(ax, any(drawn), "not measured")
    fig.suptitle(f"{title} ({group.dataset}; line: mean over seeds, band: ± 1 std within the seeds' range)")
    return png_bytes(fig)


def accuracy_curves(group: Group) -> bytes:
    """Top-1 accuracy per epoch, train and test (validation when the test split was not evaluated per epoch)."""
    held_out = _test_or_val(group, "top1")
    split = held_out.split("_")[0]
    return _curves(group, [("train_top1", "train top-1"), (held_out, f"{split} top-1")],
                   "top-1 accuracy (%)", 100.0, "Accuracy per epoch")


def minutes_and_accuracy(group: Group, variant: str) -> tuple[np.ndarray, np.ndarray, int] | None:
    """(training minutes at the end of each epoch, held-out top-1 % at that epoch, n), both the mean over the
    variant's seeds, over the epochs every seed has; None when epoch times or the held-out top-1 are missing.
    The minutes are each run's summed `epoch_time_s`: the training passes only (evaluation not counted)."""
    runs = [group.runs[variant][s] for s in group.seeds(variant)]
    times, top1 = _stack(runs, "epoch_time_s"), _stack(runs, _test_or_val(group, "top1"))
    if times is None or top1 is None or np.isnan(times[1]).any():
        return None
    length = min(times[1].shape[1], top1[1].shape[1])
    with _nan_quiet():
        minutes = np.cumsum(times[1][:, :length], axis=1).mean(axis=0) / 60
        accuracy = 100 * np.nanmean(top1[1][:, :length], axis=0)
    keep = np.isfinite(accuracy)  # the evaluated epochs (eval.every)
    return (minutes[keep], accuracy[keep], len(runs)) if keep.any() else None


def accuracy_vs_minutes(group: Group) -> bytes:
    """Held-out top-1 against training wall-clock minutes (mean over seeds): what each variant buys per minute
    of this machine, where the per-epoch curves hide that an attention epoch costs more."""
    fig, ax = plt.subplots(figsize=(6.2, 4.4), layout="tight")
    split = _test_or_val(group, "top1").split("_")[0]
    drawn = False
    for variant in group.variants:
        curve = minutes_and_accuracy(group, variant)
        if curve is None:
            continue
        minutes, accuracy, n = curve
        ax.plot(minutes, accuracy, color=variant_color(group, variant), lw=2, marker="o", ms=3,
                label=f"{variant} (n = {n})")
        drawn = True
    ax.set_xlabel("training wall-clock minutes (mean over seeds)")
    ax.set_ylabel(f"{split} top-1 accuracy (%)")
    ax.set_xlim(left=0)
    ax.set_title(f"Accuracy against training time ({group.dataset}; one marker per epoch)")
    _legend_or_note(ax, drawn, "epoch times not recorded", loc="lower right")
    return png_bytes(fig)


def loss_curves(group: Group) -> bytes:
    held_out = _test_or_val(group, "loss")
    split = held_out.split("_")[0]
    return _curves(group, [("train_loss", "train loss"), (held_out, f"{split} loss")],
                   "cross-entropy loss", 1.0, "Loss per epoch", log_if_wide=True)


def lr_schedule(group: Group) -> bytes:
    """The learning rate of each epoch as recorded in metrics.csv (first seed of each variant; one line when
    every variant followed the same schedule, as a shared recipe should)."""
    fig, ax = plt.subplots(figsize=(6.2, 3.8), layout="tight")
    curves = []
    for variant in group.variants:
        run = group.runs[variant][group.seeds(variant)[0]]
        lr, epochs = _column(run, "lr"), _column(run, "epoch")
        if lr.size == 0 or np.all(np.isnan(lr)):
            continue
        if epochs.size != lr.size or np.any(np.isnan(epochs)):
            epochs = np.arange(1, lr.size + 1, dtype=float)
        curves.append((variant, epochs, lr))
    same = len(curves) > 1 and all(c[2].shape == curves[0][2].shape and np.allclose(c[2], curves[0][2], equal_nan=True)
                                   for c in curves)
    if same:
        curves = [(f"all {len(curves)} variants (identical)", curves[0][1], curves[0][2])]
    for i, (label, epochs, lr) in enumerate(curves):
        color = "black" if same else variant_color(group, label)
        ax.plot(epochs, lr, color=color, lw=2, ls=["-", "--", ":", "-."][i % 4], marker="o", ms=3, label=label)
    _epoch_axis(ax)
    ax.set_ylabel("learning rate")
    ax.set_ylim(bottom=0)
    ax.set_title(f"Learning-rate schedule ({group.dataset})")
    _legend_or_note(ax, bool(curves), "not recorded")
    return png_bytes(fig)
