"""`cbamlab explain COMPARE --all-seeds`: every training seed explained on the same images, then each map's
faithfulness per variant across seeds and each variant paired by seed with its plain twin, recomputed here from
the per-seed scores.csv files; refusals for what cannot be paired. A real 2 x 2 study (1 epoch on digits)."""
import csv
import json
import shutil

import numpy as np
import pytest

from cbamlab.cli import main
from cbamlab.errors import CbamlabError
from cbamlab.report import explain_seeds, stats

TRAIN = ["--set", "train.epochs=1", "--set", "train.threads=1", "--set", "train.progress=false",
         "--set", "compare.seeds=2", "--no-report", "-q"]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("seeds")
    variants = "[resnet20, {name: cbam_k3, model: resnet20_cbam, options: {kernel_size: 3}}]"
    assert main(["compare", "--out", str(root / "c"), "--set", f"compare.variants={variants}", *TRAIN]) == 0
    return root / "c"


def _gain(folder, label, column):
    with open(folder / "scores.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["model"] == label]
    mode = column.split("_", 1)[0]
    return float(np.mean([float(r[column]) - float(r[f"{mode}_random"]) for r in rows]))


def test_all_seeds_pairs_each_variant_with_its_plain_twin_across_seeds(study, tmp_path, capsys):
    out = tmp_path / "x"
    assert main(["explain", str(study), "--all-seeds", "--n", "12", "--steps", "4", "--figure-images", "2",
                 "--out", str(out), "-q"]) == 0
    printed = capsys.readouterr().out
    for seed in (0, 1):
        assert (out / f"seed{seed}" / "explain.md").is_file() and (out / f"seed{seed}" / "scores.csv").is_file()
        meta = json.loads((out / f"seed{seed}" / "explain.json").read_text())
        assert [m["label"] for m in meta["models"]] == ["resnet20", "cbam_k3"]
        assert meta["pairs"] == [["cbam_k3", "resnet20"]] and meta["n"] == 12
    data = explain_seeds.collect(out)
    assert data.seeds == [0, 1] and data.pairs == [("cbam_k3", "resnet20")]
    assert data.models["cbam_k3"] == ("resnet20_cbam", "cbam")
    for label in ("resnet20", "cbam_k3"):
        for seed in (0, 1):
            assert data.gains[label][("deletion", "gradcam")][seed] == pytest.approx(
                _gain(out / f"seed{seed}", label, "deletion_gradcam"))
    assert ("insertion", "spatial/layer1") in data.gains["cbam_k3"]
    assert not any(name.startswith("spatial") for _, name in data.gains["resnet20"])

    rows = {(r.map, r.mode): r for r in explain_seeds.paired(data)}
    assert set(rows) == {(m, mode) for m in ("gradcam", "gradcam++") for mode in ("deletion", "insertion")}
    want = [_gain(out / f"seed{s}", "cbam_k3", "insertion_gradcam") - _gain(out / f"seed{s}", "resnet20",
                                                                             "insertion_gradcam") for s in (0, 1)]
    r = rows[("gradcam", "insertion")]
    assert r.pair.n == 2 and r.pair.mean == pytest.approx(stats.mean(want))
    assert r.pair.sign_flip_p >= 0.5  # 2 seeds: the exact test can never go below 2 / 2^2
    md = (out / "explain_seeds.md").read_text(encoding="utf-8")
    assert "| cbam_k3 − resnet20 | Grad-CAM | insertion | 2 |" in md
    assert "no difference in faithfulness that 2 seeds show" in md
    assert "cbam_k3 vs resnet20, Grad-CAM insertion" in printed and (out / "explain_seeds.html").is_file()


def test_seeds_explained_on_other_images_are_not_pooled(study, tmp_path):
    out = tmp_path / "y"
    assert main(["explain", str(study), "--all-seeds", "--n", "8", "--steps", "2", "--out", str(out), "-q"]) == 0
    other = tmp_path / "other"
    assert main(["explain", str(study), "--seed", "1", "--n", "10", "--steps", "2", "--out", str(other), "-q"]) == 0
    shutil.rmtree(out / "seed1")
    shutil.copytree(other, out / "seed1")
    with pytest.raises(CbamlabError, match="explained on different images"):
        explain_seeds.collect(out)


def test_refusals_are_one_error_line(study, tmp_path, capsys):
    run = study / "digits" / "resnet20" / "seed0"
    assert main(["explain", str(run), "--all-seeds", "--out", str(tmp_path / "a")]) == 2
    assert "not a compare folder" in capsys.readouterr().err
    assert main(["explain", str(study), "--all-seeds", "--against", str(run), "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "--against" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(CbamlabError, match="no per-seed explain folders"):
        explain_seeds.collect(tmp_path)
