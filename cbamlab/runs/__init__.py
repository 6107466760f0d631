"""Run directories, the one home of their format: what a run directory holds and how each file is written and
read, the training state a run continues from, whether a folder may be used (`prepare`), the claim that keeps
two processes from writing one run, what a run records of where its result comes from, and the records a
study keeps beside its runs (compare.json, tune.json). Everything that writes or reads these files (fit,
compare, tune, eval, predict, explain, the report, the tests) goes through this package.

    rundir.py      the layout (file names) and the writers and readers of config.yaml, metrics.csv, summary.json,
                   env.json; `Run`, `read_run`, `find_runs`
    state.py       checkpoints/last.state.pt as a typed `TrainState`; `save_checkpoint`, `repair`, the RNGs
    weights.py     the safetensors weights files; `check_state_fits`
    prepare.py     `prepare(run_dir, cfg, resume) -> Prepared` (FRESH, RESUME or COMPLETE)
    claim.py       `claim_run_dir`: an OS lock beside the run directory
    process.py     which process a record names and whether it still runs
    provenance.py  the config and code a state file records, and the resume check against them
    studies.py     compare.json and tune.json

Its layer sits on models, data and the config, under the engine: nothing here imports the engine's training,
experiments, explain, report or the CLI.
"""
from .claim import Claim, RunDirInUse, claim_path, claim_run_dir, holder
from .prepare import Prepared, prepare
from .process import process_alive, process_tag
from .provenance import code_version, read_record, record, resume_refusal
from .rundir import (BEST_WEIGHTS, CHECKPOINTS, CONFIG, ENV, LAST_STATE, LAST_WEIGHTS, METRIC_COLUMNS, METRICS,
                     SUMMARY, Run, RunDirError, find_runs, is_complete, load_run_config, read_config, read_env,
                     read_metrics, read_resolved, read_run, read_summary, remove_debris, resolved_from_env,
                     weights_path, write_config, write_env, write_metrics, write_summary)
from .state import Best, TrainState, load_state, repair, rng_state, save_checkpoint, set_rng_state, write_state
from .studies import COMPARE_RECORD, TUNE_RECORD, check_study, read_tune_record, study_grid, write_tune_record
from .weights import check_state_fits, load_into, load_weights, plain_state, save_weights

__all__ = [
    "CONFIG", "METRICS", "SUMMARY", "ENV", "CHECKPOINTS", "LAST_WEIGHTS", "LAST_STATE", "BEST_WEIGHTS",
    "METRIC_COLUMNS", "COMPARE_RECORD", "TUNE_RECORD", "RunDirError", "RunDirInUse",
    "write_config", "write_metrics", "write_summary", "write_env", "weights_path",
    "read_config", "load_run_config", "read_summary", "read_metrics", "read_env", "read_resolved",
    "resolved_from_env", "is_complete", "Run", "read_run", "find_runs", "remove_debris",
    "TrainState", "Best", "write_state", "load_state", "save_checkpoint", "repair", "rng_state", "set_rng_state",
    "plain_state", "save_weights", "load_weights", "check_state_fits", "load_into",
    "Prepared", "prepare", "Claim", "claim_run_dir", "claim_path", "holder", "process_tag", "process_alive",
    "code_version", "record", "read_record", "resume_refusal",
    "check_study", "study_grid", "write_tune_record", "read_tune_record",
]
