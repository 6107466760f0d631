"""Mappings to configs and back: every value type-checked against its key's annotation (`coerce`), every key
known (`section_keys`), and the flat section mapping YAML holds turned into the section dataclass and back.

YAML files may carry extra top-level sections (`compare:`, `tune:`) read by the experiments code;
`config_from_dict` refuses them (`load.split_sections` sets them aside).
"""
from __future__ import annotations

import copy
import typing
from typing import Any

from ..errors import CbamlabError, ConfigError, suggest
from ..models.options import OptionError
from .keys import section_keys
from .schema import SECTIONS, Config

EXTRA_SECTIONS = ("compare", "tune")


def type_name(tp) -> str:
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string", list: "a list",
            tuple: "a list", dict: "a mapping"}.get(tp, getattr(tp, "__name__", str(tp)))


def coerce(key: str, value: Any, tp, *, raw: str | None = None) -> Any:
    """Check `value` against the annotation `tp`; return it converted (int -> float, '1e-3' -> float, a tuple
    field's list stays a list: the dataclass takes it). `raw`: the text of a `--set`, kept for a string key."""
    if typing.get_origin(tp) is typing.Union:
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        if type(None) in typing.get_args(tp) and (
                value is None or (isinstance(value, str) and value.lower() in ("none", "null"))):
            return None
        if len(inner) > 1:  # Union[bool, str]: the first type that takes the value
            for t in inner:
                try:
                    return coerce(key, value, t)
                except ConfigError:
                    pass
            names = " or ".join(type_name(t) for t in inner)
            raise ConfigError(f"{key}: expected {names}, got {value!r} ({type(value).__name__})")
        tp = inner[0]
    bad = ConfigError(f"{key}: expected {type_name(tp)}, got {value!r} ({type(value).__name__})")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise bad
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise bad
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string
            try:
                return float(value)
            except ValueError:
                raise bad from None
        raise bad
    if tp is str:
        if isinstance(value, str):
            return value
        if raw is not None:  # from --set: `data.root=123` means the string "123"
            return raw
        raise bad
    if tp in (list, tuple):
        if isinstance(value, (list, tuple)):
            return list(value)
        raise bad
    if tp is dict:
        if isinstance(value, dict):
            return dict(value)
        raise bad
    raise bad


def coerce_key(section: str, key, value: Any, *, raw: str | None = None) -> Any:
    """`value` for the `Key` `key` of `section`: its type, and its elements' (`items`) where it has them."""
    dotted = f"{section}.{key.name}"
    value = coerce(dotted, value, key.type, raw=raw)
    elem = key.metadata.get("items")
    if elem is not None and value is not None:
        value = [coerce(f"{dotted}[{i}]", x, elem) for i, x in enumerate(value)]
    return value


def unknown_key(section: str, name: str, keys, *, given: str | None = None) -> ConfigError:
    """An unknown key `name` of `section` (`given`: the dotted key as a `--set` wrote it), with close matches
    and the known keys."""
    known = [k.name for k in keys]
    if given is None:
        return ConfigError(f"unknown key '{section}.{name}'{suggest(name, known)}; known: {', '.join(known)}")
    return ConfigError(f"unknown key '{given}'{suggest(name, [f'{section}.{k}' for k in known] + known)}; "
                       f"known in {section}: {', '.join(known)}")


def _inline(section: str, cls, kw: dict):
    """The inline dataclass `cls` (AttnOptions) of `section` from its keys; its refusal names the key."""
    try:
        return cls(**kw)
    except OptionError as e:
        key, value = f"{section}.{e.option}", kw.get(e.option, e.value)
        if e.known is not None:
            raise ConfigError(f"unknown {key} '{value}'{suggest(value, e.known)}; known: {', '.join(e.known)}") \
                from None
        raise ConfigError(f"{key}={value!r}: {e.rule or e}") from None
    except CbamlabError as e:
        raise ConfigError(f"{section}: {e}") from None


def section_from_dict(name: str, cls, d: Any):
    """The section dataclass `cls` from its flat mapping `d` (missing keys: defaults), checked."""
    if not isinstance(d, dict):
        raise ConfigError(f"{name}: expected a mapping of keys, got {d!r}")
    keys = {k.name: k for k in section_keys(cls)}
    kw: dict[str, Any] = {}
    inner: dict[str, dict] = {}
    for k, v in d.items():
        if k not in keys:
            raise unknown_key(name, k, keys.values())
        key = keys[k]
        value = coerce_key(name, key, v)
        if len(key.path) == 1:
            kw[k] = value
        else:
            inner.setdefault(key.path[0], {})[key.path[1]] = value
    hints = typing.get_type_hints(cls)
    for attr, values in inner.items():
        kw[attr] = _inline(name, hints[attr], values)
    return cls(**kw)


def section_to_dict(section) -> dict:
    """The flat mapping (YAML-ready: lists, not tuples) of every key of a section, defaults included."""
    out = {}
    for key in section_keys(type(section)):
        value = key.get(section)
        out[key.name] = list(value) if isinstance(value, tuple) else copy.deepcopy(value)
    return out


def config_from_dict(d: dict | None) -> Config:
    """A `Config` from a nested mapping (as in YAML); missing keys keep their defaults. Checked."""
    d = dict(d or {})
    kw = {}
    known = ["seed", *SECTIONS]
    for k, v in d.items():
        if k == "seed":
            kw[k] = coerce("seed", v, int)
        elif k in SECTIONS:
            kw[k] = section_from_dict(k, SECTIONS[k], v if v is not None else {})
        else:
            hint = " (pop it with split_sections first)" if k in EXTRA_SECTIONS else suggest(k, known)
            raise ConfigError(f"unknown key '{k}'{hint}; known: {', '.join(known)}")
    return Config(**kw)


def config_to_dict(cfg: Config) -> dict:
    """Plain nested dict (YAML-ready) of every value, defaults included: each section flat, as YAML holds it."""
    return {"seed": cfg.seed, **{name: section_to_dict(getattr(cfg, name)) for name in SECTIONS}}


def with_defaults(d: dict) -> dict:
    """A recorded config mapping with this version's defaults for keys added since (as config.yaml is read back),
    so an older run or study is compared key for key; as recorded when this version cannot read it (a key since
    removed, a value since refused)."""
    try:
        return config_to_dict(config_from_dict(d))
    except CbamlabError:
        return d
