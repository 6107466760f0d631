"""One tuning worker: run trials of a shared study until the study holds enough, time is up or the target is met.

The same loop runs in-process (`--workers 1`), in each of K workers of `experiments/pool.py` (`--workers K`,
through `run_spawned`), and on any number of machines pointed at one database. Before each trial it fails the
trials of dead workers and counts the study's COMPLETE + PRUNED + RUNNING trials, so the study ends with the
number asked for however many workers share it; each local worker also has a quota so K local workers never
overshoot.
"""
from __future__ import annotations

import logging
import math
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import optuna
from optuna.trial import TrialState

from ...engine import DivergedError, fit
from ...config import config_from_dict
from ...errors import CbamlabError, ConfigError
from ...runs import process_tag
from .settings import PRUNERS, SAMPLERS, TuneSettings, build, max_epochs
from .storage import WORKER_ATTR, StorageSpec, count_trials, fail_dead_trials, open_storage

log = logging.getLogger(__name__)


@dataclass
class TrialContext:
    """What an objective gets besides the optuna trial: the trial's full config and where to write its run."""

    config: dict
    params: dict
    run_dir: Path
    metric: str


def train_objective(trial: optuna.Trial, ctx: TrialContext) -> float:
    """Train the trial's config with `fit`, reporting `ctx.metric` after each epoch so the pruner can stop it."""
    cfg = config_from_dict(ctx.config)

    def on_epoch(epoch: int, row: dict) -> None:
        value = row.get(ctx.metric)
        if value is None or not math.isfinite(value):
            return
        trial.report(float(value), step=int(epoch))
        if epoch < cfg.train.epochs and trial.should_prune():  # a finished run is a result, not a stop
            raise optuna.TrialPruned(f"epoch {epoch}: {ctx.metric} {value:.4f}")

    try:
        summary = fit(cfg, ctx.run_dir, on_epoch=on_epoch)
    except DivergedError as e:  # a too-large lr: a result worth learning from, not a broken trial
        trial.set_user_attr("diverged", str(e))
        raise optuna.TrialPruned(f"diverged: {e}") from None
    return float(summary["final"][ctx.metric])


@dataclass
class WorkerJob:
    """Everything a worker needs; picklable so it crosses into a spawned process."""

    storage: StorageSpec
    study_name: str
    settings: TuneSettings
    base: dict                 # the search config (validation split on, test never loaded)
    study_dir: Path
    trials: int                # trials in the study in all
    quota: int                 # the most trials this worker runs
    deadline: float | None = None
    target: float | None = None
    worker_index: int = 0
    threads: int = 0           # train.threads for this worker's runs (0: leave the config's)
    objective: Callable[[optuna.Trial, TrialContext], float] = train_objective


def target_reached(study: optuna.Study, target: float | None) -> bool:
    if target is None:
        return False
    done = [t.value for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    if not done:
        return False
    best = max(done) if study.direction == optuna.study.StudyDirection.MAXIMIZE else min(done)
    return best >= target


def _sampler_seed(job: WorkerJob, n_existing: int) -> int:
    """Distinct per worker and per restart (a restarted seeded sampler would redraw the same first points)."""
    seed = int(job.base.get("seed", 0))
    return (seed * 1_000_003 + job.worker_index * 7_919 + n_existing) % 2**31


def _make_objective(job: WorkerJob) -> Callable[[optuna.Trial], float]:
    space = job.settings.space

    def objective(trial: optuna.Trial) -> float:
        trial.set_user_attr(WORKER_ATTR, process_tag())
        params = space.suggest(trial)
        config = space.apply(job.base, params)
        if job.threads and not config["train"].get("threads"):
            config["train"]["threads"] = job.threads
        run_dir = job.study_dir / "trials" / f"{trial.number:04d}"
        if run_dir.exists():  # a trial number reused after the storage was replaced: the old run is stale
            log.warning("removing stale run directory %s", run_dir)
            shutil.rmtree(run_dir)
        trial.set_user_attr("run_dir", str(run_dir.relative_to(job.study_dir)))
        log.info("trial %d: %s", trial.number, ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                                         for k, v in space.decode(params).items()))
        return job.objective(trial, TrialContext(config, space.decode(params), run_dir, job.settings.metric))

    return objective


def _log_result(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    if trial.state == TrialState.COMPLETE:
        best = study.best_trial
        log.info("trial %d finished: %.4f (best %.4f, trial %d)", trial.number, trial.value, best.value, best.number)
    elif trial.state == TrialState.PRUNED:
        log.info("trial %d pruned after epoch %s", trial.number, trial.last_step)
    elif trial.state == TrialState.FAIL:
        log.warning("trial %d failed (its objective was not a number)", trial.number)


def run_worker(job: WorkerJob, storage=None) -> int:
    """Run trials until the study is full, the deadline passes, the target is met or the quota is used.
    Returns the number of trials this worker ran. A `CbamlabError` other than a bad trial config stops it.
    `storage`: an already opened storage for `job.storage` (in-process), else it is opened here."""
    storage = storage if storage is not None else open_storage(job.storage)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        probe = optuna.load_study(study_name=job.study_name, storage=storage)
        n_existing = len(probe.trials)
        sampler = build("sampler", job.settings.sampler, SAMPLERS, _sampler_seed(job, n_existing))
        pruner = build("pruner", job.settings.pruner, PRUNERS, max_epochs(job.settings.space, job.base))
        study = optuna.load_study(study_name=job.study_name, storage=storage, sampler=sampler, pruner=pruner)
    objective = _make_objective(job)
    ran = 0
    while ran < job.quota:
        fail_dead_trials(study)
        if target_reached(study, job.target):
            log.info("target %.4f reached: stopping", job.target)
            break
        if count_trials(study) >= job.trials:
            break
        if job.deadline is not None and time.time() >= job.deadline:
            log.info("time is up: stopping")
            break
        ran += 1
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                study.optimize(objective, n_trials=1, callbacks=[_log_result])
        except KeyboardInterrupt:
            log.warning("interrupted: the running trial is marked failed; run the same command to continue")
            raise
        except ConfigError as e:  # this trial's combination of values is invalid; others may be fine
            log.warning("trial failed: %s", e)
        except CbamlabError:
            raise
        except Exception as e:  # noqa: BLE001 - the trial is marked FAIL by optuna; the study goes on
            log.warning("trial failed: %s: %s", type(e).__name__, " ".join(str(e).split())[:300])
    return ran


def run_spawned(job: WorkerJob) -> int:
    """`run_worker` in a worker process of `experiments/pool.py`, which opens its own storage; optuna's own
    per-trial lines are left out there (`_log_result` writes one line per trial)."""
    logging.getLogger("optuna").setLevel(logging.ERROR)
    return run_worker(job)
