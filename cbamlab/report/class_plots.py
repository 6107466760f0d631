"""Per-class figures of a comparison group, as PNG bytes: the per-class test accuracy of each attention variant
against its baseline, and the confusion matrix of every variant, from each run's summary.json.
"""
from __future__ import annotations

import math

import numpy as np

from .groups import Group
from .mpl import plt, png_bytes
from .plots import variant_color


def _class_names(group: Group, variant: str) -> list[str]:
    run = group.runs[variant][group.seeds(variant)[0]]
    classes = run.summary.get("classes")
    pca = run.summary.get("per_class_accuracy") or []
    return [str(c) for c in classes] if classes and len(classes) == len(pca) else [str(i) for i in range(len(pca))]


def _per_class(group: Group, variant: str, seeds: list[int]) -> np.ndarray | None:
    rows = [group.runs[variant][s].summary.get("per_class_accuracy") for s in seeds]
    if not rows or any(not r for r in rows) or len({len(r) for r in rows}) != 1:
        return None
    return np.array([[np.nan if v is None else v for v in r] for r in rows], dtype=float) * 100.0  # (seeds, classes)


def per_class_accuracy(group: Group, variant: str, baseline: str) -> bytes | None:
    """Per-class test accuracy of `variant` against `baseline`: mean over their common seeds, ± 1 std whiskers."""
    seeds = sorted(set(group.seeds(variant)) & set(group.seeds(baseline)))
    a, b = _per_class(group, variant, seeds), _per_class(group, baseline, seeds)
    if a is None or b is None or a.shape != b.shape:
        return None
    names = _class_names(group, variant)
    k = len(names)
    x = np.arange(k)
    width = 0.4
    fig, ax = plt.subplots(figsize=(max(6.5, 0.65 * k + 2), 4.4), layout="tight")
    for offset, name, values in ((-width / 2, baseline, b), (width / 2, variant, a)):
        err = np.nanstd(values, axis=0, ddof=1) if values.shape[0] > 1 else None
        ax.bar(x + offset, np.nanmean(values, axis=0), width, yerr=err, capsize=2, color=variant_color(group, name),
               label=f"{name} (n = {values.shape[0]})")
    low = float(np.floor(np.nanmin([np.nanmean(a, axis=0), np.nanmean(b, axis=0)]) / 5.0) * 5.0)
    ax.set_ylim(max(0.0, low - 5.0), 101.0)
    ax.set_xticks(x)
    ax.set_xticklabels(names, rotation=45 if max(len(n) for n in names) > 3 else 0, ha="right"
                       if max(len(n) for n in names) > 3 else "center")
    ax.set_xlabel("class")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"Per-class accuracy: {variant} vs {baseline} ({group.dataset}; mean ± 1 std over seeds)")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.18 if k and max(len(n) for n in names) <= 3 else -0.3),
              ncol=2, frameon=False)
    return png_bytes(fig)


def confusion_matrices(group: Group) -> bytes | None:
    """Row-normalised confusion matrix of each variant, summed over its seeds (rows: true class)."""
    mats = {}
    for variant in group.variants:
        ms = [group.runs[variant][s].summary.get("confusion_matrix") for s in group.seeds(variant)]
        if ms and all(ms):
            mats[variant] = np.sum([np.array(m, dtype=float) for m in ms], axis=0)
    if not mats:
        return None
    names = _class_names(group, next(iter(mats)))
    k = next(iter(mats.values())).shape[0]
    if len(names) != k:
        names = [str(i) for i in range(k)]
    cols = min(3, len(mats))
    rows = math.ceil(len(mats) / cols)
    size = max(4.2, 0.42 * k + 1.5)
    fig, axes = plt.subplots(rows, cols, figsize=(size * cols + 1.2, size * rows + 0.6), squeeze=False,
                             layout="constrained")
    image = None
    for ax, (variant, m) in zip(axes.flat, mats.items()):
        with np.errstate(invalid="ignore", divide="ignore"):
            norm = np.nan_to_num(m / m.sum(axis=1, keepdims=True)) * 100.0
        image = ax.imshow(norm, cmap="Blues", vmin=0, vmax=100)
        if k <= 12:
            for i in range(k):
                for j in range(k):
                    if norm[i, j] >= 0.5:
                        ax.text(j, i, f"{norm[i, j]:.0f}", ha="center", va="center", fontsize=8,
                                color="white" if norm[i, j] > 60 else "black")
        ax.set_xticks(range(k))
        ax.set_yticks(range(k))
        ax.set_xticklabels(names, rotation=90, fontsize=8)
        ax.set_yticklabels(names, fontsize=8)
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
        ax.set_title(f"{variant} (n = {len(group.seeds(variant))})")
        ax.grid(False)
    for ax in list(axes.flat)[len(mats):]:
        ax.axis("off")
    fig.suptitle(f"Confusion matrices ({group.dataset}; % of each true class, summed over seeds)")
    fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.8, fraction=0.03, label="% of true class")
    return png_bytes(fig)
