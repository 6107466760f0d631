"""`cbamlab datasets`: the known datasets, where each was found (or how to get it), sizes, classes, image shape."""
from __future__ import annotations

import json

from ..data import DATASETS, load_dataset, locate

DESCRIPTION = """List the datasets cbamlab reads, where each one was found (or how to get it), their sizes, number
of classes and image shape. With NAME, read that dataset and show what was actually loaded (counts, classes,
mean/std). With --root, IDX and CIFAR sets are looked for there only (the folder itself, <root>/<name>, or the
layout a torchvision download leaves); without it in $CBAMLAB_DATA/<name>, then (Fashion-MNIST) the Debian
package's folder /usr/share/datasets/fashion-mnist, then the download cache."""


def register(subparsers) -> None:
    p = subparsers.add_parser("datasets", help="list datasets, where they are found, sizes and shapes",
                              description=DESCRIPTION, epilog="docs: docs/own-data.md")
    p.add_argument("name", nargs="?", help="read this dataset and show what was loaded")
    p.add_argument("--root", metavar="DIR", help="data.root, the only place looked at when given (imagefolder: the "
                   "folder itself)")
    p.add_argument("--download", action="store_true", help="with NAME: download it when not found")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("-q", "--quiet", action="store_true", help="only warnings")
    p.set_defaults(func=run)


def _shape(in_chans, size) -> str:
    return f"{in_chans}x{size[0]}x{size[1]}" if size else f"{in_chans}xHxW"


def _listing(root) -> list[dict]:
    rows = []
    for name, spec in DATASETS.items():
        found, looked = locate(name, root)
        rows.append({"name": name, "found": found, "looked_in": looked, "how_to_get": spec.how_to_get,
                     "train": spec.train_size, "test": spec.test_size, "classes": spec.num_classes,
                     "shape": _shape(spec.in_chans, spec.image_size)})
    return rows


def _detail(name, root, download) -> dict:
    b = load_dataset(name, root, download=download)
    i = b.info
    return {"name": i.name, "found": i.source, "train": len(b.train), "test": len(b.test) if b.test else None,
            "classes": i.num_classes, "shape": _shape(i.in_chans, i.image_size), "class_names": i.classes,
            "mean": [round(v, 4) for v in i.mean], "std": [round(v, 4) for v in i.std]}


def run(args) -> int:
    if args.name:
        d = _detail(args.name, args.root, args.download)
        if args.json:
            print(json.dumps(d, indent=2))
            return 0
        print(f"{d['name']}: {d['train']} train, {d['test']} test, {d['classes']} classes, {d['shape']}")
        print(f"  found:   {d['found']}")
        print(f"  mean:    {d['mean']}  std: {d['std']}")
        print(f"  classes: {', '.join(d['class_names'])}")
        return 0
    rows = _listing(args.root)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    fmt = "{:<14} {:>7} {:>6} {:>7} {:<9} {}"
    print(fmt.format("dataset", "train", "test", "classes", "shape", "where"))
    for r in rows:
        where = r["found"] or f"not found; {r['how_to_get']}"
        print(fmt.format(r["name"], r["train"] or "?", r["test"] or "?", r["classes"] or "?", r["shape"], where))
    return 0
