"""Learning-rate schedules as pure functions of the optimizer step (nanoGPT's `get_lr(it)`).

Each returns the learning rate at `step` (0-based, counted over the whole run) and is applied every
iteration. Epoch-based settings (milestones, step size, warmup) are turned into steps with
`steps_per_epoch`, so a step decay lands exactly on the epoch boundary, as PyTorch's StepLR/MultiStepLR
stepped once per epoch would (the article: x0.1 at epochs 30 and 60).
"""
from __future__ import annotations

import bisect
import math
from functools import partial
from typing import Callable, Sequence

from ..config.choices import SCHEDULES as NAMES, keyed
from ..errors import unknown


def constant(step: int, *, lr: float) -> float:
    return lr


def step_decay(step: int, *, lr: float, step_size: int, gamma: float) -> float:
    """lr * gamma ** (step // step_size)."""
    return lr * gamma ** (step // step_size)


def multistep(step: int, *, lr: float, milestones: Sequence[int], gamma: float) -> float:
    """lr * gamma ** (number of milestones reached); milestones in steps, sorted."""
    return lr * gamma ** bisect.bisect_right(list(milestones), step)


def cosine(step: int, *, lr: float, total: int, min_lr: float = 0.0, start: int = 0) -> float:
    """Half-cosine from `lr` at `start` down to `min_lr` at `total` (SGDR without restarts)."""
    t = min(max(step - start, 0) / max(total - start, 1), 1.0)
    return min_lr + 0.5 * (lr - min_lr) * (1.0 + math.cos(math.pi * t))


def one_cycle(step: int, *, lr: float, total: int, pct_start: float = 0.3, div_factor: float = 25.0,
              final_div_factor: float = 1e4) -> float:
    """Smith's one-cycle (cosine annealing, as torch's OneCycleLR): lr/div up to lr, then down to lr/div/final."""
    initial = lr / div_factor
    final = initial / final_div_factor
    peak = max(int(round(pct_start * total)) - 1, 1)
    if step <= peak:
        t = step / peak
        return initial + 0.5 * (lr - initial) * (1 - math.cos(math.pi * t))
    t = min((step - peak) / max(total - 1 - peak, 1), 1.0)
    return final + 0.5 * (lr - final) * (1 + math.cos(math.pi * t))


def with_warmup(fn: Callable[[int], float], step: int, *, warmup: int, start: float = 0.0) -> float:
    """Linear warmup over the first `warmup` steps from `start * fn(step)` up to `fn(step)`."""
    if step >= warmup:
        return fn(step)
    return fn(step) * (start + (1.0 - start) * step / warmup)


# schedule.name -> lr_at(step) from (the ScheduleConfig, lr, steps per epoch, total steps, warmup steps); keyed by
# the config's list (config.choices.SCHEDULES)
SCHEDULES = keyed({
    "constant": lambda sched, lr, spe, total, warm: partial(constant, lr=lr),
    "step": lambda sched, lr, spe, total, warm: partial(
        step_decay, lr=lr, step_size=max(int(round(sched.step_size * spe)), 1), gamma=sched.gamma),
    "multistep": lambda sched, lr, spe, total, warm: partial(
        multistep, lr=lr, gamma=sched.gamma, milestones=[int(round(m * spe)) for m in sched.milestones]),
    "cosine": lambda sched, lr, spe, total, warm: partial(cosine, lr=lr, total=total, min_lr=sched.min_lr,
                                                          start=warm),
    "onecycle": lambda sched, lr, spe, total, warm: (
        lambda s: one_cycle(max(s - warm, 0), lr=lr, total=total - warm, pct_start=sched.pct_start,
                            div_factor=sched.div_factor, final_div_factor=sched.final_div_factor)),
}, NAMES, "schedule")


def build_schedule(sched, lr: float, steps_per_epoch: int, epochs: int) -> Callable[[int], float]:
    """`lr_at(step)` for a `ScheduleConfig`. Cosine and one-cycle span the steps after the warmup."""
    spe = max(int(steps_per_epoch), 1)
    total = spe * epochs
    warm = int(round(sched.warmup_epochs * spe))
    if sched.name not in SCHEDULES:
        raise unknown("schedule", sched.name, SCHEDULES)
    fn = SCHEDULES[sched.name](sched, lr, spe, total, warm)
    if warm > 0:
        return partial(with_warmup, fn, warmup=warm, start=sched.warmup_start)
    return fn
