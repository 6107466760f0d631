"""`cbamlab tune`: search hyperparameters with Optuna, then retrain the best on train + val and test it.

The article's loop (train, evaluate, tune, train again until the model meets the requirement), run durably:
the study lives in a database (SQLite file, journal file or any SQLAlchemy URL), so running the same command
again continues it; trials are trained by `engine.fit` on a validation split carved from train, pruned from
their per-epoch validation accuracy, and never load the test set. The best configuration is then retrained
with `n_seeds` seeds on train + val and evaluated on test, and everything lands in `STUDY_DIR/tune.json`,
which `cbamlab.report.tune_report` turns into the report.

Layout: `OUT/tune.db` (or `tune.journal`), `OUT/<study>/trials/<number>/` (one run directory per trial),
`OUT/<study>/final/trial<best>/seed<k>/` (retraining runs), `OUT/<study>/tune.json`.

Modules: `space` (tune.space: parse, check, sample), `settings` (the rest of the tune: section), `storage`
(where a study lives, dead workers), `worker` (the trial loop, in-process or spawned), `run` (prepare, search,
retrain, the record).
"""
from .run import DEFAULT_BASE, DEFAULT_STUDY, DEFAULT_TUNE, final_config, mean_std, prepare, retrain, run_tune, trial_record
from .settings import DEFAULT_SPACE, TuneSettings, check_target, parse_tune_section, val_fraction_of
from .space import SearchSpace, parse_space
from .storage import StorageError, StorageSpec, open_storage, open_study, resolve_storage
from .worker import TrialContext, WorkerJob, run_worker, train_objective

__all__ = ["prepare", "run_tune", "final_config", "retrain", "mean_std", "trial_record",
           "DEFAULT_BASE", "DEFAULT_STUDY", "DEFAULT_TUNE", "DEFAULT_SPACE", "TuneSettings", "check_target",
           "parse_tune_section", "val_fraction_of", "SearchSpace", "parse_space", "StorageError", "StorageSpec", "open_storage",
           "open_study", "resolve_storage", "TrialContext", "WorkerJob", "run_worker", "train_objective"]
