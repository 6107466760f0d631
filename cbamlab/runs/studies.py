"""The records a study keeps beside its runs: compare.json (a comparison's recipe, grid and what its first
machine resolved the per-machine keys to, which every later process of the study is checked against) and
tune.json (a tuning study's search and retraining, read by the report)."""
from __future__ import annotations

import os
from pathlib import Path

from .. import _io
from ..config import Config, config_to_dict, per_machine_note, result_differences, with_defaults
from ..errors import CbamlabError
from .rundir import RunDirError, read_json_object

COMPARE_RECORD = "compare.json"  # in a comparison's folder
TUNE_RECORD = "tune.json"  # in a tuning study's folder
_PER_RUN = {"seed", "model.name"}  # set by the plan for each run, not by the recipe


def study_grid(variants, seeds, datasets) -> dict:
    return {"variants": list(variants), "seeds": [int(s) for s in seeds], "datasets": list(datasets or [])}


def check_study(out_dir, base_cfg: Config, grid: dict, *, sharded: bool, resolved: dict | None = None) -> None:
    """Refuse a recipe (or, for a shard, a grid, or what this machine resolves the per-machine keys to:
    `resolved`) other than the one OUT/compare.json records; record it when this is the study's first process.
    Nothing is written when it refuses. A record written before cbamlab recorded the resolved values is checked
    on its recipe; its finished runs are checked one by one against this machine (compare's reuse check)."""
    path = Path(out_dir) / COMPARE_RECORD
    recipe = config_to_dict(base_cfg)
    record = _read_compare_record(path)
    if record is None:
        record = _record_once(path, {"recipe": recipe, **({"resolved": resolved} if resolved else {}), **grid})
    ignore = _PER_RUN | ({"data.name"} if grid["datasets"] or record.get("datasets") else set())
    recorded = with_defaults(record["recipe"])  # keys added since take their defaults, as in the runs' configs
    there = record.get("resolved")
    both = (there, resolved) if isinstance(there, dict) and resolved is not None else None
    changed = [k for k in result_differences(recorded, recipe, both) if k not in ignore]
    if changed:
        raise CbamlabError(f"{out_dir} is a comparison started with another config ({', '.join(changed)} differ"
                           f"{per_machine_note(changed, there, resolved)}): give every shard the same --config "
                           "and --set, or use another --out")
    mine = {k: grid[k] for k in ("variants", "seeds", "datasets")}
    if sharded and mine != {k: record.get(k) for k in mine}:
        raise CbamlabError(f"{out_dir} is a comparison of another grid ({record.get('variants')}, seeds "
                           f"{record.get('seeds')}, datasets {record.get('datasets') or 'from the config'}): "
                           "every shard must plan the same runs, or use another --out")


def _read_compare_record(path: Path) -> dict | None:
    try:
        record = read_json_object(path)
    except RunDirError:
        record = {}
    if record is not None and not isinstance(record.get("recipe"), dict):
        raise CbamlabError(f"{path} is not a comparison record (expected JSON with recipe, variants, seeds, "
                           "datasets); it is written by cbamlab compare: remove it, or use another --out")
    return record


def _record_once(path: Path, record: dict) -> dict:
    """Write `record` to `path` unless another process did first (then return that one's)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.new")
    _io.write_json(tmp, record)
    try:
        os.link(tmp, path)  # atomic, and fails if it exists: the first process's record wins
    except FileExistsError:
        record = _read_compare_record(path) or record
    finally:
        tmp.unlink()
    return record


def write_tune_record(study_dir, record: dict) -> Path:
    return _io.write_json(Path(study_dir) / TUNE_RECORD, record)


def read_tune_record(study_dir) -> dict:
    path = Path(study_dir) / TUNE_RECORD
    record = read_json_object(path)
    if record is None:
        raise CbamlabError(f"no tuning record at {path} (run cbamlab tune first)")
    return record
