"""The search and the retraining: `prepare` a tune config, `run_tune` it into OUT (see the package docstring)."""
from __future__ import annotations

import copy
import json
import logging
import statistics
import time
from pathlib import Path

import optuna
from optuna.distributions import distribution_to_json
from optuna.trial import TrialState

from ...config import config_from_dict, config_to_dict, load_config, result_part, section_overrides, split_sections
from ...engine import fit
from ...errors import CbamlabError
from ...runs import is_complete, read_summary, write_tune_record
from .. import pool
from .settings import DEFAULT_SPACE, TUNE_KEYS, TuneSettings, parse_tune_section, val_fraction_of
from .storage import (StorageSpec, count_trials, fail_dead_trials, open_storage, open_study,
                           resolve_storage)
from . import worker
from .worker import WorkerJob, run_spawned, run_worker, target_reached

log = logging.getLogger(__name__)

DEFAULT_STUDY = "digits-quick"
DEFAULT_TUNE = {"study": DEFAULT_STUDY, "metric": "val_top1", "space": DEFAULT_SPACE,
                "sampler": {"name": "tpe", "n_startup_trials": 5},
                "pruner": {"name": "median", "n_startup_trials": 2, "n_warmup_steps": 1}, "trials": 6, "n_seeds": 3}
# the quick digits preset (= configs/tune_digits.yaml), short enough that a 6-trial study takes a few minutes on a laptop CPU
DEFAULT_BASE = {"model": {"name": "resnet20_cbam"}, "data": {"name": "digits", "val_fraction": 0.15},
                "train": {"epochs": 4, "batch_size": 64}, "optim": {"lr": 0.05}}


def prepare(raw: dict | None, overrides=()) -> tuple[dict, TuneSettings]:
    """A YAML mapping (with its `tune:` section) and `key=value` overrides (`tune.trials=30` sets the tune
    section, anything else the config) -> (search config dict, settings), all checked.

    The search config has a validation split (the tune section's `val_fraction` when the config has none)
    and `train.eval_test = False`, so no trial ever loads the test set.
    """
    if raw is None:
        raw = {**copy.deepcopy(DEFAULT_BASE), "tune": copy.deepcopy(DEFAULT_TUNE)}
    engine_part, extras = split_sections(raw)
    section = extras.get("tune") or {}
    if not isinstance(section, dict):
        raise CbamlabError(f"tune: expected a mapping, got {section!r}")
    sets, overrides = section_overrides(overrides, "tune", sorted(TUNE_KEYS))  # the one override parser
    section = {**section, **sets}
    base = config_to_dict(load_config(engine_part, overrides))
    val_fraction = val_fraction_of(section)
    if base["data"]["val_fraction"] <= 0:
        base["data"]["val_fraction"] = val_fraction
    base["train"]["eval_test"] = False
    base = config_to_dict(config_from_dict(base))
    return base, parse_tune_section(section, base, config_from_dict)


def final_config(base: dict, settings: TuneSettings, params: dict, seed: int) -> dict:
    """The best trial's config for retraining: train on train + val, evaluate on test, with `seed`."""
    cfg = settings.space.apply(base, params)
    cfg["data"]["val_fraction"] = 0.0
    cfg["train"]["eval_test"] = True
    cfg["seed"] = seed
    return cfg


def _search(job_args: dict, workers: int, remaining: int, storage) -> int:
    if workers <= 1:
        return run_worker(WorkerJob(**job_args, quota=remaining), storage)
    k = min(workers, remaining)
    quotas = [remaining // k + (1 if i < remaining % k else 0) for i in range(k)]
    threads = pool.threads_per_worker(k)
    log.info("starting %d worker processes (%s trials, %d threads each)", k, "+".join(map(str, quotas)), threads)
    jobs = [WorkerJob(**job_args, quota=q, worker_index=i, threads=threads) for i, q in enumerate(quotas)]
    return sum(pool.run(run_spawned, jobs, k, stop_on_error=False))  # each job runs to its end


def retrain(base: dict, settings: TuneSettings, best: optuna.trial.FrozenTrial, study_dir: Path,
            n_seeds: int) -> list[dict]:
    """Train the best trial's config with seeds base_seed + 0..n-1 on train + val; test each. Finished runs are
    reused and interrupted ones resumed, so this step too can be stopped and run again."""
    runs = []
    for k in range(n_seeds):
        seed = int(base["seed"]) + k
        cfg = config_from_dict(final_config(base, settings, best.params, seed))
        run_dir = study_dir / "final" / f"trial{best.number:04d}" / f"seed{seed}"
        if is_complete(run_dir):
            summary = read_summary(run_dir)
        else:
            log.info("retraining the best configuration (trial %d) on train + val, seed %d", best.number, seed)
            summary = fit(cfg, run_dir, resume=run_dir.is_dir() and any(run_dir.iterdir()))
        fin = summary["final"]
        runs.append({"seed": seed, "run_dir": str(run_dir.relative_to(study_dir)),
                     "test_top1": fin.get("test_top1"), "test_top5": fin.get("test_top5"),
                     "test_loss": fin.get("test_loss"), "epochs": summary["epochs"],
                     "wall_time_s": summary.get("wall_time_s"), "device": summary.get("device"),
                     "torch_version": summary.get("torch_version")})
    return runs


def mean_std(values: list[float]) -> dict:
    n = len(values)
    return {"n": n, "mean": statistics.fmean(values) if n else None,
            "std": statistics.stdev(values) if n > 1 else (0.0 if n == 1 else None)}


def trial_record(t: optuna.trial.FrozenTrial) -> dict:
    end = t.datetime_complete
    return {"number": t.number, "state": t.state.name, "value": t.value, "params": t.params,
            "distributions": {k: json.loads(distribution_to_json(d)) for k, d in t.distributions.items()},
            "intermediate": {str(k): v for k, v in sorted(t.intermediate_values.items())},
            "datetime_start": t.datetime_start.isoformat() if t.datetime_start else None,
            "datetime_complete": end.isoformat() if end else None,
            "duration_s": (end - t.datetime_start).total_seconds() if end and t.datetime_start else None,
            "run_dir": t.user_attrs.get("run_dir"), "diverged": t.user_attrs.get("diverged")}


def run_tune(base: dict, settings: TuneSettings, out_dir, *, study_name: str | None = None,
             trials: int | None = None, timeout: float | None = None, storage: str | None = None,
             workers: int = 1, target: float | None = None, n_seeds: int | None = None,
             objective=None) -> dict:
    """Search, then retrain and test the best; returns the record also written to `STUDY_DIR/tune.json`.

    `trials` is the number of trials in the study in all (finished or running, not failed): running the same
    call again after a stop continues to it. `timeout` bounds this call's search, `target` stops the search
    once a trial's objective reaches it. `n_seeds = 0` skips retraining (a worker on a second machine).
    `objective(trial, ctx)` trains one trial (default: `worker.train_objective`, real training with `fit`).
    """
    objective = objective if objective is not None else worker.train_objective
    out_dir = Path(out_dir)
    study_name = study_name or settings.study or DEFAULT_STUDY
    trials = trials if trials is not None else settings.trials
    timeout = timeout if timeout is not None else settings.timeout
    target = target if target is not None else settings.target_accuracy
    n_seeds = n_seeds if n_seeds is not None else settings.n_seeds
    if trials < 1 or workers < 1 or n_seeds < 0:
        raise CbamlabError("trials and workers must be >= 1 and seeds >= 0")
    if target is not None and settings.direction != "maximize":
        raise CbamlabError(f"--target-accuracy needs an accuracy objective, not {settings.metric}")
    if any(ch in study_name for ch in "/\\") or study_name in ("", ".", ".."):
        raise CbamlabError(f"study name {study_name!r} cannot be used as a folder name")
    spec = _default_storage(storage, out_dir, workers)
    opened = open_storage(spec)
    study, created = open_study(opened, study_name, direction=settings.direction,
                                space=settings.space.canonical(), metric=settings.metric,
                                base_config=result_part(base))
    study_dir = out_dir / study_name
    study_dir.mkdir(parents=True, exist_ok=True)
    fail_dead_trials(study)
    log.info("%s study '%s' in %s: %d of %d trials there", "created" if created else "continuing", study_name,
             spec.display(), count_trials(study), trials)

    t0 = time.time()
    remaining = trials - count_trials(study)
    reached = target_reached(study, target)
    ran = 0
    if remaining > 0 and not reached:
        job_args = dict(storage=spec, study_name=study_name, settings=settings, base=base, study_dir=study_dir,
                        trials=trials, deadline=None if timeout is None else t0 + timeout, target=target,
                        objective=objective)
        ran = _search(job_args, workers, remaining, opened)
    study = optuna.load_study(study_name=study_name, storage=opened)
    reached = target_reached(study, target)
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    record = {
        "study": study_name, "storage": spec.display(), "metric": settings.metric, "direction": settings.direction,
        "space": settings.space.canonical(), "space_description": settings.space.describe(),
        "sampler": settings.sampler, "pruner": settings.pruner, "trials_requested": trials,
        "trials_run_now": ran, "search_time_s": time.time() - t0, "target": target, "target_reached": reached,
        "counts": {s.name: len(study.get_trials(deepcopy=False, states=(s,))) for s in TrialState},
        "trials": [trial_record(t) for t in study.get_trials(deepcopy=False)],
        "base_config": base, "best": None, "final": None,
    }
    if done:
        best = study.best_trial
        record["best"] = {"number": best.number, "value": best.value, "params": best.params,
                          "config_values": settings.space.decode(best.params),
                          "run_dir": best.user_attrs.get("run_dir")}
    write_tune_record(study_dir, record)
    if not done:
        raise CbamlabError(f"no trial of study '{study_name}' has completed yet "
                           f"({', '.join(f'{k.lower()} {v}' for k, v in record['counts'].items() if v)}); "
                           "nothing to retrain")
    if n_seeds:
        runs = retrain(base, settings, study.best_trial, study_dir, n_seeds)
        record["final"] = {"trial": study.best_trial.number, "seeds": [r["seed"] for r in runs], "runs": runs,
                           "config": final_config(base, settings, study.best_trial.params, int(base["seed"])),
                           "test_top1": mean_std([r["test_top1"] for r in runs]),
                           "test_top5": mean_std([r["test_top5"] for r in runs if r["test_top5"] is not None])}
        write_tune_record(study_dir, record)
    return record


def _default_storage(storage: str | None, out_dir: Path, workers: int) -> StorageSpec:
    """Without --storage, keep using whichever default file the folder already has, so adding --workers to a
    command that ran before continues the same study rather than starting one in a new file."""
    if not storage:
        for name in ("tune.journal", "tune.db"):
            if (out_dir / name).is_file():
                return resolve_storage(str(out_dir / name), out_dir, workers)
    return resolve_storage(storage, out_dir, workers)
