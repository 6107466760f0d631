"""A config key's declaration: its field metadata (`NO_RESULT`, `PER_MACHINE`, `items`, `inline`) and
`section_keys`, the keys of a section as YAML, `--set`, the coercion and the result identity see them.
"""
from __future__ import annotations

import dataclasses
import functools
import typing
from typing import Any, NamedTuple

# Field metadata of a key that does not change what a run computes (where it runs from, how it shows progress):
# fit resumes, compare reuses, tune and the report group across such differences (identity.result_differences).
NO_RESULT = {"affects_result": False}
# Field metadata of a key whose "auto" each machine resolves when a run starts (runtime.resolve_precision,
# select_device): a Zen 3 CPU trains train.amp=auto in float32, a Zen 4 one in bf16. What a run computes is the
# resolved value, so a run's result identity holds that in place of the configured one (`result_identity`); fit
# records it in the run's env.json.
PER_MACHINE = {"per_machine": True}


def items(tp) -> dict:
    """Field metadata of a list whose elements are each coerced to `tp` (optim.betas: numbers)."""
    return {"items": tp}


def inline(omit=(), keys: dict | None = None) -> dict:
    """Field metadata of a dataclass-valued field whose fields are keys of the section itself (flat in YAML,
    `--set` and `config_to_dict`), but for those in `omit`; `keys` gives some of them field metadata
    ({"attn_impl": NO_RESULT})."""
    return {"inline": {"omit": tuple(omit), "keys": dict(keys or {})}}


class Key(NamedTuple):
    """One key of a section as YAML and `--set` name it: its type, field metadata, and where its value lives
    (`path`: ("width",), or ("attn", "kernel_size") for a field of an inline dataclass)."""
    name: str
    type: Any
    metadata: dict
    path: tuple

    def get(self, section) -> Any:
        value = section
        for attr in self.path:
            value = getattr(value, attr)
        return value


@functools.cache
def section_keys(cls) -> tuple[Key, ...]:
    """The keys of the section dataclass `cls`, in declaration order, inline dataclasses' fields in place."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        spec = f.metadata.get("inline")
        if spec is None:
            out.append(Key(f.name, hints[f.name], dict(f.metadata), (f.name,)))
            continue
        inner = hints[f.name]
        inner_hints = typing.get_type_hints(inner)
        out += [Key(g.name, inner_hints[g.name], {**g.metadata, **spec["keys"].get(g.name, {})}, (f.name, g.name))
                for g in dataclasses.fields(inner) if g.name not in spec["omit"]]
    names = [k.name for k in out]
    assert len(set(names)) == len(names), f"{cls.__name__}: an inline field's name is also a key: {names}"
    return tuple(out)
