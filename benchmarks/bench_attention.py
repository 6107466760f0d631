"""What attention costs: training images/s and batch-1 latency of plain, SE, CBAM (reference and fast) and timm's
CBAM ResNets, in float32 NCHW, channels_last, and bfloat16 autocast (NCHW and channels_last), on one device.

Sizes: resnet20 at 1x28x28 (batch 128), resnet18 and resnet50 at 3x32x32 (batch 64 / 32), resnet50 at
3x224x224 (batch 8). A training step is forward + cross-entropy + backward + SGD (momentum, weight decay).
timm's CBAM is `timm.layers.cbam.CbamModule` (reduction 16, 7x7, MLP with biases as ours) wrapped into our
blocks through their attention factory: the same ResNet, only the attention module differs. It needs the
`bench` extra (pip install 'cbamlab[bench]'); without timm its rows are left out, and the table says so.

Every variant and mode of one size is measured interleaved, in one process: each repeat times every case once
(in a rotating order), and the table gives the median of the repeats (--repeats, default 7) and the ratio of
step times and latencies to the plain net of the same mode. Run it alone on an idle machine: two processes
sharing the cores each run many times slower.

    python benchmarks/bench_attention.py [--only resnet20,resnet50@224] [--modes fp32,bf16_channels_last]
        [--variants plain,cbam_fast] [--repeats 7] [--steps 3] [--threads N] [--quick] [--out DIR]
"""
from __future__ import annotations

import argparse
import csv
import io
import os
import platform
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import cbamlab  # noqa: E402
from cbamlab._io import write_text  # noqa: E402
from cbamlab.engine.runtime import cpu_name, device_facts, resolve_precision  # noqa: E402
from cbamlab.models.resnet import build_resnet  # noqa: E402

try:  # optional: the `bench` extra
    from timm.layers.cbam import CbamModule
    import timm
except ImportError:  # pragma: no cover - depends on the environment
    CbamModule = timm = None

SIZES = {  # name -> (architecture, input (C, H, W), training batch)
    "resnet20": ("resnet20", (1, 28, 28), 128),
    "resnet18": ("resnet18", (3, 32, 32), 64),
    "resnet50": ("resnet50", (3, 32, 32), 32),
    "resnet50@224": ("resnet50", (3, 224, 224), 8),
}
VARIANTS = ("plain", "se", "cbam_reference", "cbam_fast", "timm_cbam")
MODES = {  # name -> (channels_last, autocast dtype or None)
    "fp32": (False, None), "channels_last": (True, None), "bf16": (False, torch.bfloat16),
    "bf16_channels_last": (True, torch.bfloat16),
}
CSV_COLUMNS = ("size", "input", "batch", "mode", "variant", "train_img_s", "train_img_s_min", "train_img_s_max",
               "step_ms", "step_vs_plain", "latency_ms", "latency_vs_plain", "repeats")


def build(variant: str, arch: str, in_chans: int) -> torch.nn.Module:
    torch.manual_seed(0)
    if variant == "timm_cbam":
        return build_resnet(arch, num_classes=10, in_chans=in_chans,
                            attn_layer=lambda c: CbamModule(c, rd_ratio=1 / 16, spatial_kernel_size=7, mlp_bias=True))
    name = {"plain": arch, "se": f"{arch}_se"}.get(variant, f"{arch}_cbam")
    impl = "reference" if variant == "cbam_reference" else "fast"
    return cbamlab.create_model(name, num_classes=10, in_chans=in_chans, attn_impl=impl)


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Case:
    """One (size, mode, variant): a model, its optimizer and a fixed batch; times training steps and latency."""

    def __init__(self, size: str, mode: str, variant: str, args, device):
        arch, shape, batch = SIZES[size]
        if args.image_size:
            shape = (shape[0], args.image_size, args.image_size)
        batch = args.batch or batch
        self.key = (size, mode, variant)
        self.shape, self.batch, self.device = shape, batch, device
        self.channels_last, self.dtype = MODES[mode]
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        self.model = build(variant, arch, shape[0]).to(device, memory_format=fmt)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
        gen = torch.Generator().manual_seed(0)
        self.x = torch.randn(batch, *shape, generator=gen).to(device, memory_format=fmt)
        self.y = torch.randint(0, 10, (batch,), generator=gen).to(device)
        self.x1 = self.x[:1].clone(memory_format=fmt)
        self.train_s, self.latency_s = [], []

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype is not None)

    def step(self) -> None:
        with self._autocast():
            loss = F.cross_entropy(self.model(self.x).float(), self.y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()

    def time_training(self, steps: int) -> None:
        self.model.train()
        sync(self.device)
        t0 = time.perf_counter()
        for _ in range(steps):
            self.step()
        sync(self.device)
        self.train_s.append((time.perf_counter() - t0) / steps)

    @torch.no_grad()
    def time_latency(self, iters: int) -> None:
        self.model.eval()
        with self._autocast():
            self.model(self.x1)  # warm
            sync(self.device)
            t0 = time.perf_counter()
            for _ in range(iters):
                self.model(self.x1)
            sync(self.device)
        self.latency_s.append((time.perf_counter() - t0) / iters)


def run_size(size: str, args, device) -> list[dict]:
    """Every mode x variant of one size, interleaved repeat by repeat; one row per case."""
    variants = [v for v in args.variants if v != "timm_cbam" or CbamModule is not None]
    cases = [Case(size, mode, v, args, device) for mode in args.modes for v in variants]
    for case in cases:  # warm-up: allocator, oneDNN kernel choice
        for _ in range(args.warmup):
            case.step()
    for r in range(args.repeats):
        order = cases[r % len(cases):] + cases[:r % len(cases)]
        for case in order:
            case.time_training(args.steps)
            case.time_latency(args.latency_iters)
    rows = []
    plain = {c.key[1]: c for c in cases if c.key[2] == "plain"}
    for c in cases:
        step, lat = statistics.median(c.train_s), statistics.median(c.latency_s)
        base = plain.get(c.key[1])
        rows.append({
            "size": size, "input": "x".join(map(str, c.shape)), "batch": c.batch, "mode": c.key[1],
            "variant": c.key[2], "train_img_s": c.batch / step, "train_img_s_min": c.batch / max(c.train_s),
            "train_img_s_max": c.batch / min(c.train_s), "step_ms": step * 1000,
            "step_vs_plain": step / statistics.median(base.train_s) if base else None,
            "latency_ms": lat * 1000,
            "latency_vs_plain": lat / statistics.median(base.latency_s) if base else None,
            "repeats": args.repeats,
        })
    return rows


def _fmt(v, spec: str) -> str:
    return "" if v is None else format(v, spec)


def header(args, device, load_before: str) -> list[str]:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    auto = resolve_precision("auto", "auto", device_facts(device))
    auto_mode = next((m for m, (cl, dt) in MODES.items()
                      if cl == auto.channels_last and (dt is not None) == (auto.amp != "none")), auto.amp)
    return [
        "# Attention cost: training images/s and batch-1 latency",
        "",
        f"Device: {device.type} ({name}), {torch.get_num_threads()} torch threads, {os.cpu_count()} cores; "
        f"torch {torch.__version__}, timm {timm.__version__ if timm else 'not installed (no timm rows)'}, "
        f"python {platform.python_version()}; {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC.",
        f"Load average (1 min) {load_before} at the start, {load_average()} at the end.",
        f"Median of {args.repeats} interleaved repeats ({args.steps} training steps, {args.latency_iters} "
        f"batch-1 forwards each); `x plain` is the step time (or latency) over the plain net's in the same mode. "
        f"`cbamlab train` picks `{auto_mode}` here (train.amp / train.channels_last = auto: {auto.reason}).",
        "",
        "| size | input | batch | mode | variant | train img/s | min - max | x plain | latency ms | x plain |",
        "|---|---|---:|---|---|---:|---:|---:|---:|---:|",
    ]


def load_average() -> str:
    try:
        return f"{os.getloadavg()[0]:.2f}"
    except OSError:
        return "n/a"


def to_markdown(rows: list[dict], head: list[str]) -> str:
    lines = list(head)
    for r in rows:
        lines.append(f"| {r['size']} | {r['input']} | {r['batch']} | {r['mode']} | {r['variant']} | "
                     f"{r['train_img_s']:,.0f} | {r['train_img_s_min']:,.0f} - {r['train_img_s_max']:,.0f} | "
                     f"{_fmt(r['step_vs_plain'], '.2f')} | {r['latency_ms']:.2f} | "
                     f"{_fmt(r['latency_vs_plain'], '.2f')} |")
    return "\n".join(lines) + "\n"


def to_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def _names(text: str, known, what: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    bad = [n for n in names if n not in known]
    if bad or not names:
        raise SystemExit(f"error: unknown {what} {', '.join(bad) or '(none given)'}; known: {', '.join(known)}")
    return names


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", default=",".join(SIZES), help=f"sizes, comma-separated ({', '.join(SIZES)})")
    p.add_argument("--modes", default=",".join(MODES), help=f"comma-separated ({', '.join(MODES)})")
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated ({', '.join(VARIANTS)})")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--steps", type=int, default=3, help="training steps per timed repeat")
    p.add_argument("--latency-iters", type=int, default=20, help="batch-1 forwards per timed repeat")
    p.add_argument("--warmup", type=int, default=2, help="untimed training steps per case first")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--batch", type=int, default=0, help="override every size's batch (smoke tests)")
    p.add_argument("--image-size", type=int, default=0, help="override every size's H and W (smoke tests)")
    p.add_argument("--quick", action="store_true", help="1 repeat, 1 step, 2 latency forwards, 1 warm-up")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"), help="folder for the .md and .csv")
    args = p.parse_args(argv)
    args.only = _names(args.only, SIZES, "size")
    args.modes = _names(args.modes, MODES, "mode")
    args.variants = _names(args.variants, VARIANTS, "variant")
    if args.quick:
        args.repeats, args.steps, args.latency_iters, args.warmup = 1, 1, 2, 1
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    load_before = load_average()
    rows = []
    for size in args.only:
        rows += run_size(size, args, device)
        print(f"{size}: done ({len(rows)} rows)", file=sys.stderr)
    out = Path(args.out)
    text = to_markdown(rows, header(args, device, load_before))
    write_text(out / "bench_attention.md", text)
    write_text(out / "bench_attention.csv", to_csv(rows))
    print(text)
    print(f"written: {out / 'bench_attention.md'}, {out / 'bench_attention.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
