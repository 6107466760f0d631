"""Runtime set-up: device, threads, seeding, determinism, autocast, and the environment a run records."""
from __future__ import annotations

import contextlib
import os
import platform
import random
import sys

import numpy as np
import torch

from ..errors import ConfigError


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


def autocast(device: torch.device, amp: str):
    """bf16 autocast on CPU or GPU, fp16 on GPU only; a no-op for 'none'."""
    if amp == "none":
        return contextlib.nullcontext()
    if amp == "fp16" and device.type != "cuda":
        raise ConfigError("train.amp='fp16' needs a CUDA device; use 'bf16' on CPU")
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"cpu ({cpu_name()}, {torch.get_num_threads()} threads)"


def env_info(device: torch.device) -> dict:
    from .. import __version__

    return {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "cbamlab": __version__,
        "platform": platform.platform(),
        "cpu": cpu_name(),
        "cores_available": available_cores(),
        "threads": torch.get_num_threads(),
        "device": device_name(device),
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
    }
