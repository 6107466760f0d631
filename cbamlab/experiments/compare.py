"""Comparisons: a matrix of model variants x seeds (x datasets) trained under one shared recipe.

Variants are paired by seed: with the same seed the engine gives every variant the same data order and
augmentation draws and the same initial weights for the layers it shares with its plain twin, so the report
can test per-seed differences. Runs live at OUT/<dataset>/<variant>/seed<k>/. A finished run is reused (after
checking it was trained with this recipe), an unfinished one is resumed from its last checkpoint, so a
comparison killed midway and started again trains only what is missing. The report is written by the caller
(`cbamlab.report.write_report(out_dir)`; the CLI does it after `run_compare`). Each run is claimed while it
trains, so several processes (shards on several machines, `--workers` on one) share one study safely:
see compare_shard.py.

The YAML holds an ordinary training config plus a top-level `compare:` section:

    compare:
      variants: [resnet20, resnet20_se, resnet20_cbam]
      seeds: [0, 1, 2]          # or a count: 3
      datasets: [digits]        # optional; default: the config's data.name

A variant may also be a named model with options, `{name: cbam_k3, model: resnet20_cbam, options: {kernel_size:
3}}` (variants.py): the paper's ablations as first-class variants of one study.
"""
from __future__ import annotations

import copy
import logging
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from ..config import (config_from_dict, config_to_dict, load_config, per_machine_note, read_yaml,
                      result_differences, section_overrides, split_sections)
from ..data import list_datasets
from ..engine.runtime import available_cores, resolved_here
from ..errors import CbamlabError, ConfigError, suggest, unknown
from ..runs import CONFIG, check_study, is_complete, load_run_config, read_resolved, study_grid
from . import pool
from .compare_shard import take_shard, train_one
from .variants import Variant, parse_variants

log = logging.getLogger(__name__)

DEFAULT_VARIANTS = ("resnet20", "resnet20_se", "resnet20_cbam")
DEFAULT_SEEDS = (0, 1, 2)
# The zero-set-up default (`cbamlab compare`, `make demo`): the quick digits recipe, cut to a number of epochs
# that trains all 9 runs in a few minutes on 2 CPU cores. configs/compare_digits.yaml holds the same.
DEFAULT_RECIPE = {"data": {"name": "digits"}, "train": {"epochs": 5}}
_COMPARE_KEYS = ("variants", "seeds", "datasets", "only")


@dataclass
class CompareSpec:
    variants: list[Variant]
    seeds: list[int]
    datasets: list[str] | None = None


@dataclass
class PlannedRun:
    dataset: str
    variant: str  # its label
    seed: int
    path: Path
    cfg: object  # engine Config


@dataclass
class CompareResult:
    out_dir: Path
    trained: list[Path] = field(default_factory=list)
    reused: list[Path] = field(default_factory=list)
    busy: list[Path] = field(default_factory=list)  # held by another process: left to it
    complete: bool = False  # every run of the study (all shards) finished


def parse_compare_section(section: dict | None) -> CompareSpec:
    """The `compare:` mapping as a CompareSpec; missing keys take the defaults, unknown keys are errors."""
    section = {} if section is None else section
    if not isinstance(section, dict):
        raise ConfigError(f"compare: expected a mapping with {', '.join(_COMPARE_KEYS)}, got {section!r}")
    for k in section:
        if k not in _COMPARE_KEYS:
            raise ConfigError(f"unknown key 'compare.{k}'{suggest(k, _COMPARE_KEYS)}; known: {', '.join(_COMPARE_KEYS)}")
    variants = _only(parse_variants(section.get("variants", list(DEFAULT_VARIANTS))), section.get("only"))
    seeds = section.get("seeds", list(DEFAULT_SEEDS))
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        if seeds < 1:
            raise ConfigError(f"compare.seeds={seeds}: a count of seeds must be >= 1")
        seeds = list(range(seeds))
    if (not isinstance(seeds, list) or not seeds
            or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds)):
        raise ConfigError(f"compare.seeds: expected a count or a non-empty list of integers >= 0, got {seeds!r}")
    datasets = section.get("datasets")
    if isinstance(datasets, str):
        datasets = [datasets]
    if datasets is not None and (not isinstance(datasets, list) or not datasets
                                 or not all(isinstance(d, str) for d in datasets)):
        raise ConfigError(f"compare.datasets: expected a non-empty list of dataset names, got {datasets!r}")
    for key, values in (("seeds", seeds), ("datasets", datasets or [])):
        dup = sorted({str(v) for v in values if values.count(v) > 1})
        if dup:
            raise ConfigError(f"compare.{key}: listed twice: {', '.join(dup)}")
    return CompareSpec(variants=list(variants), seeds=list(seeds), datasets=list(datasets) if datasets else None)


def _only(variants: list[Variant], only) -> list[Variant]:
    """`compare.only`: train these labels of the variant list, in the list's order (`--set
    compare.only=[resnet20,channel_only]` runs a long study a few variants at a time into one folder)."""
    if only is None:
        return variants
    if isinstance(only, str):
        only = [only]
    labels = [v.label for v in variants]
    if not isinstance(only, list) or not only or not all(isinstance(o, str) for o in only):
        raise ConfigError(f"compare.only: expected a non-empty list of variant labels, got {only!r}")
    for o in only:
        if o not in labels:
            raise ConfigError(f"compare.only: '{o}' is not a variant of this comparison{suggest(o, labels)}; "
                              f"known: {', '.join(labels)}")
    return [v for v in variants if v.label in only]


def load_compare_config(path=None, overrides=()):
    """(engine Config, CompareSpec) from a YAML file (None: the built-in default) and `key=value` overrides;
    `compare.variants=[...]`, `compare.seeds=5` set the compare section, anything else the recipe."""
    raw = copy.deepcopy(DEFAULT_RECIPE) if path is None else read_yaml(path)
    recipe, extras = split_sections(raw)
    section = extras.get("compare")
    sets, engine_overrides = section_overrides(overrides, "compare", _COMPARE_KEYS)  # the one override parser
    if sets and (section is None or isinstance(section, dict)):  # anything else: parse_compare_section refuses it
        section = {**(section or {}), **sets}
    spec = parse_compare_section(section)
    cfg = load_config(recipe, engine_overrides)
    return cfg, spec


def as_variants(variants) -> list[Variant]:
    """Model names, mappings or Variants as checked Variants (`parse_variants`): before anything trains."""
    return parse_variants([v.record() if isinstance(v, Variant) else v for v in variants])


def check_datasets(datasets) -> None:
    known = list_datasets()
    for d in datasets:
        if d not in known:
            raise unknown("dataset", d, known)


def plan(base_cfg, variants, seeds, out_dir, datasets=None) -> list[PlannedRun]:
    """Every run of the matrix, ordered dataset, seed, variant: an interrupted comparison leaves whole
    seed-pairs behind it."""
    datasets = list(datasets) if datasets else [base_cfg.data.name]
    variants = as_variants(variants)
    check_datasets(datasets)
    base = config_to_dict(base_cfg)
    runs = []
    for dataset in datasets:
        for seed in seeds:
            for variant in variants:
                d = copy.deepcopy(base)
                d["seed"] = int(seed)
                d["model"] = variant.model_section(d["model"])
                if dataset != base_cfg.data.name:
                    d["data"]["name"] = dataset
                    d["data"]["root"] = None  # a root belongs to the config's own dataset
                try:
                    cfg = config_from_dict(d)
                except ConfigError as e:
                    raise ConfigError(f"compare variant {variant.label}: {e}") from None
                runs.append(PlannedRun(dataset, variant.label, int(seed),
                                       Path(out_dir) / dataset / variant.label / f"seed{seed}", cfg))
    return runs


def _check_reusable(run: PlannedRun, here: dict) -> None:
    """A finished run is reused only if its config, and what it resolved per machine, differ from this one's and
    from what this machine resolves (`here`) in nothing that changes a result (`result_differences`: the rule by
    which fit resumes a run)."""
    there = read_resolved(run.path)
    changed = result_differences(load_run_config(run.path), run.cfg, (there, here))
    if changed:
        raise CbamlabError(f"{run.path} holds a finished run with another config ({', '.join(changed)} differ"
                           f"{per_machine_note(changed, there, here)}); use another --out, or delete that run to "
                           "retrain it")


def run_compare(base_cfg, variants, seeds, out_dir, datasets=None, *, report: bool | None = None,
                shard: tuple[int, int] | None = None, workers: int = 1) -> CompareResult:
    """Train what is missing of variants x seeds (x datasets) under `base_cfg` into `out_dir`. Unknown models or
    datasets fail before any training. The report is not written here: call `cbamlab.report.write_report`.
    `shard` (I, N): only this process's share of the runs (`compare_shard.parse_shard`); `workers`: runs at once."""
    if report is not None:
        warnings.warn("run_compare(report=...) is deprecated and ignored: run_compare trains only; write the report "
                      "with cbamlab.report.write_report(out_dir)", DeprecationWarning, stacklevel=2)
    out_dir = Path(out_dir)
    variants = as_variants(variants)
    runs = plan(base_cfg, variants, list(seeds), out_dir, datasets)
    if workers < 1:
        raise ConfigError(f"--workers {workers}: must be >= 1")
    result = CompareResult(out_dir=out_dir)
    here = resolved_here(base_cfg.train)  # what "auto" precision, layout and device become on this machine
    done = [r for r in runs if is_complete(r.path)]
    for r in done:
        _check_reusable(r, here)
    check_study(out_dir, base_cfg, study_grid([v.record() for v in variants], seeds, datasets), sharded=shard is not None, resolved=here)
    mine = take_shard(runs, shard)
    log.info("compare: %d runs (%d finished, reused), %d to train into %s%s", len(runs), len(done),
             len(runs) - len(done), out_dir, f"; shard {shard[0]}/{shard[1]}: {len(mine)} of them" if shard else "")
    start = time.perf_counter()
    tags = {r.path: f"[{i}/{len(runs)}] {r.dataset} {r.variant} seed {r.seed}" for i, r in enumerate(runs, start=1)}

    def finished(r, status, value):
        if status == "busy":
            log.info("%s: %s; left to it", tags[r.path], value)
            result.busy.append(r.path)
            return
        (result.reused if status == "reused" else result.trained).append(r.path)
        top1 = value.get("top1") if isinstance(value, dict) else None
        log.info("%s: %s, top-1 %s (%.0f s so far)", tags[r.path], status, "n/a" if top1 is None
                 else f"{100 * top1:.2f} %", time.perf_counter() - start)

    todo = []
    for r in mine:
        if is_complete(r.path):
            log.info("%s: finished earlier, reused", tags[r.path])
            result.reused.append(r.path)
        else:
            todo.append(r)
    if workers > 1 and len(todo) > 1:  # a failed run stops the ones not started yet; the running ones finish
        log.info("%d runs at once, %d intra-op thread(s) each (%d cores)", workers, pool.threads_per_worker(workers),
                 available_cores())
        pool.run(train_one, todo, workers, on_done=lambda r, outcome: finished(r, *outcome))
    else:
        for r in todo:
            log.info("%s: %s", tags[r.path], "resuming" if (r.path / CONFIG).is_file() else "training")
            finished(r, *train_one(r))
    result.complete = all(is_complete(r.path) for r in runs)
    return result
