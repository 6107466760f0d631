"""What a run records of where its result comes from, and the check a resume makes against that record.

Every state file (checkpoints/last.state.pt) records the resolved config the run trains, the hash of that
config's result part and the code version (`record`). A resume (`check_resume`) compares the config it is given
(the run's config.yaml, or --config, with --set overrides) with both the config.yaml on disk and that record,
and refuses any difference in a key that changes a result (`config.result_differences`, declared once on the
config fields), naming the keys and both values: a hand-edited config.yaml is caught as surely as an override.
Keys that change no result (threads, progress bar, data.root, ...) may differ.
"""
from __future__ import annotations

import functools
import logging
import subprocess
from pathlib import Path

from .. import __version__, _io
from ..errors import CheckpointError
from .config import Config, config_to_dict, result_differences, result_hash, with_defaults

log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=1)
def code_version() -> dict:
    """{"cbamlab": version, "git": commit or None}: the commit when cbamlab runs from a git checkout."""
    root = Path(__file__).resolve().parents[2]
    commit = None
    if (root / ".git").exists():
        try:
            out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                 timeout=10)
            commit = (out.stdout.strip() or None) if out.returncode == 0 else None
        except (OSError, subprocess.SubprocessError):  # no git here
            commit = None
    return {"cbamlab": __version__, "git": commit}


def record(cfg: Config) -> dict:
    """The entries a state file records: the resolved config, its result hash and the code version."""
    return {"config": config_to_dict(cfg), "config_hash": result_hash(cfg), "code_version": code_version()}


def read_record(state_path) -> dict | None:
    """The record of a state file, read without loading its tensors (memory-mapped); None for a state written
    before runs recorded one."""
    state = _io.torch_load_safe(state_path, mmap=True)
    if not isinstance(state, dict) or "epoch" not in state:
        raise CheckpointError(f"{state_path}: not a cbamlab training state (no 'epoch')")
    if not isinstance(state.get("config"), dict):
        return None
    return {k: state.get(k) for k in ("config", "config_hash", "code_version", "epoch")}


def _value(d: dict, key: str):
    for part in key.split("."):
        d = d.get(part) if isinstance(d, dict) else None
    return d


def _changes(a: dict, b: dict, keys: list[str]) -> str:
    return ", ".join(f"{k} {_value(a, k)!r} -> {_value(b, k)!r}" for k in keys)


def resume_refusal(run_dir, on_disk: Config, cfg: Config, recorded: dict | None, config_name: str) -> str | None:
    """Why `run_dir` may not continue under `cfg` (a result key differs from the run's config file `on_disk` or
    from the config its state file `recorded`, None when there is no record), or None when it may; finished runs
    are checked alike."""
    want, disk = config_to_dict(cfg), config_to_dict(on_disk)
    changed = result_differences(disk, want)
    if changed:
        return (f"cannot resume {run_dir} with another config: {', '.join(changed)} differ from its {config_name} "
                f"({_changes(disk, want, changed)}); resume without --config/--set to use the run's own, or "
                "choose another --out for the new config")
    if recorded is None:
        return None
    if recorded.get("config_hash") != result_hash(cfg):
        trained = with_defaults(recorded["config"])
        changed = result_differences(trained, want)
        if changed:
            return (f"cannot resume {run_dir}: {', '.join(changed)} differ from the config its checkpoint was "
                    f"trained with ({_changes(trained, want, changed)}); was {config_name} edited? Put the values "
                    "back, or choose another --out for the new config")
    then, now = recorded.get("code_version") or {}, code_version()
    if then and then != now:
        log.warning("%s was trained so far by cbamlab %s (commit %s) and continues under %s (commit %s)", run_dir,
                    then.get("cbamlab"), then.get("git"), now["cbamlab"], now["git"])
    return None
