"""Images/s of cbamlab's in-memory train pipeline against torchvision's DataLoader with per-sample transforms,
and against what a resnet20 training step consumes, on the same Fashion-MNIST data in the same run.

Both pipelines do the same work: random crop 28 with 4-pixel zero padding, horizontal flip, to float, normalise.
Each figure is the median of --repeats runs of --batches batches (after warm-up); spread is min-max.

    python benchmarks/bench_data.py [--batch-size 128] [--repeats 5] [--device cpu] [--out FILE.md]
"""
from __future__ import annotations

import argparse
import gzip
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cbamlab._io import write_text  # noqa: E402
from cbamlab.data import AugmentSpec, load_dataset, make_loaders  # noqa: E402
from cbamlab.data import locate  # noqa: E402


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_batches(make_iter, n_batches, warmup, device) -> float:
    """Images/s over `n_batches` batches of a fresh iterator, after `warmup` batches."""
    it = make_iter()
    for _ in range(warmup):
        next(it)
    sync(device)
    start, images = time.perf_counter(), 0
    for _ in range(n_batches):
        x, _ = next(it)
        images += x.shape[0]
    sync(device)
    return images / (time.perf_counter() - start)


def bench_memory(bundle, args, device) -> list[float]:
    spec = AugmentSpec(crop_padding=4, hflip=True)
    loader = make_loaders(bundle, args.batch_size, augment=spec, device=device, seed=0).train
    out = []
    for r in range(args.repeats):
        loader.set_epoch(r)
        out.append(time_batches(lambda: iter(loader), args.batches, 5, device))
    return out


def bench_torchvision(folder, bundle, args, device) -> list[float]:
    """torchvision.datasets.FashionMNIST on the same IDX files, per-sample PIL transforms, DataLoader workers."""
    import torchvision
    from torchvision import transforms as T

    tmp = Path(tempfile.mkdtemp(prefix="bench_data_"))
    raw = tmp / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for gz in Path(folder).glob("*-ubyte.gz"):
        (raw / gz.name[:-3]).write_bytes(gzip.decompress(gz.read_bytes()))
    tf = T.Compose([T.RandomCrop(28, padding=4), T.RandomHorizontalFlip(), T.ToTensor(),
                    T.Normalize(bundle.info.mean, bundle.info.std)])
    ds = torchvision.datasets.FashionMNIST(str(tmp), train=True, transform=tf, download=False)
    dl = torch.utils.data.DataLoader(ds, batch_size=args.batch_size, shuffle=True, num_workers=args.workers,
                                     persistent_workers=args.workers > 0, pin_memory=device.type == "cuda",
                                     generator=torch.Generator().manual_seed(0))

    def batches():
        for x, y in dl:
            yield x.to(device, non_blocking=True), y.to(device, non_blocking=True)

    return [time_batches(batches, args.batches, 5, device) for _ in range(args.repeats)]


def bench_train_step(bundle, args, device) -> list[float]:
    """Images/s a resnet20 SGD step (forward, backward, update) consumes on Fashion-MNIST batches."""
    import cbamlab

    torch.manual_seed(0)
    model = cbamlab.create_model("resnet20", num_classes=10, in_chans=1).to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    loader = make_loaders(bundle, args.batch_size, augment=AugmentSpec(), device=device, seed=0).train
    x, y = next(iter(loader))

    def steps():
        while True:
            opt.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            yield x, y

    return [time_batches(steps, args.steps, 2, device) for _ in range(args.repeats)]


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_note() -> str:
    try:
        return f"; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores when it finished (shared machine)"
    except OSError:
        return ""


def fmt(values) -> str:
    return f"{statistics.median(values):,.0f} | {min(values):,.0f} - {max(values):,.0f}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--batches", type=int, default=100, help="timed batches per repeat for the pipelines")
    p.add_argument("--steps", type=int, default=5, help="timed resnet20 training steps per repeat")
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers for torchvision")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "bench_data.md"))
    args = p.parse_args(argv)
    device = torch.device(args.device)
    folder, looked = locate("fashion_mnist")
    if folder is None:
        print(f"error: Fashion-MNIST not found (looked in {', '.join(looked)}); apt install dataset-fashion-mnist",
              file=sys.stderr)
        return 2
    bundle = load_dataset("fashion_mnist", include_test=False)
    memory = bench_memory(bundle, args, device)
    tv = bench_torchvision(folder, bundle, args, device)
    step = bench_train_step(bundle, args, device)
    m, t, s = (statistics.median(v) for v in (memory, tv, step))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    lines = [
        "# Input pipeline throughput on Fashion-MNIST (60,000 x 1x28x28)",
        "",
        f"Device: {device.type} ({name}), {torch.get_num_threads()} torch threads; torch {torch.__version__}, "
        f"python {platform.python_version()}; {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC{load_note()}.",
        f"Batch {args.batch_size}; median and min - max of {args.repeats} repeats "
        f"({args.batches} batches each for the pipelines, {args.steps} steps for resnet20).",
        "Augmentation in both pipelines: random crop 28 with padding 4, horizontal flip, normalise.",
        "",
        "| what | images/s (median) | min - max |",
        "|---|---:|---:|",
        f"| cbamlab in-memory pipeline (batch tensor ops, no workers) | {fmt(memory)} |",
        f"| torchvision DataLoader, per-sample transforms, {args.workers} workers | {fmt(tv)} |",
        f"| resnet20 training step (forward + backward + SGD) | {fmt(step)} |",
        "",
        f"- in-memory / training step: **{m / s:.1f}x** (needed: >= 10x; the input never bounds training)",
        f"- in-memory / torchvision: **{m / t:.1f}x** (needed: >= 5x)",
        "",
    ]
    text = "\n".join(lines)
    write_text(args.out, text)
    print(text)
    print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
