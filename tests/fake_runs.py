"""Run directories with chosen results, written by `cbamlab.runs` (the format's one writer), for the
report, grouping and compare tests. Nothing here writes a run file by hand."""
import copy
from pathlib import Path

from cbamlab import runs
from cbamlab.engine import runtime
from cbamlab.config import config_from_dict

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


def env_as_fit_writes(cfg) -> dict:
    """The entries of env.json that fit records and a run's result identity reads: the device and the precision
    this machine (its `runtime.device_facts`, which a test may stand in for) resolves `cfg` to."""
    device = runtime.select_device(cfg.train.device)
    precision = runtime.precision_for(device, cfg.train.amp, cfg.train.channels_last)
    return {"device": f"{device.type} (fake)", "precision": precision.as_dict()}


def make_run(root, model="resnet20", seed=0, *, dataset="digits", top1=0.9, top5=0.99, epochs=3, recipe=None,
             complete=True, classes=("a", "b", "c"), per_class=None, reduction=16, device="cpu (test)",
             params=270_000, macs=2_500_000, images_per_s=1000.0, latency_ms=2.0, path=None, precision=None,
             cpu_id=None):
    """OUT/<dataset>/<model>/seed<k>/ with config.yaml, metrics.csv, env.json and (when complete) summary.json.
    `precision`: the `runtime.Precision` env.json records (None: none, as a run written by hand); `cpu_id`: the CPU's
    family and model it records (None: not recorded, as in runs from before it was)."""
    d = copy.deepcopy(RECIPE)
    for section, values in (recipe or {}).items():
        d.setdefault(section, {}).update(values)
    d["seed"] = seed
    d["model"].update(name=model, reduction=reduction)
    d["data"]["name"] = dataset
    d["train"]["epochs"] = epochs
    cfg = config_from_dict(d)
    run = Path(path) if path else Path(root) / dataset / model / f"seed{seed}"
    runs.write_config(run, cfg)
    rows = []
    for e in range(1, epochs + 1):
        frac = e / epochs
        rows.append({"epoch": e, "lr": 0.1 * (1 - frac) + 1e-4, "train_loss": 2.0 - 1.5 * frac,
                     "train_top1": top1 * frac * 0.98, "test_loss": 1.8 - 1.4 * frac, "test_top1": top1 * frac,
                     "test_top5": top5 * frac, "images_per_s": images_per_s, "epoch_time_s": 1.5})
    runs.write_metrics(run, rows)
    k = len(classes)
    per_class = list(per_class) if per_class is not None else [top1] * k
    cm = [[0] * k for _ in range(k)]
    for i, acc in enumerate(per_class):
        cm[i][i] = int(round(acc * 50))
        cm[i][(i + 1) % k] = 50 - cm[i][i]
    if complete:
        runs.write_summary(run, {
            "status": "complete", "model": model, "dataset": dataset, "seed": seed, "epochs": epochs, "split": "test",
            "top1": top1, "top5": top5, "final": {"test_top1": top1, "test_top5": top5},
            "best": {"epoch": epochs, "test_top1": top1}, "params": params, "macs": macs,
            "train_images_per_s": images_per_s, "inference_latency_ms": latency_ms, "wall_time_s": 9.0,
            "device": device, "torch_version": "2.14.1", "classes": list(classes), "per_class_accuracy": per_class,
            "confusion_matrix": cm})
    runs.write_env(run, {"python": "3.11", "torch": "2.14.1", "device": device,
                           **({"precision": precision.as_dict()} if precision is not None else {}),
                           **({"cpu_id": cpu_id} if cpu_id is not None else {})})
    return run
