"""ResNets with a pluggable attention on each block's residual branch (He et al. 2016; Woo et al. 2018).

The layout and parameter names are torchvision's (`conv1/bn1`, `layer1..4`, `downsample`, `fc`), so a plain
ImageNet-style model loads torchvision's weights with `strict=True`. Each block builds `self.attn` from an
attention factory with its *output* channels and applies it after the last batch-norm, before the addition,
as in the CBAM paper's Fig. 3. Plain models use `nn.Identity` there, which has no parameters.

Three families share one `ResNet` class:
- ImageNet stem (7x7 stride 2 + max-pool): resnet18..152.
- CIFAR stem (3x3 stride 1, no max-pool) with the same blocks and widths: cifar_resnet18/34/50.
- He et al.'s CIFAR nets (6n+2 layers, 16/32/64 channels, 3x3 stem): resnet20..110, shortcut option A
  (parameter-free: subsample by the stride, then zero-pad the new channels) by default, option B (1x1
  projection + BN) selectable. `width=k` widens their stages to 16k/32k/64k with the stem kept at 16, as in
  Zagoruyko and Komodakis's wide ResNets (2016); the names stay the same and width 1 is the original.
"""
from __future__ import annotations

import functools
from typing import Callable, Sequence

import torch
from torch import nn

from ..errors import CbamlabError
from ._registry import ATTN_SUFFIXES, ModelInfo, register_model
from .attention import no_attention
from .options import positive_int

AttnFactory = Callable[[int], nn.Module]
SHORTCUTS = ("A", "B")


def conv3x3(inplanes: int, planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)


def conv1x1(inplanes: int, planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(inplanes, planes, 1, stride=stride, bias=False)


class PadShortcut(nn.Module):
    """Shortcut option A (He et al. 2016, Sec. 4.2): subsample by the stride, zero-pad the extra channels.

    No parameters. The zeros go half before and half after the existing channels (the common CIFAR code).
    """

    def __init__(self, inplanes: int, planes: int, stride: int):
        super().__init__()
        if planes < inplanes:
            raise CbamlabError(f"shortcut option A cannot shrink channels ({inplanes} -> {planes}); use option B")
        self.stride = stride
        self.pad_before = (planes - inplanes) // 2
        self.pad_after = planes - inplanes - self.pad_before

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, ::self.stride, ::self.stride]  # (B, C_in, H/s, W/s)
        return nn.functional.pad(x, (0, 0, 0, 0, self.pad_before, self.pad_after))  # (B, C_out, H/s, W/s)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 attn_layer: AttnFactory = no_attention):
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.attn = attn_layer(planes * self.expansion)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out = self.attn(out)
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """Bottleneck with the stride on the 3x3 conv (torchvision's "ResNet v1.5")."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 attn_layer: AttnFactory = no_attention):
        super().__init__()
        self.conv1 = conv1x1(inplanes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.attn = attn_layer(planes * self.expansion)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out = self.attn(out)
        return self.relu(out + identity)


class ResNet(nn.Module):
    """A ResNet: stem, `len(layers)` stages of blocks, global average pool, `fc`.

    `stem`: "imagenet" (7x7 stride 2 + 3x3 max-pool) or "cifar" (3x3 stride 1, no pool). `widths` are the
    stage widths (block `planes`); the first stage keeps the resolution, each later one halves it.
    `shortcut`: "B" (1x1 projection + BN where shapes change, torchvision's) or "A" (parameter-free).
    `stem_width`: the stem's output channels (default: the first stage's width).
    """

    def __init__(self, block: type[BasicBlock] | type[Bottleneck], layers: Sequence[int],
                 widths: Sequence[int] = (64, 128, 256, 512), *, num_classes: int = 1000, in_chans: int = 3,
                 stem: str = "imagenet", shortcut: str = "B", attn_layer: AttnFactory | None = None,
                 stem_width: int | None = None):
        super().__init__()
        num_classes = positive_int(num_classes, "num_classes")
        in_chans = positive_int(in_chans, "in_chans")
        shortcut = str(shortcut).upper()
        if shortcut not in SHORTCUTS:
            raise CbamlabError(f"unknown shortcut option '{shortcut}'; known: A (zero-padding identity), "
                               f"B (1x1 projection)")
        if stem not in ("imagenet", "cifar"):
            raise CbamlabError(f"unknown stem '{stem}'; known: cifar, imagenet")
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.shortcut = shortcut
        self.inplanes = widths[0] if stem_width is None else positive_int(stem_width, "stem_width")
        attn_layer = attn_layer or no_attention

        if stem == "imagenet":
            self.conv1 = nn.Conv2d(in_chans, self.inplanes, 7, stride=2, padding=3, bias=False)
        else:
            self.conv1 = conv3x3(in_chans, self.inplanes)
        self.bn1 = nn.BatchNorm2d(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1) if stem == "imagenet" else nn.Identity()
        self.num_stages = len(layers)
        for i, (n, planes) in enumerate(zip(layers, widths), start=1):
            stride = 1 if i == 1 else 2
            setattr(self, f"layer{i}", self._make_layer(block, planes, n, stride, attn_layer))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.num_features = self.inplanes
        self.fc = nn.Linear(self.num_features, num_classes)
        self._init_weights()

    def _make_layer(self, block, planes: int, blocks: int, stride: int, attn_layer: AttnFactory) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            if self.shortcut == "A":
                downsample = PadShortcut(self.inplanes, planes * block.expansion, stride)
            else:
                downsample = nn.Sequential(conv1x1(self.inplanes, planes * block.expansion, stride),
                                           nn.BatchNorm2d(planes * block.expansion))
        layers = [block(self.inplanes, planes, stride, downsample, attn_layer)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes, attn_layer=attn_layer) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def _init_weights(self) -> None:
        """As the authors' code: Kaiming (fan-out) convs, BN gamma 1 and beta 0; Linear layers keep PyTorch's
        default init (as torchvision). Then every submodule with its own `init_weights()` applies it, so a layer
        keeps its own choice (the spatial gate's BN starts at gamma 0 when built with `bn_zero_init`)."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for m in self.modules():
            if m is not self and callable(getattr(m, "init_weights", None)):
                m.init_weights()

    def stage_names(self) -> list[str]:
        return [f"layer{i}" for i in range(1, self.num_stages + 1)]

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.maxpool(self.relu(self.bn1(self.conv1(x))))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_chans, H, W) -> the last stage's feature map (B, num_features, h, w)."""
        x = self.forward_stem(x)
        for name in self.stage_names():
            x = getattr(self, name)(x)
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Feature map (B, num_features, h, w) -> logits (B, num_classes), or pooled features if `pre_logits`."""
        x = torch.flatten(self.avgpool(x), 1)
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


# base name -> (block, blocks per stage, stage widths, stem, default shortcut, family)
_WIDE = (64, 128, 256, 512)
_HE = (16, 32, 64)
ARCHS: dict[str, tuple] = {
    "resnet18": (BasicBlock, (2, 2, 2, 2), _WIDE, "imagenet", "B", "imagenet"),
    "resnet34": (BasicBlock, (3, 4, 6, 3), _WIDE, "imagenet", "B", "imagenet"),
    "resnet50": (Bottleneck, (3, 4, 6, 3), _WIDE, "imagenet", "B", "imagenet"),
    "resnet101": (Bottleneck, (3, 4, 23, 3), _WIDE, "imagenet", "B", "imagenet"),
    "resnet152": (Bottleneck, (3, 8, 36, 3), _WIDE, "imagenet", "B", "imagenet"),
    "cifar_resnet18": (BasicBlock, (2, 2, 2, 2), _WIDE, "cifar", "B", "cifar"),
    "cifar_resnet34": (BasicBlock, (3, 4, 6, 3), _WIDE, "cifar", "B", "cifar"),
    "cifar_resnet50": (Bottleneck, (3, 4, 6, 3), _WIDE, "cifar", "B", "cifar"),
    **{f"resnet{6 * n + 2}": (BasicBlock, (n, n, n), _HE, "cifar", "A", "he2016") for n in (3, 5, 7, 9, 18)},
}


def build_resnet(base: str, *, num_classes: int = 1000, in_chans: int = 3, attn_layer: AttnFactory | None = None,
                 shortcut: str | None = None, width: int = 1) -> ResNet:
    """Build the architecture `base` (a key of `ARCHS`) with the given attention factory on every block.

    `width` (He et al.'s CIFAR nets only): stage widths times `width`, stem unchanged (WRN-style)."""
    block, layers, widths, stem, default_shortcut, family = ARCHS[base]
    width = positive_int(width, "width")
    if width != 1 and family != "he2016":
        raise CbamlabError(f"width={width}: a width multiplier applies to He et al.'s CIFAR nets "
                           f"(resnet20..resnet110), not to {base}")
    return ResNet(block, layers, tuple(w * width for w in widths), num_classes=num_classes, in_chans=in_chans,
                  stem=stem, shortcut=shortcut or default_shortcut, attn_layer=attn_layer, stem_width=widths[0])


def _register_all() -> None:
    for base, spec in ARCHS.items():
        for attn, suffix in ATTN_SUFFIXES.items():
            info = ModelInfo(name=base + suffix, base=base, attn=attn, family=spec[5])
            register_model(info, functools.partial(build_resnet, base))


_register_all()
