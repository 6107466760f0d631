"""The native CBAM as a PyTorch operator: the fake (meta) implementations of `cbamlab::cbam_forward` and
`cbamlab::cbam_backward` (the schemas, the CPU kernels and the autograd formula, which calls the backward
operator, are registered by the C++ library itself).

Registered once, after the library is loaded (`register`). With them,
`torch.compile` and `torch.export` see one opaque operator per CBAM and direction, and
`torch.library.opcheck` checks the registration.
"""
from __future__ import annotations

import torch

ARRANGEMENTS = ("channel_only", "channel_first", "spatial_first", "parallel")
_registered = False


def _acc(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _layout(x: torch.Tensor) -> torch.memory_format:
    """The layout the kernels read x in (and write the output and dx in): channels_last or contiguous."""
    if not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def _fake_forward(x, w1, b1, w2, b2, conv_w, bn_w, bn_b, running_mean, running_var, num_batches_tracked,
                  arrangement, use_avg, use_max, training, momentum, eps):
    b, c, h, w = x.shape
    acc = _acc(x.dtype)
    spatial = arrangement != "channel_only"
    k = int(use_avg) + int(use_max)
    out = torch.empty_like(x, memory_format=_layout(x))
    mc = x.new_empty((b, c), dtype=acc)
    ms = x.new_empty((b, h, w) if spatial else (0,), dtype=acc)
    pools = x.new_empty((k, b, c), dtype=acc)
    hidden = x.new_empty((k * b, w1.shape[0]), dtype=acc)
    hw_index = x.new_empty((b, c) if use_max else (0,), dtype=torch.long)
    c_index = x.new_empty((b, h, w) if spatial else (0,), dtype=torch.long)
    spatial_maps = x.new_empty((3, b, h, w) if spatial else (0,), dtype=acc)
    stats = x.new_empty((2,) if spatial else (0,), dtype=torch.float64)
    return out, mc, ms, pools, hidden, hw_index, c_index, spatial_maps, stats


def _fake_backward(dout, x, w1, b1, w2, conv_w, bn_w, mc, ms, pools, hidden, hw_index, c_index, spatial_maps, stats,
                   arrangement, use_avg, use_max, batch_stats, eps):
    acc = _acc(x.dtype)
    spatial = arrangement != "channel_only"
    dx = torch.empty_like(x, memory_format=_layout(x))
    empty = x.new_empty((0,), dtype=acc)
    return (dx, torch.empty_like(w1), torch.empty_like(b1), torch.empty_like(w2), w2.new_empty((w2.shape[0],)),
            torch.empty_like(conv_w) if spatial else empty,
            torch.empty_like(bn_w) if spatial else empty,
            torch.empty_like(bn_w) if spatial else empty)


def register() -> None:
    """Register the fake implementations (once per process); the autograd formula is registered in C++."""
    global _registered
    if _registered:
        return
    torch.library.register_fake("cbamlab::cbam_forward")(_fake_forward)
    torch.library.register_fake("cbamlab::cbam_backward")(_fake_backward)
    _registered = True
