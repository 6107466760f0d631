"""The run directory's layout and its files: the names, the writers and readers of config.yaml, metrics.csv,
summary.json and env.json, `Run` (one directory as read back) and `find_runs`. The checkpoints are in
`state.py` (last.state.pt) and `weights.py` (the safetensors files); `prepare.py` decides whether a directory may
be used. Everything that writes or reads a run directory goes through this package.
"""
from __future__ import annotations

import csv
import io
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from .. import _io
from ..config import Config, config_from_dict, dump_config, read_yaml, resolved_values
from ..errors import CbamlabError, ConfigError

log = logging.getLogger(__name__)

METRIC_COLUMNS = ("epoch", "lr", "train_loss", "train_top1", "val_loss", "val_top1", "val_top5", "test_loss",
                  "test_top1", "test_top5", "images_per_s", "epoch_time_s")
CONFIG, METRICS, SUMMARY, ENV = "config.yaml", "metrics.csv", "summary.json", "env.json"
CHECKPOINTS = "checkpoints"
LAST_WEIGHTS, LAST_STATE, BEST_WEIGHTS = (f"{CHECKPOINTS}/last.safetensors", f"{CHECKPOINTS}/last.state.pt",
                                          f"{CHECKPOINTS}/best.safetensors")


class RunDirError(CbamlabError):
    """A run directory that cannot be used as asked (finished, foreign, another config, unreadable, in use)."""


# ------------------------------------------------------------------------------------------------- writers

def write_config(run_dir, cfg: Config) -> None:
    _io.write_text(Path(run_dir) / CONFIG, dump_config(cfg))


def write_metrics(run_dir, rows: list[dict]) -> None:
    """metrics.csv from every row so far (the history lives in the state file: a resumed run rewrites it whole).
    A column a row lacks, or holds None, is an empty cell: not measured."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(METRIC_COLUMNS)
    for r in rows:
        w.writerow(["" if r.get(c) is None else (f"{r[c]:.6g}" if isinstance(r[c], float) else r[c])
                    for c in METRIC_COLUMNS])
    _io.write_text(Path(run_dir) / METRICS, buf.getvalue())


def write_summary(run_dir, summary: dict) -> None:
    """summary.json; a run is finished once it holds `"status": "complete"`."""
    _io.write_json(Path(run_dir) / SUMMARY, summary)


def write_env(run_dir, env: dict) -> None:
    _io.write_json(Path(run_dir) / ENV, env)


def weights_path(run_dir, which: str = "last") -> Path:
    if which not in ("last", "best"):
        raise CbamlabError(f"unknown checkpoint '{which}'; known: last, best")
    return Path(run_dir) / (LAST_WEIGHTS if which == "last" else BEST_WEIGHTS)


# ------------------------------------------------------------------------------------------------- readers

def read_json_object(path: Path) -> dict | None:
    """A JSON object from `path`; None when there is no such file; a RunDirError when it is not one."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        raise RunDirError(f"{path}: not valid JSON") from None
    if not isinstance(data, dict):
        raise RunDirError(f"{path}: expected a JSON object")
    return data


def read_summary(run_dir) -> dict | None:
    """summary.json, or None when the run has not finished writing one."""
    return read_json_object(Path(run_dir) / SUMMARY)


def read_env(run_dir) -> dict:
    return read_json_object(Path(run_dir) / ENV) or {}


def resolved_from_env(env: dict) -> dict:
    """What a run resolved its per-machine keys to (`config.resolved_values`), from its env.json: the precision
    fit records there as the run starts, and the device type, the first word of its "device" ("cpu (AMD EPYC, 2
    threads)", as runtime.device_name writes it). What env.json does not record is not known (None)."""
    precision = env.get("precision") if isinstance(env.get("precision"), dict) else {}
    device = env.get("device")
    return resolved_values(precision.get("amp"), precision.get("eval_amp"), precision.get("channels_last"),
                           device.split(" ", 1)[0] if isinstance(device, str) and device else None)


def read_resolved(run_dir) -> dict:
    return resolved_from_env(read_env(run_dir))


def is_complete(run_dir) -> bool:
    s = read_summary(run_dir)
    return bool(s) and s.get("status") == "complete"


def _cell(column: str, text: str | None):
    if text is None or text.strip() == "":
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return int(value) if column == "epoch" and value.is_integer() else value


def read_metrics(run_dir) -> list[dict]:
    """metrics.csv as one dict per epoch; empty (or unreadable) cells are None; no file, no rows."""
    path = Path(run_dir) / METRICS
    if not path.is_file():
        return []
    try:
        with open(path, newline="", encoding="utf-8") as f:
            return [{k: _cell(k, v) for k, v in row.items() if k is not None} for row in csv.DictReader(f)]
    except (UnicodeDecodeError, csv.Error) as e:
        raise RunDirError(f"{path}: not a readable {METRICS} ({type(e).__name__})") from None


def read_config(run_dir) -> dict:
    """config.yaml as written (a mapping); a folder without one is not a run directory."""
    path = Path(run_dir) / CONFIG
    if not path.is_file():
        raise RunDirError(f"{run_dir} is not a cbamlab run directory (no {CONFIG})")
    try:
        d = read_yaml(path)
    except ConfigError as e:
        raise RunDirError(str(e)) from None
    if not d:  # the defaults would stand in for a config nobody wrote
        raise RunDirError(f"{run_dir} is not a cbamlab run directory ({CONFIG} is empty)")
    return d


def load_run_config(run_dir) -> Config:
    """config.yaml as a checked `Config`."""
    try:
        return config_from_dict(read_config(run_dir))
    except RunDirError:
        raise
    except ConfigError as e:
        raise RunDirError(f"{Path(run_dir) / CONFIG} cannot be read back: {e}") from None


@dataclass
class Run:
    """One run directory as read back: config.yaml as a mapping, metrics.csv rows, summary.json ({} until the
    run finishes) and env.json."""

    path: Path
    config: dict
    summary: dict = field(default_factory=dict)
    metrics: list[dict] = field(default_factory=list)
    env: dict = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return self.summary.get("status") == "complete"

    @property
    def model(self) -> str:
        return str(self.summary.get("model") or (self.config.get("model") or {}).get("name"))

    @property
    def dataset(self) -> str:
        return str(self.summary.get("dataset") or (self.config.get("data") or {}).get("name"))

    @property
    def seed(self) -> int:
        seed = self.summary.get("seed", self.config.get("seed"))
        if seed is None:
            raise RunDirError(f"{self.path}: no seed in {SUMMARY} or {CONFIG}")
        return int(seed)

    @property
    def resolved(self) -> dict:
        """What the run resolved its per-machine keys to (`resolved_from_env`): part of its result identity."""
        return resolved_from_env(self.env)

    def column(self, name: str) -> list:
        """One metrics column over the epochs (None where not measured)."""
        return [row.get(name) for row in self.metrics] if any(name in row for row in self.metrics) else []

    def load_config(self) -> Config:
        return load_run_config(self.path)


def read_run(run_dir) -> Run:
    """Read one run directory (finished or not). Needs config.yaml; the other files are read when present."""
    run_dir = Path(run_dir)
    return Run(path=run_dir, config=read_config(run_dir), summary=read_summary(run_dir) or {},
               metrics=read_metrics(run_dir), env=read_env(run_dir))


def find_runs(root) -> list[Run]:
    """Every run directory under `root` (itself included), finished or not, in path order."""
    root = Path(root)
    if not root.exists():
        raise CbamlabError(f"no such folder: {root}")
    if not root.is_dir():
        raise CbamlabError(f"{root} is not a folder of run directories")
    dirs = sorted({p.parent for p in root.rglob(CONFIG) if CHECKPOINTS not in p.parent.parts})
    return [read_run(d) for d in dirs]


def remove_debris(run_dir) -> list[Path]:
    """Remove the temp files a killed writer left in `run_dir` and its checkpoints/ (`_io.stale_temp_files`).
    Only for the holder of the run's claim: no other process writes there then."""
    stale = _io.stale_temp_files(run_dir) + _io.stale_temp_files(Path(run_dir) / CHECKPOINTS)
    for p in stale:
        p.unlink(missing_ok=True)
    if stale:
        log.info("%s: removed %d temp file(s) left by a killed process: %s", run_dir, len(stale),
                 ", ".join(p.name for p in stale))
    return stale
