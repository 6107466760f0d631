"""Batch augmentations with tensor ops on the training device (the airbench way: no per-sample PIL).

Random parameters are drawn on a CPU `torch.Generator` and applied on the device, so the draws (and thus the
batches) depend only on the generator's seed, never on the device or on the number of threads.

`hflip="alternate"` is airbench's derandomised flipping (Keller Jordan's CIFAR-10 speed records): each training
image has a fixed phase bit drawn from the run's seed (`flip_phase`) and is mirrored in epoch e iff phase + e is
odd (`alternate_flips`), so any two consecutive epochs show every image once each way. The loaders, which know the
images' indices and the epoch, pass that mask to `augment_batch`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F

from .stats import epoch_seed

ALTERNATE = "alternate"  # hflip: airbench's alternating flips, as opposed to true (random, p = 1/2) and false
FLIP_PHASE_STREAM = 1 << 31  # epoch_seed stream of the alternating flips' phases, apart from the other streams
ERASING_VALUES = ("zero", "random")
ERASING_ATTEMPTS = 10  # draws of a rectangle per image until one fits (timm's and torchvision's rule)


@dataclass(frozen=True)
class AugmentSpec:
    """Training augmentations; all off by default. Eval loaders never augment.

    crop_padding: random crop after zero padding by this many pixels (an integer shift in [-p, p]);
    hflip / vflip: flip with probability 1/2; hflip="alternate": mirrored in every other epoch, each image in its
    own phase (the module's docstring); rotation: uniform angle in [-r, r] degrees;
    translate: integer shift in [-t, t] pixels (added to the crop shift when both are set);
    erasing: probability of random erasing (Zhong et al. 2020) of one rectangle per image, its area fraction
    uniform in `erasing_scale`, its aspect ratio (height / width) log-uniform in `erasing_ratio`, filled per
    `erasing_value` ("zero": 0 after normalising, the dataset mean; "random": per-pixel normal noise, timm's
    mode="pixel"); the defaults are timm's RandomErasing (2-33 % of the area, aspect 0.3-3.3);
    resized_crop: RandomResizedCrop with area fraction in `crop_scale` and aspect ratio in [3/4, 4/3].
    """

    crop_padding: int = 0
    hflip: bool | str = False
    vflip: bool = False
    rotation: float = 0.0
    translate: int = 0
    erasing: float = 0.0
    erasing_scale: tuple[float, float] = (0.02, 0.33)
    erasing_ratio: tuple[float, float] = (0.3, 3.3)
    erasing_value: str = "zero"
    resized_crop: bool = False
    crop_scale: tuple[float, float] = (0.08, 1.0)

    @property
    def alternate_hflip(self) -> bool:
        return self.hflip == ALTERNATE

    @property
    def active(self) -> bool:
        return bool(self.crop_padding or self.hflip or self.vflip or self.rotation or self.translate
                    or self.erasing or self.resized_crop)

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def flip_phase(n: int, seed: int) -> torch.Tensor:
    """uint8 (n,) of 0/1: each of n training images' phase for alternating flips, from the run's seed alone (not
    the epoch, the rank or the variant), so paired variants and a resumed run flip the same images."""
    gen = torch.Generator().manual_seed(epoch_seed(seed, 0, FLIP_PHASE_STREAM))
    return torch.randint(0, 2, (n,), generator=gen, dtype=torch.uint8)


def alternate_flips(phase: torch.Tensor, idx: torch.Tensor, epoch: int) -> torch.Tensor:
    """bool (B,): which of the images `idx` (indices into the split) are mirrored in `epoch` (phase + epoch odd)."""
    return (phase.index_select(0, idx.to(phase.device)) + (int(epoch) % 2)) % 2 == 1


def normalize_batch(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 or float in [0, 255] (B, C, H, W) -> float32 (x / 255 - mean) / std; mean, std are (C,) on x's device."""
    scale = (1.0 / (255.0 * std)).view(1, -1, 1, 1)
    bias = (mean / std).view(1, -1, 1, 1)
    return x.to(torch.float32).mul(scale).sub_(bias)


def _uniform(n: int, low: float, high: float, gen: torch.Generator) -> torch.Tensor:
    return torch.rand(n, generator=gen, dtype=torch.float64).mul_(high - low).add_(low)


def _shift(x: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor) -> torch.Tensor:
    """Shift each image by integer (dy, dx) pixels, filling with zeros: (B, C, H, W) -> same shape.

    One flat `take` from the zero-padded batch: each output pixel reads padded pixel (i - dy + p, j - dx + p).
    """
    p = int(max(dy.abs().max(), dx.abs().max()))
    if p == 0:
        return x
    b, c, h, w = x.shape
    hp, wp = h + 2 * p, w + 2 * p
    xp = F.pad(x, (p, p, p, p))  # (B, C, H + 2p, W + 2p)
    dev = x.device
    start = torch.arange(b, device=dev) * (c * hp * wp) + ((p - dy) * wp + (p - dx)).to(dev)  # (B,)
    offset = (torch.arange(c, device=dev)[:, None, None] * (hp * wp) + torch.arange(h, device=dev)[None, :, None] * wp
              + torch.arange(w, device=dev)[None, None, :]).reshape(-1)  # (C * H * W,)
    return torch.take(xp, start[:, None] + offset[None, :]).view(b, c, h, w)


def _affine(x: torch.Tensor, spec: AugmentSpec, gen: torch.Generator) -> torch.Tensor:
    """Rotation and/or random resized crop as one affine_grid + grid_sample on float (B, C, H, W)."""
    b = x.shape[0]
    angle = _uniform(b, -spec.rotation, spec.rotation, gen) * (math.pi / 180) if spec.rotation else torch.zeros(b, dtype=torch.float64)
    sx = torch.ones(b, dtype=torch.float64)
    sy = torch.ones(b, dtype=torch.float64)
    tx = torch.zeros(b, dtype=torch.float64)
    ty = torch.zeros(b, dtype=torch.float64)
    if spec.resized_crop:
        area = _uniform(b, spec.crop_scale[0], spec.crop_scale[1], gen)
        log_ratio = _uniform(b, math.log(3 / 4), math.log(4 / 3), gen)
        ratio = log_ratio.exp()
        sx = (area * ratio).sqrt().clamp(max=1.0)  # crop width as a fraction of the image width
        sy = (area / ratio).sqrt().clamp(max=1.0)
        tx = (_uniform(b, -1, 1, gen) * (1 - sx))  # crop centre in normalised coordinates
        ty = (_uniform(b, -1, 1, gen) * (1 - sy))
    cos, sin = angle.cos(), angle.sin()
    theta = torch.stack([
        torch.stack([cos * sx, -sin * sy, tx], dim=1),
        torch.stack([sin * sx, cos * sy, ty], dim=1),
    ], dim=1).to(device=x.device, dtype=x.dtype)  # (B, 2, 3): output coords -> input coords
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def resized_crop_box(height: int, width: int, scale: tuple[float, float], gen: torch.Generator,
                     ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> tuple[int, int, int, int]:
    """(top, left, h, w) of a RandomResizedCrop box (Szegedy et al. 2015) drawn from `gen`, torchvision's rule:
    area fraction uniform in `scale`, log aspect ratio uniform in `ratio`, 10 tries, else the central crop."""
    area = height * width
    for _ in range(10):
        u = torch.rand(4, generator=gen, dtype=torch.float64).tolist()
        target = area * (scale[0] + u[0] * (scale[1] - scale[0]))
        aspect = math.exp(math.log(ratio[0]) + u[1] * (math.log(ratio[1]) - math.log(ratio[0])))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return int(u[2] * (height - h + 1)), int(u[3] * (width - w + 1)), h, w
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        w, h = int(round(height * ratio[1])), height
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def random_erasing(x: torch.Tensor, p: float, gen: torch.Generator, value: float = 0.0, *,
                   scale: tuple[float, float] = (0.02, 0.33), ratio: tuple[float, float] = (0.3, 3.3),
                   noise: bool = False) -> torch.Tensor:
    """Random erasing (Zhong et al. 2020) of normalised (B, C, H, W), in place: with probability p per image one
    rectangle, area fraction uniform in `scale`, aspect ratio h / w log-uniform in `ratio`, at a uniform position.
    As timm's RandomErasing, up to ERASING_ATTEMPTS draws until the rectangle fits in the image (none fits: the
    image stays). Filled with `value`, or with `noise` with N(0, 1) noise per pixel (timm's mode="pixel")."""
    b, c, h, w = x.shape
    k = ERASING_ATTEMPTS
    apply = torch.rand(b, generator=gen) < p
    area = _uniform(b * k, scale[0], scale[1], gen).view(b, k) * (h * w)
    aspect = _uniform(b * k, math.log(ratio[0]), math.log(ratio[1]), gen).exp().view(b, k)
    eh = (area * aspect).sqrt().round().long()  # (B, K)
    ew = (area / aspect).sqrt().round().long()
    fits = (eh >= 1) & (eh <= h) & (ew >= 1) & (ew <= w)
    first = fits.long().argmax(dim=1, keepdim=True)  # the first draw that fits (0 when none does)
    apply &= fits.any(dim=1)
    eh = eh.gather(1, first).squeeze(1).clamp(1, h)  # (B,)
    ew = ew.gather(1, first).squeeze(1).clamp(1, w)
    y0 = (torch.rand(b, generator=gen, dtype=torch.float64) * (h - eh + 1)).floor().long()
    x0 = (torch.rand(b, generator=gen, dtype=torch.float64) * (w - ew + 1)).floor().long()
    dev = x.device
    rows = torch.arange(h, device=dev)[None, :]
    cols = torch.arange(w, device=dev)[None, :]
    y0, x0, eh, ew, apply = (t.to(dev) for t in (y0, x0, eh, ew, apply))
    in_rows = (rows >= y0[:, None]) & (rows < (y0 + eh)[:, None])  # (B, H)
    in_cols = (cols >= x0[:, None]) & (cols < (x0 + ew)[:, None])  # (B, W)
    mask = in_rows[:, :, None] & in_cols[:, None, :] & apply[:, None, None]  # (B, H, W)
    if not noise:
        return x.masked_fill_(mask[:, None], value)
    full = mask[:, None].expand(b, c, h, w)
    fill = torch.randn(int(full.sum()), generator=gen)  # drawn on the CPU generator: the same on every device
    x[full] = fill.to(device=dev, dtype=x.dtype)
    return x


def erase(x: torch.Tensor, spec: AugmentSpec, gen: torch.Generator) -> torch.Tensor:
    """`random_erasing` with the settings of `spec` (erasing, erasing_scale, erasing_ratio, erasing_value)."""
    return random_erasing(x, spec.erasing, gen, scale=spec.erasing_scale, ratio=spec.erasing_ratio,
                          noise=spec.erasing_value == "random")


def augment_batch(x: torch.Tensor, spec: AugmentSpec, gen: torch.Generator,
                  mean: torch.Tensor, std: torch.Tensor, hflips: torch.Tensor | None = None) -> torch.Tensor:
    """uint8 (B, C, H, W) on the device -> augmented, normalised float32 (B, C, H, W).

    Draw order is fixed (shift, hflip, vflip, affine, erasing) so a spec and a generator state give one result.
    With `spec.hflip` "alternate", `hflips` (bool (B,), `alternate_flips`) says which images to mirror, and no
    flip is drawn from `gen`.
    """
    b = x.shape[0]
    if spec.crop_padding or spec.translate:
        dy = torch.zeros(b, dtype=torch.int64)
        dx = torch.zeros(b, dtype=torch.int64)
        for p in (spec.crop_padding, spec.translate):
            if p:
                dy += torch.randint(-p, p + 1, (b,), generator=gen)
                dx += torch.randint(-p, p + 1, (b,), generator=gen)
        x = _shift(x, dy, dx)
    if spec.alternate_hflip:
        if hflips is None or hflips.shape != (b,):
            raise ValueError(f"hflip='alternate' needs the batch's flip mask of shape ({b},), got "
                             f"{None if hflips is None else tuple(hflips.shape)}")
        x = torch.where(hflips.to(x.device)[:, None, None, None], x.flip(3), x)
    for enabled, dim in ((spec.hflip and not spec.alternate_hflip, 3), (spec.vflip, 2)):
        if enabled:
            flip = (torch.rand(b, generator=gen) < 0.5).to(x.device)
            x = torch.where(flip[:, None, None, None], x.flip(dim), x)
    if spec.rotation or spec.resized_crop:
        x = _affine(x.to(torch.float32), spec, gen)
    x = normalize_batch(x, mean, std)
    if spec.erasing:
        x = erase(x, spec, gen)
    return x
