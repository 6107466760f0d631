"""A stride-1, zero-padded ("same") k x k convolution to one output channel, written as a matrix product per row.

CBAM's spatial gate convolves a 2-channel map to 1 channel with a 7x7 kernel. That is ~100 multiply-adds per
pixel, yet oneDNN runs it at a few GFLOP/s (8 ms forward + backward at (128, 2, 28, 28) on one Zen 4 core,
more than a 16 -> 16 3x3 convolution of the block). Here the kernel row i of input channel c acts along the
width as a banded (Toeplitz) matrix T[c, i] of shape (W, W), so one matrix product
    Y[b, h, i, :] = sum_c X[b, c, h, :] @ T[c, i]                 # (B*H, Cin*W) @ (Cin*W, k*W)
computes every row's partial sums, and the output sums k shifted rows: out[b, h] = sum_i Y[b, h + i - k//2, i].
The product does W / k times the direct work (4x at 28 px), but at matrix-product speed, and its backward is
two more products. Rows outside the image count as zeros, as with `padding=k//2`. The shifted row sums run
in float32 whatever the products' dtype (bfloat16 adds on rows of 28 are not vectorised, and 14x slower).
"""
from __future__ import annotations

import functools

import torch


@functools.lru_cache(maxsize=64)
def _diagonals(width: int, k: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """(W*W, k) 0/1 matrix: entry ((u, v), j) is 1 where u - v + k//2 == j (input column u feeds output v)."""
    u = torch.arange(width, device=device)[:, None]
    v = torch.arange(width, device=device)[None, :]
    j = (u - v + k // 2).flatten()
    out = torch.zeros(width * width, k, device=device, dtype=dtype)
    valid = (j >= 0) & (j < k)
    out[valid.nonzero().flatten(), j[valid]] = 1
    return out


def _toeplitz(weight: torch.Tensor, width: int) -> torch.Tensor:
    """Kernel (Cin, k, k) -> (Cin*W, k*W) with T[(c, u), (i, v)] = weight[c, i, u - v + k//2] (0 off the band)."""
    cin, k, _ = weight.shape
    band = weight.reshape(cin * k, k) @ _diagonals(width, k, weight.device, weight.dtype).t()  # (Cin*k, W*W)
    return band.view(cin, k, width, width).permute(0, 2, 1, 3).reshape(cin * width, k * width)


def _shift_sum(y: torch.Tensor) -> torch.Tensor:
    """(B, H, k, W) -> (B, H, W): out[:, h] = sum_i y[:, h + i - k//2, i] over rows inside the image."""
    _, height, k, _ = y.shape
    p = k // 2
    out = y[:, :, p].clone()
    for i in range(k):
        d = i - p
        if i == p or abs(d) >= height:
            continue
        lo, hi = max(0, -d), height - max(0, d)
        out[:, lo:hi] += y[:, lo + d:hi + d, i]
    return out


def _shift_spread(g: torch.Tensor, k: int) -> torch.Tensor:
    """The adjoint of `_shift_sum`: (B, H, W) -> (B, H, k, W) with out[:, h + i - k//2, i] = g[:, h].

    out[b, r, i, w] = g[b, r - i + k//2, w] (zero outside the image) is, on g padded by k//2 rows on both
    sides, gp[b, r + (k - 1 - i), w]: an unfold of k rows, reversed along the kernel axis."""
    b, height, width = g.shape
    p = k // 2
    gp = g.new_zeros(b, height + 2 * p, width)
    gp[:, p:p + height] = g
    windows = gp.unfold(1, k, 1)  # (B, H, W, k): windows[b, r, w, j] = gp[b, r + j, w]
    return windows.flip(3).permute(0, 1, 3, 2).contiguous()


class _RowConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight):
        # x: (B, H, Cin, W) contiguous; weight: (Cin, k, k)
        b, height, cin, width = x.shape
        k = weight.shape[-1]
        t = _toeplitz(weight, width)                                  # (Cin*W, k*W)
        y = (x.reshape(b * height, cin * width) @ t).view(b, height, k, width)
        ctx.save_for_backward(x, t)
        ctx.k = k
        acc = torch.promote_types(x.dtype, torch.float32)
        return _shift_sum(y.to(acc)).to(x.dtype)                     # (B, H, W); the sums in >= float32

    @staticmethod
    def backward(ctx, grad):
        x, t = ctx.saved_tensors
        b, height, cin, width = x.shape
        k = ctx.k
        acc = torch.promote_types(x.dtype, torch.float32)
        gy = _shift_spread(grad.to(acc).contiguous(), k).to(x.dtype).view(b * height, k * width)
        gx = (gy @ t.t()).view(b, height, cin, width) if ctx.needs_input_grad[0] else None
        gw = None
        if ctx.needs_input_grad[1]:
            gt = x.reshape(b * height, cin * width).t() @ gy           # (Cin*W, k*W)
            gt = gt.view(cin, width, k, width).permute(0, 2, 1, 3).reshape(cin * k, width * width)
            gw = (gt @ _diagonals(width, k, gt.device, gt.dtype)).view(cin, k, k)
        return gx, gw


def row_conv(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """`conv2d(x, weight, padding=k//2)` for one output channel, with x given as rows: (B, H, Cin, W) -> (B, H, W).

    `weight` is the conv's (1, Cin, k, k) (odd k). Under autocast both run in the autocast dtype, as a
    convolution would; the weight's gradient comes back in the weight's own dtype.
    """
    w = weight[0]
    if torch.is_autocast_enabled(x.device.type):
        dtype = torch.get_autocast_dtype(x.device.type)
        x, w = x.to(dtype), w.to(dtype)
    elif w.dtype != x.dtype:
        w = w.to(x.dtype)
    with torch.autocast(x.device.type, enabled=False):
        return _RowConv.apply(x.contiguous(), w)
