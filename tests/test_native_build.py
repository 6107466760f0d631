"""The native CBAM's build: the cache key, the fallback when the compiler is broken, and the installed wheel,
which ships the C++ sources and builds them (once, with two processes starting together) outside site-packages."""
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import time
from pathlib import Path

import pytest

from cbamlab.models.native import _build

ROOT = Path(__file__).resolve().parents[1]
HAS_COMPILER = shutil.which(os.environ.get("CXX", "c++")) is not None

# One CBAM forward + backward (native where it runs) in a fresh process; prints what ran as JSON.
FORWARD_BACKWARD = textwrap.dedent("""
    import json, logging, sys, torch
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s: %(message)s")
    import cbamlab
    from cbamlab.models import native
    from cbamlab.models.attention import CBAM
    torch.set_num_threads(1)
    model = cbamlab.create_model("resnet20_cbam", num_classes=10, in_chans=1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(8, 1, 16, 16)
    loss = torch.nn.functional.cross_entropy(model(x), torch.randint(0, 10, (8,)))
    loss.backward()
    opt.step()
    print(json.dumps({"impl": sorted({m.impl_for(x[:, :1].expand(8, 16, 16, 16)) for m in model.modules()
                                      if isinstance(m, CBAM)}),
                      "loss": loss.item(), "cbamlab": cbamlab.__file__, "sources": [str(s) for s in
                      native._build.SOURCES], "status": native.status()}))
""")


def _run(python, env, *args):
    return subprocess.run([str(python), *args], env=env, capture_output=True, text=True, timeout=600)


def test_the_cache_key_holds_torch_capability_and_sources(monkeypatch, tmp_path):
    monkeypatch.setenv("CBAMLAB_CACHE_DIR", str(tmp_path))
    assert _build.cache_root() == tmp_path / "native"
    key = _build.build_key()
    import torch

    assert torch.__version__.replace("+", "_") in key and _build.source_hash() in key
    assert f"-{_build.cpu_capability().lower()}-" in key
    monkeypatch.setattr(_build, "cpu_capability", lambda: "AVX512")
    avx512_key = _build.build_key()
    assert "-avx512-" in avx512_key
    assert "-mavx512f" in _build.compiler_flags() and "-DCPU_CAPABILITY_AVX512" in _build.compiler_flags()
    monkeypatch.setattr(_build, "cpu_capability", lambda: "AVX2")
    assert "-avx2-" in _build.build_key() and _build.build_key() != avx512_key  # never one build for both
    flags = _build.compiler_flags()
    assert "-mavx2" in flags and not any("avx512" in f for f in flags)  # an AVX2 build has no AVX-512 code
    assert "-fopenmp" in flags and "-O3" in flags
    monkeypatch.delenv("CBAMLAB_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert _build.cache_root() == tmp_path / "xdg" / "cbamlab" / "native"


def test_a_broken_compiler_falls_back_with_one_line_and_trains(tmp_path):
    fake = tmp_path / "broken-c++"
    fake.write_text("#!/bin/sh\necho 'c++: internal compiler error (simulated)' >&2\nexit 1\n")
    fake.chmod(0o755)
    env = {**os.environ, "CXX": str(fake), "CBAMLAB_CACHE_DIR": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    proc = _run(sys.executable, env, "-c", FORWARD_BACKWARD)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["impl"] == ["reference"] and result["status"]["available"] is False
    lines = [line for line in proc.stderr.splitlines() if "native CBAM not used" in line]
    assert len(lines) == 1 and "it did not build" in lines[0] and "running the reference" in lines[0], lines
    assert not list((tmp_path / "cache").rglob("*.so"))
    # asked for by name, the error is one line and exit status 2
    proc = _run(Path(sys.executable).parent / "cbamlab", env, "native", "--require")
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].startswith("error: the native CBAM"), \
        proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
@pytest.mark.skipif(not HAS_COMPILER, reason="no C++ compiler on this machine")
def test_the_installed_wheel_builds_once_outside_site_packages(tmp_path):
    dist, src = tmp_path / "dist", tmp_path / "src"  # a copy: the build writes its build/ beside the sources
    shutil.copytree(ROOT / "cbamlab", src / "cbamlab", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    proc = _run(sys.executable, dict(os.environ), "-m", "build", "--wheel", "--no-isolation", "--outdir", str(dist),
                str(src))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    wheel = next(dist.glob("cbamlab-*.whl"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    proc = _run(sys.executable, dict(os.environ), "-m", "pip", "--python", str(python), "install", "-q",
                "--no-deps", "--no-index", str(wheel))
    assert proc.returncode == 0, proc.stderr[-2000:]
    site = Path(subprocess.check_output([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                        text=True).strip())
    # the dependencies (torch, ...) come from this environment; cbamlab only from the wheel
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    cache = tmp_path / "cache"
    env = {**os.environ, "CBAMLAB_CACHE_DIR": str(cache), "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    procs = [subprocess.Popen([str(python), "-c", FORWARD_BACKWARD], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, cwd=tmp_path) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    seconds = time.perf_counter() - start
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    results = [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]
    for r in results:
        assert r["impl"] == ["native"], r
        assert r["cbamlab"].startswith(str(site)) and all(s.startswith(str(site)) for s in r["sources"])
        assert r["status"]["available"]
    assert sorted(r["status"]["built_now"] for r in results) == [False, True], results  # one build, one wait
    libraries = list(cache.rglob("*.so"))
    assert len(libraries) == 1 and not list(site.rglob("*.so")), libraries
    print(f"first build from the installed wheel (two processes starting together): {seconds:.1f} s")
