"""The `tune:` section of a YAML: objective, search space, sampler, pruner, budget, retraining.

```yaml
tune:
  space: {optim.lr: {low: 1.0e-3, high: 0.3, log: true}}
  metric: val_top1            # val_top1 | val_top5 (maximised) | val_loss (minimised)
  pruner: {name: median, n_startup_trials: 2, n_warmup_steps: 1}   # or hyperband | percentile | none
  sampler: {name: tpe, n_startup_trials: 4}                        # or random
  trials: 20                  # default of --trials: trials in the study in all
  timeout: null               # default of --timeout, seconds of search per invocation
  target_accuracy: null       # default of --target-accuracy: stop once a trial reaches it
  n_seeds: 3                  # default of --seeds: retraining runs of the best configuration
  study: null                 # default of --study
  val_fraction: 0.1           # used when the base config has data.val_fraction 0
```
"""
from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field
from typing import Any, Callable

import optuna

from ...errors import ConfigError, suggest, unknown
from .space import SearchSpace, parse_space

METRICS = {"val_top1": "maximize", "val_top5": "maximize", "val_loss": "minimize"}
DEFAULT_SPACE = {
    "optim.lr": {"low": 0.01, "high": 0.5, "log": True},
    "optim.weight_decay": {"low": 1e-5, "high": 1e-2, "log": True},
}
TUNE_KEYS = {"space", "metric", "direction", "pruner", "sampler", "trials", "timeout", "target_accuracy",
             "n_seeds", "study", "val_fraction"}  # the keys of the tune: section


def _median(max_resource, n_startup_trials=2, n_warmup_steps=1, interval_steps=1, n_min_trials=1):
    return optuna.pruners.MedianPruner(n_startup_trials, n_warmup_steps, interval_steps, n_min_trials=n_min_trials)


def _percentile(max_resource, percentile=25.0, n_startup_trials=2, n_warmup_steps=1, interval_steps=1):
    return optuna.pruners.PercentilePruner(percentile, n_startup_trials, n_warmup_steps, interval_steps)


def _hyperband(max_resource, min_resource=1, reduction_factor=3):
    return optuna.pruners.HyperbandPruner(min_resource=min_resource, max_resource=max_resource,
                                          reduction_factor=reduction_factor)


def _nop(max_resource):
    return optuna.pruners.NopPruner()


def _tpe(seed, n_startup_trials=5, n_ei_candidates=24, multivariate=False):
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=n_startup_trials,
                                      n_ei_candidates=n_ei_candidates, multivariate=multivariate,
                                      constant_liar=True)


def _random(seed):
    return optuna.samplers.RandomSampler(seed=seed)


# max_resource is the number of epochs a trial may run (the pruner's steps are epochs)
PRUNERS: dict[str, Callable] = {"median": _median, "percentile": _percentile, "hyperband": _hyperband,
                                "none": _nop}
SAMPLERS: dict[str, Callable] = {"tpe": _tpe, "random": _random}


def _named(section: str, spec, table: dict[str, Callable], default: str) -> dict:
    """`name` or {name: .., option: ..} -> {name, options}, options checked against the builder's signature."""
    if spec is None:
        spec = default
    if isinstance(spec, str):
        spec = {"name": spec}
    if not isinstance(spec, dict):
        raise ConfigError(f"tune.{section}: expected a name or a mapping with 'name', got {spec!r}")
    spec = dict(spec)
    name = str(spec.pop("name", default))
    if name not in table:
        raise ConfigError(str(unknown(f"tune.{section}", name, table)))
    params = dict(list(inspect.signature(table[name]).parameters.items())[1:])
    for k, v in spec.items():
        if k not in params:
            raise ConfigError(f"tune.{section}: unknown option '{k}' for {name}{suggest(k, params)}; "
                              f"known: {', '.join(params) or 'none'}")
        spec[k] = _option(f"tune.{section}.{k}", v, params[k].default)
    return {"name": name, **spec}


_MIN = {"reduction_factor": 2, "min_resource": 1, "interval_steps": 1, "n_min_trials": 1, "n_ei_candidates": 1}


def _option(key: str, value, default):
    """An option value of the default's type (bool, int, or number), not below the option's minimum."""
    name = key.rsplit(".", 1)[1]
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    integer = isinstance(default, int)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and value != int(value)):
        raise ConfigError(f"{key}: expected {'an integer' if integer else 'a number'}, got {value!r}")
    low = _MIN.get(name, 0)
    if value < low:
        raise ConfigError(f"{key}: must be >= {low}, got {value}")
    return int(value) if integer else float(value)


def build(section: str, spec: dict, table: dict[str, Callable], first_arg) -> Any:
    options = {k: v for k, v in spec.items() if k != "name"}
    try:
        return table[spec["name"]](first_arg, **options)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"tune.{section}: {spec['name']}: {' '.join(str(e).split())}") from None


@dataclass
class TuneSettings:
    space: SearchSpace
    metric: str = "val_top1"
    pruner: dict = field(default_factory=lambda: {"name": "median"})
    sampler: dict = field(default_factory=lambda: {"name": "tpe"})
    trials: int = 20
    timeout: float | None = None
    target_accuracy: float | None = None
    n_seeds: int = 3
    study: str | None = None

    @property
    def direction(self) -> str:
        return METRICS[self.metric]


def _positive_int(key: str, value, allow_zero=False) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < (0 if allow_zero else 1):
        raise ConfigError(f"tune.{key}: expected an integer >= {0 if allow_zero else 1}, got {value!r}")
    return value


def check_target(value, where="tune.target_accuracy") -> float | None:
    if value is None:
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: expected a fraction in (0, 1], got {value!r}") from None
    if not (0 < value <= 1):
        raise ConfigError(f"{where}: expected a fraction in (0, 1] (top-1 accuracy, e.g. 0.95), got {value}")
    return value


def val_fraction_of(section: dict) -> float:
    """`tune.val_fraction`: the validation split carved from train when the base config has none."""
    value = section.get("val_fraction", 0.1)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
        raise ConfigError(f"tune.val_fraction: expected a fraction in (0, 1), got {value!r}")
    return float(value)


def parse_tune_section(section: dict | None, base: dict, validate=None) -> TuneSettings:
    """Check the `tune:` mapping against the resolved base config dict (the search config: val split on)."""
    section = dict(section or {})
    for k in section:
        if k not in TUNE_KEYS:
            raise ConfigError(f"unknown key 'tune.{k}'{suggest(k, TUNE_KEYS)}; known: {', '.join(sorted(TUNE_KEYS))}")
    metric = section.get("metric", "val_top1")
    if metric not in METRICS:
        raise ConfigError(str(unknown("tune.metric", metric, METRICS)))
    direction = section.get("direction")
    if direction is not None and direction != METRICS[metric]:
        raise ConfigError(f"tune.direction: {metric} is {METRICS[metric]}d, not {direction}d")
    space_spec = section.get("space", DEFAULT_SPACE)
    space = parse_space(space_spec, base, validate)
    timeout = section.get("timeout")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
                                or not math.isfinite(timeout) or timeout <= 0):
        raise ConfigError(f"tune.timeout: expected seconds > 0, got {timeout!r}")
    val_fraction_of(section)
    study = section.get("study")
    settings = TuneSettings(
        space=space, metric=metric,
        pruner=_named("pruner", section.get("pruner"), PRUNERS, "median"),
        sampler=_named("sampler", section.get("sampler"), SAMPLERS, "tpe"),
        trials=_positive_int("trials", section.get("trials", 20)),
        timeout=None if timeout is None else float(timeout),
        target_accuracy=check_target(section.get("target_accuracy")),
        n_seeds=_positive_int("n_seeds", section.get("n_seeds", 3), allow_zero=True),
        study=None if study is None else str(study))
    if settings.target_accuracy is not None and settings.direction != "maximize":
        raise ConfigError(f"tune.target_accuracy: needs an accuracy objective, not {metric}")
    build("pruner", settings.pruner, PRUNERS, max_epochs(settings.space, base))  # bad options fail here
    build("sampler", settings.sampler, SAMPLERS, 0)
    return settings


def max_epochs(space: SearchSpace, base: dict) -> int:
    """The most epochs a trial can run: the pruner's max resource (the top of train.epochs when it is searched)."""
    dist = space.dists.get("train.epochs")
    if dist is None:
        return int(base["train"]["epochs"])
    values = dist.choices if hasattr(dist, "choices") else [dist.high]
    return int(max(values))
