"""Build the model a config names, with paired initialisation from its plain twin."""
from __future__ import annotations

import logging

import torch
from torch import nn

from ..errors import ConfigError
from ..models import create_model, model_info
from ..models.weights import load_backbone

log = logging.getLogger(__name__)


def check_fits(model_cfg, num_classes: int, in_chans: int, dataset: str) -> None:
    """A model.num_classes / model.in_chans that contradicts the dataset is a ConfigError."""
    for key, want in (("num_classes", num_classes), ("in_chans", in_chans)):
        got = getattr(model_cfg, key)
        if got is not None and got != want:
            raise ConfigError(f"model.{key}={got} does not fit dataset '{dataset}', which has {key}={want} "
                              f"(leave model.{key} unset to take it from the dataset)")


def _create(name: str, model_cfg, num_classes: int, in_chans: int) -> nn.Module:
    # the model section's AttnOptions, as it holds them (models.options: one vocabulary)
    return create_model(name, num_classes=num_classes, in_chans=in_chans, shortcut=model_cfg.shortcut,
                        width=model_cfg.width, attn=model_cfg.attn)


def build_model(model_cfg, num_classes: int, in_chans: int, seed: int | None = None) -> nn.Module:
    """`create_model` from a ModelConfig. With `seed`, every tensor the model shares with its plain twin
    (`model_info(name).base`, same name and shape) comes from that twin built after `torch.manual_seed(seed)`,
    so resnet20, resnet20_se and resnet20_cbam with one seed start from the same shared weights."""
    info = model_info(model_cfg.name)
    if seed is not None:
        torch.manual_seed(seed)
    model = _create(model_cfg.name, model_cfg, num_classes, in_chans)
    if seed is not None and info.base != model_cfg.name:
        rng = torch.get_rng_state()
        torch.manual_seed(seed)
        twin = _create(info.base, model_cfg, num_classes, in_chans).state_dict()
        torch.set_rng_state(rng)
        own = model.state_dict()
        shared = {k: v for k, v in twin.items() if k in own and own[k].shape == v.shape}
        model.load_state_dict(shared, strict=False)
        log.debug("%s: %d of %d tensors initialised from its twin %s", model_cfg.name, len(shared), len(own),
                  info.base)
    if model_cfg.pretrained:
        report = load_backbone(model, model_cfg.pretrained)
        log.info("loaded backbone from %s: %s", model_cfg.pretrained, getattr(report, "describe", lambda: report)())
    return model
