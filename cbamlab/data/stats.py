"""Per-channel statistics, stratified splits and resizing of uint8 image tensors."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import DataError


def channel_stats(images: torch.Tensor, chunk: int = 4096) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean and std per channel in [0, 1] units of uint8 (N, C, H, W) images, exact (integer sums, chunked)."""
    n, c, h, w = images.shape
    total = torch.zeros(c, dtype=torch.float64)
    total_sq = torch.zeros(c, dtype=torch.float64)
    for start in range(0, n, chunk):
        x = images[start:start + chunk].to(torch.int64)
        total += x.sum(dim=(0, 2, 3)).double()
        total_sq += (x * x).sum(dim=(0, 2, 3)).double()
    count = float(n * h * w)
    mean = total / count
    var = (total_sq / count - mean * mean).clamp_min(0)
    std = var.sqrt().clamp_min(1e-3 * 255)
    return tuple(float(v) / 255 for v in mean), tuple(float(v) / 255 for v in std)


def stratified_split(labels: torch.Tensor, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (kept, held_out): about `fraction` of each class held out, chosen by a numpy generator from `seed`.

    Each class with at least two samples keeps one and holds out at least one, so every class stays represented.
    """
    if not 0.0 < fraction < 1.0:
        raise DataError(f"split fraction must be between 0 and 1 (exclusive), got {fraction}")
    labels_np = np.asarray(labels, dtype=np.int64)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, 0x5B117]))
    kept, held = [], []
    for cls in np.unique(labels_np):
        idx = np.flatnonzero(labels_np == cls)
        rng.shuffle(idx)
        k = int(round(fraction * len(idx)))
        if len(idx) >= 2:
            k = min(max(k, 1), len(idx) - 1)
        held.append(idx[:k])
        kept.append(idx[k:])
    kept_all = np.sort(np.concatenate(kept))
    held_all = np.sort(np.concatenate(held))
    if len(held_all) == 0:
        raise DataError(f"split fraction {fraction} leaves no sample out of {len(labels_np)}")
    return torch.from_numpy(kept_all), torch.from_numpy(held_all)


def resize_images(images: torch.Tensor, size: tuple[int, int], chunk: int = 2048) -> torch.Tensor:
    """uint8 (N, C, H, W) resized once to `size` (bilinear, antialiased when shrinking), still uint8."""
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    out = torch.empty((images.shape[0], images.shape[1], *size), dtype=torch.uint8)
    for start in range(0, images.shape[0], chunk):
        x = images[start:start + chunk].float()
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
        out[start:start + chunk] = x.round_().clamp_(0, 255).to(torch.uint8)
    return out


def epoch_seed(seed: int, epoch: int, stream: int = 0) -> int:
    """A 63-bit seed that depends on (seed, epoch, stream) only: the same batches on resume and across variants."""
    state = np.random.SeedSequence([int(seed) & 0xFFFFFFFFFFFFFFFF, int(epoch), int(stream)]).generate_state(2)
    return (int(state[0]) << 32 | int(state[1])) & 0x7FFFFFFFFFFFFFFF
