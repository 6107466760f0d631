"""What attention costs: training images/s and batch-1 latency of plain, SE, CBAM (the readable reference and
the native operator) and timm's CBAM ResNets, in float32 NCHW, channels_last, and bfloat16 autocast (NCHW and
channels_last), on one device; "default" is the mode `cbamlab train` resolves here with its defaults
(train.amp / train.channels_last = auto), always one of those four: the table marks it instead of timing it twice.

Sizes: resnet20 at 1x28x28 (batch 128), resnet18 and resnet50 at 3x32x32 (batch 64 / 32), resnet50 at
3x224x224 (batch 8). A training step is forward + cross-entropy + backward + SGD (momentum, weight decay).
timm's CBAM is `timm.layers.cbam.CbamModule` (reduction 16, 7x7, MLP with biases as ours) wrapped into our
blocks through their attention factory: the same ResNet, only the attention module differs. It needs the
`bench` extra (pip install 'cbamlab[bench]'); without timm its rows are left out, and the table says so.
`cbam_native` is `attn_impl="native"` (built on first use; where it cannot build, its rows are left out and the
table says why). `plain_compiled` and `cbam_reference_compiled` (torch.compile, as train.compile; not in the
default set: minutes of compiling per case on a CPU) can be asked for with --variants; bench_report.py
writes the markdown and CSV.

Every variant and mode of one size is measured interleaved, in one process: each repeat times every case once
(in a rotating order), and the table gives the median of the repeats (--repeats, default 7) with the slowest and
fastest, the ratio of step times and latencies to the plain net of the same mode, and a second table of the
targets of issue 28 (native CBAM / plain step <= x1.10 and latency <= x1.15; timm's step / native's >= x1.25).
--build-time first times the native operator's build in a fresh cache and its load from that cache, each in a
new process (about a minute). Run it alone on an idle machine: two processes sharing the cores each run many
times slower.

    python benchmarks/bench_attention.py [--only resnet20,resnet50@224] [--modes fp32,default]
        [--variants plain,cbam_native] [--repeats 7] [--steps 3] [--threads N] [--quick] [--build-time] [--out DIR]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(Path(__file__).parent)]  # cbamlab, and bench_report beside this file

import cbamlab  # noqa: E402
from bench_report import build_times, header, load_average, native_line, to_csv, to_markdown  # noqa: E402
from cbamlab._io import write_text  # noqa: E402
from cbamlab.config import TrainConfig  # noqa: E402
from cbamlab.engine.runtime import device_facts, resolve_precision  # noqa: E402
from cbamlab.models import native  # noqa: E402
from cbamlab.models.resnet import build_resnet  # noqa: E402

try:  # optional: the `bench` extra
    from timm.layers.cbam import CbamModule
except ImportError:  # pragma: no cover - depends on the environment
    CbamModule = None

SIZES = {  # name -> (architecture, input (C, H, W), training batch)
    "resnet20": ("resnet20", (1, 28, 28), 128),
    "resnet18": ("resnet18", (3, 32, 32), 64),
    "resnet50": ("resnet50", (3, 32, 32), 32),
    "resnet50@224": ("resnet50", (3, 224, 224), 8),
}
VARIANTS = ("plain", "se", "cbam_reference", "cbam_native", "timm_cbam")  # the default set
COMPILED = ("plain_compiled", "cbam_reference_compiled")  # on request only
MODES = {  # name -> (channels_last, autocast dtype or None)
    "fp32": (False, None), "channels_last": (True, None), "bf16": (False, torch.bfloat16),
    "bf16_channels_last": (True, torch.bfloat16),
}
def build(variant: str, arch: str, in_chans: int) -> torch.nn.Module:
    torch.manual_seed(0)
    variant = variant.removesuffix("_compiled")
    if variant == "timm_cbam":
        return build_resnet(arch, num_classes=10, in_chans=in_chans,
                            attn_layer=lambda c: CbamModule(c, rd_ratio=1 / 16, spatial_kernel_size=7, mlp_bias=True))
    name = {"plain": arch, "se": f"{arch}_se"}.get(variant, f"{arch}_cbam")
    impl = "reference" if variant == "cbam_reference" else "native"
    return cbamlab.create_model(name, num_classes=10, in_chans=in_chans, attn_impl=impl)


def default_mode(device: torch.device) -> tuple[str, str]:
    """The mode `cbamlab train` trains in on `device` with its default train.amp / train.channels_last, and why."""
    train = TrainConfig()
    p = resolve_precision(train.amp, train.channels_last, device_facts(device))
    spec = (p.channels_last, {"none": None, "bf16": torch.bfloat16}.get(p.amp, p.amp))
    name = next((m for m, s in MODES.items() if s == spec), None)
    if name is None:  # resolve_precision never picks fp16
        raise SystemExit(f"error: cbamlab train resolves amp={p.amp}, channels_last={p.channels_last}: no mode here")
    return name, p.reason


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
        # torch.compile as train.compile does (fit.py); static shapes: the batch and batch 1 compile once each
        compiled = variant.endswith("_compiled")
        self.net = torch.compile(self.model, dynamic=False, backend=args.compile_backend) if compiled else self.model
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
        gen = torch.Generator().manual_seed(0)
        self.x = torch.randn(batch, *shape, generator=gen).to(device, memory_format=fmt)
        self.y = torch.randint(0, 10, (batch,), generator=gen).to(device)
        self.x1 = self.x[:1].clone(memory_format=fmt)
        self.train_s, self.latency_s, self.warmup_s = [], [], 0.0

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype is not None)

    def step(self) -> None:
        with self._autocast():
            loss = F.cross_entropy(self.net(self.x).float(), self.y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()

    def warm(self, steps: int) -> None:
        """Untimed steps first (allocator, oneDNN's kernel choice, torch.compile); their seconds are kept."""
        self.model.train()
        t0 = time.perf_counter()
        for _ in range(steps):
            self.step()
        sync(self.device)
        self.warmup_s = time.perf_counter() - t0

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
            self.net(self.x1)  # warm
            sync(self.device)
            t0 = time.perf_counter()
            for _ in range(iters):
                self.net(self.x1)
            sync(self.device)
        self.latency_s.append((time.perf_counter() - t0) / iters)


def run_size(size: str, args, device) -> list[dict]:
    """Every mode x variant of one size, interleaved repeat by repeat; one row per case."""
    cases = [Case(size, mode, v, args, device) for mode in args.modes for v in args.variants]
    for case in cases:
        case.warm(args.warmup)
    for r in range(args.repeats):
        order = cases[r % len(cases):] + cases[:r % len(cases)]
        for case in order:
            case.time_training(args.steps)
            case.time_latency(args.latency_iters)
    step = {c.key: statistics.median(c.train_s) for c in cases}
    lat = {c.key: statistics.median(c.latency_s) for c in cases}
    rows = []
    for c in cases:
        plain, timm_key = (size, c.key[1], "plain"), (size, c.key[1], "timm_cbam")
        rows.append({
            "size": size, "input": "x".join(map(str, c.shape)), "batch": c.batch, "mode": c.key[1],
            "variant": c.key[2], "train_img_s": c.batch / step[c.key], "train_img_s_min": c.batch / max(c.train_s),
            "train_img_s_max": c.batch / min(c.train_s), "step_ms": step[c.key] * 1000,
            "step_vs_plain": step[c.key] / step[plain] if plain in step else None,
            "latency_ms": lat[c.key] * 1000,
            "latency_vs_plain": lat[c.key] / lat[plain] if plain in lat else None,
            "repeats": args.repeats, "default_mode": c.key[1] == args.default_mode,
            "timm_step_ratio": step[timm_key] / step[c.key] if timm_key in step else None,
            "warmup_s": c.warmup_s,
        })
    return rows


def _names(text: str, known, what: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    bad = [n for n in names if n not in known]
    if bad or not names:
        raise SystemExit(f"error: unknown {what} {', '.join(bad) or '(none given)'}; known: {', '.join(known)}")
    return list(dict.fromkeys(names))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", default=",".join(SIZES), help=f"sizes, comma-separated ({', '.join(SIZES)})")
    p.add_argument("--modes", default=",".join([*MODES, "default"]),
                   help=f"comma-separated ({', '.join(MODES)}, default)")
    p.add_argument("--variants", default=",".join(VARIANTS),
                   help=f"comma-separated ({', '.join(VARIANTS + COMPILED)})")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--steps", type=int, default=3, help="training steps per timed repeat")
    p.add_argument("--latency-iters", type=int, default=20, help="batch-1 forwards per timed repeat")
    p.add_argument("--warmup", type=int, default=2, help="untimed training steps per case first")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--batch", type=int, default=0, help="override every size's batch (smoke tests)")
    p.add_argument("--image-size", type=int, default=0, help="override every size's H and W (smoke tests)")
    p.add_argument("--quick", action="store_true", help="1 repeat, 1 step, 2 latency forwards, 1 warm-up")
    p.add_argument("--build-time", action="store_true",
                   help="first time the native operator's build in a fresh cache and its cached load (~1 min)")
    p.add_argument("--compile-backend", default="inductor",
                   help="torch.compile backend of the _compiled variants (eager: tracing alone, for smoke tests)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"), help="folder for the .md and .csv")
    args = p.parse_args(argv)
    args.only = _names(args.only, SIZES, "size")
    modes = _names(args.modes, [*MODES, "default"], "mode")
    args.variants = _names(args.variants, VARIANTS + COMPILED, "variant")
    if args.quick:
        args.repeats, args.steps, args.latency_iters, args.warmup = 1, 1, 2, 1
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    args.default_mode, args.default_reason = default_mode(device)
    args.modes = list(dict.fromkeys(args.default_mode if m == "default" else m for m in modes))
    load_before = load_average()
    probes = build_times() if args.build_time else None
    native_text = "Native CBAM operator: not asked for."
    if device.type != "cpu" and "cbam_native" in args.variants:
        args.variants.remove("cbam_native")
        native_text = f"Native CBAM operator: it runs on the CPU only, so no cbam_native rows on {device.type}."
    if "cbam_native" in args.variants or probes:
        t0 = time.perf_counter()
        loaded = native.load()
        native_text = native_line(loaded, time.perf_counter() - t0, probes)
        if not loaded.ok and "cbam_native" in args.variants:
            args.variants.remove("cbam_native")
    if CbamModule is None and "timm_cbam" in args.variants:
        args.variants.remove("timm_cbam")
    rows = []
    for size in args.only:
        rows += run_size(size, args, device)
        print(f"{size}: done ({len(rows)} rows)", file=sys.stderr)
    out = Path(args.out)
    text = to_markdown(rows, header(args, device, load_before, native_text))
    write_text(out / "bench_attention.md", text)
    write_text(out / "bench_attention.csv", to_csv(rows))
    print(text)
    print(f"written: {out / 'bench_attention.md'}, {out / 'bench_attention.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
