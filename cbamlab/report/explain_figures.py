"""Figures of an explain folder, as PNG bytes (matplotlib, Agg backend): the paper-style side-by-side maps, the
mean deletion/insertion curves, and the per-class channel attention of a stage. Pure functions of the arrays in
maps.npz and the metadata in explain.json.
"""
from __future__ import annotations

import math

import numpy as np

from .document import Figure
from .mpl import plt, png_bytes

MODES = ("deletion", "insertion")
NAMES = {"gradcam": "Grad-CAM", "gradcam++": "Grad-CAM++", "random": "random order"}


def nice(name: str) -> str:
    """A map's name for readers: "gradcam" -> "Grad-CAM", "spatial/layer2" -> "spatial layer2"."""
    return NAMES.get(name, name.replace("spatial/", "spatial ") if name.startswith("spatial/") else name)


def number(v: float, digits: int = 3) -> str:
    """`v` with `digits` decimals, "n/a" when missing or not finite."""
    return "n/a" if v is None or not math.isfinite(v) else f"{v:.{digits}f}"


def _show(ax, image: np.ndarray, overlay: np.ndarray | None = None) -> None:
    ax.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    if overlay is not None:
        lo, hi = float(overlay.min()), float(overlay.max())
        ax.imshow((overlay - lo) / (hi - lo) if hi > lo else np.zeros_like(overlay), cmap="jet", alpha=0.45,
                  vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def _channel_panel(ax, stages: list[tuple[str, np.ndarray]], legend: bool) -> None:
    """One image's channel attention: a line per stage over its channels (x: channel index / channel count)."""
    for stage, v in stages:
        ax.plot((np.arange(v.size) + 0.5) / v.size, v, linewidth=0.8, label=stage)
    ax.set_ylim(0, 1)
    ax.set_xticks([])
    ax.set_yticks([0, 0.5, 1], [])  # no labels: no room between panels; the title gives the range
    ax.set_title("channel attention (0–1)", fontsize=8)
    if legend:
        ax.legend(fontsize=5, loc="lower right")


def side_by_side(meta: dict, arrays: dict, count: int = 8) -> bytes:
    """Rows: images; columns: the input, then per model its Grad-CAM, Grad-CAM++, spatial map per stage and channel
    attention per stage, with the top-3 predictions under the Grad-CAM panel (as the CBAM paper's Fig. 4)."""
    classes = [str(c) for c in arrays["classes"]]
    n = min(count, len(arrays["labels"]))
    cols = [(None, "input")]
    for m in meta["models"]:
        cols += [(m, k) for k in ("gradcam", "gradcam++")] + [(m, f"spatial/{s}") for s in m["spatial_stages"]]
        cols += [(m, "channel")] if m["channel_stages"] else []
    height = 2.25 * n + 0.3
    fig, axes = plt.subplots(n, len(cols), figsize=(1.6 * len(cols), height), squeeze=False)
    # fixed margins: tight_layout over dozens of panels costs seconds and finds the same room for the text
    fig.subplots_adjust(left=0.005, right=0.995, top=1 - 0.5 / height, bottom=0.45 / height, wspace=0.1, hspace=0.5)
    for i in range(n):
        image, y, t = arrays["images"][i] / 255.0, int(arrays["labels"][i]), int(arrays["targets"][i])
        for j, (m, key) in enumerate(cols):
            ax = axes[i, j]
            if m is None:
                _show(ax, image)
                ax.set_title(f"true: {classes[y]}" if y >= 0 else f"target: {classes[t]}", fontsize=9)
                continue
            if key == "channel":
                _channel_panel(ax, [(s, arrays[f"{m['label']}/channel/{s}"][i]) for s in m["channel_stages"]], i == 0)
                continue
            cam = arrays[f"{m['label']}/{key}"][i]
            _show(ax, image, cam)
            head = f"{m['label']}\n" if i == 0 and key == "gradcam" else ""
            rng = f" [{cam.min():.2f}–{cam.max():.2f}]" if key.startswith("spatial/") else ""
            ax.set_title(f"{head}{nice(key).replace('spatial ', '')}{rng}", fontsize=8)
            if key == "gradcam":
                prob = arrays[f"{m['label']}/prob"][i]
                top = np.argsort(-prob)[:3]
                ax.set_xlabel(f"p({classes[t]}) = {prob[t]:.2f}\ntop-3: " + ", ".join(f"{classes[k]} {prob[k]:.2f}"
                                                                                       for k in top), fontsize=7)
    return png_bytes(fig)


def curves(meta: dict, arrays: dict) -> bytes:
    """Mean deletion and insertion curves over the images, one row of panels per model."""
    models = meta["models"]
    fig, axes = plt.subplots(len(models), 2, figsize=(10, 2.8 * len(models)), squeeze=False, layout="tight")
    for i, m in enumerate(models):
        for j, mode in enumerate(MODES):
            ax = axes[i, j]
            for name in meta["maps"]:
                key = f"{m['label']}/{mode}/{name}"
                if key in arrays:
                    c = arrays[key].mean(axis=0)
                    ax.plot(np.linspace(0, 1, c.size), c, label=nice(name),
                            linestyle="--" if name == "random" else "-")
            ax.set_title(f"{m['label']}: {mode}", fontsize=10)
            ax.set_xlabel(f"fraction of pixels {'removed' if mode == 'deletion' else 'inserted'}")
            ax.set_ylabel("mean p(target)")
            ax.set_ylim(0, 1)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7, loc="upper right" if mode == "deletion" else "lower right")  # "best" is slow
    return png_bytes(fig)


def channel_figure(meta: dict, arrays: dict, stage: str) -> bytes | None:
    """Per model with channel attention at `stage`: the mean attention vector of every class (rows) per channel."""
    models = [m for m in meta["models"] if stage in m["channel_stages"]]
    labels = arrays["labels"]
    classes = [str(c) for c in arrays["classes"]]
    present = [k for k in range(len(classes)) if (labels == k).any()]
    if not models or len(present) < 2:
        return None
    fig, axes = plt.subplots(1, len(models), figsize=(6 * len(models), 0.3 * len(present) + 2), squeeze=False,
                             layout="tight")
    for ax, m in zip(axes[0], models):
        v = arrays[f"{m['label']}/channel/{stage}"]
        means = np.stack([v[labels == k].mean(axis=0) for k in present])
        dev = means - means.mean(axis=0, keepdims=True)  # what is specific to a class, per channel
        lim = max(float(np.abs(dev).max()), 1e-6)
        im = ax.imshow(dev, aspect="auto", cmap="RdBu_r", vmin=-lim, vmax=lim, interpolation="nearest")
        s = m["specificity"].get(stage, {})
        ax.set_title(f"{m['label']} {stage}: ratio {number(s.get('ratio') or math.nan, 2)} "
                     f"(chance {number(s.get('chance') or math.nan, 2)})", fontsize=10)
        ax.set_yticks(range(len(present)), [classes[k] for k in present], fontsize=7)
        ax.set_xlabel("channel")
        ax.set_ylabel("class")
        ax.grid(False)
        fig.colorbar(im, ax=ax, fraction=0.03, label="class mean − mean over classes")
    return png_bytes(fig)


def figures(meta: dict, arrays: dict, count: int) -> list[Figure]:
    figs = [Figure("explain-maps.png", f"The first {min(count, meta['n'])} images: Grad-CAM, Grad-CAM++ and CBAM's "
                   "spatial map per stage for each model, and the channel attention of every stage (one line per "
                   "stage), with p(target class) and the top-3 predictions under Grad-CAM.",
                   side_by_side(meta, arrays, count)),
            Figure("explain-curves.png", "Mean deletion and insertion curves over the images (dashed: random order).",
                   curves(meta, arrays))]
    stages = sorted({s for m in meta["models"] for s in m["channel_stages"]})
    for stage in stages:
        png = channel_figure(meta, arrays, stage)
        if png is not None:
            figs.append(Figure(f"explain-channels-{stage}.png", f"Channel attention at {stage}: each class's "
                               "mean vector minus the mean over classes, so channels that depend on the class stand "
                               "out.", png))
    return figs
