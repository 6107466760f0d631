"""One training epoch and one evaluation pass: plain functions with explicit arguments."""
from __future__ import annotations

import math
import sys
import time
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from ..config.choices import TTA, keyed
from ..errors import CbamlabError, unknown
from .budget import TimeBudget
from .ema import ModelEma
from .metrics import Meter
from .optim import set_lr
from .runtime import autocast


class DivergedError(CbamlabError):
    """The loss became NaN or infinite; the run stops and the last good checkpoint stays."""


def mirror_translate(x: torch.Tensor) -> tuple[tuple[torch.Tensor, float], ...]:
    """airbench's test-time augmentation (tta_level=2, Keller Jordan's CIFAR-10 speed records): the image and its
    mirror, weight 1/4 each, and both again shifted by one pixel down-right (+1, +1) and up-left (-1, -1) with the
    border filled by reflection, weight 1/8 each: six views of (B, C, H, W)."""
    h, w = x.shape[-2:]
    xp = F.pad(x, (1, 1, 1, 1), mode="reflect")  # (B, C, H + 2, W + 2)
    down, up = xp[..., :h, :w], xp[..., 2:, 2:]  # out[i, j] = x[i - 1, j - 1] and x[i + 1, j + 1]
    return ((x, 2.0), (x.flip(3), 2.0), (down, 1.0), (down.flip(3), 1.0), (up, 1.0), (up.flip(3), 1.0))


# test-time augmentation (eval.tta): the views of a batch, each with its relative weight in the mean of their
# softmax outputs; keyed by the config's list (config.choices.TTA)
TTA_VIEWS: dict[str, Callable[[torch.Tensor], tuple[tuple[torch.Tensor, float], ...]]] = keyed({
    "none": lambda x: ((x, 1.0),),
    "hflip": lambda x: ((x, 1.0), (x.flip(3), 1.0)),  # (B, C, H, W) mirrored left-right
    "hflip_translate": mirror_translate,
}, TTA, "test-time augmentation")


def _bar(iterable, total: int, desc: str, enabled: bool):
    if not enabled or not sys.stderr.isatty():
        return iterable
    return tqdm(iterable, total=total, desc=desc, leave=False, dynamic_ncols=True)


def train_one_epoch(model: nn.Module, loader, optimizer: torch.optim.Optimizer, *, lr_at: Callable[[int], float],
                    step: int, device: torch.device, label_smoothing: float = 0.0, amp: str = "none",
                    scaler=None, grad_clip: float | None = None, channels_last: bool = False,
                    progress: bool = False, desc: str = "train", ema: ModelEma | None = None,
                    all_reduce: bool = False, budget: TimeBudget | None = None) -> tuple[dict, int]:
    """Train over `loader` once, setting the lr from `lr_at(step)` before every optimizer step; with `ema`,
    update the weight average after every optimizer step (`ema.update(model, step + 1)`). With `all_reduce`
    (DDP) the metrics are sums over every rank of torch.distributed, and images_per_s counts all of them. With
    `budget` (engine/budget.py, started here) the lr is `lr_at(budget.schedule_step(step))` and the pass stops
    after the step that uses the budget up (at least one step runs).

    Returns ({loss, top1, top5, n, lr, images_per_s, time_s, budget_spent}, next step). Raises DivergedError on a
    NaN/inf loss before the optimizer applies it.
    """
    model.train()
    meter = Meter()
    lr = lr_at(step if budget is None else budget.start().schedule_step(step))
    spent = False
    t0 = time.perf_counter()
    for x, y in _bar(loader, len(loader), desc, progress):
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        lr = lr_at(step if budget is None else budget.schedule_step(step))
        set_lr(optimizer, lr)
        with autocast(device, amp):
            logits = model(x)
            loss = nn.functional.cross_entropy(logits.float(), y, label_smoothing=label_smoothing)
        loss_value = float(loss.detach())  # the metrics below sync anyway
        if not math.isfinite(loss_value):
            raise DivergedError(f"loss is {loss_value} at step {step} (lr {lr:.4g}): training diverged; "
                                "lower optim.lr or set train.grad_clip")
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            if grad_clip:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            if grad_clip:
                nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            optimizer.step()
        if ema is not None:
            ema.update(model, step + 1)
        meter.update(logits.detach().float(), y, loss_value * y.shape[0])
        step += 1
        if budget is not None and budget.spent(step):
            spent = True
            break
    elapsed = time.perf_counter() - t0
    out = (meter.all_reduce(device) if all_reduce else meter).result()
    if not math.isfinite(out["loss"]):
        raise DivergedError(f"mean training loss is {out['loss']}: training diverged")
    out.update(lr=lr, images_per_s=out["n"] / max(elapsed, 1e-9), time_s=elapsed, budget_spent=spent)
    return out, step


@torch.no_grad()
def evaluate(model: nn.Module, loader, *, device: torch.device, num_classes: int | None = None,
             amp: str = "none", channels_last: bool = False, tta: str = "none", all_reduce: bool = False) -> dict:
    """Loss, top-1, top-5 (fractions) over `loader`; with `num_classes`, also the confusion matrix and
    per-class accuracy. With `all_reduce` (DDP: each rank evaluates its share) the counts are summed over the
    ranks of torch.distributed, which gives the single-process numbers. `tta` ("none" | "hflip" |
    "hflip_translate", `TTA_VIEWS`): the prediction is the weighted mean of the softmax outputs over the views of
    each image, and the loss its negative log at the true class."""
    if tta not in TTA_VIEWS:
        raise unknown("test-time augmentation", tta, TTA_VIEWS)
    views_of = TTA_VIEWS[tta]
    model.eval()
    meter = Meter(num_classes)
    for x, y in loader:
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        views = views_of(x)
        with autocast(device, amp):
            outs = [model(v).float() for v, _ in views]
        logits = outs[0] if len(outs) == 1 else _log_mean_softmax(outs, [w for _, w in views])
        loss = nn.functional.cross_entropy(logits, y, reduction="sum")
        meter.update(logits, y, float(loss))
    return (meter.all_reduce(device) if all_reduce else meter).result()


def _log_mean_softmax(logits: list[torch.Tensor], weights: list[float]) -> torch.Tensor:
    """log(sum_i w_i softmax(logits_i) / sum_i w_i), stably: normalised log-probabilities (B, K) that rank like
    the weighted mean."""
    logp = torch.stack([z.log_softmax(dim=1) for z in logits])  # (V, B, K)
    if len(set(weights)) == 1:  # equal weights: the plain mean
        return torch.logsumexp(logp, dim=0) - math.log(len(logits))
    log_w = torch.tensor(weights, dtype=logp.dtype, device=logp.device).div(sum(weights)).log()  # (V,)
    return torch.logsumexp(logp + log_w[:, None, None], dim=0)
