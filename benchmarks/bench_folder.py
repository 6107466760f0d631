"""Image folders: start-up time and decode + augment throughput of cbamlab against torchvision's ImageFolder +
DataLoader with the same transforms, on a generated folder of small JPEG files.

The folder (--files JPEG files of --size px in --classes classes, ImageNet layout) is generated once into
--cache-dir and reused. Measured, all in this run:
1. start-up, until the list of samples is known: cbamlab's listing (no file opened), its cached index,
   torchvision's ImageFolder, and opening + verifying every file with PIL (what cbamlab did before);
2. decode + preprocess (+ RandomResizedCrop) per worker, i.e. one process on one thread, with PIL and with
   torchvision.io.decode_jpeg, and the largest pixel difference between the two decoders on the same files;
3. training batches per second: cbamlab streaming (persistent workers), torchvision ImageFolder + DataLoader with the
   same transforms and workers, and cbamlab's in-memory path (one decode, then epochs from memory).
Throughputs are the median and min - max of --repeats runs of --batches batches, after 2 warm-up batches.

    python benchmarks/bench_folder.py [--files 100000] [--workers 4] [--quick] [--out FILE.md]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import PIL
import torch
import torchvision
from PIL import Image
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_data import cpu_name, fmt, time_batches  # noqa: E402
from cbamlab._io import write_text  # noqa: E402
from cbamlab.data import AugmentSpec, load_dataset, make_loaders, resolve_augment  # noqa: E402
from cbamlab.data.augment import resized_crop_box  # noqa: E402
from cbamlab.data.decode import read_image  # noqa: E402
from cbamlab.data.folder import eval_preprocess, eval_resize  # noqa: E402
from cbamlab.data.folder_index import index_path, scan  # noqa: E402


def _write_images(task) -> int:
    folder, start, stop, classes, size = task
    rng = np.random.default_rng(start)
    for i in range(start, stop):
        # smooth colour blobs (an 8x8 field upsampled) plus noise: JPEG sizes like small photographs'
        field = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).resize((size, size), Image.BICUBIC)
        pixels = np.asarray(field, dtype=np.int16) + rng.integers(-20, 21, (size, size, 3))
        img = Image.fromarray(pixels.clip(0, 255).astype(np.uint8))
        split = "val" if (i // classes) % 10 == 0 else "train"  # every class gets train and val files
        img.save(Path(folder) / split / f"c{i % classes:04d}" / f"{i:07d}.JPEG", quality=90)
    return stop - start


def generate(folder: Path, files: int, classes: int, size: int) -> float:
    """Write the folder once (seconds taken; 0 when it is already there with these settings)."""
    marker = folder / "generated.json"
    want = {"files": files, "classes": classes, "size": size, "layout": 2}
    if marker.is_file() and json.loads(marker.read_text()) == want:
        return 0.0
    shutil.rmtree(folder, ignore_errors=True)
    for split in ("train", "val"):
        for c in range(classes):
            (folder / split / f"c{c:04d}").mkdir(parents=True)
    t0 = time.perf_counter()
    chunks = [(str(folder), s, min(files, s + 2000), classes, size) for s in range(0, files, 2000)]
    with ProcessPoolExecutor(os.cpu_count()) as pool:
        assert sum(pool.map(_write_images, chunks)) == files
    write_text(marker, json.dumps(want))
    past = time.time() - 60  # settled, so that the index cache may be written
    for d, _, _ in os.walk(folder):
        os.utime(d, (past, past))
    return time.perf_counter() - t0


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def bench_startup(folder: Path, verify: bool) -> list[tuple[str, float]]:
    """(what, seconds) to list the train split."""
    train = folder / "train"
    index_path(train).unlink(missing_ok=True)
    scan(train)  # untimed: every figure below is with the directories in the page cache
    rows = [("cbamlab: list the folder (no file opened)", timed(lambda: scan(train))),
            ("cbamlab: list + write the index (data.index_cache: true, first run)",
             timed(lambda: scan(train, index_cache=True))),
            ("cbamlab: read the index (data.index_cache: true, later runs)",
             timed(lambda: scan(train, index_cache=True))),
            ("torchvision ImageFolder(root)", timed(lambda: torchvision.datasets.ImageFolder(str(train))))]
    if verify:
        def verify_all():
            for path, _ in scan(train)[1]:
                with Image.open(path) as im:
                    im.verify()
        rows.append(("open + verify every file with PIL (cbamlab before)", timed(verify_all)))
    return rows


def bench_decode(paths: list[str], size: int, crop: bool) -> tuple[list[tuple[str, float]], int]:
    """Images/s of decode + preprocess on one thread for each decoder, and their max abs pixel difference."""
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)

    def work(decoder):
        out = []
        for p in paths:
            x = read_image(p, decoder)
            if crop:
                top, left, h, w = resized_crop_box(x.shape[-2], x.shape[-1], (0.08, 1.0), gen)
                x = TF.resized_crop(x, top, left, h, w, [size, size], antialias=True)
            else:
                x = eval_preprocess(x, (size, size))
            out.append(x)
        return out

    rows, images = [], {}
    for decoder in ("pil", "torchvision"):  # warm-up: file cache, first-call costs
        [read_image(p, decoder) for p in paths[:20]]
    for decoder in ("pil", "torchvision"):
        gen.manual_seed(0)
        t = timed(lambda: images.__setitem__(decoder, work(decoder)))
        rows.append((decoder, len(paths) / t))
    diff = max(int((a.int() - b.int()).abs().max()) for a, b in zip(images["pil"], images["torchvision"]))
    return rows, diff


def torchvision_loader(folder: Path, spec, size: int, args):
    steps = ([v2.RandomResizedCrop(size, scale=spec.crop_scale, antialias=True)] if spec.resized_crop
             else [v2.Resize(eval_resize((size, size)), antialias=True), v2.CenterCrop(size)])
    if spec.crop_padding:
        steps.append(v2.RandomCrop(size, padding=spec.crop_padding))
    if spec.hflip:
        steps.append(v2.RandomHorizontalFlip())
    tf = v2.Compose([v2.PILToTensor(), *steps, v2.ToDtype(torch.float32, scale=True),
                     v2.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    ds = torchvision.datasets.ImageFolder(str(folder / "train"), transform=tf)
    return torch.utils.data.DataLoader(ds, batch_size=args.batch_size, shuffle=True, num_workers=args.workers,
                                       persistent_workers=args.workers > 0,
                                       generator=torch.Generator().manual_seed(0))


def bench_pipelines(folder: Path, size: int, args) -> tuple[list[tuple[str, list[float]]], str, float]:
    """(what, images/s per repeat) of the three training pipelines; the augmentation; the in-memory decode time."""
    torch.set_num_threads(1)
    bundle = load_dataset("imagefolder", folder, image_size=size, include_test=False)
    spec = resolve_augment("auto", "imagefolder", image_size=size)
    kw = dict(augment=spec, seed=0, workers=args.workers)
    stream = make_loaders(bundle, args.batch_size, memory_budget_gb=0, **kw).train
    tv = torchvision_loader(folder, spec, size, args)
    n = min(args.batches, len(stream) - 2)  # timed batches: within one epoch
    rows = [(f"cbamlab streaming, {args.workers} persistent workers", []),
            (f"torchvision ImageFolder + DataLoader, {args.workers} persistent workers", [])]
    for r in range(args.repeats):
        stream.set_epoch(r)
        rows[0][1].append(time_batches(lambda: iter(stream), n, 2, torch.device("cpu")))
        rows[1][1].append(time_batches(lambda: iter(tv), n, 2, torch.device("cpu")))
    decode_s = time.perf_counter()
    memory = make_loaders(bundle, args.batch_size, memory_budget_gb=1e6, **kw).train
    decode_s = time.perf_counter() - decode_s
    rows.append(("cbamlab in-memory (after the one decode)", []))
    for r in range(args.repeats):
        memory.set_epoch(r)
        rows[2][1].append(time_batches(lambda: iter(memory), n, 2, torch.device("cpu")))
    args.batches = n
    plain = AugmentSpec().to_dict()
    what = ", ".join(f"{k}={v}" for k, v in spec.to_dict().items() if v != plain[k]) or "none"
    return rows, what, decode_s


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--files", type=int, default=100_000, help="JPEG files in the generated folder")
    p.add_argument("--classes", type=int, default=100)
    p.add_argument("--size", type=int, default=64, help="side of the generated images (px)")
    p.add_argument("--image-size", type=int, default=None, help="training size (default: --size)")
    p.add_argument("--decode-files", type=int, default=2000, help="files decoded per decoder in part 2")
    p.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1))
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--batches", type=int, default=50)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--no-verify", action="store_true", help="skip timing PIL's verify of every file")
    p.add_argument("--cache-dir", default=os.path.join(tempfile.gettempdir(), "cbamlab_bench_folder"))
    p.add_argument("--quick", action="store_true", help="smoke test: 300 files, tiny timings (figures meaningless)")
    p.add_argument("--out", default=None, help="markdown file (default: benchmarks/results/bench_folder.md; "
                                               "with --quick: printed only)")
    args = p.parse_args(argv)
    if args.quick:
        args.files, args.classes, args.decode_files = 300, 4, 50
        args.batches, args.repeats, args.batch_size, args.workers = 3, 1, 16, min(args.workers, 2)
    size = args.image_size or args.size
    os.environ.setdefault("XDG_CACHE_HOME", str(Path(args.cache_dir) / "xdg"))  # where the index cache goes
    folder = Path(args.cache_dir) / f"{args.files}x{args.size}px_{args.classes}cls"
    gen_s = generate(folder, args.files, args.classes, args.size)
    n_train = sum(1 for i in range(args.files) if i % 10)
    startup = bench_startup(folder, verify=not args.no_verify)
    paths = [p for p, _ in scan(folder / "train")[1][:args.decode_files]]
    crop = size > 64
    decode, diff = bench_decode(paths, size, crop)
    pipes, aug, decode_s = bench_pipelines(folder, size, args)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    step = "RandomResizedCrop" if crop else f"resize to {eval_resize((size, size))} + centre crop"
    lines = [
        f"# Image folder start-up and throughput ({args.files:,} JPEG files of {args.size} px, {args.classes} classes)",
        "",
        f"CPU: {cpu_name()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads in the main process; "
        f"load average {load:.1f} (1 min) at the end; torch {torch.__version__}, torchvision "
        f"{torchvision.__version__}, Pillow {PIL.__version__}, python {platform.python_version()}; "
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC." + (" **--quick: smoke test, figures meaningless.**"
                                                               if args.quick else ""),
        f"Folder: {folder} ({'generated in %.0f s' % gen_s if gen_s else 'reused'}); every figure with a warm page "
        "cache (a first listing of a folder on a cold disk or network filesystem takes longer).",
        "",
        f"## Start-up: listing the train split ({n_train:,} files)",
        "",
        "| what | seconds |",
        "|---|---:|",
        *[f"| {what} | {s:.3f} |" for what, s in startup],
        "",
        f"## Decode + {step} to {size} px, one process, one thread ({len(paths):,} files)",
        "",
        "| decoder | images/s per worker |",
        "|---|---:|",
        *[f"| {d} | {v:,.0f} |" for d, v in decode],
        "",
        f"Largest pixel difference between the two decoders on these files: {diff} (of 255).",
        "",
        f"## Training batches ({args.batch_size} images of {size} px, augmentation auto: {aug})",
        "",
        f"Median and min - max of {args.repeats} repeats of {args.batches} batches; per worker = images/s / "
        f"{args.workers}. The in-memory path first decoded the train split once in {decode_s:.1f} s.",
        "",
        "| pipeline | images/s (median) | min - max | per worker |",
        "|---|---:|---:|---:|",
        *[f"| {what} | {fmt(v)} | {statistics.median(v) / max(1, args.workers):,.0f} |" for what, v in pipes[:2]],
        f"| {pipes[2][0]} | {fmt(pipes[2][1])} | - |",
        "",
    ]
    text = "\n".join(lines)
    out = args.out or (None if args.quick else str(ROOT / "benchmarks" / "results" / "bench_folder.md"))
    print(text)
    if out:
        write_text(out, text)
        print(f"written: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
