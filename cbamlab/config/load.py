"""Loading a config: defaults <- a YAML file or mapping <- `key=value` overrides (`--set`), then checked.

One parser reads every override (`parse_override`): `load_config` applies those of the config's own sections
(`section.key=value`, `seed=3`), and the experiments take theirs from the same parse (`section_overrides`:
`compare.seeds=5`, `tune.trials=20`) before handing the rest on.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, NamedTuple

import yaml

from ..errors import ConfigError, suggest
from .coerce import EXTRA_SECTIONS, coerce, config_from_dict, config_to_dict, unknown_key
from .keys import section_keys
from .schema import SECTIONS, Config


class Override(NamedTuple):
    """One `key=value`: the dotted key, the value as YAML reads the text, and the text itself (a string key
    keeps it: `data.root=123` is the string "123")."""
    key: str
    value: Any
    raw: str


def parse_override(text: str | Override) -> Override:
    """`key=value` as an `Override`; text that does not parse as YAML is kept as a string."""
    if isinstance(text, Override):
        return text
    if "=" not in text:
        raise ConfigError(f"override '{text}' is not of the form section.key=value")
    key, raw = (s.strip() for s in text.split("=", 1))
    try:
        value = yaml.safe_load(raw) if raw else ""
    except yaml.YAMLError:
        value = raw
    return Override(key, value, raw)


def section_overrides(overrides, name: str, known) -> tuple[dict, list[Override]]:
    """Parse `overrides` and take those of the top-level extra section `name` (`compare.seeds=5`): ({key: value}
    of those, each key one of `known`; the others, parsed, for `load_config`)."""
    sets, rest = {}, []
    for o in map(parse_override, overrides or ()):
        head, _, key = o.key.partition(".")
        if head != name:
            rest.append(o)
            continue
        if key not in known:
            raise ConfigError(f"unknown key '{o.key}'{suggest(key, known)}; known: "
                              + ", ".join(f"{name}.{k}" for k in known))
        sets[key] = o.value
    return sets, rest


def apply_override(d: dict, override: str | Override) -> None:
    """Apply one `section.key=value` (or `seed=3`) to the nested dict `d`, checking the key and the type."""
    o = parse_override(override)
    parts = o.key.split(".")
    top = ["seed", *SECTIONS]
    if parts[0] not in top:
        hint = (f" (a {parts[0]}: key: `cbamlab {parts[0]}` reads it)" if parts[0] in EXTRA_SECTIONS
                else suggest(parts[0], top))
        raise ConfigError(f"unknown key '{o.key}'{hint}; known sections: {', '.join(top)}")
    if parts[0] == "seed":
        if len(parts) != 1:
            raise ConfigError(f"unknown key '{o.key}': seed has no sub-keys")
        d["seed"] = coerce("seed", o.value, int)
        return
    section = parts[0]
    keys = {k.name: k for k in section_keys(SECTIONS[section])}
    if len(parts) < 2 or parts[1] not in keys:
        raise unknown_key(section, parts[1] if len(parts) > 1 else "", keys.values(), given=o.key)
    sec = d.setdefault(section, {}) or {}
    d[section] = sec
    key = keys[parts[1]]
    if len(parts) == 3 and key.type is dict:  # data.augment_overrides.hflip=false
        sec.setdefault(parts[1], {})[parts[2]] = o.value
        return
    if len(parts) != 2:
        raise ConfigError(f"unknown key '{o.key}'")
    sec[parts[1]] = coerce(o.key, o.value, key.type, raw=o.raw)


def split_sections(d: dict, names=EXTRA_SECTIONS) -> tuple[dict, dict]:
    """Split a YAML mapping into (config part, {name: section}) for the top-level `names` (compare:, tune:)."""
    d = dict(d or {})
    extras = {n: d.pop(n) for n in list(names) if n in d}
    return d, extras


EXTENDS = "extends"


def read_yaml(path: str | Path, _chain: tuple[Path, ...] = ()) -> dict:
    """A YAML file's top-level mapping. `extends: other.yaml` (a path relative to this file) reads that file first
    and lays this one over it, mapping by mapping (`merge`): a study's file names the recipe it runs under and
    changes only what it must, so the recipe has one home."""
    path = Path(path)
    if not path.is_file():
        where = f" (extended by {_chain[-1]})" if _chain else ""
        raise ConfigError(f"no such config file: {path}{where}")
    try:
        d = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {e.start}); "
                          "save it as UTF-8") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({' '.join(str(e).split())})") from None
    if d is None:
        return {}
    if not isinstance(d, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    if EXTENDS not in d:
        return d
    base = d.pop(EXTENDS)
    if not isinstance(base, str) or not base:
        raise ConfigError(f"{path}: {EXTENDS}: must be the path of another YAML file, got {base!r}")
    chain = (*_chain, path.resolve())
    base_path = (path.parent / base).resolve()
    if base_path in chain:
        raise ConfigError(f"{path}: {EXTENDS}: {base} extends itself "
                          f"({' -> '.join(str(p) for p in (*chain, base_path))})")
    return merge(read_yaml(base_path, chain), d)


def merge(base: dict, top: dict) -> dict:
    """`top` laid over `base`: mappings merge key by key, any other value (a list, a number) replaces. A new
    mapping; neither argument changes."""
    out = copy.deepcopy(base)
    for k, v in top.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def load_config(path_or_dict: str | Path | dict | None = None, overrides=()) -> Config:
    """Defaults <- YAML file or mapping <- `section.key=value` overrides; checked. Extra sections are set aside."""
    if path_or_dict is None:
        d = {}
    elif isinstance(path_or_dict, dict):
        d = copy.deepcopy(path_or_dict)  # overrides write into nested mappings: never into the caller's
    else:
        d = read_yaml(path_or_dict)
    d, _ = split_sections(d)
    d = {k: (dict(v) if isinstance(v, dict) else v) for k, v in d.items()}
    for o in overrides or ():
        apply_override(d, o)
    return config_from_dict(d)


def dump_config(cfg: Config) -> str:
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False)
