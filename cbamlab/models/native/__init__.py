"""The native CBAM: `attention.CBAM`'s math, parameters and state_dict as one C++ operator per direction.

`csrc/cbam.cpp` holds the operator and its autograd formula (see its header for how the work is laid out; the
kernels are in `map_kernels.h` and `small_maps.h`), `_build` compiles them on first use into a cache, `_ops`
registers the operator's fake implementations. `run(cbam, x)` is
what `CBAM.forward` calls; `unsupported(cbam, x)` says why a call cannot run natively (then the reference runs).

The spatial gate's BatchNorm normalises inside the operator, which also updates its running statistics in place
with `nn.BatchNorm2d`'s formula (momentum, or the cumulative average when momentum is None; the unbiased
variance) and counts `num_batches_tracked`.
"""
from __future__ import annotations

import logging

import torch

from . import _build, _ops

log = logging.getLogger(__name__)

NATIVE_POOLS = (("avg",), ("max",), ("avg", "max"), ("max", "avg"))
DTYPES = (torch.float32, torch.float64, torch.bfloat16)
_result: _build.BuildResult | None = None
_told: set = set()


def load() -> _build.BuildResult:
    """Build (first use) or load the operator and register it; the result is kept for the process."""
    return _result if _result is not None else _first_load()


@torch.compiler.disable  # a first use under torch.compile builds eagerly, outside the traced graph
def _first_load() -> _build.BuildResult:
    global _result
    if _result is None:
        result = _build.build_and_load()
        if result.ok:
            try:
                _ops.register()
            except Exception as exc:  # a registration that does not take: the reference runs
                result = _build.BuildResult(False, f"registering the operator failed: {exc}", result.path)
        _result = result
    return _result


def available() -> bool:
    return load().ok


def unavailable_reason() -> str:
    return load().reason


def status() -> dict:
    """What env.json and `cbamlab native` record: whether the operator loaded, why not, the build's key."""
    result = load()
    return {"available": result.ok, "reason": result.reason or None, "capability": _build.cpu_capability(),
            "torch": torch.__version__, "build": result.path.parent.name if result.path else None,
            "built_now": result.built, "seconds": round(result.seconds, 3)}


def _plain_ops_wanted() -> bool:
    """Tracing and ONNX export want the reference's plain operators (torch.compile and torch.export take the op)."""
    return torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()


def unsupported(cbam, x: torch.Tensor) -> str | None:
    """Why this CBAM call cannot run natively, or None when it can."""
    if x.dim() != 4:
        return f"it takes (B, C, H, W) maps, not {x.dim()} dimensions"
    return unsupported_for(cbam, x.device.type, x.dtype, x.shape[0] * x.shape[2] * x.shape[3])


def unsupported_for(cbam, device_type: str, dtype: torch.dtype, values_per_channel: int = 2) -> str | None:
    """`unsupported` for an input on `device_type` in `dtype` whose spatial BatchNorm sees `values_per_channel`
    values (B * H * W): what a run records before it has seen a batch."""
    if _plain_ops_wanted():
        return "tracing and ONNX export use the reference's plain operators"
    if device_type != "cpu":
        return f"the native CBAM runs on the CPU, not {device_type}"
    if dtype not in DTYPES:
        return f"it runs in float32, float64 and bfloat16, not {dtype}"
    if tuple(cbam.channel.pool_types) not in NATIVE_POOLS:
        return f"its channel gate pools avg and/or max, not {'+'.join(cbam.channel.pool_types)}"
    if cbam.spatial is not None:
        bn = cbam.spatial.bn
        if bn.weight is None:
            return "the spatial gate's BatchNorm has no affine parameters"
        if type(bn) is not torch.nn.BatchNorm2d and _bn_uses_batch(bn):  # SyncBatchNorm: statistics of all ranks
            return f"its spatial gate normalises with a {type(bn).__name__} in training, which the reference runs"
        if _bn_uses_batch(bn) and values_per_channel < 2:
            return "BatchNorm needs more than one value per channel in training"  # the reference raises it
    if not available():
        return f"it did not build: {unavailable_reason()}"
    return None


@torch.compiler.disable
def note_fallback(reason: str) -> None:
    """One log line per reason and process: the native CBAM is not used, and why."""
    if reason not in _told:
        _told.add(reason)
        log.warning("native CBAM not used (%s); running the reference implementation", reason)


def _bn_uses_batch(bn) -> bool:
    return bn.training or bn.running_mean is None


def run(cbam, x: torch.Tensor) -> torch.Tensor:
    """`cbam(x)` by the native operator (the caller checked `unsupported`)."""
    channel, spatial = cbam.channel, cbam.spatial
    fc1, fc2 = channel.mlp[0], channel.mlp[2]
    pools = channel.pool_types
    if spatial is None:
        out, mc, *_ = torch.ops.cbamlab.cbam_forward(x, fc1.weight, fc1.bias, fc2.weight, fc2.bias, None, None, None,
                                                     None, None, None, "channel_only", "avg" in pools,
                                                     "max" in pools, False, 0.0, 0.0)
    else:
        bn = spatial.bn
        momentum = -1.0 if bn.momentum is None else bn.momentum  # None: the cumulative average
        out, mc, ms, *_ = torch.ops.cbamlab.cbam_forward(
            x, fc1.weight, fc1.bias, fc2.weight, fc2.bias, spatial.conv.weight, bn.weight, bn.bias, bn.running_mean,
            bn.running_var, bn.num_batches_tracked, cbam.arrangement, "avg" in pools, "max" in pools, bn.training,
            momentum, bn.eps)
        if spatial.keep_map:
            spatial._keep(ms.view(x.shape[0], 1, *x.shape[2:]))
    if channel.keep_map:
        channel._keep(mc.view(*x.shape[:2], 1, 1))
    return out
