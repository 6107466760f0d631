"""The backward of the fast CBAM (`attention_fast`): the full-size algebra by hand, the small graphs by autograd.

Names: x is the CBAM input F (B, C, H, W), dout the gradient of its output, mc (B, C) and ms (B, 1, H, W) the
two maps, t = dout * x. A channel vector v (B, C) contracts with a (B, C, H*W) view as `v @ x3` and a spatial
map m (B, 1, H, W) as `x3 @ m`; both are batched matrix products, which read the map once at full speed.
"""
from __future__ import annotations

import functools

import torch


def _small_grads(graph_outputs, grad_outputs, leaves, params):
    """Gradients of the small graphs: (leaf grads, {param: grad}) for the params that need one."""
    wanted = [p for p in params if p.requires_grad]
    grads = torch.autograd.grad(graph_outputs, [*leaves, *wanted], grad_outputs, allow_unused=True)
    leaf_grads = [torch.zeros_like(leaf) if g is None else g for leaf, g in zip(leaves, grads)]
    return leaf_grads, {id(p): g for p, g in zip(wanted, grads[len(leaves):]) if g is not None}


def _flat(t: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, H*W) as a view (contiguous or channels_last)."""
    return t.view(t.shape[0], t.shape[1], -1)


def spatial_operand(m: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A spatial map m (B, 1, H, W) as an operand of element-wise ops with `like` (B, C, H, W): m itself
    (broadcast), or m expanded to a dense map in like's layout where broadcasting it is slow: 2-byte dtypes on
    channels_last maps of fewer than 32 channels, whose inner loop (over C) is shorter than one vector and runs
    scalar (bfloat16 at 16 channels: x9 the time of a same-shape product)."""
    b, c, h, w = like.shape
    if like.element_size() == 2 and c < 32 and not like.is_contiguous() \
            and like.is_contiguous(memory_format=torch.channels_last):
        return m.to(like.dtype).expand(b, c, h, w).contiguous(memory_format=torch.channels_last)
    return m


def _map(v: torch.Tensor, x3: torch.Tensor, shape) -> torch.Tensor:
    """sum_c v[b, c] x3[b, c, :] -> (B, 1, H, W): a batched matrix product, except on maps of a few positions,
    where the product's fixed cost is larger than an element-wise product and a sum."""
    if x3.shape[2] < 8:
        return (v.unsqueeze(2) * x3).sum(dim=1).view(shape[0], 1, *shape[2:])
    return torch.bmm(v.unsqueeze(1), x3).view(shape[0], 1, *shape[2:])


@functools.lru_cache(maxsize=32)
def _bases(shape, strides, device):
    """Storage offsets of d[b, 0, h, w] (B, 1, H, W) and of d[b, c, 0, 0] (B, C) for a map of this layout."""
    bs, cs, hs, ws = shape
    sb, sc, sh, sw = strides
    b, h, w, c = (torch.arange(n, device=device) for n in (bs, hs, ws, cs))
    pixel = b[:, None, None, None] * sb + h[:, None] * sh + w * sw
    return pixel, b[:, None] * sb + c * sc


def _add_at_(d: torch.Tensor, offsets: torch.Tensor, src: torch.Tensor) -> None:
    """d's storage at `offsets` += src. `put_` on a flat view of the storage: scatter_add_ and scatter_ on a
    channels_last or bfloat16 map copy the whole map (twice), this touches only the indexed elements."""
    flat = d.as_strided((d.numel(),), (1,), d.storage_offset())
    flat.put_(offsets.flatten(), src.flatten(), accumulate=True)


def scatter_channel_(d: torch.Tensor, index: torch.Tensor, src: torch.Tensor) -> None:
    """d[b, index[b, 0, h, w], h, w] += src[b, 0, h, w]."""
    pixel, _ = _bases(tuple(d.shape), d.stride(), d.device)
    _add_at_(d, pixel + index * d.stride(1), src)


def scatter_position_(d: torch.Tensor, index: torch.Tensor, src: torch.Tensor) -> None:
    """d[b, c, p // W, p % W] += src[b, c] at the flat position p = index[b, c] (= h * W + w)."""
    _, channel = _bases(tuple(d.shape), d.stride(), d.device)
    ws, sh, sw = d.shape[3], d.stride(2), d.stride(3)
    if d.shape[2] == 1 or sh == ws * sw:  # rows and columns merge (contiguous, channels_last): no division
        _add_at_(d, channel + index * sw, src)
    else:
        _add_at_(d, channel + (index // ws) * sh + (index % ws) * sw, src)


class _Channel:
    """The channel map's graph: mc = sigmoid(sum_k MLP(pool_k)) on the stacked descriptors, and where they came
    from."""

    def __init__(self, state, dtype):
        self.leaf, self.out = state["mc_graph"]
        self.kinds = list(state["pool_types"])
        self.mc = state["mc"].to(dtype)
        self.hw_index = state["hw_index"]  # (B, C) flat arg-max position of the max pool, or None

    def split(self, dleaf) -> dict:
        """{kind: d pool (B, C)} from the stacked descriptors' gradient."""
        return dict(zip(self.kinds, dleaf.chunk(len(self.kinds))))

    def grads(self, dmc, params):
        """-> ({kind: d pool (B, C)}, param grads) from dL/dMc (B, C)."""
        (dleaf,), p = _small_grads([self.out], [dmc.to(self.out.dtype)], [self.leaf], params)
        return self.split(dleaf), p

    def add_max_grad_(self, d: torch.Tensor, dpools: dict) -> None:
        """d += the max pool's input gradient (at the arg-max position)."""
        if "max" in dpools:
            scatter_position_(d, self.hw_index, dpools["max"].to(d.dtype))

    @staticmethod
    def avg_term(dpools: dict, hw: int, dtype):
        """d avg / (H W) as (B, C, 1, 1), or None."""
        return None if "avg" not in dpools else (dpools["avg"].to(dtype) / hw)[:, :, None, None]


def _spatial_grads(state, dms, params):
    leaves, ms = state["ms_graph"]
    (dmax, dmean), p = _small_grads([ms], [dms.to(ms.dtype)], leaves, params)
    return dmax, dmean, p


def _scale_add_(d: torch.Tensor, mc4: torch.Tensor, avg, out=None) -> torch.Tensor:
    """d * mc4 + avg into `out` (default: in place); mc4 and avg are (B, C, 1, 1), avg may be None."""
    out = d if out is None else out
    return torch.mul(d, mc4, out=out) if avg is None else torch.addcmul(avg, d, mc4, out=out)


def cbam_backward(cbam, x: torch.Tensor, dout: torch.Tensor, state: dict, params):
    """(dL/dx, grads of `params` in order) for the fast CBAM's forward of `x`."""
    dtype = dout.dtype
    x = x.to(dtype)
    c, hw = x.shape[1], x.shape[2] * x.shape[3]
    ch = _Channel(state, dtype)
    mc4 = ch.mc[:, :, None, None]
    grads: dict = {}
    if cbam.spatial is None:
        dpools, g = ch.grads((dout * x).sum(dim=(2, 3)), params)
        grads.update(g)
        dx = _scale_add_(dout, mc4, ch.avg_term(dpools, hw, dtype), out=torch.empty_like(x))
        ch.add_max_grad_(dx, dpools)
        return dx, [grads.get(id(p)) for p in params]

    ms = state["ms"].to(dtype)
    ms_op = ms if state.get("ms_op") is None else state["ms_op"].to(dtype)  # (expanded where that is faster)
    c_index = state["c_index"]  # (B, 1, H, W) arg-max channel of the spatial max pool
    t = dout * x
    dms = _map(ch.mc, _flat(t), x.shape)  # the part of dL/dMs through the final scaling
    arrangement = cbam.arrangement
    if arrangement == "channel_first":  # out = G * Ms, G = x * Mc; Ms pools G
        dmax, dmean, g = _spatial_grads(state, dms, params)
        grads.update(g)
        d = torch.mul(dout, ms_op, out=torch.empty_like(x))  # dL/dG
        d.add_(spatial_operand(dmean.to(dtype) / c, d))
        scatter_channel_(d, c_index, dmax.to(dtype))
        dmc = torch.mul(x, d, out=t).sum(dim=(2, 3))  # sum_hw x dL/dG (t is free again)
        dpools, g = ch.grads(dmc, params)
        grads.update(g)
        dx = _scale_add_(d, mc4, ch.avg_term(dpools, hw, dtype))
        ch.add_max_grad_(dx, dpools)
    elif arrangement == "spatial_first":  # out = G * Mc, G = x * Ms; Mc pools G
        dpools, g = ch.grads(t.mul_(ms_op).sum(dim=(2, 3)), params)  # sum_hw dout x Ms
        grads.update(g)
        avg = ch.avg_term(dpools, hw, dtype)
        if avg is not None:
            dms += _map(avg.flatten(1), _flat(x), x.shape)
        if "max" in dpools:
            at_max = _flat(x).gather(2, ch.hw_index.unsqueeze(2)).squeeze(2)  # (B, C): x at the arg-max position
            dms.view(dms.shape[0], -1).scatter_add_(1, ch.hw_index, at_max * dpools["max"].to(dtype))
        dmax, dmean, g = _spatial_grads(state, dms, params)
        grads.update(g)
        d = _scale_add_(dout, mc4, avg, out=torch.empty_like(x))  # dL/dG
        ch.add_max_grad_(d, dpools)
        dx = d.mul_(ms_op).add_(spatial_operand(dmean.to(dtype) / c, d))
        scatter_channel_(dx, c_index, dmax.to(dtype))
    else:  # parallel: out = x * Mc * Ms, both maps pool x
        dmc = t.mul_(ms_op).sum(dim=(2, 3))
        leaves, ms_out = state["ms_graph"]
        (dleaf, dmax, dmean), g = _small_grads([ch.out, ms_out], [dmc.to(ch.out.dtype), dms.to(ms_out.dtype)],
                                               [ch.leaf, *leaves], params)
        grads.update(g)
        dpools = ch.split(dleaf)
        dx = _scale_add_(torch.mul(dout, ms_op, out=torch.empty_like(x)), mc4, ch.avg_term(dpools, hw, dtype))
        dx.add_(spatial_operand(dmean.to(dtype) / c, dx))
        ch.add_max_grad_(dx, dpools)
        scatter_channel_(dx, c_index, dmax.to(dtype))
    return dx, [grads.get(id(p)) for p in params]
