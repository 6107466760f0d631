"""Optimizers from `OptimConfig`: SGD (momentum, Nesterov), Adam, AdamW, with optional no decay on BN and biases."""
from __future__ import annotations

import torch
from torch import nn

from ..errors import unknown


def param_groups(model: nn.Module, weight_decay: float, no_decay_bn_bias: bool) -> list[dict]:
    """One group, or two when BN weights and biases (every parameter with ndim <= 1) skip weight decay."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not no_decay_bn_bias or weight_decay == 0:
        return [{"params": params, "weight_decay": weight_decay}]
    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, cfg) -> torch.optim.Optimizer:
    """The optimizer named by `cfg.name` over `model`'s trainable parameters."""
    groups = param_groups(model, cfg.weight_decay, cfg.no_decay_bn_bias)
    table = {
        "sgd": lambda: torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov),
        "adam": lambda: torch.optim.Adam(groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps),
        "adamw": lambda: torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps),
    }
    if cfg.name not in table:
        raise unknown("optimizer", cfg.name, table)
    return table[cfg.name]()


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for g in optimizer.param_groups:
        g["lr"] = lr
