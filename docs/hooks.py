"""MkDocs hook: serve the committed study figures from where they are committed.

The results and guide pages show figures that `cbamlab report` wrote into `results/STUDY/figures/` (and the tuning
report's PNGs beside `results/tune_fashion_best/report.md`). Copying them into `docs/` would give each figure two
homes that can drift, so the site takes them from `results/` at build time, under the same path: a page links
`results/fashion_mnist_best/figures/fashion_mnist-budget.png` and `mkdocs build --strict` fails when that file
is not committed.
"""
from __future__ import annotations

from pathlib import Path

from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parents[1]


def on_files(files, config):
    for png in sorted((ROOT / "results").rglob("*.png")):
        if "checkpoints" in png.parts:
            continue
        files.append(File(png.relative_to(ROOT).as_posix(), src_dir=str(ROOT), dest_dir=config["site_dir"],
                          use_directory_urls=config["use_directory_urls"]))
    return files
