"""Export a model to ONNX or TorchScript and check the exported graph reproduces the model's outputs."""
from __future__ import annotations

import io
import logging
import tempfile
import warnings
from pathlib import Path

import torch
from torch import nn

from .. import _io
from ..errors import CbamlabError

log = logging.getLogger(__name__)
FORMATS = ("onnx", "torchscript")


def _onnx_bytes(model: nn.Module, x: torch.Tensor) -> bytes:
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = Path(tmp) / "model.onnx"
        torch.onnx.export(model, (x,), str(path), input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, dynamo=False)
        return path.read_bytes()


def _run_onnx(data: bytes, x: torch.Tensor) -> torch.Tensor:
    import onnxruntime as ort

    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    return torch.from_numpy(sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0])


def _torchscript_bytes(model: nn.Module, x: torch.Tensor) -> bytes:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, x)
        buf = io.BytesIO()
        torch.jit.save(traced, buf)
    return buf.getvalue()


def _run_torchscript(data: bytes, x: torch.Tensor) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.jit.load(io.BytesIO(data), map_location="cpu")(x)


def export_model(model: nn.Module, input_size, out, fmt: str, *, atol: float = 1e-4, batch: int = 4) -> float:
    """Write `model` (on the CPU, eval mode) as `fmt` to `out` atomically; returns the largest absolute output
    difference on a random batch of another size than the one traced, and raises if it exceeds `atol`."""
    if fmt not in FORMATS:
        raise CbamlabError(f"unknown export format '{fmt}'; known: {', '.join(FORMATS)}")
    model = model.to("cpu").float().eval()
    gen = torch.Generator().manual_seed(0)
    trace_x = torch.randn(1, *input_size, generator=gen)
    check_x = torch.randn(batch, *input_size, generator=gen)
    with torch.no_grad():
        data = (_onnx_bytes if fmt == "onnx" else _torchscript_bytes)(model, trace_x)
        got = (_run_onnx if fmt == "onnx" else _run_torchscript)(data, check_x)
        want = model(check_x)
    diff = float((got - want).abs().max())
    if not diff <= atol:
        raise CbamlabError(f"the {fmt} export does not match the model: max |difference| {diff:.3g} > {atol:g}")
    _io.write_bytes(out, data)
    log.info("exported %s to %s (max |difference| %.2e)", fmt, out, diff)
    return diff
