"""`cbamlab predict` preprocesses an image file exactly as `cbamlab eval` does (image folders: shorter side to
size / 0.875, central crop; in-memory sets: whole-image resize), from the record the run directory keeps."""
import json
import re

import numpy as np
import pytest
import torch
from PIL import Image

from cbamlab.cli import main
from cbamlab.data import load_dataset, make_loaders
from cbamlab.inference.predict import load_input_batch, load_run

pytestmark = pytest.mark.usefixtures("one_thread")
SIZE = 16
COLOURS = {"red": (200, 40, 40), "green": (40, 180, 60), "blue": (50, 60, 210)}


def write_folder(root, per_class=(8, 6)):
    """Non-square images (the crop matters), PNG and JPEG, each class a colour with a bright off-centre patch."""
    rng = np.random.default_rng(0)
    for split, n in zip(("train", "val"), per_class):
        for name, rgb in COLOURS.items():
            (root / split / name).mkdir(parents=True)
            for i in range(n):
                h, w = (36, 48) if i % 2 else (50, 30)
                img = np.clip(np.array(rgb) + rng.normal(0, 40, (h, w, 3)), 0, 255).astype(np.uint8)
                img[: h // 3, : w // 4] = 255  # a corner the central crop cuts away and a plain resize keeps
                ext = "jpg" if i % 3 == 0 else "png"
                Image.fromarray(img).save(root / split / name / f"{i}.{ext}")
    return root


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory):
    root = write_folder(tmp_path_factory.mktemp("folder") / "data")
    out = tmp_path_factory.mktemp("run") / "run"
    assert main(["train", "--quiet", "--out", str(out), "--set", "data.name=imagefolder", "--set",
                 f"data.root={root}", "--set", f"data.image_size={SIZE}", "--set", "model.name=resnet20", "--set",
                 "train.epochs=1", "--set", "train.batch_size=8", "--set", "train.threads=1", "--set",
                 "data.workers=0"]) == 0
    return root, out


def eval_inputs(root, **kw):
    bundle = load_dataset("imagefolder", root, image_size=SIZE)
    loaders = make_loaders(bundle, 5, augment=None, workers=0, **kw)
    return bundle.test.samples, torch.cat([x for x, _ in loaders.test])


@pytest.mark.parametrize("budget", [4.0, 0.0], ids=["in-memory", "streaming"])
def test_predict_input_is_eval_input_bit_for_bit(folder_run, budget):
    root, run = folder_run
    samples, want = eval_inputs(root, memory_budget_gb=budget)
    d = load_run(run).data
    got = torch.cat([load_input_batch(p, d["in_chans"], d["image_size"], d["mean"], d["std"],
                                      preprocess=d["preprocess"]) for p, _ in samples])
    assert got.shape == want.shape == (18, 3, SIZE, SIZE)
    assert torch.equal(got, want)


def test_the_run_records_its_preprocessing(folder_run):
    _, run = folder_run
    s = json.loads((run / "summary.json").read_text())
    assert s["preprocess"]["size"] == [SIZE, SIZE] and s["preprocess"]["resize_shorter"] == round(SIZE / 0.875)
    assert s["preprocess"]["channels"] == 3 and s["preprocess"]["mean"] == s["data"]["mean"]
    del s["preprocess"]  # a run written before the record existed gets the same rule
    (run / "summary.json").write_text(json.dumps(s))
    try:
        assert load_run(run).data["preprocess"]["resize_shorter"] == round(SIZE / 0.875)
    finally:
        s["preprocess"] = load_run(run).data["preprocess"]
        (run / "summary.json").write_text(json.dumps(s))


def test_predict_over_the_validation_files_gives_evals_top1(folder_run, capsys):
    root, run = folder_run
    assert main(["eval", "--run", str(run)]) == 0
    top1 = float(re.search(r"top1=([0-9.]+)", capsys.readouterr().out).group(1))
    files = sorted((root / "val").glob("*/*"))
    assert main(["predict", "--run", str(run), "-k", "1", *map(str, files)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == len(files) == 18
    right = sum(line.split(": ", 1)[1].split()[0] == path.parent.name for line, path in zip(lines, files))
    assert f"{right / len(files):.6f}" == f"{top1:.6f}"


@pytest.mark.parametrize("image_size", [None, 12])
def test_in_memory_sets_predict_on_evals_pixels(tmp_path, image_size):
    """digits is read at 8x8 and resized once at load time when data.image_size asks for it: a lossless PNG of a
    test image becomes exactly the eval loader's input."""
    from cbamlab.data.preprocess import for_dataset

    bundle = load_dataset("digits", image_size=image_size)
    raw = load_dataset("digits").test.images[:40]  # (40, 1, 8, 8) as stored in the files
    want = torch.cat([x for x, _ in make_loaders(bundle, 16, augment=None).test])[:40]
    record = for_dataset(bundle.info).to_dict()
    assert record["resize_shorter"] is None and record["size"] == list(bundle.info.image_size)
    files = []
    for i, img in enumerate(raw):
        Image.fromarray(img[0].numpy()).save(tmp_path / f"{i}.png")
        files.append(tmp_path / f"{i}.png")
    i = bundle.info
    got = torch.cat([load_input_batch(f, i.in_chans, i.image_size, i.mean, i.std, preprocess=record) for f in files])
    assert torch.equal(got, want)
