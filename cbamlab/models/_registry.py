"""The model registry: `{name: builder}` plus what each name is, and `create_model` / `list_models`.

Every base architecture is registered three times: plain (`resnet20`), squeeze-and-excitation (`resnet20_se`)
and CBAM (`resnet20_cbam`). `model_info(name).base` names the plain twin, so code can build the baseline of
any variant.
"""
from __future__ import annotations

import dataclasses
import fnmatch
import logging
from dataclasses import dataclass
from typing import Callable

from torch import nn

from ..errors import CbamlabError, unknown
from .attention import get_attn
from .options import ATTN_OPTIONS, AttnOptions
from .weights import load_backbone

log = logging.getLogger(__name__)

ATTN_SUFFIXES = {"none": "", "se": "_se", "cbam": "_cbam"}


@dataclass(frozen=True)
class ModelInfo:
    """name; base: the plain twin's name; attn: "none" | "se" | "cbam"; family: "imagenet" (7x7 stem),
    "cifar" (3x3 stem, ImageNet widths) or "he2016" (He et al.'s 6n+2 CIFAR nets)."""

    name: str
    base: str
    attn: str
    family: str


# name -> (builder(num_classes, in_chans, attn_layer, shortcut) -> nn.Module, info)
_MODELS: dict[str, tuple[Callable[..., nn.Module], ModelInfo]] = {}


def register_model(info: ModelInfo, builder: Callable[..., nn.Module]) -> None:
    if info.name in _MODELS:
        raise ValueError(f"model '{info.name}' is registered twice")
    _MODELS[info.name] = (builder, info)


def list_models(pattern: str = "*") -> list[str]:
    """Registered names matching the shell-style `pattern` ("*_cbam", "resnet[0-9]*"), sorted by family then depth."""
    names = [n for n in _MODELS if fnmatch.fnmatchcase(n, pattern)]
    return sorted(names, key=_sort_key)


def _sort_key(name: str):
    info = _MODELS[name][1]
    digits = "".join(c for c in info.base if c.isdigit())
    family_order = {"imagenet": 0, "cifar": 1, "he2016": 2}.get(info.family, 3)
    return family_order, int(digits or 0), list(ATTN_SUFFIXES).index(info.attn), name


def model_info(name: str) -> ModelInfo:
    if name not in _MODELS:
        raise unknown("model", name, _MODELS)
    return _MODELS[name][1]


def create_model(name: str, num_classes: int = 1000, in_chans: int = 3, *, shortcut: str | None = None,
                 width: int = 1, pretrained: bool | str | None = None, attn: AttnOptions | None = None,
                 **options) -> nn.Module:
    """Build the registered model `name`.

    The attention options, keywords named as `AttnOptions`' fields (`reduction`, `kernel_size`, `arrangement`,
    `spatial`, `spatial_bn_zero_init`, `pool_types`, `keep_map`, `attn_impl`; their defaults are AttnOptions'),
    apply to whatever attention the model has: SE uses `reduction` alone and plain models ignore them all, so one
    setting can sweep a whole variant list. `attn=AttnOptions(...)` gives them all at once (keywords then
    override what they name). `attn_impl` is "auto" (default:
    the native operator where it runs, else the reference), "native" or "reference": the same CBAM (math,
    parameters, state_dict) computed two ways. `shortcut` is "A" or "B"; None takes
    the model's default (A for resnet20..110, B otherwise). `width` (resnet20..110 only) multiplies their
    stage widths, 16k/32k/64k with the stem at 16 (WRN-style); 1 is the original network. `pretrained`: True or "torchvision" loads
    torchvision's ImageNet weights for the plain twin (needs the network), a path loads a local weights file;
    either goes through `load_backbone`, so attention layers stay newly initialised.
    The model carries `model_name` and `model_info`.
    """
    builder, info = _MODELS.get(name, (None, None))
    if builder is None:
        raise unknown("model", name, _MODELS)
    extra = sorted(set(options) - set(ATTN_OPTIONS))
    if extra:
        raise CbamlabError(f"create_model got unknown option(s) {', '.join(extra)}; known: num_classes, in_chans, "
                           f"shortcut, width, pretrained, attn, {', '.join(ATTN_OPTIONS)}")
    if attn is None:
        attn = AttnOptions(**options)
    elif options:
        attn = AttnOptions(**{**dataclasses.asdict(attn), **options})
    attn_layer = get_attn(info.attn, attn)
    model = builder(num_classes=num_classes, in_chans=in_chans, attn_layer=attn_layer, shortcut=shortcut,
                    width=width)
    model.model_name = name
    model.model_info = info
    if pretrained:
        source = "torchvision" if pretrained is True else pretrained
        report = load_backbone(model, source)
        log.info("%s: loaded backbone from %s; %s", name, source, report.describe())
    return model
