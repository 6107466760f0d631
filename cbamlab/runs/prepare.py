"""Whether a run directory may be used, and how: the rules that keep an existing one safe (never overwrite a
finished or foreign run; resume only a run of the same result config, on a machine that resolves it alike)."""
from __future__ import annotations

import enum
import logging
from pathlib import Path

from .. import _io
from ..config import Config
from . import provenance
from .rundir import (CONFIG, LAST_STATE, LAST_WEIGHTS, METRICS, RunDirError, is_complete, load_run_config,
                     read_metrics, read_resolved, remove_debris)

log = logging.getLogger(__name__)


class Prepared(enum.Enum):
    """What `prepare` found in a run directory, and so what the run does there."""

    FRESH = "fresh"  # nothing to continue (a new or empty folder, a run killed in its first epoch): epoch 1
    RESUME = "resume"  # an unfinished run with a state file: load it and continue after its last epoch
    COMPLETE = "complete"  # a finished run: nothing to train, its summary.json stands


def _contents(run_dir: Path) -> list[str]:
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in run_dir.iterdir())
    return names if len(names) <= 6 else names[:6] + [f"... ({len(names)} in all)"]


def prepare(run_dir, cfg: Config, resume: bool, resolved: dict | None = None) -> Prepared:
    """Check `run_dir` may be used by this process, which holds its claim, and say how (`Prepared`).
    `resolved`: what this process resolved its per-machine keys to (`runtime.resolved`): a run that trained (or
    finished) with other values, as its env.json records them, is refused too.

    A new folder, or one holding only temp files a killed writer left, starts fresh. Anything else must be a
    cbamlab run (a config.yaml that reads back) and is used only with resume=True and a config that differs in
    nothing that changes a result from its config.yaml and from the config its state file recorded
    (`provenance`); a finished run is checked alike and never touched. A run whose state file is gone while
    its metrics record finished epochs cannot be continued exactly and is refused. Refused folders are left
    as they are; an accepted one loses its stale temp files.
    """
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise RunDirError(f"{run_dir} is a file, not a run directory")
    stale = set(_io.stale_temp_files(run_dir))
    if not run_dir.exists() or not [p for p in run_dir.iterdir() if p not in stale]:
        if resume:
            log.warning("%s holds no run yet: starting it from the beginning", run_dir)
        remove_debris(run_dir)
        return Prepared.FRESH
    todo = "nothing was changed: choose another --out, or remove the folder to start a new run there"
    try:
        on_disk = load_run_config(run_dir)
    except RunDirError as e:
        raise RunDirError(f"{str(e).rstrip('.')}; it holds {', '.join(_contents(run_dir))}; {todo}") from None
    complete = is_complete(run_dir)
    if not resume:
        if complete:
            raise RunDirError(f"{run_dir} holds a finished run; choose another --out (nothing was overwritten)")
        raise RunDirError(f"{run_dir} holds an unfinished run; pass --resume to continue it or choose another --out")
    state = run_dir / LAST_STATE
    has_state = state.is_file()
    recorded = provenance.read_record(state) if has_state else None
    trained = (read_resolved(run_dir), resolved) if resolved is not None and (has_state or complete) else None
    refusal = provenance.resume_refusal(run_dir, on_disk, cfg, recorded, CONFIG, trained)
    if refusal:
        raise RunDirError(refusal)
    if has_state and recorded is None:
        log.info("%s: its state file records no config (an older cbamlab wrote it): checked against %s only",
                 run_dir, CONFIG)
    if not complete and not has_state:
        epochs = len(read_metrics(run_dir))
        if epochs or (run_dir / LAST_WEIGHTS).is_file():
            done = f"{METRICS} records {epochs} finished epoch(s)" if epochs else f"{LAST_WEIGHTS} exists"
            raise RunDirError(f"{run_dir}: {done} but its state file {LAST_STATE} is gone, so the run cannot be "
                              f"continued exactly; {todo}")
    remove_debris(run_dir)
    if complete:
        return Prepared.COMPLETE
    return Prepared.RESUME if has_state else Prepared.FRESH
