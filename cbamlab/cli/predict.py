"""`cbamlab predict`: the top-k classes, with probabilities, of PNG/JPEG images under a trained run's model."""
from __future__ import annotations

from pathlib import Path

from .._io import image_size_guard
from ..data.folder_index import IMAGE_EXTENSIONS
from ..inference.predict import load_input_batch, load_run, predict_topk
from ..errors import CbamlabError, DataError

DESCRIPTION = """Classify image files (PNG, JPEG) with the model of a run directory. Each image is converted to
the run's channels and preprocessed exactly as `cbamlab eval` preprocessed the run's images (image folders: the
shorter side resized to size / 0.875, then the central crop; other datasets: resized to the image size), then the
top-k classes are printed with probabilities."""


def register(subparsers) -> None:
    p = subparsers.add_parser("predict", help="top-k classes of image files", description=DESCRIPTION,
                              epilog="docs: docs/train.md#evaluate-predict-export")
    p.add_argument("--run", required=True, metavar="RUN_DIR", help="a run directory made by `cbamlab train`")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="PNG or JPEG files, or folders of them (searched "
                   "recursively, in name order)")
    p.add_argument("-k", "--top", type=int, default=5, metavar="K", help="how many classes to print (default 5)")
    p.add_argument("--checkpoint", choices=("last", "best"), default="last")
    p.add_argument("-q", "--quiet", action="store_true", help="no log lines")
    p.set_defaults(func=run)


def image_files(paths) -> list[str]:
    """The files named, with each folder replaced by the image files under it (hidden ones skipped), sorted."""
    files = []
    for path in map(Path, paths):
        if not path.is_dir():
            files.append(str(path))  # a missing or unreadable file is named by load_input_batch
            continue
        found = sorted(str(f) for f in path.rglob("*") if f.suffix.lower() in IMAGE_EXTENSIONS and f.is_file()
                       and not any(part.startswith(".") for part in f.relative_to(path).parts))
        if not found:
            raise DataError(f"{path}: no image files in this folder (looked for {', '.join(sorted(IMAGE_EXTENSIONS))})")
        files += found
    return files


def run(args) -> int:
    if args.top < 1:
        raise CbamlabError(f"--top must be >= 1, got {args.top}")
    loaded = load_run(args.run, args.checkpoint)
    d = loaded.data
    inputs = []
    for path in image_files(args.images):
        with image_size_guard(path):  # a huge image: one log line, or refused over the stated limit
            inputs.append((path, load_input_batch(path, d["in_chans"], d["image_size"], d["mean"], d["std"],
                                                  preprocess=d["preprocess"])))
    for path, x in inputs:
        top = predict_topk(loaded.model, x, d["classes"], args.top)
        print(f"{path}: " + "  ".join(f"{name} {p:.4f}" for name, p in top))
    return 0
