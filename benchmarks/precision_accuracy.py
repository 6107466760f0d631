"""Does the automatic precision cost accuracy? The same recipe trained with `train.amp=auto,
train.channels_last=auto` (the defaults) and with plain float32 NCHW (`amp=none, channels_last=false`), seed by
seed, and the paired difference of test top-1 reported as `cbamlab compare` reports a variant against its baseline
(mean ± std of the per-seed differences, 95 % t interval, paired t-test and exact sign-flip p-values).

Each run is an ordinary run directory under --out (`<setting>/seed<k>`): an interrupted script resumes, finished
runs are reused. Run it alone on the machine (two trainings at once oversubscribe the cores).

    python benchmarks/precision_accuracy.py [--config configs/fashion_mnist.yaml] [--seeds 3] [--epochs 2]
        [--out runs/precision_accuracy] [--md benchmarks/results/precision_accuracy.md]
"""
from __future__ import annotations

import argparse
import os
import sys
from datetime import datetime, timezone
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cbamlab._io import write_text  # noqa: E402
from cbamlab.config import load_config  # noqa: E402
from cbamlab.engine import fit  # noqa: E402
from cbamlab.engine.runtime import cpu_name  # noqa: E402
from cbamlab.report.stats import paired_comparison, summarize, verdict  # noqa: E402
from cbamlab.runs import is_complete, read_summary  # noqa: E402

SETTINGS = {  # name -> overrides
    "auto": ("train.amp=auto", "train.channels_last=auto"),
    "fp32": ("train.amp=none", "train.channels_last=false"),
}


def train_all(config: str, seeds: int, epochs: int | None, out: Path) -> dict:
    """{setting: [summary per seed]}, training what is missing (settings interleaved seed by seed)."""
    runs = {name: [] for name in SETTINGS}
    for seed in range(seeds):
        for name, overrides in SETTINGS.items():
            sets = [*overrides, f"seed={seed}"] + ([f"train.epochs={epochs}"] if epochs else [])
            cfg = load_config(config, sets)
            run = out / name / f"seed{seed}"
            summary = read_summary(run) if is_complete(run) else fit(cfg, run, resume=run.exists())
            runs[name].append(summary)
    return runs


def table(runs: dict, config: str, epochs: int | None, load: str) -> str:
    auto, fp32 = ([s["top1"] for s in runs[k]] for k in ("auto", "fp32"))
    pair = paired_comparison(auto, fp32)
    first = runs["auto"][0]
    lines = [
        "# Automatic precision against float32: test top-1",
        "",
        f"{first['model']} on {first['dataset']}, `{config}`"
        + (f" with train.epochs={epochs}" if epochs else "") + f", n = {pair.n} seeds (paired by seed).",
        f"Device: {cpu_name()} ({first['device']}), {torch.get_num_threads()} threads, torch {torch.__version__}, "
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, load average before: {load}.",
        f"auto resolved to: {first.get('precision', {})}.",
        "",
        "| setting | n | test top-1 % (mean ± std) | per seed | train img/s (mean) | wall s (mean) |",
        "|---|---|---|---|---|---|",
    ]
    for name in SETTINGS:
        top1 = [s["top1"] for s in runs[name]]
        st = summarize(top1)
        ips = sum(s["train_images_per_s"] for s in runs[name]) / len(runs[name])
        wall = sum(s["wall_time_s"] for s in runs[name]) / len(runs[name])
        per = ", ".join(f"{100 * v:.2f}" for v in top1)
        lines.append(f"| {name} | {st.n} | {100 * st.mean:.2f} ± {100 * st.std:.2f} | {per} | {ips:,.0f} | "
                     f"{wall:,.0f} |")
    lines += ["", f"Δ top-1 (auto − fp32): {100 * pair.mean:+.2f} points, 95 % CI [{100 * pair.ci_low:+.2f}, "
                  f"{100 * pair.ci_high:+.2f}].", "", verdict("auto", "fp32", pair), ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(ROOT / "configs" / "fashion_mnist.yaml"))
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=None, help="override train.epochs")
    ap.add_argument("--out", default="runs/precision_accuracy")
    ap.add_argument("--md", default=str(ROOT / "benchmarks" / "results" / "precision_accuracy.md"))
    args = ap.parse_args(argv)
    if args.seeds < 2:
        ap.error("--seeds must be >= 2 for a paired comparison")
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    runs = train_all(args.config, args.seeds, args.epochs, Path(args.out))
    text = table(runs, os.path.relpath(args.config, ROOT), args.epochs, load)
    write_text(args.md, text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
