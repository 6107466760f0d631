"""Checkpoints: weights as safetensors, training state in a torch file that loads with weights_only=True.

`last.state.pt` holds everything needed to continue (epoch, step, model and optimizer tensors, RNG,
metric history, best so far) in one atomic file, so a kill between two writes can never pair weights
of one epoch with optimizer state of another; `last.safetensors` is the user-facing copy of the weights.
Loading never unpickles code: a pickle that would import or call anything is refused before it runs.
"""
from __future__ import annotations

import json
import random
import struct
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load, save
from torch import nn

from .. import _io
from ..errors import CheckpointError


def plain_state(model_or_state) -> dict[str, torch.Tensor]:
    sd = model_or_state.state_dict() if isinstance(model_or_state, nn.Module) else model_or_state
    # strip torch.compile's wrapper prefix; safetensors wants contiguous, unshared CPU tensors
    return {k.removeprefix("_orig_mod."): v.detach().to("cpu").contiguous().clone() for k, v in sd.items()}


def save_weights(path, model_or_state, metadata: dict | None = None) -> Path:
    """Write the weights as safetensors, atomically; `metadata` values become strings."""
    meta = {str(k): str(v) for k, v in (metadata or {}).items()}
    return _io.write_bytes(path, save(plain_state(model_or_state), metadata=meta))


def load_weights(path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(state_dict, metadata) from a safetensors file; a corrupt or truncated file is a CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no such weights file: {path}")
    data = path.read_bytes()
    try:
        tensors = load(data)
        (n,) = struct.unpack("<Q", data[:8])
        meta = json.loads(data[8:8 + n]).get("__metadata__") or {}
    except Exception as e:  # SafetensorError, struct.error, ValueError: all mean "not a safetensors file"
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: not a valid safetensors file, corrupt or truncated ({first})") from None
    return tensors, meta


def check_compatible(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Raise a CheckpointError naming missing/unexpected keys or shape mismatches (weights of another model)."""
    own = {k: v.shape for k, v in model.state_dict().items()}
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k])}" for k in own
              if k in state and tuple(state[k].shape) != tuple(own[k])]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if shapes:
            parts.append(f"{len(shapes)} of another shape (e.g. {shapes[0]})")
        raise CheckpointError(f"{source}: weights of another architecture: {'; '.join(parts)}")


def load_into(model: nn.Module, path) -> dict[str, str]:
    """Load a safetensors file into `model` (strict); returns the file's metadata."""
    state, meta = load_weights(path)
    target = getattr(model, "_orig_mod", model)
    check_compatible(target, state, str(path))
    target.load_state_dict(state)
    return meta


def save_state(path, state: dict) -> Path:
    return _io.torch_save(path, state)


def load_state(path) -> dict:
    state = _io.torch_load_safe(path)
    if not isinstance(state, dict) or "epoch" not in state:
        raise CheckpointError(f"{path}: not a cbamlab training state (no 'epoch')")
    return state


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
