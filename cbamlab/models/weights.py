"""Loading a plain backbone's weights into an attention model: how CBAM is fine-tuned from ImageNet weights.

The plain models use torchvision's parameter names, so a torchvision ResNet state_dict fits `resnet50` exactly
and fits `resnet50_cbam` / `resnet50_se` except for the attention layers (`layerX.Y.attn.*`), which keep their
fresh initialisation. `load_backbone` checks that this is the only difference and says what it left out.
"""
from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from .._io import torch_load_safe
from ..errors import CheckpointError

log = logging.getLogger(__name__)

CLASSIFIER_KEYS = ("fc.weight", "fc.bias")
STEM_KEY = "conv1.weight"


@dataclass
class LoadReport:
    """What `load_backbone` did. `missing`: the model's keys left at their fresh initialisation (the attention,
    and `fc.*` when the class count differs); `unexpected`: keys of the weights that the model has no place for
    (only attention keys are allowed there); `skipped`: keys present on both sides but not loaded (the
    classifier of another class count); `adapted`: keys changed to fit (the stem conv for another `in_chans`)."""

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    adapted: list[str] = field(default_factory=list)
    loaded: int = 0

    def describe(self) -> str:
        parts = [f"{self.loaded} tensors loaded", f"{len(self.missing)} left newly initialised"]
        if self.skipped:
            parts.append(f"skipped {', '.join(self.skipped)} (class count differs)")
        if self.adapted:
            parts.append(f"adapted {', '.join(self.adapted)} to the input channels")
        if self.unexpected:
            parts.append(f"{len(self.unexpected)} unused attention tensors")
        return "; ".join(parts)


def is_attention_key(key: str) -> bool:
    return ".attn." in f".{key}"


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A state_dict from a safetensors file or a weights-only torch file (a bare state_dict, or a checkpoint
    dict holding one under "state_dict", "model" or "model_state"). Never unpickles code."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no such weights file: {path}")
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from None
    obj = torch_load_safe(path)
    return _unwrap(obj, str(path))


def _unwrap(obj, where: str) -> dict[str, torch.Tensor]:
    if isinstance(obj, Mapping) and obj and not all(isinstance(v, torch.Tensor) for v in obj.values()):
        for key in ("state_dict", "model", "model_state"):
            if isinstance(obj.get(key), Mapping):
                return _unwrap(obj[key], where)
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{where}: holds no state_dict (a mapping of parameter names to tensors)")
    sd = dict(obj)
    if all(k.startswith("module.") for k in sd):  # saved from DataParallel / DistributedDataParallel
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd


def torchvision_state_dict(base: str, progress: bool = False) -> dict[str, torch.Tensor]:
    """torchvision's default ImageNet weights for `base` (downloaded once into torch's hub cache; needs network)."""
    import torchvision  # heavy; only a download from torchvision needs it

    if base not in ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152"):
        raise CheckpointError(f"torchvision has no ImageNet weights for '{base}' (only resnet18/34/50/101/152 "
                              f"and their _se/_cbam variants); load a local file instead")
    weights = torchvision.models.get_model_weights(base).DEFAULT
    return weights.get_state_dict(progress=progress)


def adapt_input_conv(weight: torch.Tensor, in_chans: int) -> torch.Tensor:
    """Fit a stem conv (O, I, k, k) to `in_chans` inputs as timm does: for 1 channel sum over the input
    channels; for more, repeat the channels cyclically and scale by I / in_chans, which keeps the response's scale
    (exactly the same response to a constant image when in_chans is a multiple of I)."""
    src = weight.shape[1]
    if in_chans == src:
        return weight
    if in_chans == 1:
        return weight.sum(dim=1, keepdim=True)
    reps = math.ceil(in_chans / src)
    return weight.repeat(1, reps, 1, 1)[:, :in_chans] * (src / in_chans)


def load_backbone(model: nn.Module, source, *, progress: bool = False) -> LoadReport:
    """Load a backbone's weights into `model` (plain, `_se` or `_cbam`), leaving the attention newly initialised.

    `source`: a state_dict, a path (.safetensors or a weights-only torch file), or "torchvision" for the plain
    twin's ImageNet weights (downloaded; needs network). The stem conv is adapted to `model.in_chans`
    (`adapt_input_conv`); the classifier is skipped when the class count differs. Weights of another architecture
    (a shape that does not fit, a non-attention key missing on either side) raise CheckpointError, and the model
    is left untouched.
    """
    if isinstance(source, str) and source == "torchvision":
        info = getattr(model, "model_info", None)
        if info is None:
            raise CheckpointError("load_backbone(model, 'torchvision') needs a model built by create_model")
        sd, where = torchvision_state_dict(info.base, progress), f"torchvision {info.base}"
    elif isinstance(source, (str, os.PathLike)):
        sd, where = read_state_dict(source), str(source)
    elif isinstance(source, Mapping):
        sd, where = _unwrap(source, "state_dict"), "state_dict"
    else:
        raise CheckpointError(f"load_backbone takes a state_dict, a path or 'torchvision', not {type(source).__name__}")

    own = model.state_dict()
    report = LoadReport()
    to_load: dict[str, torch.Tensor] = {}
    problems: list[str] = []
    for key, value in sd.items():
        if key not in own:
            report.unexpected.append(key)
            if not is_attention_key(key):
                problems.append(f"unexpected key {key}")
            continue
        target = own[key]
        if key == STEM_KEY and value.dim() == 4 and value.shape[1] != target.shape[1] \
                and value.shape[0] == target.shape[0] and value.shape[2:] == target.shape[2:]:
            value = adapt_input_conv(value, target.shape[1])
            report.adapted.append(key)
        if key in CLASSIFIER_KEYS and value.shape != target.shape:
            report.skipped.append(key)
            continue
        if value.shape != target.shape:
            problems.append(f"{key} has shape {tuple(value.shape)}, the model {tuple(target.shape)}")
            continue
        to_load[key] = value.to(dtype=target.dtype) if target.is_floating_point() else value
    for key in own:
        if key not in to_load:
            report.missing.append(key)
            # weights saved before PyTorch 0.4.1 (torchvision's V1 files) have no BN step counters
            if not is_attention_key(key) and key not in report.skipped and not key.endswith("num_batches_tracked"):
                problems.append(f"missing key {key}")
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        name = getattr(model, "model_name", type(model).__name__)
        raise CheckpointError(f"{where} does not fit {name}: {'; '.join(problems[:3])}{more}")
    model.load_state_dict(to_load, strict=False)
    report.loaded = len(to_load)
    log.debug("load_backbone from %s: %s", where, report.describe())
    return report
