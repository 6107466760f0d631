"""The ablation table of one group: each CBAM variant with other options than the defaults (the paper's Tables 1-3:
pooling, kernel, arrangement; and channel attention alone, the spatial BatchNorm's starting gamma) paired by seed
with default CBAM, and the spread of every CBAM variant's spatial maps per stage beside its accuracy.

The spread comes from each run's summary.json (`spatial_maps`, written by `engine.metrics.spatial_map_spread` on the
first images of the evaluation split with the final weights): the 5th-95th percentile of the map values of a
stage's gates, and the mean of max - min per map, each the mean over seeds. A map that spans 0.49-0.54 scales every
position of the feature map within a few percent of the others: the gate does little there.
"""
from __future__ import annotations

from dataclasses import dataclass

from . import stats
from .groups import Group, attn_kind, finite
from .tables import holm_column, holm_families, pm


@dataclass
class Row:
    variant: str
    n: int
    top1: stats.Summary
    reference: str | None            # default CBAM, when this variant is one of its ablations and it ran
    delta_top1: stats.Paired | None  # this variant - default CBAM, per seed
    maps: dict[str, tuple[float, float, float]]  # stage -> (p05, p95, range), means over seeds


def _top1(group: Group, variant: str, seeds: list[int]) -> list[float]:
    return [float(group.runs[variant][s].summary["top1"]) for s in seeds]


def _maps(group: Group, variant: str) -> dict[str, tuple[float, float, float]]:
    per_stage: dict[str, list[tuple[float, float, float]]] = {}
    for run in group.runs[variant].values():
        for stage, m in (run.summary.get("spatial_maps") or {}).items():
            per_stage.setdefault(stage, []).append((m.get("p05"), m.get("p95"), m.get("range")))
    out = {}
    for stage, values in per_stage.items():
        cols = [finite(v[i] for v in values) for i in range(3)]
        if all(cols):
            out[stage] = tuple(stats.mean(c) for c in cols)
    return out


def rows(group: Group, confidence: float = 0.95) -> list[Row]:
    """A row per CBAM variant of the group (its SE and plain variants are in the main table); [] when the group
    has neither an ablation of CBAM nor recorded spatial maps."""
    cbam = [v for v in group.variants if attn_kind(group.model_of(v)) == "cbam"]
    out = []
    for variant in cbam:
        seeds = group.seeds(variant)
        reference = group.default_cbam_for(variant)
        delta = None
        if reference is not None:
            common = sorted(set(seeds) & set(group.seeds(reference)))
            if common:
                delta = stats.paired_comparison(_top1(group, variant, common), _top1(group, reference, common),
                                                confidence)
        out.append(Row(variant, len(seeds), stats.summarize(_top1(group, variant, seeds)), reference, delta,
                       _maps(group, variant)))
    if not any(r.reference is not None or r.maps for r in out):
        return []
    for row, pair in zip(out, holm_families([(r.reference, r.delta_top1) for r in out])):
        row.delta_top1 = pair
    return out


def stages(table: list[Row]) -> list[str]:
    return sorted({s for r in table for s in r.maps})


def table(entries: list[Row]) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the ablation table: accuracy, the paired difference to default CBAM, map spread."""
    refs = {r.reference for r in entries if r.reference is not None}
    vs = f"vs {refs.pop()}" if len(refs) == 1 else "vs default CBAM"
    header = ["variant", "n", "top-1 %", f"Δ top-1 {vs} (95 % CI)", "p (paired t)", "p (sign-flip)"]
    header += [f"{s} spatial map p5–p95 (mean range)" for s in stages(entries)]
    body = []
    for r in entries:
        if r.delta_top1 is None:
            cells = ["reference" if any(x.reference == r.variant for x in entries) else "", "", ""]
        else:
            d = r.delta_top1
            cells = [f"{d.mean * 100:+.2f} [{d.ci_low * 100:+.2f}, {d.ci_high * 100:+.2f}]"
                     + (f" (n = {d.n})" if d.n != r.n else ""), stats.format_p(d.p_value),
                     stats.format_p(d.sign_flip_p)]
        for s in stages(entries):
            m = r.maps.get(s)
            cells.append("n/a (no spatial gate)" if m is None else f"{m[0]:.2f}–{m[1]:.2f} ({m[2]:.2f})")
        body.append([r.variant, str(r.n), pm(r.top1)] + cells)
    return holm_column(header, body, [r.delta_top1 for r in entries])


def sentences(table: list[Row]) -> list[str]:
    return [stats.verdict(r.variant, r.reference, r.delta_top1) for r in table if r.delta_top1 is not None]


INTRO = ("CBAM's options, each against default CBAM (avg + max pooling, k = 7, channel first, spatial BatchNorm "
         "from gamma 0) by per-seed differences, and the spread of each variant's spatial maps per stage: the "
         "5th–95th percentile of their values on the first {images} images of the evaluation split, with the "
         "mean over maps of max − min in brackets (means over seeds). A narrow spread means the spatial gate "
         "scales every position nearly alike.")


def intro(group: Group) -> str:
    images = sorted({m.get("images") for v in group.variants for r in group.runs[v].values()
                     for m in (r.summary.get("spatial_maps") or {}).values() if m.get("images")})
    return INTRO.format(images=", ".join(map(str, images)) or "n/a")

