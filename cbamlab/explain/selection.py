"""Which models to explain: one run directory, a run `--against` another, or every CBAM/SE variant of a
`cbamlab compare` folder with its plain twin of the same seed.

`load_model` is the only place that reads a run directory (through `cbamlab.inference.predict`), so a change of the
run-directory module is one edit here.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from ..inference import predict as _predict
from .. import runs as _rundir
from ..errors import CbamlabError
from ..models import model_info

log = logging.getLogger(__name__)

_SEED_DIR = re.compile(r"^seed(\d+)$")


@dataclass
class ExplainedModel:
    """A model to explain and where it came from. `data`: num_classes, in_chans, image_size, mean, std, classes."""

    label: str
    model: nn.Module
    name: str
    attn: str
    data: dict
    seed: int | None = None
    run: str | None = None
    cfg: object = None  # the run's engine Config (None for a model passed in directly)
    notes: list[str] = field(default_factory=list)


def load_model(run_dir, checkpoint: str = "last") -> ExplainedModel:
    """The model of a run directory (eval mode, CPU) with what explain needs to know about it."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CbamlabError(f"no such run directory: {run_dir}")
    loaded = _predict.load_run(run_dir, checkpoint)
    name = loaded.cfg.model.name
    label = loaded.cfg.model.label or name  # a compare study's named variant keeps its name here
    return ExplainedModel(label=label, model=loaded.model, name=name, attn=model_info(name).attn,
                          data=dict(loaded.data), seed=loaded.cfg.seed, run=str(run_dir), cfg=loaded.cfg)


def is_run_dir(path) -> bool:
    return (Path(path) / _rundir.CONFIG).is_file()


def _compare_runs(root: Path) -> dict[int, list[Path]]:
    """{seed: run dirs} of a compare folder (OUT/<dataset>/<variant>/seed<k>/ or OUT/<variant>/seed<k>/)."""
    runs = sorted(p.parent for p in root.rglob(_rundir.CONFIG) if _SEED_DIR.match(p.parent.name))
    datasets = sorted({str(r.parent.parent.relative_to(root)) for r in runs})
    if len(datasets) > 1:
        raise CbamlabError(f"{root} holds comparisons on several datasets ({', '.join(datasets)}); "
                           f"pass one of {', '.join(str(root / d) for d in datasets)}")
    by_seed: dict[int, list[Path]] = {}
    for r in runs:
        by_seed.setdefault(int(_SEED_DIR.match(r.name).group(1)), []).append(r)
    return by_seed


def compare_seeds(root) -> list[int]:
    """The training seeds of a compare folder's runs, sorted; [] for anything else."""
    root = Path(root)
    return sorted(_compare_runs(root)) if root.is_dir() and not is_run_dir(root) else []


def _unique_labels(models: list[ExplainedModel]) -> None:
    seen: dict[str, int] = {}
    for m in models:
        label = m.label
        if any(o is not m and o.label == m.label for o in models) and m.run:
            label = f"{m.label} ({Path(m.run).name})"
        while label in seen:
            seen[label] += 1
            label = f"{m.label} #{seen[label]}"
        seen[label] = 1
        m.label = label.replace("/", "_")


def select_models(run, against=None, seed: int | None = None,
                  checkpoint: str = "last") -> tuple[list[ExplainedModel], list[tuple[str, str]]]:
    """(models, pairs): `pairs` holds (variant label, baseline label); the difference reported is variant - baseline.

    `run` a run directory: that model alone, or paired with `against` (run - against). `run` a compare folder:
    the runs of `seed` (default: the smallest seed there), each SE/CBAM variant paired with its plain twin."""
    run = Path(run)
    if not run.exists():
        raise CbamlabError(f"no such run directory or compare folder: {run}")
    if is_run_dir(run):
        models = [load_model(run, checkpoint)]
        if against is not None:
            models.append(load_model(against, checkpoint))
        _unique_labels(models)
        return models, ([(models[0].label, models[1].label)] if against is not None else [])
    if against is not None:
        raise CbamlabError(f"--against pairs two run directories, but {run} is not one (no {_rundir.CONFIG})")
    by_seed = _compare_runs(run) if run.is_dir() else {}
    if not by_seed:
        raise CbamlabError(f"{run} is neither a run directory (no {_rundir.CONFIG}) nor a compare folder "
                           "(no <variant>/seed<k>/ runs under it)")
    if seed is None:
        seed = min(by_seed)
    if seed not in by_seed:
        raise CbamlabError(f"{run} has no runs with seed {seed}; seeds there: {', '.join(map(str, sorted(by_seed)))}")
    models = [load_model(r, checkpoint) for r in by_seed[seed]]
    order = {"none": 0, "se": 1, "cbam": 2}
    models.sort(key=lambda m: (order.get(m.attn, 3), m.label != m.name, m.label))
    _unique_labels(models)
    by_name = {m.name: m for m in models if m.attn == "none"}  # the plain twins
    pairs = []
    for m in models:
        base = by_name.get(model_info(m.name).base)
        if m.attn != "none" and base is not None:
            pairs.append((m.label, base.label))
        elif m.attn != "none":
            m.notes.append(f"its plain twin {model_info(m.name).base} is not in {run} (seed {seed}): not paired")
    log.info("explaining %d runs of seed %d in %s: %s", len(models), seed, run, ", ".join(m.label for m in models))
    return models, pairs


def check_same_inputs(models: list[ExplainedModel]) -> None:
    """Every model must read the same images: same classes, channels and image size."""
    first = models[0]
    for m in models[1:]:
        for key in ("classes", "in_chans", "image_size"):
            if _plain(m.data[key]) != _plain(first.data[key]):
                raise CbamlabError(f"cannot explain {m.label} beside {first.label}: their {key} differ "
                                   f"({m.data[key]} vs {first.data[key]})")


def _plain(value):
    return list(value) if isinstance(value, (list, tuple)) else value
