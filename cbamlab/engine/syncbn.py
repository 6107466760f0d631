"""BatchNorm with the statistics of the global batch on CPU processes (gloo); torch's nn.SyncBatchNorm is GPU-only.

In training each rank sums its activations per channel (sum, sum of squares, count, in float64), one
differentiable all_reduce adds the ranks' sums, and every rank normalises with the global mean and biased
variance, exactly as one process with the whole batch would; the running variance gets the unbiased one,
as nn.BatchNorm2d does. The all_reduce's backward sums the gradients of the statistics over ranks, so with
DDP's averaging the gradients are those of the global batch. In eval, or in a single process, it is
nn.BatchNorm2d, and its state dict has the same keys.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks; its gradient is the sum over ranks of the gradients (each rank's loss uses the sum)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        x = x.clone()
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


def _global_batch() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class SyncBatchNormCPU(nn.BatchNorm2d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, C, H, W)
        if not (self.training and _global_batch()):
            return super().forward(x)
        self._check_input_dim(x)
        c = x.shape[1]
        xd = x.double()
        local = torch.cat([xd.sum(dim=(0, 2, 3)), xd.square().sum(dim=(0, 2, 3)),
                           xd.new_tensor([x.numel() // c])])
        total = _AllReduceSum.apply(local)  # (2C + 1,) summed over ranks, differentiable
        n = total[-1]
        mean = total[:c] / n
        var = (total[c:2 * c] / n - mean.square()).clamp_min(0)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - m).add_(mean.to(x.dtype), alpha=m)
                self.running_var.mul_(1 - m).add_((var * n / (n - 1).clamp_min(1)).to(x.dtype), alpha=m)
        scale = torch.rsqrt(var + self.eps).to(x.dtype)
        if self.affine:
            scale = scale * self.weight
        y = (x - mean.to(x.dtype).view(1, c, 1, 1)) * scale.view(1, c, 1, 1)
        return y + self.bias.view(1, c, 1, 1) if self.affine else y


def convert_sync_batchnorm_cpu(module: nn.Module) -> nn.Module:
    """Every nn.BatchNorm2d of `module` replaced by a SyncBatchNormCPU sharing its parameters and buffers."""
    if isinstance(module, nn.BatchNorm2d) and not isinstance(module, SyncBatchNormCPU):
        out = SyncBatchNormCPU(module.num_features, module.eps, module.momentum, module.affine,
                               module.track_running_stats, device=module.running_mean.device
                               if module.running_mean is not None else None)
        if module.affine:
            out.weight, out.bias = module.weight, module.bias
        out.running_mean, out.running_var = module.running_mean, module.running_var
        out.num_batches_tracked = module.num_batches_tracked
        out.train(module.training)
        return out
    for name, child in module.named_children():
        new = convert_sync_batchnorm_cpu(child)
        if new is not child:
            setattr(module, name, new)
    return module
