"""Attention modules: CBAM's channel and spatial gates (Woo et al., ECCV 2018) and squeeze-and-excitation.

CBAM refines a feature map F (B, C, H, W) with a channel map Mc (B, C, 1, 1) and a spatial map Ms (B, 1, H, W):
F' = Mc(F) * F, F'' = Ms(F') * F'. The layer shapes follow the authors' reference code
(github.com/Jongchan/attention-module): a shared MLP with biases for the channel gate, a k x k conv (2 -> 1,
no bias) + BatchNorm2d(1) for the spatial gate. SE (Hu et al., CVPR 2018) is the channel gate with average
pooling alone, the rival baseline of the paper.

The modules here are the readable reference. `CBAM(attn_impl="auto")` (the default) computes the same
function with the same parameters through the native operator (`native`: one fused C++ operator per direction)
where it is built and supports the call, which tests hold equal to this reference (outputs and every gradient).
Max pooling sends the whole gradient of a tie to the first maximum (lowest channel index, first position in
row-major order): both implementations pool with `max(dim).values`.

Every gate can keep its last attention map (`keep_map = True`, off by default) in `last_map`, detached,
for visualisation.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
from typing import Callable

import torch
from torch import nn

from ..errors import CbamlabError, unknown
from . import native
from .options import ARRANGEMENTS, ATTN_IMPLS, POOL_TYPES, AttnOptions, odd_kernel, positive_int

__all__ = ["ChannelGate", "SpatialGate", "CBAM", "SE", "get_attn", "list_attn", "no_attention", "set_attn_impl",
           "attn_impl_report", "keeping_maps",
           "AttnOptions", "ARRANGEMENTS", "ATTN_IMPLS", "POOL_TYPES"]


def _hidden_units(channels: int, reduction: int) -> int:
    reduction = positive_int(reduction, "attention reduction")
    channels = positive_int(channels, "attention channel count")
    hidden = channels // reduction
    if hidden < 1:
        raise CbamlabError(f"attention reduction {reduction} leaves no hidden unit for {channels} channels "
                           f"({channels} // {reduction} = 0); use a reduction of at most {channels}")
    return hidden


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
        self.pool_types = AttnOptions(pool_types=pool_types).pool_types  # checked
        self.mlp = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, channels))

    @staticmethod
    def _pool(x: torch.Tensor, kind: str) -> torch.Tensor:
        if kind == "avg":
            return x.mean(dim=(2, 3))
        if kind == "max":
            return x.flatten(2).max(dim=2).values  # a tie's gradient goes to the first maximum
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
    by sigmoid(0) = 0.5 and the gate learns away from uniform. `init_weights` sets it; the model's weight
    init calls it after its generic pass, so the choice survives.
    """

    def __init__(self, kernel_size: int = 7, bn_zero_init: bool = True, keep_map: bool = False):
        super().__init__(keep_map)
        kernel_size = odd_kernel(kernel_size)
        self.bn_zero_init = bn_zero_init
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)
        self.bn = nn.BatchNorm2d(1)
        self.init_weights()

    def init_weights(self) -> None:
        nn.init.constant_(self.bn.weight, 0.0 if self.bn_zero_init else 1.0)
        nn.init.zeros_(self.bn.bias)

    @staticmethod
    def _pool(x: torch.Tensor) -> torch.Tensor:
        channel_max = x.max(dim=1, keepdim=True).values  # a tie's gradient goes to the first maximum
        return torch.cat([channel_max, x.mean(dim=1, keepdim=True)], dim=1)  # (B, 2, H, W)

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self._pool(x)
        return self._keep(torch.sigmoid(self.bn(self.conv(pooled))))  # (B, 1, H, W)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.attention(x)


class CBAM(nn.Module):
    """Convolutional Block Attention Module: channel gate then spatial gate (the paper's best arrangement).

    `arrangement` gives the ablation of the paper's Table 3: "channel_first" (F'' = Ms(Mc(F) F) Mc(F) F),
    "spatial_first" (the spatial gate first), "parallel" (both maps computed from F: F'' = Mc(F) Ms(F) F).
    `spatial=False` leaves channel attention alone. `attn_impl`: "auto" (default: the native operator where it
    is built and supports the call, else the reference, with one log line saying why), "native" (an error where
    it cannot run) or "reference"; the same function and parameters. It can be changed at any time
    (`set_attn_impl`).
    """

    def __init__(self, channels: int, reduction: int = 16, kernel_size: int = 7,
                 arrangement: str = "channel_first", spatial: bool = True, spatial_bn_zero_init: bool = True,
                 pool_types=("avg", "max"), keep_map: bool = False, attn_impl: str = "auto"):
        super().__init__()
        AttnOptions(arrangement=arrangement, attn_impl=attn_impl)  # checks both
        self.arrangement = arrangement
        self.attn_impl = attn_impl
        self.channel = ChannelGate(channels, reduction, pool_types, keep_map=keep_map)
        self.spatial = SpatialGate(kernel_size, spatial_bn_zero_init, keep_map=keep_map) if spatial else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.attn_impl != "reference":
            reason = native.unsupported(self, x)
            if reason is None:
                return native.run(self, x)
            if self.attn_impl == "native":
                raise CbamlabError(f"attn_impl='native' cannot run this CBAM: {reason}")
            native.note_fallback(reason)
        return self.forward_reference(x)

    def impl_for(self, x: torch.Tensor) -> str:
        """The implementation a call on `x` runs: "native" or "reference"."""
        return "native" if self.attn_impl != "reference" and native.unsupported(self, x) is None else "reference"

    def forward_reference(self, x: torch.Tensor) -> torch.Tensor:
        """The paper's formula, step by step (the spec the native operator is tested against)."""
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


def no_attention(channels: int) -> nn.Module:
    """The attention factory of plain models: nothing (an `nn.Identity`, no parameters)."""
    return nn.Identity()


# name -> (builder taking the channel count first, the AttnOptions fields it accepts)
_ATTN: dict[str, tuple[Callable[..., nn.Module], tuple[str, ...]]] = {
    "none": (no_attention, ()),
    "se": (SE, ("reduction", "keep_map")),
    "cbam": (CBAM, ("reduction", "kernel_size", "arrangement", "spatial", "spatial_bn_zero_init", "pool_types",
                    "keep_map", "attn_impl")),
    "channel": (functools.partial(CBAM, spatial=False), ("reduction", "pool_types", "keep_map", "attn_impl")),
}


def list_attn() -> list[str]:
    return sorted(_ATTN)


def get_attn(name: str | None, options: AttnOptions | None = None, **overrides) -> Callable[[int], nn.Module]:
    """A factory `channels -> module` for the attention `name` ("none", "se", "cbam", "channel").

    The options (an `AttnOptions`, and/or its fields as keywords: reduction, kernel_size, arrangement, spatial,
    spatial_bn_zero_init, pool_types, keep_map, attn_impl) apply where the attention has them and are ignored
    otherwise, so one setting can sweep a whole list of variants. They are all checked here, before any model
    is built (the channel count is checked by the factory).
    """
    name = "none" if name is None else name
    if name not in _ATTN:
        raise unknown("attention", name, _ATTN)
    if options is None:
        options = AttnOptions.from_kwargs(**overrides)
    elif overrides:
        options = AttnOptions.from_kwargs(**{**dataclasses.asdict(options), **overrides})
    builder, accepted = _ATTN[name]
    return functools.partial(builder, **options.pick(accepted))


def attn_impl_report(model: nn.Module, device_type: str, dtype: torch.dtype) -> dict | None:
    """What a model's CBAMs run for inputs on `device_type` in `dtype` (recorded in a run's env.json): the
    `attn_impl` settings, the implementations chosen ("native", "reference"), why not native where not, and the
    native operator's build status. None for a model without CBAM."""
    cbams = [m for m in model.modules() if isinstance(m, CBAM)]
    if not cbams:
        return None
    reasons = {"reference" if m.attn_impl == "reference" else native.unsupported_for(m, device_type, dtype)
               for m in cbams}
    runs = sorted("native" if r is None else "reference" for r in reasons)
    return {"attn_impl": sorted({m.attn_impl for m in cbams}), "runs": sorted(set(runs)),
            "why_reference": sorted(r for r in reasons if r not in (None, "reference")) or None,
            "native": native.status()}


def set_attn_impl(model: nn.Module, impl: str) -> int:
    """Switch every CBAM in `model` to `impl` ("auto", "native" or "reference"); returns how many were switched."""
    AttnOptions(attn_impl=impl)
    modules = [m for m in model.modules() if isinstance(m, CBAM)]
    for m in modules:
        m.attn_impl = impl
    return len(modules)


@contextlib.contextmanager
def keeping_maps(model: nn.Module):
    """Every attention gate of `model` keeps its last map inside the block; the previous settings come back after."""
    gates = [m for m in model.modules() if isinstance(m, _KeepsMap)]
    before = [(g.keep_map, g.last_map) for g in gates]
    for g in gates:
        g.keep_map, g.last_map = True, None
    try:
        yield
    finally:
        for g, (keep, last) in zip(gates, before):
            g.keep_map, g.last_map = keep, last
