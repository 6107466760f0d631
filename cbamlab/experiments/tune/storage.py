"""Where a study lives, and keeping it honest: storages, opening a study, failing trials whose worker died.

Storage choices (`--storage`):
- nothing: `OUT/tune.db`, a SQLite file; with `--workers K > 1`, `OUT/tune.journal`, an optuna journal file
  (many local processes append to it under a file lock, which SQLite handles poorly);
- a SQLAlchemy URL (`sqlite:///path.db`, `postgresql+psycopg2://user@host/db`, ...): for many machines;
- a file path: `*.journal` / `*.log` is a journal file, anything else a SQLite file.

A trial whose process was killed stays RUNNING in the storage unless someone fails it. Two mechanisms do:
SQL storages record a heartbeat every `HEARTBEAT_S` seconds and optuna fails trials silent for `GRACE_S`;
and every trial records its worker (`runs.process_tag`: host, pid, process start time), so a worker on the
same host fails at once any RUNNING trial whose process no longer exists (`runs.process_alive`; this also covers
journal files, which have no heartbeat).
"""
from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.storages.journal import JournalFileBackend, JournalStorage
from optuna.trial import TrialState
from sqlalchemy.engine import make_url

from ...config import result_differences
from ...errors import CbamlabError
from ...runs import process_alive

log = logging.getLogger(__name__)

HEARTBEAT_S = 20
GRACE_S = 60
UNTAGGED_GRACE_S = 120  # a RUNNING trial that never recorded its worker is presumed dead after this
JOURNAL_SUFFIXES = (".journal", ".log", ".jsonl")
SPACE_ATTR = "cbamlab_space"
METRIC_ATTR = "cbamlab_metric"
CONFIG_ATTR = "cbamlab_base_config"
WORKER_ATTR = "cbamlab_worker"


class StorageError(CbamlabError):
    """A storage that cannot be opened or a study that cannot be used as asked."""


@dataclass(frozen=True)
class StorageSpec:
    """`kind` is "rdb" (SQLAlchemy `url`) or "journal" (`url` is a file path). Picklable, for worker processes."""

    kind: str
    url: str

    def display(self) -> str:
        """The location with any password hidden, for logs, errors and reports."""
        if self.kind == "journal":
            return f"journal file {self.url}"
        try:
            return make_url(self.url).render_as_string(hide_password=True)
        except Exception:  # an unparsable URL: show the scheme only
            return self.url.split("://", 1)[0] + "://..."


def resolve_storage(storage: str | None, out_dir: str | Path, workers: int = 1) -> StorageSpec:
    """The storage for `--storage` (None: a file in `out_dir`, journal when several local workers share it)."""
    out_dir = Path(out_dir)
    if not storage:
        if workers > 1:
            return StorageSpec("journal", str((out_dir / "tune.journal").resolve()))
        return StorageSpec("rdb", f"sqlite:///{(out_dir / 'tune.db').resolve()}")
    storage = str(storage)
    if "://" in storage:
        return StorageSpec("rdb", storage)
    path = Path(storage).expanduser().resolve()
    if path.suffix in JOURNAL_SUFFIXES:
        return StorageSpec("journal", str(path))
    return StorageSpec("rdb", f"sqlite:///{path}")


def _first_line(e: BaseException) -> str:
    inner = getattr(e, "orig", None) or e.__cause__ or e
    text = str(inner).strip() or type(inner).__name__
    return text.splitlines()[0].strip()


def open_storage(spec: StorageSpec, heartbeat: bool = True) -> optuna.storages.BaseStorage:
    """An optuna storage for `spec`, connected and checked; any failure is one `StorageError` line."""
    if spec.kind == "journal":
        path = Path(spec.url)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            return JournalStorage(JournalFileBackend(str(path)))
        except Exception as e:
            raise StorageError(f"cannot open storage {spec.display()}: {_first_line(e)}") from None
    kwargs: dict = {}
    if spec.url.startswith("sqlite:///"):
        kwargs = {"connect_args": {"timeout": 60}}  # several processes may wait on the file lock
    elif spec.url.startswith("postgresql"):
        kwargs = {"connect_args": {"connect_timeout": 10}, "pool_pre_ping": True}
    try:
        if spec.url.startswith("sqlite:///"):
            Path(spec.url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(
                spec.url, engine_kwargs=kwargs,
                heartbeat_interval=HEARTBEAT_S if heartbeat else None,
                grace_period=GRACE_S if heartbeat else None)
    except Exception as e:  # sqlalchemy errors, a missing driver, a malformed URL
        raise StorageError(f"cannot open storage {spec.display()}: {_first_line(e)}") from None


def _space_diff(old: dict, new: dict) -> str:
    keys = sorted(set(old) | set(new))
    for k in keys:
        if k not in old:
            return f"'{k}' is new"
        if k not in new:
            return f"'{k}' is missing"
        if old[k] != new[k]:
            return f"'{k}' differs"
    return "the spaces differ"


def open_study(storage, study_name: str, *, direction: str, space: dict, metric: str, base_config: dict,
               sampler=None, pruner=None) -> tuple[optuna.Study, bool]:
    """Create the study, or load it when it exists; returns (study, created).

    The search space (`SearchSpace.canonical()`) and the metric are stored in the study's user attributes.
    An existing study with another space, metric or direction is refused before anything is written to it.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        try:  # look first: a failed create would already append to a journal file
            study = optuna.load_study(study_name=study_name, storage=storage, sampler=sampler, pruner=pruner)
            created = False
        except KeyError:
            try:
                study = optuna.create_study(storage=storage, study_name=study_name, direction=direction,
                                            sampler=sampler, pruner=pruner)
                created = True
            except optuna.exceptions.DuplicatedStudyError:  # another process created it just now
                study = optuna.load_study(study_name=study_name, storage=storage, sampler=sampler, pruner=pruner)
                created = False
    if not created:
        attrs = study.user_attrs
        if SPACE_ATTR not in attrs and study.trials:
            raise StorageError(f"study '{study_name}' exists and was not made by cbamlab tune (no search space "
                               "recorded); choose another --study name")
        if SPACE_ATTR in attrs and attrs[SPACE_ATTR] != space:
            raise StorageError(f"study '{study_name}' exists with a different search space "
                               f"({_space_diff(attrs[SPACE_ATTR], space)}); use the same space or another "
                               "--study name")
        if attrs.get(METRIC_ATTR, metric) != metric:
            raise StorageError(f"study '{study_name}' exists with objective {attrs[METRIC_ATTR]}, not {metric}; "
                               "choose another --study name")
        if study.direction.name.lower() != direction:
            raise StorageError(f"study '{study_name}' exists with direction {study.direction.name.lower()}, "
                               f"not {direction}; choose another --study name")
        if SPACE_ATTR in attrs:
            old = attrs.get(CONFIG_ATTR)
            changed = result_differences(old, base_config) if old is not None else []
            if changed:
                log.warning("study '%s': the base config differs from the one it was started with (%s); trials "
                            "before and after the change are compared as if equal", study_name, ", ".join(changed))
            return study, False
    study.set_user_attr(SPACE_ATTR, space)
    study.set_user_attr(METRIC_ATTR, metric)
    study.set_user_attr(CONFIG_ATTR, base_config)
    return study, created


def fail_dead_trials(study: optuna.Study) -> list[int]:
    """Mark FAIL every RUNNING trial whose worker is known to be gone; returns their numbers.

    Known gone: its worker ran on this host and that process no longer exists, or it never recorded a worker
    and started more than `UNTAGGED_GRACE_S` ago. SQL storages also fail trials whose heartbeat stopped.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    failed = []
    now = time.time()
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        tag = t.user_attrs.get(WORKER_ATTR)
        if tag is not None:
            dead = process_alive(tag) is False
        else:
            started = t.datetime_start.timestamp() if t.datetime_start else now
            dead = now - started > UNTAGGED_GRACE_S
        if not dead:
            continue
        try:
            if study._storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL):
                failed.append(t.number)
        except optuna.exceptions.UpdateFinishedTrialError:
            pass  # another worker finished or failed it first
    if failed:
        log.warning("marked failed: trial(s) %s, whose worker process is gone", ", ".join(map(str, failed)))
    return failed


def count_trials(study: optuna.Study, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)) -> int:
    return len(study.get_trials(deepcopy=False, states=states))
