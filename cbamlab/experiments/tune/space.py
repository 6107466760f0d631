"""The search space of `cbamlab tune`: the `tune.space` section of a YAML, parsed, checked, sampled.

Each entry names a config key by its dotted path and says how to draw it::

    optim.lr:           {low: 1.0e-3, high: 0.3, log: true}     # float, log scale
    optim.momentum:     {low: 0.8, high: 0.99}                   # float, linear
    train.batch_size:   {type: int, low: 32, high: 256, step: 32}
    model.kernel_size:  {choices: [3, 5, 7]}                     # categorical
    schedule.milestones: {choices: [[20, 30], [25, 35]]}         # lists are fine as choices

`type` is inferred when left out (choices -> categorical, integer bounds -> int, else float). Every key must
exist in the base config, and every value the space can produce at its ends is run through the config's own
type checks before a single trial starts, so a typo or an impossible range fails at once with one line.
"""
from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass, field, fields
from typing import Any, Callable

from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
    distribution_to_json,
)

from ...data.augment import AugmentSpec
from ...errors import ConfigError, suggest

# Keys that define the objective itself: tuning them would compare trials on different yardsticks.
FORBIDDEN_KEYS = {
    "seed": "the seed is fixed across trials so they differ only in the searched values",
    "data.val_fraction": "it sets the validation split the objective is measured on",
    "train.eval_test": "the search never looks at the test set",
}
_FIELDS = {"type", "low", "high", "log", "step", "choices"}
_TYPES = ("float", "int", "categorical")
_PRIMITIVE = (type(None), bool, int, float, str)


@dataclass
class SearchSpace:
    """Dotted config keys -> optuna distributions. Non-primitive categorical choices (lists, mappings) are
    stored in optuna as their JSON text and decoded again by `apply`; `encoded` names those keys."""

    dists: dict[str, BaseDistribution]
    encoded: set[str] = field(default_factory=set)

    def suggest(self, trial) -> dict[str, Any]:
        """Draw one value per key from `trial` (an optuna Trial); returns the raw optuna params."""
        return {key: trial._suggest(key, dist) for key, dist in self.dists.items()}

    def decode(self, params: dict[str, Any]) -> dict[str, Any]:
        """Optuna params -> config values (JSON-encoded choices back to lists/mappings)."""
        return {k: (json.loads(v) if k in self.encoded else v) for k, v in params.items()}

    def apply(self, base: dict, params: dict[str, Any]) -> dict:
        """A deep copy of the config dict `base` with `params` (optuna form) set at their dotted keys."""
        out = copy.deepcopy(base)
        for key, value in self.decode(params).items():
            set_dotted(out, key, value)
        return out

    def canonical(self) -> dict[str, Any]:
        """A JSON-able form that two equal spaces share (stored in the study to detect a changed space)."""
        return {k: json.loads(distribution_to_json(self.dists[k])) for k in sorted(self.dists)}

    def describe(self) -> dict[str, str]:
        """key -> short human description, for logs and the report."""
        out = {}
        for key, d in self.dists.items():
            if isinstance(d, CategoricalDistribution):
                choices = [self.decode({key: c})[key] for c in d.choices]
                out[key] = "one of " + ", ".join(json.dumps(c) for c in choices)
            else:
                kind = "int" if isinstance(d, IntDistribution) else "float"
                scale = "log" if d.log else "linear"
                step = f", step {d.step:g}" if d.step is not None and (kind == "float" or d.step != 1) else ""
                out[key] = f"{kind} in [{d.low:g}, {d.high:g}], {scale}{step}"
        return out


def get_dotted(d: dict, key: str):
    node = d
    for part in key.split("."):
        node = node[part]
    return node


def has_dotted(d: dict, key: str) -> bool:
    node = d
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def set_dotted(d: dict, key: str, value) -> None:
    *parents, last = key.split(".")
    node = d
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value


def _open_mappings() -> dict[str, dict]:
    """Mapping-valued settings whose keys are not in the base config: dotted prefix -> {sub-key: default}."""
    return {"data.augment_overrides": {f.name: f.default for f in fields(AugmentSpec)}}


def _base_value(base: dict, key: str) -> tuple[bool, Any]:
    """(found, value) for a searchable leaf: a key of the base config, or a known key of an open mapping."""
    if has_dotted(base, key):
        value = get_dotted(base, key)
        return not (isinstance(value, dict) and value), value
    prefix, _, last = key.rpartition(".")
    open_keys = _open_mappings().get(prefix)
    if open_keys is not None and last in open_keys:
        return True, open_keys[last]
    return False, None


def _known_keys(d: dict, prefix: str = "") -> list[str]:
    keys = []
    for k, v in d.items():
        path = f"{prefix}{k}"
        keys.extend(_known_keys(v, path + ".") if isinstance(v, dict) and v else [path])
    return keys


def _number(where: str, name: str, value, integer: bool):
    """A bound from YAML as a number. PyYAML reads `1e-3` (no dot) as a string, so strings are parsed too."""
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise ConfigError(f"{where}: {name} must be a number, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{where}: {name} must be a finite number, got {value!r}")
    if integer:
        if float(value) != int(value):
            raise ConfigError(f"{where}: {name} must be an integer for an int range, got {value!r}")
        return int(value)
    return float(value)


def _parse_entry(key: str, spec, base_value) -> tuple[BaseDistribution, bool]:
    where = f"tune.space.{key}"
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: expected a mapping like {{low: .., high: .., log: true}} or "
                          f"{{choices: [..]}}, got {spec!r}")
    extra = set(spec) - _FIELDS
    if extra:
        bad = sorted(extra)[0]
        raise ConfigError(f"{where}: unknown field '{bad}'{suggest(bad, _FIELDS)}; known: "
                          f"{', '.join(sorted(_FIELDS))}")
    kind = spec.get("type")
    if kind is None:
        if "choices" in spec:
            kind = "categorical"
        elif isinstance(base_value, bool):
            kind = "categorical"
        elif (isinstance(base_value, int) or all(isinstance(spec.get(b), int) and not isinstance(spec.get(b), bool)
                                                 for b in ("low", "high"))):
            kind = "int"
        else:
            kind = "float"
    if kind not in _TYPES:
        raise ConfigError(f"{where}: unknown type '{kind}'{suggest(kind, _TYPES)}; known: {', '.join(_TYPES)}")

    if kind == "categorical":
        if set(spec) - {"type", "choices"}:
            raise ConfigError(f"{where}: a categorical takes only 'choices', not "
                              f"{', '.join(sorted(set(spec) - {'type', 'choices'}))}")
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise ConfigError(f"{where}: choices must be a non-empty list, got {choices!r}")
        texts = [json.dumps(c, sort_keys=True) for c in choices]
        if len(set(texts)) != len(texts):
            raise ConfigError(f"{where}: choices repeat a value: {choices!r}")
        if all(isinstance(c, _PRIMITIVE) for c in choices):
            return CategoricalDistribution(choices), False
        return CategoricalDistribution(texts), True

    if "choices" in spec:
        raise ConfigError(f"{where}: 'choices' belongs to a categorical, not to a {kind} range")
    for bound in ("low", "high"):
        if bound not in spec:
            raise ConfigError(f"{where}: a {kind} range needs '{bound}'")
    integer = kind == "int"
    low, high = (_number(where, b, spec[b], integer) for b in ("low", "high"))
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise ConfigError(f"{where}: log must be true or false, got {log!r}")
    step = spec.get("step")
    if step is not None:
        step = _number(where, "step", step, integer)
        if step <= 0:
            raise ConfigError(f"{where}: step must be > 0, got {step}")
        if log:
            raise ConfigError(f"{where}: step cannot be combined with log: true")
        if step > high - low:
            raise ConfigError(f"{where}: step {step} is larger than the range [{low}, {high}]")
    if low >= high:
        raise ConfigError(f"{where}: impossible range: low {low} must be below high {high}")
    if log and low <= 0:
        raise ConfigError(f"{where}: a log range needs low > 0, got low {low}")
    if integer:
        return IntDistribution(low, high, log=log, step=step or 1), False
    return FloatDistribution(low, high, log=log, step=step), False


def _check_type(key: str, dist: BaseDistribution, base_value) -> None:
    """Refuse ranges whose kind cannot match the setting (a float range over an int or a string setting)."""
    where = f"tune.space.{key}"
    if isinstance(dist, CategoricalDistribution) or base_value is None:
        return
    if isinstance(base_value, bool) or isinstance(base_value, (str, list, dict)):
        raise ConfigError(f"{where}: the setting is a {type(base_value).__name__} "
                          f"({base_value!r}); search it with choices: [...]")
    if isinstance(dist, FloatDistribution) and isinstance(base_value, int):
        raise ConfigError(f"{where}: the setting is an integer ({base_value}); use integer low/high or type: int")


def parse_space(spec, base: dict, validate: Callable[[dict], Any] | None = None) -> SearchSpace:
    """Parse `tune.space` against the resolved base config dict.

    `validate(cfg_dict)` (the engine's `config_from_dict`) is called with the base config carrying each end of
    each range and each choice; its `ConfigError` is reported against the space entry that caused it.
    """
    if not isinstance(spec, dict) or not spec:
        raise ConfigError("tune.space: expected a non-empty mapping of config keys to ranges, "
                          f"e.g. optim.lr: {{low: 0.001, high: 0.3, log: true}}; got {spec!r}")
    dists, encoded = {}, set()
    open_maps = _open_mappings()
    known = [k for k in _known_keys(base) if k not in open_maps] + [f"{p}.{k}" for p, ks in open_maps.items()
                                                                   for k in ks]
    for key, entry in spec.items():
        key = str(key)
        if key in FORBIDDEN_KEYS:
            raise ConfigError(f"tune.space.{key}: cannot be searched: {FORBIDDEN_KEYS[key]}")
        found, base_value = _base_value(base, key)
        if not found:
            raise ConfigError(f"tune.space: unknown config key '{key}'{suggest(key, known)}")
        dist, is_encoded = _parse_entry(key, entry, base_value)
        _check_type(key, dist, base_value)
        dists[key] = dist
        if is_encoded:
            encoded.add(key)
    space = SearchSpace(dists, encoded)
    if validate is not None:
        for key, dist in dists.items():
            ends = list(dist.choices) if isinstance(dist, CategoricalDistribution) else [dist.low, dist.high]
            for value in ends:
                try:
                    validate(space.apply(base, {key: value}))
                except ConfigError as e:
                    shown = space.decode({key: value})[key]
                    raise ConfigError(f"tune.space.{key}: value {shown!r} is not accepted: {e}") from None
    return space
