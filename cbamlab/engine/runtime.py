"""Runtime set-up: device, threads, seeding, determinism, precision and memory layout, autocast, and the
environment a run records."""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import platform
import random
import sys
from dataclasses import dataclass

import numpy as np
import torch

from .. import __version__
from ..config import PRECISIONS, keyed, resolved_values
from ..errors import ConfigError, unknown

log = logging.getLogger(__name__)


def select_device(name: str = "auto") -> torch.device:
    """CUDA when present for 'auto', else CPU; asking for CUDA without one is a ConfigError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"train.device={name!r}: no CUDA device is available here")
    return torch.device(name)


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def set_threads(n: int = 0) -> int:
    """Intra-op threads: `n`, or one per core this process may use (never more than torch's default)."""
    n = n or min(available_cores(), torch.get_num_threads())
    torch.set_num_threads(max(n, 1))
    return torch.get_num_threads()


def seed_everything(seed: int, deterministic: bool = True) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


@dataclass(frozen=True)
class DeviceFacts:
    """What the precision rule looks at: the device type; on a CPU, torch's vector capability ("AVX512", "AVX2",
    ...) and the /proc/cpuinfo flags; on a GPU, its compute capability and whether it computes in bfloat16."""

    type: str = "cpu"
    cpu_capability: str = ""
    cpu_flags: frozenset = frozenset()
    cuda_capability: tuple | None = None
    cuda_bf16: bool = False


def first_processor(cpuinfo: str = "/proc/cpuinfo") -> dict[str, str]:
    """The fields of the first processor in /proc/cpuinfo ({"vendor_id": ..., "model name": ..., "flags": ...});
    {} where it cannot be read."""
    fields = {}
    try:
        with open(cpuinfo) as f:
            for line in f:
                if not line.strip():
                    break  # the first processor is enough
                key, _, value = line.partition(":")
                fields[key.strip()] = value.strip()
    except OSError:
        return {}
    return fields


def cpu_flags() -> frozenset:
    info = first_processor()
    return frozenset((info.get("flags") or info.get("Features") or "").split())


def device_facts(device: torch.device) -> DeviceFacts:
    if device.type == "cuda":
        return DeviceFacts("cuda", cuda_capability=tuple(torch.cuda.get_device_capability(device)),
                           cuda_bf16=torch.cuda.is_bf16_supported())
    return DeviceFacts(device.type, torch.backends.cpu.get_cpu_capability(), cpu_flags())


NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@dataclass(frozen=True)
class Precision:
    """The autocast dtype ("none", "bf16", "fp16") a run trains in, the one it evaluates in, its memory layout,
    and why."""

    amp: str
    channels_last: bool
    reason: str
    eval_amp: str = "none"

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def resolve_precision(amp: str, channels_last, facts: DeviceFacts) -> Precision:
    """`train.amp` and `train.channels_last` with "auto" replaced by what is faster on `facts`' device.

    channels_last: on CUDA from compute capability 7.0 (tensor cores; cuDNN's NHWC kernels); on CPUs with
    AVX-512, where oneDNN's channels_last convolutions are faster (and CBAM's spatial-map products are row
    products there); NCHW elsewhere (not measured: kept as before).
    amp: bf16 on GPUs that compute in it and on CPUs with native bf16 (avx512_bf16 or amx_bf16), where bf16
    autocast + channels_last trains faster than float32; fp16 is never picked (it needs loss scaling). The
    measured speed and accuracy of the automatic choice against float32: docs/performance.md ("Automatic
    precision against float32", from benchmarks/results/precision_accuracy.md).
    An automatic choice evaluates in float32 (a bfloat16 logit has 3 digits: ties between classes would move the
    measured accuracy; evaluation is a small part of the time). Explicit values pass through unchanged and
    evaluate as they train.
    """
    eval_amp = "none" if amp == "auto" else amp
    why = []
    if channels_last == "auto":
        if facts.type == "cuda":
            channels_last = facts.cuda_capability is not None and tuple(facts.cuda_capability) >= (7, 0)
            why.append(f"channels_last {'on' if channels_last else 'off'}: CUDA capability {facts.cuda_capability}")
        else:
            channels_last = facts.cpu_capability.upper().startswith("AVX512")
            why.append(f"channels_last {'on' if channels_last else 'off'}: CPU capability "
                       f"{facts.cpu_capability or 'unknown'}")
    if amp == "auto":
        if facts.type == "cuda":
            amp = "bf16" if facts.cuda_bf16 else "none"
            why.append(f"{amp}: the GPU {'computes' if facts.cuda_bf16 else 'does not compute'} in bf16")
        else:
            native = sorted(set(NATIVE_BF16_FLAGS) & set(facts.cpu_flags))
            amp = "bf16" if native else "none"
            why.append(f"{amp}: {'native bf16 (' + ', '.join(native) + ')' if native else 'no native bf16'}")
    if amp != eval_amp:
        why.append("evaluation in float32")
    return Precision(amp, bool(channels_last), "; ".join(why) or "as configured", eval_amp)


def precision_for(device: torch.device, amp: str, channels_last) -> Precision:
    """`resolve_precision` on this device's facts."""
    return resolve_precision(amp, channels_last, device_facts(device))


def log_precision(precision: Precision) -> None:
    log.info("precision: amp %s (evaluation %s), channels_last %s (%s)", precision.amp, precision.eval_amp,
             precision.channels_last, precision.reason)


def resolved(device: torch.device, precision: Precision) -> dict:
    """What a run on `device` in `precision` resolved its per-machine keys to (`config.resolved_values`): part of
    its result identity."""
    return resolved_values(precision.amp, precision.eval_amp, precision.channels_last, device.type)


def resolved_here(train) -> dict:
    """What this machine resolves the per-machine keys of `train` (a TrainConfig) to, before anything trains:
    what compare holds against the runs and the study record it finds."""
    device = select_device(train.device)
    return resolved(device, precision_for(device, train.amp, train.channels_last))


# a precision (what train.amp resolves to) -> the autocast dtype, None: none (float32); keyed by the config's list
# (config.choices.PRECISIONS)
AUTOCAST_DTYPES = keyed({"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}, PRECISIONS, "precision")


def autocast(device: torch.device, amp: str):
    """bf16 autocast on CPU or GPU, fp16 on GPU only; a no-op for 'none'. 'auto' (the config's value, passed
    through by evaluation code) evaluates as `resolve_precision` decides: in float32."""
    if amp == "auto":
        amp = resolve_precision(amp, False, device_facts(device)).eval_amp
    if amp not in AUTOCAST_DTYPES:
        raise unknown("precision", amp, AUTOCAST_DTYPES)
    if AUTOCAST_DTYPES[amp] is None:
        return contextlib.nullcontext()
    if amp == "fp16" and device.type != "cuda":
        raise ConfigError("train.amp='fp16' needs a CUDA device; use 'bf16' on CPU")
    return torch.autocast(device_type=device.type, dtype=AUTOCAST_DTYPES[amp])


def cpu_name() -> str:
    return first_processor().get("model name") or platform.processor() or platform.machine()


def cpu_id(cpuinfo: str = "/proc/cpuinfo") -> str:
    """The CPU's vendor, family and model numbers from /proc/cpuinfo ("AuthenticAMD family 25 model 17"): what tells
    two machines apart whose model names a virtual machine shortens alike ("AMD EPYC" on Zen 3 and Zen 4); "" where
    /proc/cpuinfo does not say."""
    fields = first_processor(cpuinfo)
    if not {"vendor_id", "cpu family", "model"} <= set(fields):
        return ""
    return f"{fields['vendor_id']} family {fields['cpu family']} model {fields['model']}"


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"cpu ({cpu_name()}, {torch.get_num_threads()} threads)"


def env_info(device: torch.device) -> dict:
    return {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "cbamlab": __version__,
        "platform": platform.platform(),
        "cpu": cpu_name(),
        "cpu_id": cpu_id(),
        "cores_available": available_cores(),
        "threads": torch.get_num_threads(),
        "device": device_name(device),
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
    }
