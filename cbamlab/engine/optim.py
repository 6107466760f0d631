"""Optimizers from `OptimConfig`: SGD (momentum, Nesterov), Adam, AdamW, with optional no decay on BN and biases and
an optional lr multiplier for the BatchNorm parameters (optim.bn_lr_scale)."""
from __future__ import annotations

import torch
from torch import nn

from ..config.choices import OPTIMIZERS as NAMES, keyed
from ..errors import unknown

# optim.name -> the optimizer over parameter groups; keyed by the config's list (config.choices.OPTIMIZERS)
OPTIMIZERS = keyed({
    "sgd": lambda groups, cfg: torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov),
    "adam": lambda groups, cfg: torch.optim.Adam(groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps),
    "adamw": lambda groups, cfg: torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps),
}, NAMES, "optimizer")


# the modules whose parameters optim.bn_lr_scale scales (SyncBatchNorm after train.sync_bn; lazy ones subclass these)
BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


def batchnorm_params(model: nn.Module) -> list[nn.Parameter]:
    """The weights and biases of every BatchNorm in `model`, CBAM's spatial-gate BatchNorm2d(1) included."""
    return [p for m in model.modules() if isinstance(m, BATCH_NORMS) for p in m.parameters(recurse=False)]


def _decay_groups(params: list, weight_decay: float, no_decay_bn_bias: bool) -> list[dict]:
    if not no_decay_bn_bias or weight_decay == 0:
        return [{"params": params, "weight_decay": weight_decay}]
    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def param_groups(model: nn.Module, weight_decay: float, no_decay_bn_bias: bool,
                 bn_lr_scale: float = 1.0) -> list[dict]:
    """One group, or two when BN weights and biases (every parameter with ndim <= 1) skip weight decay.

    With `bn_lr_scale` != 1 the BatchNorm weights and biases form a group of their own whose "lr_scale" `set_lr`
    multiplies the schedule's lr by (airbench's bias_scaler), after the others (each "lr_scale" 1). Its weight
    decay is divided by the scale, so the decay step (lr x weight_decay for SGD and AdamW) stays the others'
    and only the gradient step grows; it is 0 with `no_decay_bn_bias`.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if bn_lr_scale == 1.0:
        return _decay_groups(params, weight_decay, no_decay_bn_bias)
    bn = {id(p) for p in batchnorm_params(model)}
    groups = [dict(g, lr_scale=1.0)
              for g in _decay_groups([p for p in params if id(p) not in bn], weight_decay, no_decay_bn_bias)]
    groups.append({"params": [p for p in params if id(p) in bn], "lr_scale": float(bn_lr_scale),
                   "weight_decay": 0.0 if no_decay_bn_bias else weight_decay / bn_lr_scale})
    return [g for g in groups if g["params"]]


def build_optimizer(model: nn.Module, cfg) -> torch.optim.Optimizer:
    """The optimizer named by `cfg.name` over `model`'s trainable parameters, each group at `cfg.lr` times its
    "lr_scale" (`cfg.bn_lr_scale` for the BatchNorm parameters)."""
    if cfg.name not in OPTIMIZERS:
        raise unknown("optimizer", cfg.name, OPTIMIZERS)
    optimizer = OPTIMIZERS[cfg.name](param_groups(model, cfg.weight_decay, cfg.no_decay_bn_bias, cfg.bn_lr_scale),
                                     cfg)
    set_lr(optimizer, cfg.lr)
    return optimizer


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Every group's lr: `lr` times the group's "lr_scale" (kept in the optimizer's state_dict, so a resumed run
    scales as before), `lr` itself in a group without one."""
    for g in optimizer.param_groups:
        g["lr"] = lr * g["lr_scale"] if "lr_scale" in g else lr
