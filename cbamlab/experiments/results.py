"""Reading finished runs back from their run directories (docs/design.md, "Run directory") and grouping them
into comparisons that are fair: same dataset, same recipe, variants paired by seed.

A recipe is the resolved config minus what a comparison varies on purpose: the model name, the attention
options and the seed (and where the data is read from). Runs whose recipes differ are never pooled; they
land in separate groups, and the report shows each group on its own.
"""
from __future__ import annotations

import copy
import csv
import json
import logging
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import CbamlabError

log = logging.getLogger(__name__)

# Keys (section, key) that a comparison varies on purpose, or that do not change what is trained.
VARIED_KEYS = (("model", "name"), ("model", "reduction"), ("model", "kernel_size"), ("model", "arrangement"),
               ("model", "spatial_bn_zero_init"), ("model", "pool_types"), ("model", "keep_map"), ("seed",),
               ("data", "root"), ("data", "download"), ("data", "workers"), ("train", "progress"),
               ("train", "tensorboard"), ("train", "threads"))
ATTN_OPTION_KEYS = ("reduction", "kernel_size", "arrangement", "spatial_bn_zero_init", "pool_types", "keep_map")
_ATTN_ORDER = {"none": 0, "se": 1, "cbam": 2}


@dataclass
class Run:
    """One run directory: its resolved config, per-epoch metrics (column -> values, None where not measured),
    summary.json and env.json as dicts."""

    path: Path
    config: dict
    summary: dict
    metrics: dict[str, list[float | None]]
    env: dict = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return self.summary.get("status") == "complete"

    @property
    def model(self) -> str:
        return str(self.summary.get("model") or self.config.get("model", {}).get("name"))

    @property
    def dataset(self) -> str:
        return str(self.summary.get("dataset") or self.config.get("data", {}).get("name"))

    @property
    def seed(self) -> int:
        seed = self.summary.get("seed", self.config.get("seed"))
        if seed is None:
            raise CbamlabError(f"{self.path}: no seed in summary.json or config.yaml")
        return int(seed)


@dataclass
class Group:
    """Complete runs of one dataset under one recipe. `variants` in display order (plain first), `runs[v][seed]`."""

    dataset: str
    recipe: dict
    variants: list[str]
    runs: dict[str, dict[int, Run]]

    def seeds(self, variant: str) -> list[int]:
        return sorted(self.runs[variant])

    def baseline_for(self, variant: str) -> str | None:
        """The plain twin of `variant` when it is in the group, else the group's first plain variant, else None."""
        model = variant.split(" ")[0]  # a label may carry options: "resnet20_cbam (reduction=8)"
        if attn_kind(model) == "none":
            return None
        twin = plain_twin(model)
        if twin in self.runs:
            return twin
        plain = [v for v in self.variants if attn_kind(v.split(" ")[0]) == "none"]
        return plain[0] if plain else None


def attn_kind(model: str) -> str:
    """'none', 'se', 'cbam' (from the registry, else from the name's suffix) or 'other'."""
    try:
        from ..models import model_info

        return model_info(model).attn
    except Exception:  # a model this version does not know: fall back to the naming convention
        for kind, suffix in (("cbam", "_cbam"), ("se", "_se")):
            if model.endswith(suffix):
                return kind
        return "none"


def plain_twin(model: str) -> str:
    try:
        from ..models import model_info

        return model_info(model).base
    except Exception:
        for suffix in ("_cbam", "_se"):
            if model.endswith(suffix):
                return model[: -len(suffix)]
        return model


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CbamlabError(f"{path}: not a readable JSON file ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise CbamlabError(f"{path}: expected a JSON object")
    return data


def _number(cell: str | None) -> float | None:
    if cell is None or cell.strip() == "":
        return None
    try:
        return float(cell)
    except ValueError:
        return None


def read_metrics(path: Path) -> dict[str, list[float | None]]:
    """metrics.csv as columns; empty cells become None."""
    if not path.is_file():
        return {}
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    columns: dict[str, list[float | None]] = defaultdict(list)
    for row in rows:
        for key, cell in row.items():
            if key is not None:
                columns[key].append(_number(cell))
    return dict(columns)


def load_run(path: str | Path) -> Run:
    """Read one run directory. Needs config.yaml; summary.json, metrics.csv and env.json are read when present."""
    path = Path(path)
    cfg_path = path / "config.yaml"
    if not cfg_path.is_file():
        raise CbamlabError(f"{path}: not a run directory (no config.yaml)")
    try:
        config = yaml.safe_load(cfg_path.read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise CbamlabError(f"{cfg_path}: not readable YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(config, dict):
        raise CbamlabError(f"{cfg_path}: expected a mapping of config sections")
    summary = _read_json(path / "summary.json") if (path / "summary.json").is_file() else {}
    env = _read_json(path / "env.json") if (path / "env.json").is_file() else {}
    return Run(path=path, config=config, summary=summary, metrics=read_metrics(path / "metrics.csv"), env=env)


def find_runs(root: str | Path) -> list[Run]:
    """Every run directory under `root` (itself included), finished or not, in path order."""
    root = Path(root)
    if not root.exists():
        raise CbamlabError(f"no such folder: {root}")
    if not root.is_dir():
        raise CbamlabError(f"{root} is not a folder of run directories")
    dirs = sorted({p.parent for p in root.rglob("config.yaml") if "checkpoints" not in p.parent.parts})
    return [load_run(d) for d in dirs]


def recipe_of(config: dict) -> dict:
    """The config minus the keys a comparison varies on purpose (VARIED_KEYS)."""
    recipe = copy.deepcopy(config)
    for key in VARIED_KEYS:
        node = recipe
        for part in key[:-1]:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(key[-1], None)
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


def _variant_label(run: Run, varying: set[str]) -> str:
    opts = run.config.get("model", {}) or {}
    extra = [f"{k}={opts[k]}" for k in ATTN_OPTION_KEYS if k in varying and k in opts]
    return run.model + (f" ({', '.join(extra)})" if extra else "")


def variant_order(name: str):
    base = name.split(" ")[0]
    return (plain_twin(base), _ATTN_ORDER.get(attn_kind(base), 3), name)


def group_runs(runs: list[Run]) -> list[Group]:
    """Complete runs grouped by (dataset, recipe). Within a group, a model whose attention options differ between
    runs becomes several variants labelled with those options. Two runs of one variant and seed are an error."""
    by_key: dict[tuple[str, str], list[Run]] = defaultdict(list)
    for run in runs:
        if run.complete:
            key = json.dumps(recipe_of(run.config), sort_keys=True, default=str)
            by_key[(run.dataset, key)].append(run)
    groups = []
    # per dataset, the largest comparison first
    for (dataset, key), members in sorted(by_key.items(), key=lambda kv: (kv[0][0], -len(kv[1]), kv[0][1])):
        options_seen: dict[str, dict[str, set]] = defaultdict(lambda: defaultdict(set))
        for run in members:
            for k in ATTN_OPTION_KEYS:
                options_seen[run.model][k].add(json.dumps((run.config.get("model") or {}).get(k), default=str))
        varying = {m: {k for k, vals in per_model.items() if len(vals) > 1} for m, per_model in options_seen.items()}
        table: dict[str, dict[int, Run]] = defaultdict(dict)
        for run in members:
            label = _variant_label(run, varying[run.model])
            if run.seed in table[label]:
                other = table[label][run.seed].path
                raise CbamlabError(f"two finished runs of {label} seed {run.seed} under one recipe: {other} and "
                                   f"{run.path}; remove one or report them separately")
            table[label][run.seed] = run
        variants = sorted(table, key=variant_order)
        groups.append(Group(dataset=dataset, recipe=json.loads(key), variants=variants, runs=dict(table)))
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
