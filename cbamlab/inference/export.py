"""Export a model to ONNX, traced TorchScript or torch.export (.pt2), with a dynamic batch size, and check that the
exported graph, loaded back, reproduces the model's outputs at two batch sizes other than the one traced.

ONNX marks the batch axis dynamic (`dynamic_axes`); torch.export declares it a symbolic `Dim`; a traced TorchScript
graph has no declared shapes and works at any batch size when the model's code does not branch on it (these
models do not; the two-batch check holds them to it). torch.export is TorchScript's successor and captures these
models exactly (graph and weights in one file, loaded with `torch.export.load(path).module()`).
"""
from __future__ import annotations

import io
import logging
import tempfile
import warnings
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from .. import _io
from ..errors import CbamlabError, unknown

log = logging.getLogger(__name__)
SUFFIX = {"onnx": ".onnx", "torchscript": ".pt", "pt2": ".pt2"}
FORMATS = tuple(SUFFIX)
TRACE_BATCH = 2  # torch.export specialises a dimension it sees at size 0 or 1, so trace with 2
CHECK_BATCHES = (1, 5)
MAX_BATCH = 65536


def _onnx_bytes(model: nn.Module, x: torch.Tensor) -> bytes:
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = Path(tmp) / "model.onnx"
        torch.onnx.export(model, (x,), str(path), input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, dynamo=False)
        return path.read_bytes()


def _onnx_runner(data: bytes) -> Callable[[torch.Tensor], torch.Tensor]:
    import onnxruntime as ort  # optional dependency (the export extra)

    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return lambda x: torch.from_numpy(sess.run(None, {name: x.numpy()})[0])


def _torchscript_bytes(model: nn.Module, x: torch.Tensor) -> bytes:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, x)
        buf = io.BytesIO()
        torch.jit.save(traced, buf)
    return buf.getvalue()


def _torchscript_runner(data: bytes) -> Callable[[torch.Tensor], torch.Tensor]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.jit.load(io.BytesIO(data), map_location="cpu")


def _pt2_bytes(model: nn.Module, x: torch.Tensor) -> bytes:
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    program = torch.export.export(model, (x,), dynamic_shapes=({0: batch},))
    buf = io.BytesIO()
    torch.export.save(program, buf)
    return buf.getvalue()


def _pt2_runner(data: bytes) -> Callable[[torch.Tensor], torch.Tensor]:
    return torch.export.load(io.BytesIO(data)).module()


WRITERS = {"onnx": (_onnx_bytes, _onnx_runner), "torchscript": (_torchscript_bytes, _torchscript_runner),
           "pt2": (_pt2_bytes, _pt2_runner)}


def load_export(data: bytes, fmt: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """A callable (B, C, H, W) -> logits from the bytes of an export in format `fmt` (CPU)."""
    if fmt not in WRITERS:
        raise unknown("export format", fmt, WRITERS)
    return WRITERS[fmt][1](data)


def export_model(model: nn.Module, input_size, out, fmt: str, *, atol: float = 1e-4,
                 batches=CHECK_BATCHES) -> float:
    """Write `model` (on the CPU, eval mode) as `fmt` to `out` atomically. Traced at batch TRACE_BATCH, the
    export is loaded back and run at each of `batches`; returns the largest absolute output difference from the
    model and raises (writing nothing) if it exceeds `atol`."""
    if fmt not in WRITERS:
        raise unknown("export format", fmt, WRITERS)
    model = model.to("cpu").float().eval()
    gen = torch.Generator().manual_seed(0)
    trace_x = torch.randn(TRACE_BATCH, *input_size, generator=gen)
    diff = 0.0
    with torch.no_grad():
        data = WRITERS[fmt][0](model, trace_x)
        run = load_export(data, fmt)
        for b in batches:
            x = torch.randn(b, *input_size, generator=gen)
            got, want = run(x), model(x)
            if got.shape != want.shape:
                raise CbamlabError(f"the {fmt} export gives shape {tuple(got.shape)} at batch {b}, the model "
                                   f"{tuple(want.shape)}")
            diff = max(diff, float((got - want).abs().max()))
    if not diff <= atol:
        raise CbamlabError(f"the {fmt} export does not match the model: max |difference| {diff:.3g} > {atol:g}")
    _io.write_bytes(out, data)
    log.info("exported %s to %s (batch sizes %s checked; max |difference| %.2e)", fmt, out,
             ", ".join(map(str, batches)), diff)
    return diff
