"""Where a model looks: Grad-CAM and Grad-CAM++ of the last stage, and CBAM's own attention maps per stage.

Grad-CAM (Selvaraju et al., ICCV 2017) and Grad-CAM++ (Chattopadhay et al., WACV 2018) come from the
`grad-cam` package (pytorch-grad-cam), not a hand-written copy: the class-activation map of the target class at
the last stage's output, ReLU'd, scaled to [0, 1] per image and resized bilinearly to the input.

CBAM's spatial gate produces a map Ms (B, 1, h, w) in (0, 1) for every block; a stage's map is the mean over its
blocks (they share one resolution), upsampled bilinearly (half-pixel centres, as the CAMs) to the input size.
The channel maps Mc (CBAM) or the SE excitations (B, C, 1, 1) give a stage's channel attention (mean over blocks).
The gates' `keep_map` switch records them; it is turned on only for the one forward pass that reads them.

Works on any model with `stage_names()` (cbamlab ResNets) or torchvision-style `layer1..layer4`, at any input
size and channel count.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from pytorch_grad_cam import GradCAM, GradCAMPlusPlus
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from ..errors import CbamlabError, unknown
from ..models.attention import SE, ChannelGate, SpatialGate, keeping_maps

CAM_METHODS = {"gradcam": GradCAM, "gradcam++": GradCAMPlusPlus}
_TORCHVISION_STAGES = ("layer1", "layer2", "layer3", "layer4")


def stage_modules(model: nn.Module) -> dict[str, nn.Module]:
    """{stage name: module}: `model.stage_names()` for cbamlab ResNets, else the torchvision `layer1..4` it has."""
    names = model.stage_names() if hasattr(model, "stage_names") else \
        [n for n in _TORCHVISION_STAGES if isinstance(getattr(model, n, None), nn.Module)]
    if not names:
        raise CbamlabError(f"{type(model).__name__} has no stages (no stage_names() and no layer1..layer4): "
                           "pass the layer for Grad-CAM explicitly")
    return {n: getattr(model, n) for n in names}


def _as_batch(x: torch.Tensor) -> torch.Tensor:
    if x.dim() == 3:
        x = x.unsqueeze(0)
    if x.dim() != 4:
        raise CbamlabError(f"expected images (B, C, H, W) or (C, H, W), got shape {tuple(x.shape)}")
    return x


def _targets(target, n: int) -> list[int]:
    t = [int(v) for v in torch.as_tensor(target).reshape(-1).tolist()]
    if len(t) == 1 and n > 1:
        t = t * n
    if len(t) != n:
        raise CbamlabError(f"{len(t)} targets for {n} images")
    return t


def gradcam(model: nn.Module, x: torch.Tensor, target, *, method: str = "gradcam", layer: nn.Module | None = None,
            batch_size: int = 64) -> np.ndarray:
    """Grad-CAM (or `method="gradcam++"`) of class `target` (an int or one per image) at `layer` (default: the
    last stage) for images `x` (B, C, H, W): float32 (B, H, W) in [0, 1], each map scaled to its own maximum."""
    if method not in CAM_METHODS:
        raise unknown("CAM method", method, CAM_METHODS)
    x = _as_batch(x)
    targets = _targets(target, x.shape[0])
    layer = layer if layer is not None else list(stage_modules(model).values())[-1]
    was_training = model.training
    cam = CAM_METHODS[method](model=model, target_layers=[layer])
    cam.compute_input_gradient = True  # so the map exists even when the weights are frozen (requires_grad=False)
    out = []
    try:
        with torch.enable_grad():
            for i in range(0, x.shape[0], batch_size):
                chunk = [ClassifierOutputTarget(t) for t in targets[i:i + batch_size]]
                out.append(cam(input_tensor=x[i:i + batch_size], targets=chunk))
    finally:
        cam.activations_and_grads.release()  # not `with cam:` -- its __exit__ swallows IndexErrors
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    return np.concatenate(out).astype(np.float32)  # (B, H, W)


def _stage_mean(maps: list[torch.Tensor]) -> torch.Tensor | None:
    return torch.stack(maps).mean(dim=0) if maps else None


@torch.no_grad()
def forward_with_maps(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, dict, dict]:
    """One forward pass: (logits (B, K), {stage: spatial map (B, h, w)}, {stage: channel attention (B, C)}).

    Stages without a spatial gate (plain, SE, channel-only CBAM) are absent from the first dict; stages without
    channel attention (plain) from the second."""
    x = _as_batch(x)
    was_training = model.training
    model.eval()
    stages = stage_modules(model)
    try:
        with keeping_maps(model):
            logits = model(x)
            spatial, channel = {}, {}
            for name, stage in stages.items():
                s = _stage_mean([g.last_map[:, 0] for g in stage.modules()
                                 if isinstance(g, SpatialGate) and g.last_map is not None])
                c = _stage_mean([g.last_map[:, :, 0, 0] for g in stage.modules()
                                 if isinstance(g, (ChannelGate, SE)) and g.last_map is not None])
                if s is not None:
                    spatial[name] = s.float()  # (B, h, w)
                if c is not None:
                    channel[name] = c.float()  # (B, C)
    finally:
        model.train(was_training)
    return logits, spatial, channel


def upsample(maps: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """(B, h, w) -> (B, H, W), bilinear with half-pixel centres (align_corners=False), as the CAMs are resized."""
    return F.interpolate(maps[:, None].float(), size=tuple(size), mode="bilinear", align_corners=False)[:, 0]


def spatial_maps(model: nn.Module, x: torch.Tensor) -> dict[str, np.ndarray]:
    """{stage: float32 (B, H, W)}: CBAM's spatial attention (sigmoid values in (0, 1), not rescaled), mean over the
    stage's blocks, at the input's resolution. Empty for a model without spatial gates."""
    x = _as_batch(x)
    _, spatial, _ = forward_with_maps(model, x)
    return {k: upsample(v, x.shape[-2:]).cpu().numpy() for k, v in spatial.items()}


def channel_attention(model: nn.Module, x: torch.Tensor) -> dict[str, np.ndarray]:
    """{stage: float32 (B, C)}: channel attention (CBAM's Mc or SE's excitation), mean over the stage's blocks."""
    _, _, channel = forward_with_maps(model, _as_batch(x))
    return {k: v.cpu().numpy() for k, v in channel.items()}
