"""Parameter and multiply-accumulate counts, and the per-stage table that `cbamlab summary` prints.

MACs are counted with PyTorch's own `torch.utils.flop_counter.FlopCounterMode` on one image in eval mode and
reported as FLOPs / 2, the convention of the CBAM paper and torchvision's model cards. That counter counts
matrix products and convolutions: here every convolution (including the spatial gate's 2 -> 1 conv, option B's
1x1 projections) and every linear layer (the attention MLPs, `fc`). It does not count element-wise work: batch
norm, ReLU, sigmoid, pooling, the attention's scaling multiplications, the residual additions.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ..errors import CbamlabError
from .attention import CBAM, set_attn_impl

COUNTED_OPS = "convolutions and linear layers (matmul/addmm); not batch norm, activations, pooling or element-wise products"


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (buffers such as BN running statistics are not parameters)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def parse_input_size(text: str | Sequence[int]) -> tuple[int, int, int]:
    """"3x224x224" or "224x224" (3 channels) or a sequence -> (C, H, W) of positive integers."""
    if isinstance(text, str):
        parts = text.lower().replace(",", "x").split("x")
        try:
            dims = tuple(int(p) for p in parts)
        except ValueError:
            raise CbamlabError(f"input size '{text}' is not CxHxW (e.g. 3x224x224) or HxW") from None
    else:
        dims = tuple(int(d) for d in text)
    if len(dims) == 2:
        dims = (3, *dims)
    if len(dims) != 3 or min(dims) < 1:
        raise CbamlabError(f"input size {text!r} must be three positive integers CxHxW, e.g. 3x224x224")
    return dims


def _dummy_input(model: nn.Module, input_size) -> torch.Tensor:
    c, h, w = parse_input_size(input_size)
    expected = getattr(model, "in_chans", None)
    if expected is not None and c != expected:
        raise CbamlabError(f"input size has {c} channels but the model takes {expected} (in_chans)")
    try:
        param = next(model.parameters())
        device, dtype = param.device, param.dtype
    except StopIteration:
        device, dtype = torch.device("cpu"), torch.float32
    try:
        return torch.zeros(1, c, h, w, device=device, dtype=dtype)
    except (RuntimeError, MemoryError) as e:
        oom = _memory_error((c, h, w), e)
        if oom is None:
            raise
        raise oom from None


def _memory_error(input_size, e: BaseException) -> CbamlabError | None:
    """A clear error for an allocation that failed (an input size far too large for this machine), else None."""
    text = str(e)
    if not (isinstance(e, MemoryError) or "allocate" in text or "out of memory" in text.lower()):
        return None
    asked = re.search(r"allocate (\d+) bytes", text)
    amount = f" (one tensor of {int(asked.group(1)) / 2**30:.1f} GiB)" if asked else ""
    size = "x".join(str(d) for d in input_size)
    return CbamlabError(f"input size {size} needs more memory than is available{amount}; try a smaller input "
                        "size (shapes, parameters and MACs do not depend on memory: count them on the meta device)")


class _EvalNoGrad:
    """Eval mode, no autograd and the reference attention for the duration (the counts are the model's, not
    those of the fast path's matrix products); restores the model's training flags and implementations after."""

    def __init__(self, model: nn.Module):
        self.model = model

    def __enter__(self):
        self.modes = [(m, m.training) for m in self.model.modules()]
        self.impls = [(m, m.attn_impl) for m in self.model.modules() if isinstance(m, CBAM)]
        self.model.eval()
        set_attn_impl(self.model, "reference")
        self.no_grad = torch.no_grad()
        self.no_grad.__enter__()

    def __exit__(self, *exc):
        self.no_grad.__exit__(*exc)
        for m, mode in self.modes:
            m.training = mode
        for m, impl in self.impls:
            m.attn_impl = impl


def _run(model: nn.Module, x: torch.Tensor) -> None:
    try:
        model(x)
    except (RuntimeError, MemoryError) as e:
        oom = _memory_error(tuple(x.shape[1:]), e)
        if oom is not None:
            raise oom from None
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CbamlabError(f"input size {tuple(x.shape[1:])} does not fit the model: {first}") from None


def count_macs(model: nn.Module, input_size=(3, 224, 224)) -> int:
    """Multiply-accumulates of one forward pass on one image of `input_size` (C, H, W).

    Counted with torch's FlopCounterMode as FLOPs / 2: convolutions and linear layers only; batch norm,
    activations, pooling and element-wise products (the attention's rescaling) are not counted.
    """
    x = _dummy_input(model, input_size)
    with _EvalNoGrad(model):
        counter = FlopCounterMode(display=False)
        with counter:
            _run(model, x)
    return int(counter.get_total_flops()) // 2


@dataclass(frozen=True)
class StageRow:
    name: str
    output_shape: tuple[int, ...]  # (C, H, W) or (num_classes,) for the head
    params: int
    macs: int


def _stages(model: nn.Module) -> list[tuple[str, list[nn.Module]]]:
    """(stage name, modules) in order: stem, layer1..N, head. Works for any model with the torchvision layout."""
    stages = [("stem", [getattr(model, n) for n in ("conv1", "bn1", "relu", "maxpool") if hasattr(model, n)])]
    names = model.stage_names() if hasattr(model, "stage_names") else \
        [n for n in ("layer1", "layer2", "layer3", "layer4") if hasattr(model, n)]
    stages += [(n, [getattr(model, n)]) for n in names]
    stages.append(("head", [getattr(model, n) for n in ("avgpool", "fc") if hasattr(model, n)]))
    return stages


def stage_table(model: nn.Module, input_size=(3, 224, 224)) -> list[StageRow]:
    """One row per stage (stem, layer1..N, head): output shape for one image, parameters and MACs."""
    x = _dummy_input(model, input_size)
    stages = _stages(model)
    shapes: dict[str, tuple[int, ...]] = {}
    hooks = []
    for name, modules in stages:
        last = modules[-1]
        hooks.append(last.register_forward_hook(
            lambda m, inp, out, name=name: shapes.__setitem__(name, tuple(out.shape[1:]))))
    try:
        with _EvalNoGrad(model):
            counter = FlopCounterMode(display=False)
            with counter:
                _run(model, x)
    finally:
        for h in hooks:
            h.remove()
    flops = counter.get_flop_counts()  # {"Global": ..., "ResNet.layer1": ..., "ResNet.conv1": ...}
    root = type(model).__name__
    rows = []
    for name, modules in stages:
        child_names = [n for n, c in model.named_children() if any(c is m for m in modules)]
        stage_flops = sum(sum(flops.get(f"{root}.{n}", {}).values()) for n in child_names)
        params = sum(count_params(m) for m in modules)
        rows.append(StageRow(name, shapes.get(name, ()), params, int(stage_flops) // 2))
    return rows
