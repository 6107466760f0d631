"""What the attention benchmarks write: the lines every table of theirs starts with (device, CPU and its vector
flags, threads, versions, date, load), the native CBAM operator's build and load times, and bench_attention's
markdown and CSV (with the targets of issue 28)."""
from __future__ import annotations

import csv
import io
import json
import os
import platform
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cbamlab.engine.runtime import cpu_flags, cpu_name  # noqa: E402
from cbamlab.models import native  # noqa: E402

CPU_FLAGS = {"avx2": "AVX2", "avx512f": "AVX-512", "avx512_bf16": "avx512_bf16", "amx_bf16": "amx_bf16"}
TARGETS = {"step": 1.10, "latency": 1.15, "timm": 1.25}  # issue 28: native / plain at most, timm / native at least
CSV_COLUMNS = ("size", "input", "batch", "mode", "variant", "train_img_s", "train_img_s_min", "train_img_s_max",
               "step_ms", "step_vs_plain", "latency_ms", "latency_vs_plain", "repeats", "default_mode",
               "timm_step_ratio", "warmup_s")


BUILD_PROBE = """import json, torch
from cbamlab.models import native
r = native.load()
print(json.dumps({"ok": r.ok, "built": r.built, "seconds": r.seconds, "reason": r.reason}))"""


def build_times(cache: str | None = None) -> list[dict]:
    """The native operator's first build in a fresh cache, then its load from that cache, each in a new process."""
    with tempfile.TemporaryDirectory(prefix="cbamlab-build-") as fresh:
        env = dict(os.environ, CBAMLAB_CACHE_DIR=cache or fresh, PYTHONPATH=str(ROOT))
        return [json.loads(subprocess.run([sys.executable, "-c", BUILD_PROBE], env=env, cwd=ROOT, check=True,
                                          capture_output=True, text=True).stdout.splitlines()[-1])
                for _ in range(2)]


def _seconds(s: float) -> str:
    return f"{s:.1f} s" if s >= 1 else f"{s * 1000:.1f} ms"


def native_line(loaded: native._build.BuildResult, seconds: float, probes: list[dict] | None) -> str:
    if not loaded.ok:
        return f"Native CBAM operator: not available here ({loaded.reason}): no cbam_native rows."
    how = "built in this process" if loaded.built else "loaded from the cache"
    text = f"Native CBAM operator: {how} in {_seconds(seconds)} ({loaded.path.parent.name})"
    if probes:
        first, second = probes
        if first["ok"] and second["ok"] and first["built"] and not second["built"]:
            text += (f"; in new processes: first build {_seconds(first['seconds'])} in a fresh cache, then load "
                     f"from it {_seconds(second['seconds'])} (targets: <= 60 s and < 1 s)")
        else:
            text += f"; the build-time probe did not build then load: {first}, {second}"
    return text + "."


def cpu_line() -> str:
    flags = cpu_flags()
    marks = ", ".join(f"{label} {'yes' if flag in flags else 'no'}" for flag, label in CPU_FLAGS.items())
    return f"CPU: {cpu_name()} ({marks}; torch CPU capability {torch.backends.cpu.get_cpu_capability()})."


def machine_lines(device, load_before: str) -> list[str]:
    """Device, threads, versions, date and load: the lines every table of this folder starts with."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    return [
        f"Device: {device.type} ({name}), {torch.get_num_threads()} torch threads, {os.cpu_count()} cores; "
        f"torch {torch.__version__}, timm {_version('timm') or 'not installed (no timm rows)'}, "
        f"python {platform.python_version()}; {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC.",
        cpu_line(),
        f"Load average (1 min) {load_before} at the start, {load_average()} at the end.",
    ]


def header(args, device, load_before: str, native_text: str) -> list[str]:
    return [
        "# Attention cost: training images/s and batch-1 latency", "",
        *machine_lines(device, load_before), native_text,
        f"Median of {args.repeats} interleaved repeats ({args.steps} training steps, {args.latency_iters} "
        f"batch-1 forwards each); min - max over the repeats; `x plain` is the step time (or latency) over the "
        f"plain net's in the same mode. `cbamlab train` picks `{args.default_mode}` here with its defaults "
        f"({args.default_reason}): the rows marked (default).", "",
        "| size | input | batch | mode | variant | train img/s | min - max | x plain | latency ms | x plain |",
        "|---|---|---:|---|---|---:|---:|---:|---:|---:|",
    ]


def load_average() -> str:
    try:
        return f"{os.getloadavg()[0]:.2f}"
    except OSError:
        return "n/a"


def _fmt(v, spec: str) -> str:
    return "" if v is None else format(v, spec)


def _mark(v, limit: float, at_most: bool) -> str:
    return "" if v is None else f"x{v:.2f} {'met' if (v <= limit if at_most else v >= limit) else 'MISSED'}"


def targets(rows: list[dict]) -> list[str]:
    """One line per size x mode: the native CBAM's ratios against issue 28's targets."""
    lines = ["", f"Targets (issue 28): native CBAM / plain step <= x{TARGETS['step']:.2f}, batch-1 latency <= "
             f"x{TARGETS['latency']:.2f}; timm's CbamModule step / native step >= x{TARGETS['timm']:.2f}.", "",
             "| size | mode | plain img/s | native img/s | native / plain step | native / plain latency "
             "| timm / native step | reference / plain step |", "|---|---|---:|---:|---|---|---|---:|"]
    cells = {(r["size"], r["mode"], r["variant"]): r for r in rows}
    for size, mode, variant in cells:
        if variant != "cbam_native":
            continue
        r, plain = cells[size, mode, variant], cells.get((size, mode, "plain"))
        ref = cells.get((size, mode, "cbam_reference"))
        lines.append(f"| {size} | {mode}{' (default)' * r['default_mode']} | "
                     f"{_fmt(plain and plain['train_img_s'], ',.0f')} | {r['train_img_s']:,.0f} | "
                     f"{_mark(r['step_vs_plain'], TARGETS['step'], True)} | "
                     f"{_mark(r['latency_vs_plain'], TARGETS['latency'], True)} | "
                     f"{_mark(r['timm_step_ratio'], TARGETS['timm'], False)} | "
                     f"{_fmt(ref and ref['step_vs_plain'], '.2f')} |")
    return lines if len(lines) > 5 else []


def to_markdown(rows: list[dict], head: list[str]) -> str:
    lines = list(head)
    for r in rows:
        lines.append(f"| {r['size']} | {r['input']} | {r['batch']} | {r['mode']}{' (default)' * r['default_mode']} "
                     f"| {r['variant']} | {r['train_img_s']:,.0f} | {r['train_img_s_min']:,.0f} - "
                     f"{r['train_img_s_max']:,.0f} | {_fmt(r['step_vs_plain'], '.2f')} | {r['latency_ms']:.2f} | "
                     f"{_fmt(r['latency_vs_plain'], '.2f')} |")
    compiled = [f"{r['size']} {r['mode']} {r['variant']} {r['warmup_s']:.0f} s" for r in rows
                if r["variant"].endswith("_compiled")]
    if compiled:
        lines += ["", f"Compiling (the warm-up steps of the compiled variants): {'; '.join(compiled)}."]
    return "\n".join(lines + targets(rows)) + "\n"


def to_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None
