"""Weight EMA: an exponential moving average of a model's parameters, evaluated in place of the raw weights.

After every optimizer step t (t = 1, 2, ...) each parameter of the average moves towards the model's:
`ema = decay_t * ema + (1 - decay_t) * param`; buffers (BatchNorm running statistics, counters) are copied
from the model, as timm's `ModelEmaV3(exclude_buffers=True)` does. With `warmup`, decay_t =
min(decay, 1 - (1 + t) ** (-2/3)) (timm's ModelEmaV3 warm-up, gamma 1, power 2/3): the first steps follow the
model closely, so a short run is not dominated by its random initial weights (with decay 0.999 and no warm-up,
the initial weights still make up 0.999 ** 2000 = 14 % of the average after 2,000 steps).
Polyak and Juditsky 1992; timm's `timm/utils/model_ema.py`.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

WARMUP_POWER = 2.0 / 3.0


def ema_decay(step: int, decay: float, warmup: bool) -> float:
    """The decay applied at optimizer step `step` (1 for the first step): `decay`, or its warm-up value."""
    if not warmup:
        return decay
    return max(0.0, min(decay, 1.0 - (1.0 + step) ** -WARMUP_POWER))


def _unwrap(model: nn.Module) -> nn.Module:
    """The module under DistributedDataParallel / DataParallel (`.module`) and torch.compile (`._orig_mod`)."""
    if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        model = model.module
    return getattr(model, "_orig_mod", model)


class ModelEma:
    """The averaged copy (`.module`, in eval mode, no gradients) of `model`, updated with `update(model, step)`."""

    def __init__(self, model: nn.Module, decay: float = 0.999, warmup: bool = True):
        self.module = copy.deepcopy(_unwrap(model)).eval().requires_grad_(False)
        self.decay = float(decay)
        self.warmup = bool(warmup)

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        """Move the average towards `model` after optimizer step `step` (1-based); copy the buffers."""
        model = _unwrap(model)
        d = ema_decay(step, self.decay, self.warmup)
        ema_params = list(self.module.parameters())
        params = [p.detach() for p in model.parameters()]
        if len(ema_params) != len(params):
            raise ValueError(f"ModelEma: the model has {len(params)} parameters, the average {len(ema_params)}")
        torch._foreach_lerp_(ema_params, params, 1.0 - d)  # ema += (1 - d) * (param - ema)
        for e, b in zip(self.module.buffers(), model.buffers()):
            e.copy_(b)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.module.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.module.load_state_dict(state)
