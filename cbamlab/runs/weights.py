"""A run's weights files (checkpoints/last.safetensors, best.safetensors): safetensors, written atomically, with
string metadata (the epoch, the model); a corrupt file, or weights of another architecture, is a CheckpointError.
"""
from __future__ import annotations

import json
import struct
from pathlib import Path

import torch
from safetensors.torch import load, save
from torch import nn

from .. import _io
from ..errors import CheckpointError


def plain_state(model_or_state) -> dict[str, torch.Tensor]:
    """A model's (or a state_dict's) tensors as safetensors and a weights-only load want them: contiguous,
    unshared CPU copies, without torch.compile's `_orig_mod.` prefix."""
    sd = model_or_state.state_dict() if isinstance(model_or_state, nn.Module) else model_or_state
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


def check_state_fits(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Refuse to load `state` into `model` unless it has exactly the model's keys and shapes: a CheckpointError
    naming the missing and unexpected keys and the shape mismatches (weights of another architecture)."""
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
    check_state_fits(target, state, str(path))
    target.load_state_dict(state)
    return meta
