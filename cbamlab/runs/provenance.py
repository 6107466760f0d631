"""What a run records of where its result comes from, and the check a resume makes against that record.

Every state file (checkpoints/last.state.pt, `state.TrainState`) records the resolved config the run trains,
the hash of that config's result part and the code version (`record`). A resume (`resume_refusal`, asked by
`prepare`) compares the config it is given (the run's config.yaml, or --config, with --set overrides) with both
the config.yaml on disk and that record, and refuses any difference in a key that changes a result
(`config.result_differences`, declared once on the config fields), naming the keys and both values: a
hand-edited config.yaml is caught as surely as an override. Keys that change no result (threads, progress bar,
data.root, ...) may differ. A run that has trained is also refused where this machine resolves a per-machine key
("auto" precision, layout, device) to another value than the run's env.json records.
"""
from __future__ import annotations

import functools
import logging
import subprocess
from pathlib import Path

from .. import __version__, _io
from ..config import (Config, config_to_dict, per_machine_keys, per_machine_note, result_differences,
                             result_hash, result_identity, with_defaults)
from ..errors import CheckpointError

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
    """The entries a state file records (`TrainState.config`, `config_hash`, `code_version`): the resolved config,
    its result hash and the code version."""
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


def _refusal(run_dir, changed: list[str], a: dict, b: dict, resolved, head: str, advice: str) -> str:
    """Why `run_dir` (config `a`) may not continue under config `b`: `head`, the values of the keys in `changed`
    (a per-machine key's as `per_machine_note` tells them, with how to pin it) and `advice`."""
    ra, rb = resolved if resolved is not None else (None, None)
    note = per_machine_note(changed, ra, rb)
    if not set(changed) - set(per_machine_keys()):  # the same config, resolved otherwise here: the note says why
        return f"cannot resume {run_dir} on this machine: {', '.join(changed)} resolve otherwise than it trained{note}"
    ia, ib = result_identity(a, ra), result_identity(b, rb)
    values = ", ".join(f"{k} {ia.get(k)!r} -> {ib.get(k)!r}" for k in changed if k not in per_machine_keys())
    return f"{head} ({values}{'; ' + note[2:] if note else ''}); {advice}"


def resume_refusal(run_dir, on_disk: Config, cfg: Config, recorded: dict | None, config_name: str,
                   resolved: tuple[dict, dict] | None = None) -> str | None:
    """Why `run_dir` may not continue under `cfg` (a result key differs from the run's config file `on_disk` or
    from the config its state file `recorded`, None when there is no record), or None when it may; finished runs
    are checked alike. `resolved`: (what the run resolved per machine, as its env.json records, what this process
    resolves) for a run that has trained, else None."""
    want, disk = config_to_dict(cfg), config_to_dict(on_disk)
    changed = result_differences(disk, want, resolved)
    if changed:
        return _refusal(run_dir, changed, disk, want, resolved,
                        f"cannot resume {run_dir} with another config: {', '.join(changed)} differ from its "
                        f"{config_name}", "resume without --config/--set to use the run's own, or choose another "
                        "--out for the new config")
    if recorded is None:
        return None
    if recorded.get("config_hash") != result_hash(cfg):
        trained = with_defaults(recorded["config"])
        changed = result_differences(trained, want, resolved)
        if changed:
            return _refusal(run_dir, changed, trained, want, resolved,
                            f"cannot resume {run_dir}: {', '.join(changed)} differ from the config its checkpoint "
                            "was trained with", f"was {config_name} edited? Put the values back, or choose another "
                            "--out for the new config")
    then, now = recorded.get("code_version") or {}, code_version()
    if then and then != now:
        log.warning("%s was trained so far by cbamlab %s (commit %s) and continues under %s (commit %s)", run_dir,
                    then.get("cbamlab"), then.get("git"), now["cbamlab"], now["git"])
    return None
