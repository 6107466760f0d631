"""The comparison table of one group: accuracy as mean ± std over seeds, the paired difference to the baseline
with its 95 % interval and p-value, cost (params, MACs, speed), n, device and torch version.

`rows(group)` computes the numbers once; `table(rows)` formats them as (header, cells), which the report's
renderers (`render`) write as markdown and HTML.

Where one baseline is compared with stats.HOLM_MIN_FAMILY or more variants (this table against the plain net, the
ablation table against default CBAM), `holm_families`, `holm_column` and `holm_note` are the one place that
adjusts both p-values over that family, adds the adjusted sign-flip p as a column and says so under the table.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

from ..errors import CbamlabError
from . import stats
from .groups import Group, attn_kind, finite

COLUMNS = ("variant", "n", "top-1 %", "top-5 %", "Δ top-1 vs baseline (95 % CI)", "p (paired t)",
           "p (sign-flip)", "params", "MACs", "train img/s", "latency ms", "device", "torch")
HOLM_COLUMN = "p (Holm, sign-flip)"  # follows "p (sign-flip)" in a table with a Holm-adjusted family


@dataclass
class Row:
    variant: str
    n: int
    top1: stats.Summary
    top5: stats.Summary | None
    baseline: str | None
    delta_top1: stats.Paired | None
    params: float | None
    macs: float | None
    images_per_s: float | None
    latency_ms: float | None
    device: str
    torch: str
    is_baseline: bool = False

    def cells(self, shared_baseline: bool = False) -> list[str]:
        if self.delta_top1 is None:
            delta = "baseline" if self.is_baseline else "n/a"
            p = flip = ""
        else:
            d = self.delta_top1
            ci = "" if math.isnan(d.ci_low) else f" [{d.ci_low * 100:+.2f}, {d.ci_high * 100:+.2f}]"
            delta = f"{d.mean * 100:+.2f}{ci}" + ("" if shared_baseline else f" vs {self.baseline}")
            delta += f" (n = {d.n})" if d.n != self.n else ""
            p = stats.format_p(d.p_value)
            if d.wilcoxon_p is not None:
                p += f" (Wilcoxon {stats.format_p(d.wilcoxon_p)})"
            flip = stats.format_p(d.sign_flip_p)  # exact; at least 2 / 2**n, so never < 0.05 below 6 seeds
        return [self.variant, str(self.n), pm(self.top1), pm(self.top5) if self.top5 else "n/a", delta, p, flip,
                count(self.params), count(self.macs), number(self.images_per_s, 0), number(self.latency_ms, 2),
                self.device, self.torch]


def pm(s: stats.Summary, scale: float = 100.0) -> str:
    """'97.31 ± 0.42' (sample std), or just the mean when n = 1."""
    if math.isnan(s.std):
        return f"{s.mean * scale:.2f}"
    return f"{s.mean * scale:.2f} ± {s.std * scale:.2f}"


def count(v: float | None) -> str:
    if v is None:
        return "n/a"
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= div:
            return f"{v / div:.2f} {unit}"
    return f"{v:.0f}"


def number(v: float | None, digits: int) -> str:
    return "n/a" if v is None else f"{v:,.{digits}f}"


def _mean_of(values) -> float | None:
    vals = finite(values)
    return stats.mean(vals) if vals else None


def _distinct(values) -> str:
    seen = [str(v) for v in dict.fromkeys(v for v in values if v not in (None, ""))]
    return ", ".join(seen) if seen else "n/a"


def _metric(group: Group, variant: str, key: str, seeds: list[int]) -> list[float] | None:
    vals = [group.runs[variant][s].summary.get(key) for s in seeds]
    return None if any(v is None for v in vals) else [float(v) for v in vals]


def rows(group: Group, confidence: float = 0.95) -> list[Row]:
    out = []
    for variant in group.variants:
        seeds = group.seeds(variant)
        runs = [group.runs[variant][s] for s in seeds]
        top1 = _metric(group, variant, "top1", seeds)
        if top1 is None:
            raise CbamlabError(f"{runs[0].path}: summary.json has no top1")
        top5 = _metric(group, variant, "top5", seeds)
        baseline = group.baseline_for(variant)
        delta = None
        if baseline is not None:
            common = sorted(set(seeds) & set(group.seeds(baseline)))
            if common:
                delta = stats.paired_comparison(_metric(group, variant, "top1", common),
                                                _metric(group, baseline, "top1", common), confidence)
        out.append(Row(
            variant=variant, n=len(seeds), top1=stats.summarize(top1),
            top5=stats.summarize(top5) if top5 else None, baseline=baseline, delta_top1=delta,
            params=_mean_of(r.summary.get("params") for r in runs),
            macs=_mean_of(r.summary.get("macs") for r in runs),
            images_per_s=_mean_of(r.summary.get("train_images_per_s") for r in runs),
            latency_ms=_mean_of(r.summary.get("inference_latency_ms") for r in runs),
            device=_distinct(r.summary.get("device") or r.env.get("device") for r in runs),
            torch=_distinct(r.summary.get("torch_version") or r.env.get("torch") for r in runs),
            is_baseline=attn_kind(group.model_of(variant)) == "none"))
    for row, pair in zip(out, holm_families([(r.baseline, r.delta_top1) for r in out])):
        row.delta_top1 = pair
    return out


def holm_families(compared: list[tuple[str | None, stats.Paired | None]]) -> list[stats.Paired | None]:
    """The pairs of (baseline, pair), each with both p-values Holm-adjusted over its family (the pairs with its
    baseline) where that family has stats.HOLM_MIN_FAMILY or more; the others as they were, so a study of one
    or two comparisons reads as before. An undefined t-test p (no spread) counts as 1 and stays undefined."""
    out = [pair for _, pair in compared]
    families: dict[str | None, list[int]] = {}
    for i, (baseline, pair) in enumerate(compared):
        if pair is not None:
            families.setdefault(baseline, []).append(i)
    for members in (m for m in families.values() if len(m) >= stats.HOLM_MIN_FAMILY):
        pairs = [out[i] for i in members]
        t_ps = stats.holm([1.0 if math.isnan(p.p_value) else p.p_value for p in pairs])
        flip_ps = stats.holm([1.0 if math.isnan(p.sign_flip_p) else p.sign_flip_p for p in pairs])
        for i, pair, t_p, flip_p in zip(members, pairs, t_ps, flip_ps):
            out[i] = replace(pair, family=len(members), holm_sign_flip_p=flip_p,
                             holm_p=math.nan if math.isnan(pair.p_value) else t_p)
    return out


def holm_column(header: list[str], body: list[list[str]],
                pairs: list[stats.Paired | None]) -> tuple[list[str], list[list[str]]]:
    """The table with HOLM_COLUMN after "p (sign-flip)" (each row's pair in `pairs`) when some family was
    adjusted; unchanged otherwise."""
    if not any(p is not None and p.family > 1 for p in pairs):
        return header, body
    at = header.index("p (sign-flip)") + 1
    cells = ["" if p is None or p.family == 1 else stats.format_p(p.holm_sign_flip_p) for p in pairs]
    return header[:at] + [HOLM_COLUMN] + header[at:], [r[:at] + [c] + r[at:] for r, c in zip(body, cells)]


def holm_note(compared: list[tuple[str | None, stats.Paired | None]]) -> list[str]:
    """The sentence under a table with an adjusted family, naming its size and baseline; [] for none."""
    families = dict.fromkeys((b, p.family) for b, p in compared if p is not None and p.family > 1)
    if not families:
        return []
    over = " and ".join(f"the {k} comparisons with {b}" for b, k in families)
    return [f"p-values are Holm-adjusted over {over} in {HOLM_COLUMN} and in the sentences below, so the chance "
            "of calling any of them significant when none differs stays at most 0.05; p (paired t) and "
            "p (sign-flip) are each comparison's own."]


def sentences(table: list[Row]) -> list[str]:
    """One plain sentence per non-baseline variant: what the paired data support, or why there is nothing."""
    out = []
    for row in table:
        if row.delta_top1 is not None:
            out.append(stats.verdict(row.variant, row.baseline, row.delta_top1))
        elif row.baseline is not None:
            out.append(f"{row.variant}: no seed in common with {row.baseline}, so no paired comparison.")
        elif not row.is_baseline:
            out.append(f"{row.variant}: no plain variant was run under this recipe, so no difference is computed.")
    return out


def columns(table: list[Row]) -> tuple[list[str], bool]:
    """The header, and whether every compared variant has the same baseline (then named once, in the header)."""
    baselines = {r.baseline for r in table if r.delta_top1 is not None}
    cols = list(COLUMNS)
    if len(baselines) == 1:
        cols[4] = f"Δ top-1 vs {baselines.pop()} (95 % CI)"
        return cols, True
    return cols, False


def table(entries: list[Row]) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the comparison table, cells formatted."""
    cols, shared = columns(entries)
    return holm_column(cols, [row.cells(shared) for row in entries], [row.delta_top1 for row in entries])


def per_seed(group: Group) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of test top-1 % per variant and seed: the pairs behind every difference."""
    seeds = sorted({s for v in group.variants for s in group.seeds(v)})
    header = ["variant"] + [f"seed {s}" for s in seeds]
    body = []
    for v in group.variants:
        cells = [v]
        for s in seeds:
            run = group.runs[v].get(s)
            top1 = run.summary.get("top1") if run else None
            cells.append("-" if top1 is None else f"{100 * float(top1):.2f}")
        body.append(cells)
    return header, body
