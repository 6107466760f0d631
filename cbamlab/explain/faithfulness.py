"""Does the map point at what drives the decision? Deletion and insertion curves (Petsiuk et al., RISE, BMVC 2018).

Rank the pixels by the map, most salient first. Deletion: replace them, in that order, by the baseline (the
dataset's mean colour, 0 after normalisation) and follow the probability of the target class; a faithful map
makes it fall fast, so a LOW area under the curve is good. Insertion: start from a blurred copy of the image and
put the original pixels back in the same order; a faithful map makes the probability rise fast, so a HIGH area is
good. The x axis is the fraction of pixels changed, in `steps` equal steps; the area is the trapezoid rule.

A random ranking is the baseline a reader needs: a map whose areas are no better than a random order's says
nothing about the decision. Ties (Grad-CAM is 0 wherever its ReLU cut) are broken in a random order drawn from
the same seed, so no raster order leaks into the score.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CbamlabError

MODES = ("deletion", "insertion")


def ranking(saliency: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Flat pixel indices of a (H, W) map, most salient first; equal values in a random order from `rng`."""
    flat = np.asarray(saliency, dtype=np.float64).reshape(-1)
    perm = rng.permutation(flat.size)
    return perm[np.argsort(-flat[perm], kind="stable")]


def blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur of (B, C, H, W) with edge padding, separable; RISE's insertion start."""
    radius = max(1, int(math.ceil(3 * sigma)))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[1]
    out = F.pad(x, (radius, radius, 0, 0), mode="replicate")
    out = F.conv2d(out, k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    out = F.pad(out, (0, 0, radius, radius), mode="replicate")
    return F.conv2d(out, k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


def blur_sigma(height: int, width: int) -> float:
    """RISE blurs 224-pixel images with sigma 5; the same fraction of the image, at least one pixel."""
    return max(1.0, 5.0 * max(height, width) / 224.0)


def auc(curves: np.ndarray) -> np.ndarray:
    """Trapezoid area of curves (..., steps + 1) sampled at equally spaced fractions 0, 1/steps, ..., 1."""
    curves = np.asarray(curves, dtype=np.float64)
    return (curves[..., 1:] + curves[..., :-1]).mean(axis=-1) / 2.0


def _masks(order: np.ndarray, steps: int) -> torch.Tensor:
    """(steps + 1, H*W) float: row s marks the first round(s / steps * H*W) pixels of `order`."""
    n = order.size
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    counts = np.rint(np.arange(steps + 1) * n / steps).astype(np.int64)
    return torch.from_numpy((rank[None, :] < counts[:, None]).astype(np.float32))


@torch.no_grad()
def _probs(model: nn.Module, images: torch.Tensor, targets: torch.Tensor, batch_size: int) -> torch.Tensor:
    out = []
    for i in range(0, images.shape[0], batch_size):
        logits = model(images[i:i + batch_size]).float()
        out.append(torch.softmax(logits, dim=1).gather(1, targets[i:i + batch_size, None])[:, 0])
    return torch.cat(out)


def deletion_insertion(model: nn.Module, x: torch.Tensor, targets, saliency: dict[str, np.ndarray], *,
                       steps: int = 32, seed: int = 0, batch_size: int = 256) -> dict[str, dict[str, np.ndarray]]:
    """{mode: {map name: curves (N, steps + 1)}} of the target-class probability, mode "deletion" or "insertion".

    `x` (N, C, H, W) normalised inputs, `targets` (N,), `saliency` {name: (N, H, W)}. The tie-breaking order of
    image i depends on (seed, i) alone, so two models scored with one seed are ranked alike on equal maps."""
    if steps < 1:
        raise CbamlabError(f"steps must be >= 1, got {steps}")
    n, c, h, w = x.shape
    device = next(model.parameters()).device
    targets = torch.as_tensor(targets, dtype=torch.int64).reshape(-1)
    for name, m in saliency.items():
        if tuple(m.shape) != (n, h, w):
            raise CbamlabError(f"map '{name}' has shape {tuple(m.shape)}, the images {(n, h, w)}")
    was_training = model.training
    model.eval()
    starts = {"deletion": x, "insertion": blur(x, blur_sigma(h, w))}
    ends = {"deletion": torch.zeros_like(x), "insertion": x}
    out = {mode: {name: np.empty((n, steps + 1), dtype=np.float32) for name in saliency} for mode in MODES}
    try:
        for i in range(n):
            rng_seed = np.random.SeedSequence([int(seed), i])
            masks = {name: _masks(ranking(m[i], np.random.default_rng(rng_seed)), steps).view(steps + 1, 1, h, w)
                     .to(x.device) for name, m in saliency.items()}
            for mode in MODES:
                a, b = starts[mode][i], ends[mode][i]  # (C, H, W)
                batch = torch.cat([a + (b - a) * mk for mk in masks.values()]).to(device)  # (M*(S+1), C, H, W)
                t = targets[i].expand(batch.shape[0]).to(device)
                p = _probs(model, batch, t, batch_size).view(len(masks), steps + 1).cpu().numpy()
                for j, name in enumerate(masks):
                    out[mode][name][i] = p[j]
    finally:
        model.train(was_training)
    return out


def random_maps(n: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """(N, H, W) uniform noise from `seed`: the random-order baseline (the same for every model of a run)."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), 0xD1CE])).random((n, height, width),
                                                                                      dtype=np.float32)
