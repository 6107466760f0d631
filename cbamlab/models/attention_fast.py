"""The fast CBAM: `attention.CBAM`'s math, parameters and state_dict, with fewer passes over the feature map.

The reference (`CBAM.forward_reference`) is the paper's formula written out; autograd then keeps every
intermediate, each product's backward makes two more full-size passes and their sums more, and the 2 -> 1
channel 7x7 convolution runs slowly in oneDNN. Here one `torch.autograd.Function` does the full-size work of a whole CBAM by hand, while the small
parts (the channel MLP on (B, C) descriptors, the spatial conv + BN on (B, 1, H, W) maps, the sigmoids) are
ordinary modules called in the forward on detached copies of their inputs, and differentiated by autograd
inside the backward. So the BN updates its running statistics exactly as the reference's does, and any
change to those modules is picked up.

For channel_first, out = F * Mc * Ms, with Mc = sigma(sum_k MLP(pool_k F)) and Ms = sigma(BN(conv([max_c G,
mean_c G]))), G = F * Mc. Forward: the pools of F, G = F * Mc, the channel max and mean of G, then G *= Ms
in place (6 reads, 2 writes of the map). Backward, with t = dL/dout * F:
    dL/dMs = sum_c Mc t                                      (a batched matrix product)
    D      = dL/dG = dL/dout * Ms + dMean/C (+ dMax at the arg-max channel)
    dL/dMc = sum_hw F D
    dL/dF  = Mc D + dAvg/(H W) (+ dMaxPool at the arg-max position)         (in place in D)
(about 9 reads and 5 writes, each a plain vectorised kernel), saving only F, the two maps and the two
arg-max indices; the arg-max additions touch only the indexed elements (`put_`). spatial_first and parallel
are the same algebra in another order. The spatial convolution runs as row matrix products (`rowconv`) on
maps 7 to `ROWCONV_MAX_WIDTH` wide and as a conv2d on others.

Max pooling ties: the whole gradient goes to the first maximum (the lowest channel index; the first position
in row-major order), as `torch.max(dim)` and max_pool2d route it. The reference pools with `max(dim).values`
so that both follow this rule (`amax` would split it evenly among the ties).

When nothing needs a gradient (inference), it runs the reference's steps with value-only pools, in-place
scaling and as few ops as it can (at batch 1 each op's fixed cost is most of the time). Falls back to the
reference for the "lp" and "lse" pools, and under torch.jit tracing, ONNX export and torch.compile (which all
want plain ops). Double backward is not supported.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .attention_fast_backward import cbam_backward, spatial_operand
from .rowconv import row_conv

FAST_POOLS = frozenset({"avg", "max"})
ROWCONV_MAX_WIDTH = 32  # wider maps: the banded product wastes W/k of its work; channels_last conv2d wins
ROWCONV_MIN_ROWS = 256  # inference on fewer rows (B * H): conv2d's fixed cost is lower
ROWCONV_MIN_WIDTH = 7  # narrower maps (resnet50's later stages at 32 px): conv2d's fixed cost is lower


def supported(cbam) -> bool:
    """Whether the fast path handles this CBAM's configuration (else it runs the reference)."""
    return set(cbam.channel.pool_types) <= FAST_POOLS


def _plain_ops_wanted() -> bool:
    return torch.jit.is_tracing() or torch.onnx.is_in_onnx_export() or torch.compiler.is_compiling()


def cbam_forward(cbam, x: torch.Tensor) -> torch.Tensor:
    """`cbam(x)` by the fast path (or the reference where the fast path does not apply)."""
    if not supported(cbam) or _plain_ops_wanted():
        return cbam.forward_reference(x)
    if not (x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last)):
        x = x.contiguous()
    params = tuple(cbam.parameters())
    if torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in params)):
        return _CBAMFunction.apply(x, cbam, *params)
    with torch.no_grad():
        return _infer(cbam, x)


# Inference (nothing needs a gradient): the reference's steps with value-only pools and in-place scaling, and as
# few ops as possible, since at batch 1 each op's fixed cost is most of the time.

def _mlp_on_pools(gate, pools: list) -> torch.Tensor:
    """sum_k MLP(pool_k) (B, C), as one MLP call on the stacked descriptors (K*B, C)."""
    if len(pools) == 1:
        return gate.mlp(pools[0])
    return gate.mlp(torch.cat(pools)).view(len(pools), *pools[0].shape).sum(dim=0)


def _infer_mc(gate, x: torch.Tensor) -> torch.Tensor:
    pools = [_hw_mean(x) if k == "avg" else
             F.adaptive_max_pool2d(x, 1).flatten(1) if _is_channels_last(x) else x.amax(dim=(2, 3))
             for k in gate.pool_types]
    return gate._keep(torch.sigmoid(_mlp_on_pools(gate, pools)).view(*x.shape[:2], 1, 1))  # (B, C, 1, 1)


def _infer_ms(gate, x: torch.Tensor) -> torch.Tensor:
    smax, smean = x.amax(dim=1, keepdim=True), x.mean(dim=1, keepdim=True)
    if x.shape[0] * x.shape[2] >= ROWCONV_MIN_ROWS and ROWCONV_MIN_WIDTH <= x.shape[3] <= ROWCONV_MAX_WIDTH:
        a = row_conv(torch.stack([smax[:, 0], smean[:, 0]], dim=2), gate.conv.weight).unsqueeze(1)
    else:
        a = gate.conv(torch.cat([smax, smean], dim=1))
    return gate._keep(torch.sigmoid(gate.bn(a)))  # (B, 1, H, W)


def _infer(cbam, x: torch.Tensor) -> torch.Tensor:
    channel, spatial = cbam.channel, cbam.spatial
    if spatial is None:
        return x * _infer_mc(channel, x)
    if cbam.arrangement == "channel_first":
        g = x * _infer_mc(channel, x)  # (B, C, H, W)
        return _scale_(g, spatial_operand(_infer_ms(spatial, g), g))
    if cbam.arrangement == "spatial_first":
        g = x * spatial_operand(_infer_ms(spatial, x), x)
        return _scale_(g, _infer_mc(channel, g))
    return _scale_(x * _infer_mc(channel, x), spatial_operand(_infer_ms(spatial, x), x))


def _hw_mean(x: torch.Tensor) -> torch.Tensor:
    """The mean over H, W (B, C). On channels_last maps an avg_pool2d over the whole map: the same values as
    adaptive_avg_pool2d (bit for bit there), without its full-size float32 copy of a bfloat16 map (x1.5-2.6)."""
    if _is_channels_last(x):
        return F.avg_pool2d(x, x.shape[2:]).flatten(1)
    return F.adaptive_avg_pool2d(x, 1).flatten(1)


def _is_channels_last(x: torch.Tensor) -> bool:
    return not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)


# Training: the full-size work by hand, the small maps through their modules on detached leaves (a graph that
# the backward differentiates), plus the arg-max indices of the max pools.

def _hw_pools(x: torch.Tensor, pool_types):
    """Per-channel descriptors {kind: (B, C)} and the flat (h*W + w) arg-max index (B, C) of the max pool."""
    if x.shape[2] * x.shape[3] == 1:  # one position: both pools are the map itself
        index = torch.zeros(x.shape[:2], dtype=torch.long, device=x.device) if "max" in pool_types else None
        return {kind: x.flatten(1) for kind in pool_types}, index
    pools, index = {}, None
    for kind in pool_types:
        if kind == "avg":
            pools[kind] = _hw_mean(x)
        else:
            value, index = F.adaptive_max_pool2d(x, 1, return_indices=True)
            pools[kind], index = value.flatten(1), index.flatten(1)
    return pools, index


def _c_pools(g: torch.Tensor, mean=None):
    """Channel-wise max (B, 1, H, W), its channel index, and mean (B, 1, H, W) unless given."""
    smax, index = g.max(dim=1, keepdim=True)
    return smax, index, g.mean(dim=1, keepdim=True) if mean is None else mean


def _scaled_mean(x: torch.Tensor, mc: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """mean_c g for g = x * mc. On channels_last maps with few channels as one batched product (B, 1, C) @
    (B, C, H*W) over x, which reads x at full speed where a mean over 16 or 32 contiguous channels is slow."""
    b, c, h, w = x.shape
    if c >= 64 or h * w < 8 or not _is_channels_last(x):
        return g.mean(dim=1, keepdim=True)
    return torch.bmm((mc / c).to(x.dtype).unsqueeze(1), x.view(b, c, h * w)).view(b, 1, h, w)


def _leaves(tensors):
    return [t.detach().requires_grad_() for t in tensors]


def _channel_map(gate, pools: dict):
    """Mc (B, C) from the descriptors, as ChannelGate.attention, and (leaf, Mc): the leaf is the stacked
    descriptors (K*B, C) in `gate.pool_types` order."""
    stacked = torch.cat([pools[k] for k in gate.pool_types]) if len(pools) > 1 else pools[gate.pool_types[0]]
    leaf = stacked.detach().requires_grad_()
    with torch.enable_grad():
        logits = gate.mlp(leaf)
        if len(pools) > 1:
            logits = logits.view(len(pools), -1, logits.shape[1]).sum(dim=0)
        mc = torch.sigmoid(logits)  # (B, C)
    gate._keep(mc.detach()[:, :, None, None])
    return mc.detach(), (leaf, mc)


def _spatial_map(gate, smax: torch.Tensor, smean: torch.Tensor):
    """Ms (B, 1, H, W) from the channel max and mean maps, as SpatialGate.attention, and (leaves, Ms)."""
    leaves = _leaves([smax, smean])
    with torch.enable_grad():
        if ROWCONV_MIN_WIDTH <= smax.shape[-1] <= ROWCONV_MAX_WIDTH:
            rows = torch.stack([leaves[0][:, 0], leaves[1][:, 0]], dim=2)  # (B, H, 2, W)
            a = row_conv(rows, gate.conv.weight).unsqueeze(1)
        else:
            pooled = torch.cat(leaves, dim=1).contiguous(memory_format=torch.channels_last)  # (B, 2, H, W)
            a = gate.conv(pooled)
        ms = torch.sigmoid(gate.bn(a))  # (B, 1, H, W)
    gate._keep(ms.detach())
    return ms.detach(), (leaves, ms)


def _scale_(g: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """g * m, in place when both have one dtype (g is ours)."""
    return g.mul_(m) if m.dtype == g.dtype else g * m


def _forward(cbam, x: torch.Tensor):
    """The CBAM output and what the backward needs."""
    channel, spatial, arrangement = cbam.channel, cbam.spatial, cbam.arrangement
    if spatial is None:
        pools, hw_index = _hw_pools(x, channel.pool_types)
        mc, mc_graph = _channel_map(channel, pools)
        return x * mc[:, :, None, None], dict(mc=mc, mc_graph=mc_graph, hw_index=hw_index,
                                                  pool_types=channel.pool_types)
    if arrangement == "channel_first":
        pools, hw_index = _hw_pools(x, channel.pool_types)
        mc, mc_graph = _channel_map(channel, pools)
        g = x * mc[:, :, None, None]  # (B, C, H, W)
        smax, c_index, smean = _c_pools(g, _scaled_mean(x, mc, g))
        ms, ms_graph = _spatial_map(spatial, smax, smean)
        ms_op = spatial_operand(ms, g)
        out = _scale_(g, ms_op)
    elif arrangement == "spatial_first":
        smax, c_index, smean = _c_pools(x)
        ms, ms_graph = _spatial_map(spatial, smax, smean)
        ms_op = spatial_operand(ms, x)
        g = x * ms_op
        pools, hw_index = _hw_pools(g, channel.pool_types)
        mc, mc_graph = _channel_map(channel, pools)
        out = _scale_(g, mc[:, :, None, None])
    else:  # parallel
        pools, hw_index = _hw_pools(x, channel.pool_types)
        smax, c_index, smean = _c_pools(x)
        mc, mc_graph = _channel_map(channel, pools)
        ms, ms_graph = _spatial_map(spatial, smax, smean)
        ms_op = spatial_operand(ms, x)
        out = _scale_(x * mc[:, :, None, None], ms_op)
    return out, dict(mc=mc, ms=ms, mc_graph=mc_graph, ms_graph=ms_graph, hw_index=hw_index, c_index=c_index,
                     pool_types=channel.pool_types, ms_op=None if ms_op is ms else ms_op)


class _CBAMFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, cbam, *params):
        out, state = _forward(cbam, x)
        ctx.save_for_backward(x)
        ctx.state, ctx.cbam, ctx.params = state, cbam, params
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dout):
        (x,) = ctx.saved_tensors
        with torch.autocast(x.device.type, enabled=False):
            dx, grads = cbam_backward(ctx.cbam, x, dout, ctx.state, ctx.params)
        ctx.state = None
        return (dx, None, *grads)
