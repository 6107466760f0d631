"""explain.md and a self-contained explain.html (figures embedded as base64 PNG) from the files `cbamlab explain`
writes: explain.json, scores.csv, maps.npz. Pure: reads those files, never loads a model, never trains.

Tables: predictions; faithfulness (deletion/insertion AUC of every map with the random-order baseline in the same
table and each map's paired difference to it); paired differences between models; class-specificity of channel
attention. Figures: the paper-style side-by-side maps, the mean deletion/insertion curves, and the per-class mean
channel attention of every stage.
"""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np

from ..errors import CbamlabError
from . import render, stats
from .document import Bullets, Document, Section, Table, Text
from .explain_figures import MODES, figures, nice, number

HOW_TO_READ = (
    "Deletion: the pixels are replaced by the baseline in the order a map ranks them, most salient first; the area "
    "under the target-class probability curve is LOW when the map finds what the decision rests on. Insertion: the "
    "pixels are put back into a blurred image in the same order; its area is HIGH for a faithful map (Petsiuk et "
    "al., RISE, BMVC 2018). The random order is what 'no better than chance' looks like; Δ vs random is the mean "
    "per-image difference with a 95 % t interval. Differences between models are paired by image (the same images, "
    "the same target class). A model's raw areas also follow how confident it is, so models are compared on each "
    "map's area minus the same model's random-order area. These differences say whether these two trained models "
    "differ on these images, not whether the architecture does, which needs several training seeds (cbamlab "
    "compare). Called significant (*) only when the t-test and the sign-flip test both give p < 0.05. Spatial maps "
    "are CBAM's own gate values (mean over a stage's blocks); in the figures each map is scaled to its own range, "
    "given in brackets.")


def load(out_dir) -> tuple[dict, list[dict], dict]:
    """(explain.json, scores.csv rows, maps.npz arrays) of an explain folder."""
    out_dir = Path(out_dir)
    for f in ("explain.json", "scores.csv", "maps.npz"):
        if not (out_dir / f).is_file():
            raise CbamlabError(f"{out_dir} is not a cbamlab explain folder (no {f})")
    meta = json.loads((out_dir / "explain.json").read_text())
    with open(out_dir / "scores.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    with np.load(out_dir / "maps.npz", allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    return meta, rows, arrays


def _scores(rows: list[dict], label: str, column: str) -> np.ndarray:
    return np.array([float(r[column]) for r in rows if r["model"] == label and r[column] != ""], dtype=float)


def _col(mode: str, name: str) -> str:
    return f"{mode}_{name.replace('/', '_')}"


def _delta(pair: stats.Paired) -> str:
    ci = "" if math.isnan(pair.ci_low) else f" [{pair.ci_low:+.3f}, {pair.ci_high:+.3f}]"
    return f"{pair.mean:+.3f}{ci}"


def _p(pair: stats.Paired) -> str:
    star = " *" if stats.significant(pair) else ""
    return f"{stats.format_p(pair.p_value)} / {stats.format_p(pair.sign_flip_p)}{star}"


def tables(meta: dict, rows: list[dict]) -> list[tuple[str, list[str], list[list[str]]]]:
    """[(title, header, rows)] of the four tables; the numbers are computed here once."""
    out = []
    pred = []
    for m in meta["models"]:
        mine = [r for r in rows if r["model"] == m["label"]]
        known = [r for r in mine if r["true"]]
        acc = np.mean([r["pred"] == r["true"] for r in known]) * 100 if known else float("nan")
        p_true = _scores(rows, m["label"], "p_true")
        pred.append([m["label"], str(len(mine)), number(acc, 1), number(p_true.mean() if p_true.size else math.nan)])
    out.append(("Predictions on these images", ["model", "n", "top-1 %", "mean p(true)"], pred))
    faith = []
    for m in meta["models"]:
        rnd = {mode: _scores(rows, m["label"], _col(mode, "random")) for mode in MODES}
        for name in meta["maps"]:
            vals = {mode: _scores(rows, m["label"], _col(mode, name)) for mode in MODES}
            if vals["deletion"].size == 0:
                continue
            cells = [m["label"], nice(name), number(vals["deletion"].mean()), number(vals["insertion"].mean())]
            for mode in MODES:
                if name == "random" or vals[mode].size < 2:
                    cells += ["", ""]
                else:
                    pair = stats.paired_comparison(vals[mode], rnd[mode])
                    cells += [_delta(pair), _p(pair)]
            faith.append(cells)
    out.append(("Faithfulness: area under the deletion (lower is better) and insertion (higher is better) curves",
                ["model", "map", "deletion AUC", "insertion AUC", "Δ deletion vs random (95 % CI)",
                 "p (t / sign-flip)",
                 "Δ insertion vs random (95 % CI)", "p (t / sign-flip)"], faith))
    paired = []
    for a, b in meta["pairs"]:
        quantities = [("p(true)", _scores(rows, a, "p_true"), _scores(rows, b, "p_true"))]
        for name in ("gradcam", "gradcam++"):
            for mode in MODES:
                quantities.append((f"{nice(name)} {mode} AUC − random", *(
                    _scores(rows, x, _col(mode, name)) - _scores(rows, x, _col(mode, "random")) for x in (a, b))))
        for what, va, vb in quantities:
            if va.size >= 2 and va.size == vb.size:
                pair = stats.paired_comparison(va, vb)
                paired.append([f"{a} − {b}", what, number(va.mean()), number(vb.mean()), _delta(pair), _p(pair)])
    if paired:
        out.append(("Paired differences between models (variant − baseline, per image)",
                    ["pair", "quantity", "variant", "baseline", "Δ (95 % CI)", "p (t / sign-flip)"], paired))
    spec = [[m["label"], stage, number(s["ratio"] if s["ratio"] is not None else math.nan, 2),
             number(s["chance"] if s["chance"] is not None else math.nan, 2)]
            for m in meta["models"] for stage, s in m["specificity"].items()]
    if spec:
        out.append(("Class-specificity of channel attention: distance between class means over the spread within "
                    "classes (chance: the same with shuffled labels)", ["model", "stage", "ratio", "chance"], spec))
    return out


def _intro(meta: dict) -> list[str]:
    lines = [f"Images: {meta['source']}; maps explain each image's true class where it is known. "
             f"Faithfulness in {meta['steps']} steps; "
             f"deletion baseline: {meta['deletion_baseline']}; insertion starts from {meta['insertion_start']}."]
    lines += meta["notes"] + [f"{m['label']}: {note}." for m in meta["models"] for note in m["notes"]]
    return lines


def document(meta: dict, rows: list[dict], arrays: dict, figure_images: int = 8) -> Document:
    sections = [Section(title, [Table(header, body, css="labels")]) for title, header, body in tables(meta, rows)]
    sections.append(Section("Figures", figures(meta, arrays, figure_images)))
    return Document("cbamlab explain", [Text(HOW_TO_READ, css="howto"), Bullets(_intro(meta))], sections)


def write_explain_report(out_dir, figure_images: int = 8) -> tuple[Path, Path]:
    """explain.md (figures in out_dir/figures/) and explain.html from an explain folder's result files."""
    meta, rows, arrays = load(out_dir)
    written = render.write(document(meta, rows, arrays, figure_images), out_dir, "explain")
    return written.markdown, written.html
