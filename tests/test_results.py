"""Loading run directories (docs/design.md "Run directory") and grouping them into fair comparisons.

`make_run` writes a run directory in the documented format; test_report.py uses it too."""
import copy
import csv
import json
from pathlib import Path

import pytest
import yaml

from cbamlab.errors import CbamlabError
from cbamlab.experiments import results

RECIPE = {
    "seed": 0,
    "model": {"name": "resnet20", "reduction": 16, "kernel_size": 7, "arrangement": "channel_first",
              "spatial_bn_zero_init": True, "shortcut": None},
    "data": {"name": "digits", "root": None, "download": False, "image_size": None, "val_fraction": 0.0,
             "augment": "auto", "workers": 2},
    "train": {"epochs": 3, "batch_size": 64, "eval_test": True, "progress": True},
    "optim": {"name": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4},
    "schedule": {"name": "cosine", "milestones": [], "warmup_epochs": 0.0},
}
COLUMNS = ("epoch", "lr", "train_loss", "train_top1", "val_loss", "val_top1", "val_top5", "test_loss", "test_top1",
           "test_top5", "images_per_s", "epoch_time_s")


def make_run(root, model="resnet20", seed=0, *, dataset="digits", top1=0.9, top5=0.99, epochs=3, recipe=None,
             complete=True, classes=("a", "b", "c"), per_class=None, reduction=16, device="cpu (test)",
             params=270_000, macs=2_500_000, images_per_s=1000.0, latency_ms=2.0, path=None):
    """Write OUT/<dataset>/<model>/seed<k>/ as the engine does: config.yaml, metrics.csv, summary.json, env.json."""
    cfg = copy.deepcopy(RECIPE)
    for section, values in (recipe or {}).items():
        cfg[section].update(values)
    cfg["seed"] = seed
    cfg["model"]["name"] = model
    cfg["model"]["reduction"] = reduction
    cfg["data"]["name"] = dataset
    cfg["train"]["epochs"] = epochs
    run = Path(path) if path else Path(root) / dataset / model / f"seed{seed}"
    run.mkdir(parents=True, exist_ok=True)
    (run / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    with open(run / "metrics.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(COLUMNS)
        for e in range(1, epochs + 1):
            frac = e / epochs
            w.writerow([e, 0.1 * (1 - frac) + 1e-4, 2.0 - 1.5 * frac, top1 * frac * 0.98, "", "", "",
                        1.8 - 1.4 * frac, top1 * frac, top5 * frac, images_per_s, 1.5])
    k = len(classes)
    per_class = list(per_class) if per_class is not None else [top1] * k
    cm = [[0] * k for _ in range(k)]
    for i, acc in enumerate(per_class):
        cm[i][i] = int(round(acc * 50))
        cm[i][(i + 1) % k] = 50 - cm[i][i]
    if complete:
        summary = {"status": "complete", "model": model, "dataset": dataset, "seed": seed, "epochs": epochs,
                   "top1": top1, "top5": top5, "final": {"test_top1": top1, "test_top5": top5},
                   "best": {"epoch": epochs, "test_top1": top1}, "params": params, "macs": macs,
                   "train_images_per_s": images_per_s, "inference_latency_ms": latency_ms, "wall_time_s": 9.0,
                   "device": device, "torch_version": "2.14.1", "classes": list(classes),
                   "per_class_accuracy": per_class, "confusion_matrix": cm}
        (run / "summary.json").write_text(json.dumps(summary))
    (run / "env.json").write_text(json.dumps({"python": "3.11", "torch": "2.14.1", "device": device}))
    return run


def test_load_run_reads_every_file(tmp_path):
    path = make_run(tmp_path, "resnet20_cbam", seed=2, top1=0.93, epochs=4)
    run = results.load_run(path)
    assert run.complete and run.model == "resnet20_cbam" and run.seed == 2 and run.dataset == "digits"
    assert run.metrics["epoch"] == [1, 2, 3, 4]
    assert run.metrics["val_top1"] == [None] * 4  # empty cells: not measured
    assert run.metrics["test_top1"][-1] == pytest.approx(0.93)
    assert run.summary["params"] == 270_000 and run.env["torch"] == "2.14.1"


def test_find_runs_and_unfinished(tmp_path):
    make_run(tmp_path, "resnet20", 0)
    make_run(tmp_path, "resnet20_cbam", 0, complete=False)
    (tmp_path / "digits" / "resnet20" / "seed0" / "checkpoints").mkdir()
    runs = results.find_runs(tmp_path)
    assert [r.model for r in runs] == ["resnet20", "resnet20_cbam"]
    groups, unfinished = results.load_groups(tmp_path)
    assert [u.model for u in unfinished] == ["resnet20_cbam"]
    assert groups[0].variants == ["resnet20"]


def test_empty_or_foreign_folder_is_an_error(tmp_path):
    with pytest.raises(CbamlabError, match="holds no cbamlab run directories"):
        results.load_groups(tmp_path)
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "sub").mkdir()
    with pytest.raises(CbamlabError, match="holds no cbamlab run directories"):
        results.load_groups(tmp_path)
    with pytest.raises(CbamlabError, match="no such folder"):
        results.load_groups(tmp_path / "missing")
    make_run(tmp_path, "resnet20", 0, complete=False)
    with pytest.raises(CbamlabError, match="none finished"):
        results.load_groups(tmp_path)


def test_corrupt_files_are_named(tmp_path):
    run = make_run(tmp_path, "resnet20", 0)
    (run / "summary.json").write_text("{not json")
    with pytest.raises(CbamlabError, match="summary.json"):
        results.load_run(run)
    (run / "config.yaml").write_text("- just\n- a list\n")
    with pytest.raises(CbamlabError, match="config.yaml"):
        results.load_run(run)


def test_recipe_ignores_model_seed_and_attention_options():
    a = copy.deepcopy(RECIPE)
    b = copy.deepcopy(RECIPE)
    b["model"].update(name="resnet20_cbam", reduction=8, kernel_size=3)
    b["seed"] = 5
    b["data"]["root"] = "/elsewhere"
    assert results.recipe_of(a) == results.recipe_of(b)
    b["optim"]["lr"] = 0.05
    assert results.recipe_of(a) != results.recipe_of(b)
    assert results.recipe_differences(results.recipe_of(a), results.recipe_of(b)) == ["optim.lr: 0.1 vs 0.05"]
    assert a["model"]["name"] == "resnet20"  # the input is not modified


def test_groups_split_datasets_and_recipes(tmp_path):
    for seed in (0, 1):
        for model in ("resnet20_cbam", "resnet20", "resnet20_se"):
            make_run(tmp_path, model, seed)
        make_run(tmp_path / "other", "resnet20", seed, recipe={"optim": {"lr": 0.05}})
        make_run(tmp_path, "resnet20", seed, dataset="fashion_mnist")
    groups = results.group_runs(results.find_runs(tmp_path))
    assert len(groups) == 3
    keyed = {(g.dataset, g.recipe["optim"]["lr"]): g for g in groups}
    main = keyed[("digits", 0.1)]
    assert main.variants == ["resnet20", "resnet20_se", "resnet20_cbam"]  # plain first, then SE, then CBAM
    assert main.seeds("resnet20_cbam") == [0, 1]
    assert main.baseline_for("resnet20_cbam") == "resnet20" and main.baseline_for("resnet20") is None
    assert keyed[("digits", 0.05)].variants == ["resnet20"]
    assert keyed[("fashion_mnist", 0.1)].variants == ["resnet20"]


def test_varying_attention_options_become_separate_variants(tmp_path):
    make_run(tmp_path, "resnet20", 0)
    make_run(tmp_path, "resnet20_cbam", 0, reduction=16)
    make_run(tmp_path, "resnet20_cbam", 0, reduction=8, path=tmp_path / "r8")
    (group,) = results.group_runs(results.find_runs(tmp_path))
    assert group.variants == ["resnet20", "resnet20_cbam (reduction=16)", "resnet20_cbam (reduction=8)"]
    assert group.baseline_for("resnet20_cbam (reduction=8)") == "resnet20"


def test_duplicate_run_is_an_error(tmp_path):
    make_run(tmp_path, "resnet20", 0)
    make_run(tmp_path, "resnet20", 0, path=tmp_path / "copy")
    with pytest.raises(CbamlabError, match="two finished runs of resnet20 seed 0"):
        results.group_runs(results.find_runs(tmp_path))
