"""Faithfulness across training seeds: does an architecture (not one trained model) make its maps more faithful?

Reads the per-seed folders `cbamlab explain RUN --all-seeds` writes (OUT/seed<k>/explain.json and scores.csv,
the same images for every seed) and writes explain_seeds.md and explain_seeds.html into OUT. Pure: never loads a
model. For every seed, model and map, the faithfulness of the map is the mean over the images of (its AUC - the
same model's random-order AUC), for deletion (negative: the map finds what the decision rests on) and insertion
(positive: the same). Across seeds, each variant's value is summarised (mean ± std, n seeds), and each SE/CBAM
variant is paired by seed with its plain twin: the mean difference with a 95 % t interval, the paired t-test and
the exact sign-flip test, called significant only when both give p < 0.05.
"""
from __future__ import annotations

import csv
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import CbamlabError
from . import render, stats
from .document import Bullets, Document, Section, Table, Text
from .explain_figures import MODES, nice

_SEED_DIR = re.compile(r"^seed(\d+)$")
NAME = "explain_seeds"  # explain_seeds.md and explain_seeds.html
MD = f"{NAME}.md"
HOW_TO_READ = (
    "Each value is, for one trained model, the mean over the same images of a map's deletion or insertion AUC "
    "minus the same model's random-order AUC: below zero for deletion and above zero for insertion means the map "
    "ranks the pixels the decision rests on better than chance. One value per training seed; the table gives "
    "their mean ± std over n seeds. The paired table subtracts the plain twin's value of the same seed: Δ is the "
    "mean difference with a 95 % t interval, p the paired t-test and the exact sign-flip test (it cannot go below "
    "2/2^n, so fewer than 6 seeds are never called significant). For deletion a negative Δ, for insertion a "
    "positive Δ says the variant's maps are the more faithful.")


@dataclass
class Seeds:
    """gains[label][(mode, map)][seed]; models: label -> (model name, attention kind); pairs: (variant, plain)."""

    seeds: list[int]
    gains: dict[str, dict[tuple[str, str], dict[int, float]]]
    models: dict[str, tuple[str, str]]
    pairs: list[tuple[str, str]]
    images: str


def _col(mode: str, name: str) -> str:
    return f"{mode}_{name.replace('/', '_')}"


def _read_seed(folder: Path) -> tuple[dict, list[dict]]:
    for f in ("explain.json", "scores.csv"):
        if not (folder / f).is_file():
            raise CbamlabError(f"{folder} is not a cbamlab explain folder (no {f})")
    meta = json.loads((folder / "explain.json").read_text(encoding="utf-8"))
    with open(folder / "scores.csv", newline="", encoding="utf-8") as f:
        return meta, list(csv.DictReader(f))


def collect(out_dir) -> Seeds:
    """The per-seed gains of every map of every model under out_dir/seed<k>/."""
    out_dir = Path(out_dir)
    folders = sorted((int(m.group(1)), p) for p in out_dir.iterdir() if p.is_dir()
                     for m in [_SEED_DIR.match(p.name)] if m) if out_dir.is_dir() else []
    if not folders:
        raise CbamlabError(f"{out_dir} holds no per-seed explain folders (seed<k>/ with explain.json and "
                           "scores.csv): run cbamlab explain COMPARE_FOLDER --all-seeds first")
    gains: dict[str, dict[tuple[str, str], dict[int, float]]] = {}
    models: dict[str, tuple[str, str]] = {}
    pairs: list[tuple[str, str]] = []
    sources = set()
    for seed, folder in folders:
        meta, rows = _read_seed(folder)
        sources.add(f"{meta['source']} ({meta['n']} images)")
        for m in meta["models"]:
            models.setdefault(m["label"], (m["name"], m["attn"]))
            mine = [r for r in rows if r["model"] == m["label"]]
            for name in meta["maps"]:
                if name == "random":
                    continue
                for mode in MODES:
                    col, rnd = _col(mode, name), _col(mode, "random")
                    vals = [float(r[col]) - float(r[rnd]) for r in mine if r.get(col) not in (None, "")]
                    if vals:
                        gains.setdefault(m["label"], {}).setdefault((mode, name), {})[seed] = float(np.mean(vals))
        pairs += [tuple(p) for p in meta["pairs"] if tuple(p) not in pairs]
    if len(sources) > 1:
        raise CbamlabError(f"the seeds under {out_dir} were explained on different images "
                           f"({'; '.join(sorted(sources))}): pair them only on the same images (one --n, --split "
                           "and --image-seed for all)")
    return Seeds([s for s, _ in folders], gains, models, pairs, sources.pop())


def _fmt(v: float) -> str:
    return "n/a" if v is None or math.isnan(v) else f"{v:+.3f}"


def _summary_cell(values: list[float]) -> str:
    s = stats.summarize(values)
    return _fmt(s.mean) if math.isnan(s.std) else f"{s.mean:+.3f} ± {s.std:.3f}"


def per_variant(data: Seeds) -> tuple[list[str], list[list[str]]]:
    header = ["variant", "map"] + [f"{mode} AUC − random (mean ± std over seeds)" for mode in MODES] + ["n seeds"]
    body = []
    for label, per_map in data.gains.items():
        for name in dict.fromkeys(n for _, n in per_map):
            cells = [label, nice(name)]
            n = 0
            for mode in MODES:
                vals = per_map.get((mode, name), {})
                cells.append(_summary_cell(list(vals.values())) if vals else "n/a")
                n = max(n, len(vals))
            body.append(cells + [str(n)])
    return header, body


@dataclass
class PairRow:
    variant: str
    baseline: str
    map: str
    mode: str
    pair: stats.Paired


def paired(data: Seeds) -> list[PairRow]:
    """Each SE/CBAM variant against its plain twin, per map both have (Grad-CAM, Grad-CAM++) and mode, by seed."""
    out = []
    for variant, baseline in data.pairs:
        a, b = data.gains.get(variant, {}), data.gains.get(baseline, {})
        for key in a:
            if key not in b:
                continue
            common = sorted(set(a[key]) & set(b[key]))
            if len(common) >= 2:
                out.append(PairRow(variant, baseline, key[1], key[0], stats.paired_comparison(
                    [a[key][s] for s in common], [b[key][s] for s in common])))
    return out


def paired_grid(rows: list[PairRow]) -> tuple[list[str], list[list[str]]]:
    header = ["variant − plain twin", "map", "mode", "n seeds", "Δ (95 % CI)", "p (paired t)", "p (sign-flip)"]
    body = [[f"{r.variant} − {r.baseline}", nice(r.map), r.mode, str(r.pair.n),
             f"{r.pair.mean:+.3f} [{r.pair.ci_low:+.3f}, {r.pair.ci_high:+.3f}]",
             stats.format_p(r.pair.p_value), stats.format_p(r.pair.sign_flip_p)] for r in rows]
    return header, body


def sentence(r: PairRow) -> str:
    """What the paired seeds support, in the direction that means 'more faithful' for the mode."""
    better = r.pair.mean < 0 if r.mode == "deletion" else r.pair.mean > 0
    what = f"{r.variant} vs {r.baseline}, {nice(r.map)} {r.mode}: Δ {r.pair.mean:+.3f} over n = {r.pair.n} seeds"
    if stats.significant(r.pair):
        return f"{what}, significant: {r.variant}'s maps are {'more' if better else 'less'} faithful."
    return (f"{what}, not significant (t-test p = {stats.format_p(r.pair.p_value)}, sign-flip p = "
            f"{stats.format_p(r.pair.sign_flip_p)}): no difference in faithfulness that {r.pair.n} seeds show.")


def document(data: Seeds) -> Document:
    pairs = paired(data)
    sections = [Section("Faithfulness of each variant's maps, per training seed",
                        [Table(*per_variant(data), css="labels")])]
    if pairs:
        sections.append(Section("Paired by training seed: variant − plain twin",
                                [Table(*paired_grid(pairs), css="labels"), Bullets([sentence(r) for r in pairs])]))
    seeds = (f"Seeds {', '.join(map(str, data.seeds))}; images: {data.images}; every seed's own report is in "
             "seed<k>/explain.md.")
    return Document("cbamlab explain across seeds", [Text(HOW_TO_READ, css="howto"), Bullets([seeds])], sections)


def write_seeds_report(out_dir) -> tuple[Path, Path]:
    """explain_seeds.md and explain_seeds.html in out_dir from its seed<k>/ explain folders."""
    written = render.write(document(collect(out_dir)), out_dir, NAME)
    return written.markdown, written.html
