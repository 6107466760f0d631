"""`cbamlab tune`: hyperparameter search with Optuna, then retrain the best and test it, then the report."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

import optuna

from ..config import read_yaml
from ..experiments import tune
from ..experiments.tune.settings import check_target
from ..report.tune_report import write_tune_report

DESCRIPTION = """Search hyperparameters with Optuna on a validation split carved from train (the test set is
never read), prune weak trials from their per-epoch accuracy, then retrain the best configuration on
train + val with several seeds, test it, and write OUT/<study>/report.md. The search space is the YAML's
`tune.space`; without --config the quick digits preset is tuned over optim.lr and optim.weight_decay.
The study lives in OUT/tune.db (SQLite) by default, OUT/tune.journal with --workers K, or any SQLAlchemy URL
(--storage postgresql+psycopg2://user@host/db for several machines). Running the same command again
continues the study: --trials N means N trials in the study in all."""


def _positive(kind):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value

    return parse


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def register(subparsers) -> None:
    p = subparsers.add_parser("tune", help="hyperparameter search with Optuna, retrain the best, test, report",
                              description=DESCRIPTION, epilog="docs: docs/tune.md")
    p.add_argument("--config", "-c", metavar="FILE", help="YAML preset with a tune: section (see configs/tune_*.yaml)")
    p.add_argument("--set", "-s", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one fixed config value, e.g. train.epochs=10, or a key of the tune "
                        "section, e.g. tune.metric=val_loss (repeatable)")
    p.add_argument("--trials", "-n", type=_positive(int), metavar="N",
                   help="trials in the study in all, counting earlier runs (default: tune.trials, else 20)")
    p.add_argument("--timeout", type=_positive(float), metavar="S", help="stop starting trials after S seconds")
    p.add_argument("--storage", metavar="URL",
                   help="SQLAlchemy URL or a .db / .journal file (default: OUT/tune.db, OUT/tune.journal "
                        "with --workers > 1)")
    p.add_argument("--study", metavar="NAME", help="study name (default: tune.study, else the config's name)")
    p.add_argument("--workers", "-j", type=_positive(int), default=1, metavar="K",
                   help="local worker processes sharing the study (default 1)")
    p.add_argument("--target-accuracy", type=float, metavar="A",
                   help="stop the search once a trial reaches validation top-1 A (a fraction, e.g. 0.97)")
    p.add_argument("--seeds", type=_non_negative, metavar="N",
                   help="retrain the best configuration with N seeds (default: tune.n_seeds, else 3; "
                        "0: search only)")
    p.add_argument("--out", "-o", metavar="DIR", default="runs/tune", help="output folder (default runs/tune)")
    p.add_argument("-q", "--quiet", action="store_true", help="only warnings and the final lines")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.set_defaults(func=run)


def run(args) -> int:
    optuna.logging.set_verbosity(logging.ERROR)  # cbamlab logs each trial in one line, failures included
    raw = read_yaml(args.config) if args.config else None
    overrides = list(args.overrides) + (["train.progress=false"] if args.quiet else [])
    base, settings = tune.prepare(raw, overrides)
    target = check_target(args.target_accuracy, "--target-accuracy")
    study = args.study or settings.study or (Path(args.config).stem if args.config else tune.DEFAULT_STUDY)
    record = tune.run_tune(base, settings, args.out, study_name=study, trials=args.trials, timeout=args.timeout,
                           storage=args.storage, workers=args.workers, target=target, n_seeds=args.seeds)
    report = write_tune_report(Path(args.out) / record["study"], record)

    counts = ", ".join(f"{v} {k.lower()}" for k, v in record["counts"].items() if v)
    print(f"study {record['study']}: {counts} ({record['trials_requested']} asked) in {record['storage']}")
    if record["target"] is not None:
        print(f"target {record['metric']} {record['target']:.4g}: "
              f"{'reached' if record['target_reached'] else 'not reached'}")
    best = record["best"]
    values = "  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                       for k, v in best["config_values"].items())
    print(f"best trial {best['number']}: {record['metric']} {best['value']:.4f}  {values}")
    final = record["final"]
    if final:
        t = final["test_top1"]
        print(f"test top-1 of the best configuration retrained on train+val: {100 * t['mean']:.2f} ± "
              f"{100 * t['std']:.2f} % (mean ± std, n={t['n']} seeds)")
    print(f"report: {report}")
    return 0
