"""Build the native CBAM operator on first use, into a cache keyed by torch version, CPU capability and sources.

The C++ sources ship inside the package (`csrc/`); nothing is compiled at install time. The first process that
needs the operator compiles it with `torch.utils.cpp_extension` (g++, ninja, -O3, OpenMP and the instruction set
of the CPU capability torch runs at: an AVX-512 build never loads on an AVX2 machine, since the capability is in
the key) and moves the library into the cache; a file lock makes concurrent first uses (torchrun ranks, compare
or tune workers) build once. Later processes only load the cached library.

The cache is `$CBAMLAB_CACHE_DIR/native`, else `$XDG_CACHE_HOME/cbamlab/native`, else `~/.cache/cbamlab/native`:
never inside site-packages.
"""
from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

log = logging.getLogger(__name__)

CSRC = Path(__file__).parent / "csrc"
SOURCES = tuple(sorted(CSRC.glob("*.cpp")))  # compiled; the headers beside them are part of the source hash
HEADERS = tuple(sorted(CSRC.glob("*.h")))
LIBRARY = "cbamlab_native.so"
# Compiler flags per torch CPU capability: the instruction set and the macros that select ATen's Vectorized.
CAPABILITY_FLAGS = {
    "AVX512": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mfma", "-mf16c",
               "-DCPU_CAPABILITY=AVX512", "-DCPU_CAPABILITY_AVX512"],
    "AVX2": ["-mavx2", "-mfma", "-mf16c", "-DCPU_CAPABILITY=AVX2", "-DCPU_CAPABILITY_AVX2"],
}
DEFAULT_FLAGS = ["-DCPU_CAPABILITY=DEFAULT"]
COMMON_FLAGS = ["-O3", "-fopenmp", "-DNDEBUG"]


@dataclasses.dataclass(frozen=True)
class BuildResult:
    """How loading went: `ok`, why not (`reason`), where the library is, and whether this process built it."""

    ok: bool
    reason: str = ""
    path: Path | None = None
    built: bool = False
    seconds: float = 0.0


def cpu_capability() -> str:
    return torch.backends.cpu.get_cpu_capability()


def cache_root() -> Path:
    if os.environ.get("CBAMLAB_CACHE_DIR"):
        return Path(os.environ["CBAMLAB_CACHE_DIR"]) / "native"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "cbamlab" / "native"


def source_hash() -> str:
    digest = hashlib.sha256()
    for path in SOURCES + HEADERS:
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def build_key() -> str:
    """torch version, CPU capability and source hash: one directory per combination that may load."""
    version = torch.__version__.replace("+", "_")
    return f"torch{version}-{cpu_capability().lower()}-{source_hash()}"


def compiler_flags() -> list[str]:
    return COMMON_FLAGS + CAPABILITY_FLAGS.get(cpu_capability(), DEFAULT_FLAGS)


def _with_ninja_on_path() -> dict:
    """The environment with the ninja of the `ninja` package (a dependency) and of this interpreter's bin first."""
    env = dict(os.environ)
    dirs = [str(Path(sys.executable).parent)]
    try:
        import ninja  # an install dependency; its BIN_DIR holds the executable

        dirs.insert(0, ninja.BIN_DIR)
    except (ImportError, AttributeError):
        pass
    env["PATH"] = os.pathsep.join(dirs + [env.get("PATH", "")])
    return env


def _compile(target: Path) -> None:
    """Compile the sources into `target` (a fresh build directory beside it, moved into place atomically)."""
    from torch.utils import cpp_extension  # heavy (imports setuptools); only needed for a build

    build_dir = Path(tempfile.mkdtemp(prefix="build-", dir=target.parent))
    saved = os.environ.copy()
    try:
        os.environ.update(_with_ninja_on_path())
        cpp_extension.load(name="cbamlab_native", sources=[str(s) for s in SOURCES], build_directory=str(build_dir),
                           extra_cflags=compiler_flags(), extra_ldflags=["-fopenmp"], is_python_module=False,
                           verbose=False)
        os.replace(build_dir / "cbamlab_native.so", target)
    finally:
        os.environ.clear()
        os.environ.update(saved)
        shutil.rmtree(build_dir, ignore_errors=True)


def build_and_load() -> BuildResult:
    """Load the cached library, building it first if it is missing; never raises."""
    start = time.perf_counter()
    directory = cache_root() / build_key()
    target = directory / LIBRARY
    built = False
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with open(directory / "build.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # one build per key across processes; the others wait, then load
            if not target.exists():
                log.info("building the native CBAM operator (first use; %s) into %s", cpu_capability(), directory)
                _compile(target)
                built = True
            else:
                torch.ops.load_library(str(target))
    except Exception as exc:  # a missing compiler, a failed build, an unwritable cache: the reference runs
        lines = str(exc).strip().splitlines() or [type(exc).__name__]
        first = next((line for line in lines if " error: " in line or line.startswith("error:")), lines[-1])
        return BuildResult(False, f"{type(exc).__name__}: {first[:300]}", target, built, time.perf_counter() - start)
    seconds = time.perf_counter() - start
    if built:
        log.info("built the native CBAM operator in %.1f s", seconds)
    return BuildResult(True, "", target, built, seconds)
