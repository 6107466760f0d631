"""The fast CBAM: `attention.CBAM`'s math, parameters and state_dict, with fewer passes over the feature map.

The reference (`CBAM.forward_reference`) is the paper's formula written out; autograd then keeps every
intermediate and makes ~30 full-size passes per block, and its 2 -> 1 channel 7x7 convolution runs slowly
in oneDNN. Here one `torch.autograd.Function` does the full-size work of a whole CBAM by hand, while the small
parts (the channel MLP on (B, C) descriptors, the spatial conv + BN on (B, 1, H, W) maps, the sigmoids) are
ordinary modules called in the forward on detached copies of their inputs, and differentiated by autograd
inside the backward. So the BN updates its running statistics exactly as the reference's does, and any
change to those modules is picked up.

For channel_first, out = F * Mc * Ms, with Mc = sigma(sum_k MLP(pool_k F)) and Ms = sigma(BN(conv([max_c G,
mean_c G]))), G = F * Mc. Forward: the pools of F, G = F * Mc, the channel max and mean of G, then G *= Ms
in place (6 reads, 2 writes of the map). Backward, with t = dL/dout * F:
    dL/dMs = sum_c Mc t                            (a batched matrix product)
    D      = dL/dout * Ms + dMean/C (+ dMax at the arg-max channel)
    dL/dMc = sum_hw Ms t + sum_hw F dMean/C (+ the arg-max terms)      (two batched products)
    dL/dF  = Mc D + dAvg/(H W) (+ dMaxPool at the arg-max position)
(7 reads, 3 writes), saving only F, the two maps and the two arg-max indices. spatial_first and parallel
are the same algebra in another order. The spatial convolution runs as row matrix products (`rowconv`) on
maps up to `ROWCONV_MAX_WIDTH` wide and as a channels_last conv2d above.

Max pooling ties: the whole gradient goes to the first maximum (the lowest channel index; the first position
in row-major order), as `torch.max(dim)` and max_pool2d route it. The reference pools with `max(dim).values`
so that both follow this rule (`amax` would split it evenly among the ties).

Falls back to the reference for the "lp" and "lse" pools, under torch.jit tracing, ONNX export and
torch.compile (which all want plain ops), and when nothing needs a gradient it runs the same forward without
building the Function. Double backward is not supported.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .attention_fast_backward import cbam_backward
from .rowconv import row_conv

FAST_POOLS = frozenset({"avg", "max"})
ROWCONV_MAX_WIDTH = 32  # wider maps: the banded product wastes W/k of its work; channels_last conv2d wins


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
        return _forward(cbam, x, graph=False)[0]


def _is_channels_last(x: torch.Tensor) -> bool:
    return not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)


def _hw_pools(x: torch.Tensor, pool_types, need_index: bool):
    """Per-channel descriptors {kind: (B, C)} and the flat (h*W + w) arg-max index (B, C) or None."""
    pools, index = {}, None
    for kind in pool_types:
        if kind == "avg":
            pools[kind] = F.adaptive_avg_pool2d(x, 1).flatten(1)
        elif need_index:
            value, index = F.adaptive_max_pool2d(x, 1, return_indices=True)
            pools[kind], index = value.flatten(1), index.flatten(1)
        elif _is_channels_last(x):
            pools[kind] = F.adaptive_max_pool2d(x, 1).flatten(1)
        else:
            pools[kind] = x.amax(dim=(2, 3))
    return pools, index


def _c_pools(g: torch.Tensor, need_index: bool, mean=None):
    """Channel-wise max (B, 1, H, W), its channel index or None, and mean (B, 1, H, W) unless given."""
    if need_index:
        smax, index = g.max(dim=1, keepdim=True)
    else:
        smax, index = g.amax(dim=1, keepdim=True), None
    return smax, index, g.mean(dim=1, keepdim=True) if mean is None else mean


def _scaled_mean(x: torch.Tensor, mc: torch.Tensor) -> torch.Tensor:
    """mean_c (x * mc) as one batched product (B, 1, C) @ (B, C, H*W) -> (B, 1, H, W); reads x once at full
    speed where a channel mean of a channels_last map is a slow inner reduction."""
    b, c, h, w = x.shape
    return torch.bmm((mc / c).to(x.dtype).unsqueeze(1), x.view(b, c, h * w)).view(b, 1, h, w)


def _leaves(tensors, graph: bool):
    return [t.detach().requires_grad_() for t in tensors] if graph else list(tensors)


def _channel_map(gate, pools: dict, graph: bool):
    """Mc (B, C) from the descriptors, as ChannelGate.attention; with `graph`, (leaves, Mc) to differentiate."""
    leaves = _leaves([pools[k] for k in gate.pool_types], graph)
    with torch.set_grad_enabled(graph):
        mc = torch.sigmoid(sum(gate.mlp(p) for p in leaves))  # (B, C)
    gate._keep(mc.detach()[:, :, None, None])
    return mc.detach(), (dict(zip(gate.pool_types, leaves)), mc)


def _spatial_map(gate, smax: torch.Tensor, smean: torch.Tensor, graph: bool):
    """Ms (B, 1, H, W) from the channel max and mean maps, as SpatialGate.attention."""
    leaves = _leaves([smax, smean], graph)
    with torch.set_grad_enabled(graph):
        if smax.shape[-1] <= ROWCONV_MAX_WIDTH:
            rows = torch.stack([leaves[0][:, 0], leaves[1][:, 0]], dim=2)  # (B, H, 2, W)
            a = row_conv(rows, gate.conv.weight).unsqueeze(1)
        else:
            pooled = torch.cat(leaves, dim=1).contiguous(memory_format=torch.channels_last)  # (B, 2, H, W)
            a = gate.conv(pooled)
        ms = torch.sigmoid(gate.bn(a))  # (B, 1, H, W)
    gate._keep(ms.detach())
    return ms.detach(), (leaves, ms)


def _scale_(g: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """g * m, in place when the result keeps g's dtype (g is ours)."""
    return g.mul_(m) if torch.result_type(g, m) == g.dtype else g * m


def _forward(cbam, x: torch.Tensor, graph: bool):
    """The CBAM output and, with `graph`, what the backward needs."""
    channel, spatial, arrangement = cbam.channel, cbam.spatial, cbam.arrangement
    if spatial is None:
        pools, hw_index = _hw_pools(x, channel.pool_types, graph)
        mc, mc_graph = _channel_map(channel, pools, graph)
        return x * mc[:, :, None, None], dict(mc=mc, mc_graph=mc_graph, hw_index=hw_index)
    if arrangement == "channel_first":
        pools, hw_index = _hw_pools(x, channel.pool_types, graph)
        mc, mc_graph = _channel_map(channel, pools, graph)
        g = x * mc[:, :, None, None]  # (B, C, H, W)
        smax, c_index, smean = _c_pools(g, graph, _scaled_mean(x, mc))
        ms, ms_graph = _spatial_map(spatial, smax, smean, graph)
        out = _scale_(g, ms)
    elif arrangement == "spatial_first":
        smax, c_index, smean = _c_pools(x, graph)
        ms, ms_graph = _spatial_map(spatial, smax, smean, graph)
        g = x * ms
        pools, hw_index = _hw_pools(g, channel.pool_types, graph)
        mc, mc_graph = _channel_map(channel, pools, graph)
        out = _scale_(g, mc[:, :, None, None])
    else:  # parallel
        pools, hw_index = _hw_pools(x, channel.pool_types, graph)
        smax, c_index, smean = _c_pools(x, graph)
        mc, mc_graph = _channel_map(channel, pools, graph)
        ms, ms_graph = _spatial_map(spatial, smax, smean, graph)
        out = _scale_(x * mc[:, :, None, None], ms)
    return out, dict(mc=mc, ms=ms, mc_graph=mc_graph, ms_graph=ms_graph, hw_index=hw_index, c_index=c_index)


class _CBAMFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, cbam, *params):
        out, state = _forward(cbam, x, graph=True)
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
