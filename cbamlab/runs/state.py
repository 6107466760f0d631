"""The training state (checkpoints/last.state.pt): everything a run needs to continue after its last finished
epoch, typed as `TrainState`, in one atomic file, so a kill between two writes can never pair weights of one
epoch with optimizer state of another.

On disk it is a plain dict of tensors and plain values (`TrainState.to_dict`, the same keys cbamlab has always
written), so it loads with `torch.load(weights_only=True)`: a pickle that would import or call anything is
refused before it runs. The weights files are the user-facing copy of the weights (`weights.py`).
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import torch

from .. import _io
from ..errors import CheckpointError
from .rundir import BEST_WEIGHTS, LAST_STATE, LAST_WEIGHTS, write_metrics
from .weights import load_weights, save_weights

SCORES = ("val_top1", "val_top5", "test_top1", "test_top5")  # what `Best` keeps of its epoch's metrics row


@dataclass
class Best:
    """The best epoch so far by `metric` (val_top1, or test_top1 without a validation split): its `value` and
    the `SCORES` measured that epoch. Before any epoch: epoch 0, no metric, value -1."""

    epoch: int = 0
    metric: str | None = None
    value: float = -1.0
    scores: dict[str, float] = field(default_factory=dict)

    @classmethod
    def of_row(cls, row: dict, metric: str) -> "Best":
        return cls(row["epoch"], metric, row[metric], {k: row[k] for k in SCORES if row.get(k) is not None})

    def to_dict(self) -> dict:
        """As the state file and summary.json hold it: {epoch, metric, value, val_top1, ...}."""
        return {"epoch": self.epoch, "metric": self.metric, "value": self.value, **self.scores}

    @classmethod
    def from_dict(cls, d: dict) -> "Best":
        return cls(d["epoch"], d.get("metric"), d["value"],
                   {k: v for k, v in d.items() if k not in ("epoch", "metric", "value")})


@dataclass
class TrainState:
    """A run after epoch `epoch` (0: before the first): optimizer step, the metrics rows so far (`history`, the
    rows of metrics.csv), the best epoch, the training time, the model's name and tensors, the optimizer's,
    GradScaler's (fp16 on CUDA) and weight average's (`train.ema`) state, every RNG (`rng_state`), and where
    it comes from (`provenance.record`: the resolved config, its result hash, the code version; None in a
    state file an older cbamlab wrote)."""

    epoch: int = 0
    step: int = 0
    history: list[dict] = field(default_factory=list)
    best: Best = field(default_factory=Best)
    wall_time_s: float = 0.0
    model_name: str | None = None
    model: dict[str, torch.Tensor] = field(default_factory=dict)
    optimizer: dict = field(default_factory=dict)
    rng: dict = field(default_factory=dict)
    scaler: dict | None = None
    ema: dict[str, torch.Tensor] | None = None
    config: dict | None = None
    config_hash: str | None = None
    code_version: dict | None = None

    @property
    def eval_weights(self) -> dict[str, torch.Tensor]:
        """The weights the run evaluates, which its weights files hold: the average's (`train.ema`) when the
        state keeps one, else the model's. The state keeps both, so a resume continues the raw weights exactly."""
        return self.ema if self.ema is not None else self.model

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)} | {"best": self.best.to_dict()}

    @classmethod
    def from_dict(cls, d, source) -> "TrainState":
        """A state as the state file holds it; a CheckpointError naming `source` when it is not one."""
        if not isinstance(d, dict) or "epoch" not in d:
            raise CheckpointError(f"{source}: not a cbamlab training state (no 'epoch')")
        optional = {"scaler", "ema", "config", "config_hash", "code_version"}  # older states lack them
        missing = [f.name for f in fields(cls) if f.name not in d and f.name not in optional]
        if missing:
            raise CheckpointError(f"{source}: an incomplete cbamlab training state (no {', '.join(missing)})")
        return cls(**{f.name: d.get(f.name) for f in fields(cls)} | {"best": Best.from_dict(d["best"])})


def write_state(run_dir, state: TrainState) -> Path:
    return _io.torch_save(Path(run_dir) / LAST_STATE, state.to_dict())


def load_state(run_dir) -> TrainState:
    path = Path(run_dir) / LAST_STATE
    return TrainState.from_dict(_io.torch_load_safe(path), path)


def save_checkpoint(run_dir, state: TrainState, is_best: bool) -> None:
    """The state file first (the consistent record of the epoch), then last (and best) weights."""
    write_state(run_dir, state)
    meta = {"epoch": state.epoch, "model": state.model_name}
    save_weights(Path(run_dir) / LAST_WEIGHTS, state.eval_weights, meta)
    if is_best:
        save_weights(Path(run_dir) / BEST_WEIGHTS, state.eval_weights, meta)


def repair(run_dir, state: TrainState) -> None:
    """After a kill between the writes of one epoch: make weights and metrics.csv agree with the state file."""
    run_dir = Path(run_dir)
    meta = {"epoch": state.epoch, "model": state.model_name}
    for rel, wanted in ((LAST_WEIGHTS, True), (BEST_WEIGHTS, state.best.epoch == state.epoch)):
        if not wanted:
            continue
        try:
            ok = load_weights(run_dir / rel)[1].get("epoch") == str(state.epoch)
        except CheckpointError:
            ok = False
        if not ok:
            save_weights(run_dir / rel, state.eval_weights, meta)
    write_metrics(run_dir, state.history)


def rng_state() -> dict:
    """Every RNG a run touches, as tensors and plain values (weights_only-loadable)."""
    np_state = np.random.get_state()
    out = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "gauss": float(np_state[4])},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def set_rng_state(s: dict) -> None:
    torch.set_rng_state(s["torch"])
    py = s["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = s["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    if "cuda" in s and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])
