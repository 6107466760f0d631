"""What a run's result depends on: its config's keys but those declared `NO_RESULT`, with each `PER_MACHINE`
key as the machine resolved it. The one rule behind fit's resume, compare's reuse and shard check, tune's
base-config check and the report's grouping (`result_differences`), read from the schema's field metadata.
"""
from __future__ import annotations

import hashlib
import json

from ..errors import ConfigError
from .coerce import config_to_dict
from .keys import section_keys
from .load import load_config
from .schema import SECTIONS, Config

_MISSING = object()


def _keys_where(declared) -> list[str]:
    """Dotted keys of the config's sections whose field metadata satisfies `declared`, in declaration order."""
    return [f"{name}.{key.name}" for name, cls in SECTIONS.items() for key in section_keys(cls)
            if declared(key.metadata)]


def non_result_keys() -> set[str]:
    """Dotted keys declared `metadata=NO_RESULT`: they do not change what a run computes."""
    return set(_keys_where(lambda m: not m.get("affects_result", True)))


def per_machine_keys() -> list[str]:
    """Dotted keys declared `metadata=PER_MACHINE`: "auto" resolves per machine (train.amp, train.channels_last,
    train.device)."""
    return _keys_where(lambda m: m.get("per_machine", False))


def diff_configs(a: Config, b: Config) -> list[str]:
    """Dotted keys whose values differ between two configs."""
    da, db = config_to_dict(a), config_to_dict(b)
    out = ["seed"] if da["seed"] != db["seed"] else []
    for sec in da:
        if isinstance(da[sec], dict):
            out += [f"{sec}.{k}" for k in da[sec] if da[sec][k] != db[sec][k]]
    return out


def resolved_values(amp: str | None, eval_amp: str | None, channels_last: bool | None,
                    device_type: str | None) -> dict:
    """The per-machine keys as a run resolved them, in the form a result identity compares: the autocast dtype it
    trained in, with the one it evaluated in where they differ ("bf16 (evaluation: none)": only train.amp=auto
    does that), the memory layout and the device type ("cpu", "cuda"). None: not known."""
    if amp is not None and eval_amp is not None and eval_amp != amp:
        amp = f"{amp} (evaluation: {eval_amp})"
    return {"train.amp": amp, "train.channels_last": channels_last, "train.device": device_type}


def result_part(d: dict) -> dict:
    """A copy of the config mapping `d` without the keys that do not change a result (keys this version does
    not know are kept: a run written by another version is compared on everything it recorded)."""
    skip = non_result_keys()
    return {k: ({kk: vv for kk, vv in v.items() if f"{k}.{kk}" not in skip} if isinstance(v, dict) else v)
            for k, v in d.items()}


def result_identity(cfg: Config | dict, resolved: dict | None = None) -> dict:
    """What a run's result depends on, as flat dotted keys: the config's result part (`result_part`) and, given
    `resolved` (`resolved_values` of the machine the run ran or runs on), each per-machine key's resolved value in
    place of its configured one. So "auto" that trained in bf16 on one machine and in float32 on another differs,
    and train.amp=none pinned on one is train.amp=auto resolved to float32 on the other; a value not known (None)
    equals only another not known."""
    flat = _flat(result_part(config_to_dict(cfg) if isinstance(cfg, Config) else cfg))
    if resolved is not None:
        flat.update({k: resolved.get(k) for k in per_machine_keys()})
    return flat


def result_differences(a: Config | dict, b: Config | dict,
                       resolved: tuple[dict | None, dict | None] | None = None) -> list[str]:
    """Dotted keys whose values differ between two configs (or config mappings) in a way that changes a result;
    with `resolved` = (a's, b's) what each resolved per machine (`result_identity`), else the configs alone.
    The one rule behind fit's resume, compare's reuse and shard check, tune's base-config check and the report's
    grouping."""
    ra, rb = resolved if resolved is not None else (None, None)
    if resolved is not None:  # a side that records nothing is "not known" on every per-machine key
        ra, rb = ra or {}, rb or {}
    fa, fb = result_identity(a, ra), result_identity(b, rb)
    return [k for k in sorted(set(fa) | set(fb)) if fa.get(k, _MISSING) != fb.get(k, _MISSING)]


def per_machine_note(changed: list[str], theirs: dict | None, ours: dict | None) -> str:
    """For a refusal that names `changed`: what the per-machine keys among them resolved to in the existing run or
    study (`theirs`) and here (`ours`), and the --set flags that pin them here to its values; "" when none is
    among them."""
    keys = [k for k in per_machine_keys() if k in changed]
    if not keys:
        return ""
    theirs, ours = theirs or {}, ours or {}
    seen = "; ".join(f"{k} {_shown(theirs.get(k))} there, {_shown(ours.get(k))} here" for k in keys)
    pins = [f"--set {k}={_as_override(theirs.get(k))}" for k in keys if _pinnable(k, theirs.get(k))]
    how = [f"pin {'it' if len(pins) == 1 else 'them'} to its values: {' '.join(pins)}"] if pins else []
    how += [f"{k} cannot be pinned to {_shown(theirs.get(k))}: continue on a machine that resolves it so"
            for k in keys if not _pinnable(k, theirs.get(k))]
    return f": {seen}; \"auto\" resolves per machine, so {'; '.join(how)}"


def _shown(value) -> str:
    return "not recorded" if value is None else repr(value)


def _as_override(value) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _pinnable(key: str, value) -> bool:
    """Whether `--set key=value` sets `value` (a resolved "bf16 (evaluation: none)" or an unknown one does not)."""
    if value is None:
        return False
    try:
        load_config(None, [f"{key}={_as_override(value)}"])
    except ConfigError:
        return False
    return True


def result_hash(cfg: Config | dict) -> str:
    """sha256 of the config's result part (`result_part`, canonical JSON): equal for configs that give the same
    result, so a run directory's state records it and a resume compares it."""
    d = result_part(config_to_dict(cfg) if isinstance(cfg, Config) else cfg)
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v and not prefix:  # sections; mappings inside a section are values
            out.update(_flat(v, f"{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out
