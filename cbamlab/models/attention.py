"""Attention modules: CBAM's channel and spatial gates (Woo et al., ECCV 2018) and squeeze-and-excitation.

CBAM refines a feature map F (B, C, H, W) with a channel map Mc (B, C, 1, 1) and a spatial map Ms (B, 1, H, W):
F' = Mc(F) * F, F'' = Ms(F') * F'. The layer shapes follow the authors' reference code
(github.com/Jongchan/attention-module): a shared MLP with biases for the channel gate, a k x k conv (2 -> 1,
no bias) + BatchNorm2d(1) for the spatial gate. SE (Hu et al., CVPR 2018) is the channel gate with average
pooling alone, the rival baseline of the paper.

Every gate can keep its last attention map (`keep_map = True`, off by default) in `last_map`, detached,
for visualisation.
"""
from __future__ import annotations

import functools
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CbamlabError, unknown

POOL_TYPES = ("avg", "max", "lp", "lse")
ARRANGEMENTS = ("channel_first", "spatial_first", "parallel")


def _hidden_units(channels: int, reduction: int) -> int:
    if not isinstance(reduction, int) or isinstance(reduction, bool) or reduction < 1:
        raise CbamlabError(f"attention reduction must be a positive integer, got {reduction!r}")
    if not isinstance(channels, int) or channels < 1:
        raise CbamlabError(f"attention channel count must be a positive integer, got {channels!r}")
    hidden = channels // reduction
    if hidden < 1:
        raise CbamlabError(f"attention reduction {reduction} leaves no hidden unit for {channels} channels "
                           f"({channels} // {reduction} = 0); use a reduction of at most {channels}")
    return hidden


def _check_kernel(kernel_size) -> int:
    if not isinstance(kernel_size, int) or isinstance(kernel_size, bool) or kernel_size < 1 or kernel_size % 2 == 0:
        raise CbamlabError(f"spatial attention kernel size must be a positive odd integer (3 or 7 in the paper), "
                           f"got {kernel_size!r}")
    return kernel_size


class _KeepsMap(nn.Module):
    """Holds the last attention map when `keep_map` is set (for Grad-CAM-style figures)."""

    def __init__(self, keep_map: bool = False):
        super().__init__()
        self.keep_map = keep_map
        self.last_map: torch.Tensor | None = None

    def _keep(self, attn_map: torch.Tensor) -> torch.Tensor:
        if self.keep_map:
            self.last_map = attn_map.detach()
        return attn_map


class ChannelGate(_KeepsMap):
    """Channel attention: pooled descriptors through one shared MLP, summed, sigmoid -> (B, C, 1, 1).

    Pool types: "avg", "max" (the paper's pair), "lp" (L2 pooling) and "lse" (log-sum-exp), as in the authors' code.
    """

    def __init__(self, channels: int, reduction: int = 16, pool_types=("avg", "max"), keep_map: bool = False):
        super().__init__(keep_map)
        hidden = _hidden_units(channels, reduction)
        pool_types = tuple(pool_types)
        if not pool_types:
            raise CbamlabError("channel attention needs at least one pool type")
        for p in pool_types:
            if p not in POOL_TYPES:
                raise unknown("pool type", p, POOL_TYPES)
        self.pool_types = pool_types
        self.mlp = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, channels))

    @staticmethod
    def _pool(x: torch.Tensor, kind: str) -> torch.Tensor:
        if kind == "avg":
            return x.mean(dim=(2, 3))
        if kind == "max":
            return x.amax(dim=(2, 3))
        if kind == "lp":
            return x.pow(2).sum(dim=(2, 3)).sqrt()
        return torch.logsumexp(x.flatten(2), dim=2)  # "lse"

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        logits = sum(self.mlp(self._pool(x, p)) for p in self.pool_types)  # (B, C)
        return self._keep(torch.sigmoid(logits)[:, :, None, None])  # (B, C, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.attention(x)


class SpatialGate(_KeepsMap):
    """Spatial attention: channel-wise max and mean maps, a k x k conv (2 -> 1, no bias), BN, sigmoid -> (B, 1, H, W).

    `bn_zero_init` starts the BN's gamma at zero, as the authors' code does, so every position is first scaled
    by sigmoid(0) = 0.5 and the gate learns away from uniform; the model's weight init keeps this choice.
    """

    def __init__(self, kernel_size: int = 7, bn_zero_init: bool = True, keep_map: bool = False):
        super().__init__(keep_map)
        kernel_size = _check_kernel(kernel_size)
        self.bn_zero_init = bn_zero_init
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)
        self.bn = nn.BatchNorm2d(1)
        self.reset_bn()

    def reset_bn(self) -> None:
        nn.init.constant_(self.bn.weight, 0.0 if self.bn_zero_init else 1.0)
        nn.init.zeros_(self.bn.bias)

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([x.amax(dim=1, keepdim=True), x.mean(dim=1, keepdim=True)], dim=1)  # (B, 2, H, W)
        return self._keep(torch.sigmoid(self.bn(self.conv(pooled))))  # (B, 1, H, W)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.attention(x)


class CBAM(nn.Module):
    """Convolutional Block Attention Module: channel gate then spatial gate (the paper's best arrangement).

    `arrangement` gives the ablation of the paper's Table 3: "channel_first" (F'' = Ms(Mc(F) F) Mc(F) F),
    "spatial_first" (the spatial gate first), "parallel" (both maps computed from F: F'' = Mc(F) Ms(F) F).
    `spatial=False` leaves channel attention alone.
    """

    def __init__(self, channels: int, reduction: int = 16, kernel_size: int = 7,
                 arrangement: str = "channel_first", spatial: bool = True, spatial_bn_zero_init: bool = True,
                 pool_types=("avg", "max"), keep_map: bool = False):
        super().__init__()
        if arrangement not in ARRANGEMENTS:
            raise unknown("CBAM arrangement", arrangement, ARRANGEMENTS)
        self.arrangement = arrangement
        self.channel = ChannelGate(channels, reduction, pool_types, keep_map=keep_map)
        self.spatial = SpatialGate(kernel_size, spatial_bn_zero_init, keep_map=keep_map) if spatial else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.spatial is None:
            return self.channel(x)
        if self.arrangement == "channel_first":
            return self.spatial(self.channel(x))
        if self.arrangement == "spatial_first":
            return self.channel(self.spatial(x))
        return x * self.channel.attention(x) * self.spatial.attention(x)  # parallel


class SE(_KeepsMap):
    """Squeeze-and-excitation: global average pool, Linear(C, C//r) + ReLU + Linear(C//r, C) with biases, sigmoid."""

    def __init__(self, channels: int, reduction: int = 16, keep_map: bool = False):
        super().__init__(keep_map)
        hidden = _hidden_units(channels, reduction)
        self.fc = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, channels))

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        return self._keep(torch.sigmoid(self.fc(x.mean(dim=(2, 3))))[:, :, None, None])  # (B, C, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.attention(x)


def _none(channels: int) -> nn.Module:
    return nn.Identity()


# name -> (builder taking the channel count first, the keyword options it accepts)
_ATTN: dict[str, tuple[Callable[..., nn.Module], tuple[str, ...]]] = {
    "none": (_none, ()),
    "se": (SE, ("reduction", "keep_map")),
    "cbam": (CBAM, ("reduction", "kernel_size", "arrangement", "spatial_bn_zero_init", "pool_types", "keep_map")),
    "channel": (functools.partial(CBAM, spatial=False), ("reduction", "pool_types", "keep_map")),
}


def list_attn() -> list[str]:
    return sorted(_ATTN)


def get_attn(name: str | None, **options) -> Callable[[int], nn.Module]:
    """A factory `channels -> module` for the attention `name` ("none", "se", "cbam", "channel").

    `options` (reduction, kernel_size, arrangement, spatial_bn_zero_init, pool_types, keep_map) apply where the
    attention has them and are ignored otherwise, so one setting can sweep a whole list of variants. Options
    that do not depend on the channel count are checked here, before any model is built.
    """
    name = "none" if name is None else name
    if name not in _ATTN:
        raise unknown("attention", name, _ATTN)
    allowed_all = {"reduction", "kernel_size", "arrangement", "spatial_bn_zero_init", "pool_types", "keep_map"}
    extra = sorted(set(options) - allowed_all)
    if extra:
        raise CbamlabError(f"unknown attention option(s) {', '.join(extra)}; known: {', '.join(sorted(allowed_all))}")
    if "kernel_size" in options:
        _check_kernel(options["kernel_size"])
    if "arrangement" in options and options["arrangement"] not in ARRANGEMENTS:
        raise unknown("CBAM arrangement", options["arrangement"], ARRANGEMENTS)
    if "reduction" in options:
        r = options["reduction"]
        if not isinstance(r, int) or isinstance(r, bool) or r < 1:
            raise CbamlabError(f"attention reduction must be a positive integer, got {r!r}")
    builder, accepted = _ATTN[name]
    return functools.partial(builder, **{k: v for k, v in options.items() if k in accepted})
