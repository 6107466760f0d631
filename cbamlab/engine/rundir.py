"""The run directory: what a run writes (config.yaml, metrics.csv, summary.json, env.json, checkpoints/) and
the rules that keep an existing one safe (never overwrite a finished or foreign run; resume only its own config)."""
from __future__ import annotations

import csv
import io
import json
import logging
from pathlib import Path

from .. import _io
from ..errors import CbamlabError, ConfigError
from .config import Config, diff_configs, dump_config, load_config

log = logging.getLogger(__name__)

METRIC_COLUMNS = ("epoch", "lr", "train_loss", "train_top1", "val_loss", "val_top1", "val_top5", "test_loss",
                  "test_top1", "test_top5", "images_per_s", "epoch_time_s")
CONFIG, METRICS, SUMMARY, ENV = "config.yaml", "metrics.csv", "summary.json", "env.json"
LAST_WEIGHTS, LAST_STATE, BEST_WEIGHTS = "checkpoints/last.safetensors", "checkpoints/last.state.pt", \
    "checkpoints/best.safetensors"


# keys that do not change what a run computes: a resume may change them
COSMETIC = ("train.progress", "train.tensorboard", "data.workers")


class RunDirError(CbamlabError):
    """A run directory that cannot be used as asked (finished, foreign, another config)."""


def read_summary(run_dir) -> dict | None:
    p = Path(run_dir) / SUMMARY
    if not p.is_file():
        return None
    try:
        return json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise RunDirError(f"{p}: not valid JSON") from None


def is_complete(run_dir) -> bool:
    s = read_summary(run_dir)
    return bool(s) and s.get("status") == "complete"


def prepare(run_dir, cfg: Config, resume: bool) -> str:
    """Check `run_dir` may be used; returns "fresh", "resume" (a state to load) or "complete".

    A new or empty folder starts fresh. A folder holding anything else must be a cbamlab run of the same
    config, and then only with resume=True; a finished run is never touched.
    """
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise RunDirError(f"{run_dir} is a file, not a run directory")
    if not run_dir.exists() or not any(run_dir.iterdir()):
        if resume:
            log.warning("%s holds no run yet: starting it from the beginning", run_dir)
        return "fresh"
    if not (run_dir / CONFIG).is_file():
        raise RunDirError(f"{run_dir} is not empty and is not a cbamlab run directory (no {CONFIG}); "
                          "choose another --out")
    if is_complete(run_dir):
        if resume:
            return "complete"
        raise RunDirError(f"{run_dir} holds a finished run; choose another --out (nothing was overwritten)")
    if not resume:
        raise RunDirError(f"{run_dir} holds an unfinished run; pass --resume to continue it or choose another --out")
    try:
        saved = load_config(run_dir / CONFIG)
    except ConfigError as e:
        raise RunDirError(f"{run_dir / CONFIG} cannot be read back: {e}") from None
    changed = [k for k in diff_configs(saved, cfg) if k not in COSMETIC]
    if changed:
        raise RunDirError(f"cannot resume {run_dir} with another config: {', '.join(changed)} differ "
                          "(resume without --config/--set to use the run's own)")
    return "resume" if (run_dir / LAST_STATE).is_file() else "fresh"


def write_config(run_dir, cfg: Config) -> None:
    _io.write_text(Path(run_dir) / CONFIG, dump_config(cfg))


def write_metrics(run_dir, rows: list[dict]) -> None:
    """metrics.csv from every row so far (the history lives in the state file: a resumed run rewrites it whole)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(METRIC_COLUMNS)
    for r in rows:
        w.writerow(["" if r.get(c) is None else (f"{r[c]:.6g}" if isinstance(r[c], float) else r[c])
                    for c in METRIC_COLUMNS])
    _io.write_text(Path(run_dir) / METRICS, buf.getvalue())


def read_metrics(run_dir) -> list[dict]:
    with open(Path(run_dir) / METRICS, newline="") as f:
        return [{k: (None if v == "" else (int(v) if k == "epoch" else float(v))) for k, v in row.items()}
                for row in csv.DictReader(f)]


def load_run_config(run_dir) -> Config:
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG).is_file():
        raise RunDirError(f"{run_dir} is not a cbamlab run directory (no {CONFIG})")
    return load_config(run_dir / CONFIG)
