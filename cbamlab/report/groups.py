"""Grouping finished runs (read by `cbamlab.runs`) into comparisons that are fair: same dataset, same recipe,
variants paired by seed.

A recipe is the part of a run's config that changes a result (`config.result_part`) minus what a
comparison varies on purpose: the seed, the model name and its attention options. Runs are pooled only where
their result identities (`config.result_identity`: the recipe, with what each run resolved "auto"
precision, memory layout and device to, as its env.json records) are equal; the others land in separate groups,
and the report shows each group on its own. Within a group, a model whose runs differ in an attention option
becomes several variants, labelled with the options that differ, unless its runs carry a label of their own
(`model.label`: compare's named variants, such as the paper's ablations), which then names and groups them.
"""
from __future__ import annotations

import json
import logging
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import per_machine_keys, result_differences, result_identity, result_part, with_defaults
from ..runs import Run, find_runs
from ..errors import CbamlabError
from ..models import model_info
from ..models.options import ATTN_OPTIONS, AttnOptions

log = logging.getLogger(__name__)

_ATTN_ORDER = {"none": 0, "se": 1, "cbam": 2}


@dataclass
class Group:
    """Complete runs of one dataset under one recipe. `variants` in display order (plain first), `runs[v][seed]`.
    `recipe`: as its first run's config gives it (`recipe_of`); `resolved`: what its runs resolved the per-machine
    keys to (`Run.resolved`), the same for all of them."""

    dataset: str
    recipe: dict
    variants: list[str]
    runs: dict[str, dict[int, Run]]
    resolved: dict = field(default_factory=dict)
    models: dict[str, str] = field(default_factory=dict)  # variant -> its registered model
    options: dict[str, dict] = field(default_factory=dict)  # variant -> its attention options

    def seeds(self, variant: str) -> list[int]:
        return sorted(self.runs[variant])

    def model_of(self, variant: str) -> str:
        return self.models.get(variant) or variant.split(" ")[0]  # "resnet20_cbam (reduction=8)"

    def baseline_for(self, variant: str) -> str | None:
        """The plain twin of `variant` when it is in the group, else the group's first plain variant, else None."""
        model = self.model_of(variant)
        if attn_kind(model) == "none":
            return None
        twin = plain_twin(model)
        plain = [v for v in self.variants if attn_kind(self.model_of(v)) == "none"]
        if twin in plain:
            return twin
        return plain[0] if plain else None

    def default_cbam_for(self, variant: str) -> str | None:
        """For a CBAM variant with other attention options than the defaults (an ablation), the variant of the same
        network with CBAM's default options when the group has it; else None."""
        model = self.model_of(variant)
        if attn_kind(model) != "cbam" or is_default_attn(self.options.get(variant)):
            return None
        same = [v for v in self.variants if self.model_of(v) == model and is_default_attn(self.options.get(v))]
        return same[0] if same else None


_AS_BUILT = ("attn_impl", "keep_map")  # attention options that do not change what a model computes


def is_default_attn(options: dict | None) -> bool:
    """Whether recorded attention options (None: not recorded) are AttnOptions' defaults in all that changes a
    result."""
    defaults = AttnOptions()
    return options is None or all(_same(options.get(k, getattr(defaults, k)), getattr(defaults, k))
                                  for k in ATTN_OPTIONS if k not in _AS_BUILT)


def _same(a, b) -> bool:
    return list(a) == list(b) if isinstance(b, tuple) else a == b


def attn_kind(model: str) -> str:
    """'none', 'se', 'cbam' (from the registry, else from the name's suffix) or 'other'."""
    try:
        return model_info(model).attn
    except CbamlabError:  # a model this version does not know: fall back to the naming convention
        for kind, suffix in (("cbam", "_cbam"), ("se", "_se")):
            if model.endswith(suffix):
                return kind
        return "none"


def plain_twin(model: str) -> str:
    try:
        return model_info(model).base
    except CbamlabError:
        for suffix in ("_cbam", "_se"):
            if model.endswith(suffix):
                return model[: -len(suffix)]
        return model


def recipe_of(config: dict) -> dict:
    """The result part of a config mapping minus the seed, the model name and the attention options."""
    recipe = result_part(with_defaults(config))
    recipe.pop("seed", None)
    if isinstance(recipe.get("model"), dict):
        recipe["model"] = {k: v for k, v in recipe["model"].items() if k != "name" and k not in ATTN_OPTIONS}
    return recipe


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix.rstrip("."): d}


def recipe_differences(a: dict, b: dict) -> list[str]:
    """'key: x vs y' for each flattened key where two recipes differ."""
    fa, fb = _flatten(a), _flatten(b)
    return [f"{k}: {fa.get(k, '-')} vs {fb.get(k, '-')}" for k in sorted(set(fa) | set(fb)) if fa.get(k) != fb.get(k)]


def group_differences(a: Group, b: Group) -> list[str]:
    """Why two groups are not pooled: `recipe_differences` but in the per-machine keys, then 'key (resolved): x vs
    y' for each per-machine key their runs resolved otherwise (what they were configured to is not what counts:
    train.amp=none and an "auto" that resolved to none train alike)."""
    def configured(recipe: dict) -> dict:
        return {s: ({k: v for k, v in values.items() if f"{s}.{k}" not in per_machine_keys()}
                    if isinstance(values, dict) else values) for s, values in recipe.items()}

    def shown(value) -> str:
        return "not recorded" if value is None else str(value)
    return recipe_differences(configured(a.recipe), configured(b.recipe)) + [
        f"{k} (resolved): {shown(a.resolved.get(k))} vs {shown(b.resolved.get(k))}"
        for k in per_machine_keys() if a.resolved.get(k) != b.resolved.get(k)]


_PER_RUN = {"seed", "model.name", *(f"model.{k}" for k in ATTN_OPTIONS)}  # what a comparison varies on purpose


def identity_of(run: Run) -> dict:
    """The run's result identity (`result_identity`, with what it resolved per machine) minus what a comparison
    varies on purpose: runs are pooled where these are equal."""
    return {k: v for k, v in result_identity(with_defaults(run.config), run.resolved).items() if k not in _PER_RUN}


def _variant_label(run: Run, varying: list[str]) -> str:
    opts = run.config.get("model") or {}
    if opts.get("label"):
        return opts["label"]
    extra = [f"{k}={opts.get(k)}" for k in varying]
    return run.model + (f" ({', '.join(extra)})" if extra else "")


def _varying_options(runs: list[Run]) -> list[str]:
    """The model options in which runs of one model and recipe differ (by the rule of `result_differences`)."""
    keys: set[str] = set()
    for run in runs[1:]:
        diff = result_differences(with_defaults(runs[0].config), with_defaults(run.config))
        keys |= {k.split(".", 1)[1] for k in diff if k.startswith("model.")}
    return [k for k in ATTN_OPTIONS if k in keys]


def variant_order(name: str, model: str | None = None):
    """Plain first, then SE, then CBAM, per network; a model's own name before the labels of its options."""
    base = model or name.split(" ")[0]
    return (plain_twin(base), _ATTN_ORDER.get(attn_kind(base), 3), name != base, name)


def group_runs(runs: list[Run]) -> list[Group]:
    """Complete runs grouped by (dataset, recipe). Within a group, a model whose attention options differ between
    runs becomes several variants labelled with those options. Two runs of one variant and seed are an error."""
    by_key: dict[tuple[str, str], list[Run]] = defaultdict(list)
    for run in runs:
        if run.complete:
            by_key[(run.dataset, json.dumps(identity_of(run), sort_keys=True, default=str))].append(run)
    recipes = {key: recipe_of(members[0].config) for key, members in by_key.items()}
    groups = []
    # per dataset, the largest comparison first, then in the order of the recipes
    for (dataset, key), members in sorted(by_key.items(), key=lambda kv: (
            kv[0][0], -len(kv[1]), json.dumps(recipes[kv[0]], sort_keys=True, default=str), kv[0][1])):
        per_model: dict[str, list[Run]] = defaultdict(list)
        for run in members:
            if not (run.config.get("model") or {}).get("label"):  # labelled runs are named, not told apart
                per_model[run.model].append(run)
        varying = {m: _varying_options(rs) for m, rs in per_model.items()}
        table: dict[str, dict[int, Run]] = defaultdict(dict)
        models: dict[str, str] = {}
        options: dict[str, dict] = {}
        for run in members:
            label = _variant_label(run, varying.get(run.model, []))
            if models.setdefault(label, run.model) != run.model:
                raise CbamlabError(f"the label {label} names runs of {models[label]} and of {run.model} under one "
                                   f"recipe ({run.path}); give each variant its own label")
            model_section = with_defaults(run.config).get("model") or {}
            options.setdefault(label, {k: model_section.get(k) for k in ATTN_OPTIONS if k in model_section})
            if run.seed in table[label]:
                other = table[label][run.seed].path
                raise CbamlabError(f"two finished runs of {label} seed {run.seed} under one recipe: {other} and "
                                   f"{run.path}; remove one or report them separately")
            table[label][run.seed] = run
        variants = sorted(table, key=lambda v: variant_order(v, models[v]))
        resolved = {k: members[0].resolved[k] for k in per_machine_keys()}
        groups.append(Group(dataset=dataset, recipe=recipes[(dataset, key)], variants=variants, runs=dict(table),
                            resolved=resolved, models=models, options=options))
    return groups


def load_groups(root: str | Path) -> tuple[list[Group], list[Run]]:
    """(groups of complete runs, unfinished runs) under `root`; an empty or foreign folder is an error."""
    runs = find_runs(root)
    if not runs:
        raise CbamlabError(f"{root} holds no cbamlab run directories (no config.yaml found below it)")
    unfinished = [r for r in runs if not r.complete]
    groups = group_runs(runs)
    if not groups:
        raise CbamlabError(f"{root} holds {len(runs)} run director{'y' if len(runs) == 1 else 'ies'} but none "
                           f"finished (no summary.json with status complete)")
    for r in unfinished:
        log.warning("left out unfinished run %s", r.path)
    return groups, unfinished


def finite(values) -> list[float]:
    return [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
