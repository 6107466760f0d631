"""The backward of the fast CBAM (`attention_fast`): the full-size algebra by hand, the small graphs by autograd.

Names: x is the CBAM input F (B, C, H, W), dout the gradient of its output, mc (B, C) and ms (B, 1, H, W) the
two maps, t = dout * x. A channel vector v (B, C) contracts with a (B, C, H*W) view as `v @ x3` and a spatial
map m (B, 1, H, W) as `x3 @ m`; both are batched matrix products, which read the map once at full speed.
"""
from __future__ import annotations

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


def _map(v: torch.Tensor, x3: torch.Tensor, shape) -> torch.Tensor:
    """sum_c v[b, c] x3[b, c, :] -> (B, 1, H, W)."""
    return torch.bmm(v.unsqueeze(1), x3).view(shape[0], 1, *shape[2:])


def _vec(x3: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """sum_hw x3[b, :, hw] m[b, hw] -> (B, C)."""
    return torch.bmm(x3, m.reshape(m.shape[0], -1, 1)).squeeze(2)


class _Channel:
    """The channel map's graph: mc = sigmoid(sum_k MLP(pool_k)), and where its descriptors came from."""

    def __init__(self, state, dtype):
        self.leaves_by_kind, self.out = state["mc_graph"]
        self.kinds = list(self.leaves_by_kind)
        self.mc = state["mc"].to(dtype)
        self.hw_index = state["hw_index"]  # (B, C) flat arg-max position of the max pool, or None

    def grads(self, dmc, params):
        """-> ({kind: d pool (B, C)}, param grads) from dL/dMc (B, C)."""
        leaf_grads, p = _small_grads([self.out], [dmc.to(self.out.dtype)],
                                     [self.leaves_by_kind[k] for k in self.kinds], params)
        return dict(zip(self.kinds, leaf_grads)), p

    def add_pool_grads_(self, d: torch.Tensor, dpools: dict) -> None:
        """d += the pools' input gradients: d avg / (H W) everywhere, d max at the arg-max position."""
        if "max" in dpools:
            d3 = _flat(d)
            d3.scatter_add_(2, self.hw_index.unsqueeze(2), dpools["max"].to(d.dtype).unsqueeze(2))

    @staticmethod
    def avg_term(dpools: dict, hw: int, dtype):
        """d avg / (H W) as (B, C, 1, 1), or None."""
        return None if "avg" not in dpools else (dpools["avg"].to(dtype) / hw)[:, :, None, None]


def _spatial_grads(state, dms, params):
    leaves, ms = state["ms_graph"]
    (dmax, dmean), p = _small_grads([ms], [dms.to(ms.dtype)], leaves, params)
    return dmax, dmean, p


def _addcmul_into(out: torch.Tensor, base, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """out = base + a * b (base may be None or broadcast); out may alias a."""
    if base is None:
        return torch.mul(a, b, out=out)
    return torch.addcmul(base, a, b, out=out)


def cbam_backward(cbam, x: torch.Tensor, dout: torch.Tensor, state: dict, params):
    """(dL/dx, grads of `params` in order) for the fast CBAM's forward of `x`."""
    dtype = dout.dtype
    x = x.to(dtype)
    b, c, h, w = x.shape
    hw = h * w
    ch = _Channel(state, dtype)
    mc4 = ch.mc[:, :, None, None]
    x3 = _flat(x)
    grads: dict = {}
    if cbam.spatial is None:
        dpools, g = ch.grads((dout * x).sum(dim=(2, 3)), params)
        grads.update(g)
        dx = _addcmul_into(torch.empty_like(x), ch.avg_term(dpools, hw, dtype), dout, mc4)
        ch.add_pool_grads_(dx, dpools)
        return dx, [grads.get(id(p)) for p in params]

    ms = state["ms"].to(dtype)
    c_index = state["c_index"]  # (B, 1, H, W) arg-max channel of the spatial max pool
    t3 = _flat(dout * x)
    arrangement = cbam.arrangement
    if arrangement == "channel_first":  # out = G * Ms, G = x * Mc; Ms pools G
        dmax, dmean, g = _spatial_grads(state, _map(ch.mc, t3, x.shape), params)
        grads.update(g)
        dmax, dmean_c = dmax.to(dtype), dmean.to(dtype) / c
        d = torch.addcmul(dmean_c, dout, ms, out=torch.empty_like(x))  # dL/dG
        d.scatter_add_(1, c_index, dmax)
        dmc = _vec(t3, ms) + _vec(x3, dmean_c)
        gathered = x.gather(1, c_index) * dmax  # (B, 1, H, W): x at the arg-max channel times dmax
        dmc.scatter_add_(1, c_index.view(b, hw), gathered.view(b, hw))
        dpools, g = ch.grads(dmc, params)
        grads.update(g)
        dx = _addcmul_into(d, ch.avg_term(dpools, hw, dtype), d, mc4)
        ch.add_pool_grads_(dx, dpools)
    elif arrangement == "spatial_first":  # out = G * Mc, G = x * Ms; Mc pools G
        dpools, g = ch.grads(_vec(t3, ms), params)
        grads.update(g)
        avg = ch.avg_term(dpools, hw, dtype)
        dms = _map(ch.mc, t3, x.shape)
        if avg is not None:
            dms = dms + _map(avg.flatten(1), x3, x.shape)
        if "max" in dpools:
            gathered = x3.gather(2, ch.hw_index.unsqueeze(2)).squeeze(2) * dpools["max"].to(dtype)  # (B, C)
            dms.view(b, hw).scatter_add_(1, ch.hw_index, gathered)
        dmax, dmean, g = _spatial_grads(state, dms, params)
        grads.update(g)
        d = _addcmul_into(torch.empty_like(x), avg, dout, mc4)  # dL/dG
        ch.add_pool_grads_(d, dpools)
        dx = torch.addcmul(dmean.to(dtype) / c, d, ms, out=d)
        dx.scatter_add_(1, c_index, dmax.to(dtype))
    else:  # parallel: out = x * Mc * Ms, both maps pool x
        dmc, dms = _vec(t3, ms), _map(ch.mc, t3, x.shape)
        leaves, ms_out = state["ms_graph"]
        kinds = ch.kinds
        wanted = [p for p in params if p.requires_grad]
        all_leaves = [ch.leaves_by_kind[k] for k in kinds] + list(leaves)
        out = torch.autograd.grad([ch.out, ms_out], [*all_leaves, *wanted],
                                  [dmc.to(ch.out.dtype), dms.to(ms_out.dtype)], allow_unused=True)
        grads.update((id(p), g) for p, g in zip(wanted, out[len(all_leaves):]) if g is not None)
        dpools = dict(zip(kinds, out[:len(kinds)]))
        dmax, dmean = out[len(kinds)], out[len(kinds) + 1]
        dx = torch.mul(dout, ms, out=torch.empty_like(x))
        dx = _addcmul_into(dx, ch.avg_term(dpools, hw, dtype), dx, mc4)
        dx.add_(dmean.to(dtype) / c)
        ch.add_pool_grads_(dx, dpools)
        dx.scatter_add_(1, c_index, dmax.to(dtype))
    return dx, [grads.get(id(p)) for p in params]
