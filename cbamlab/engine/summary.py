"""What a run reports: each epoch's metrics row (metrics.csv, the state file's history, `on_epoch`) and the
contents of summary.json, built by `fit`'s finish from the last state and the final evaluation."""
from __future__ import annotations

import statistics
import time

import torch

from ..data.preprocess import for_dataset as preprocess_for
from ..models import count_macs, count_params
from .runtime import device_name


def epoch_row(epoch: int, train: dict, val: dict | None, test: dict | None) -> dict:
    """One epoch's metrics: the training numbers, and each split's loss, top-1, top-5 (None when not evaluated)."""
    row = {"epoch": epoch, "lr": train["lr"], "train_loss": train["loss"], "train_top1": train["top1"],
           "images_per_s": train["images_per_s"], "epoch_time_s": train["time_s"]}
    for split, m in (("val", val), ("test", test)):
        for k in ("loss", "top1", "top5"):
            row[f"{split}_{k}"] = m[k] if m else None
    return row


@torch.no_grad()
def inference_latency_ms(model, input_size, device, repeats: int = 20) -> float:
    """Median wall time of one forward pass on a batch of 1, after a short warm-up."""
    model.eval()
    x = torch.randn(1, *input_size, device=device)
    times = []
    for i in range(repeats + 3):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        model(x)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i >= 3:
            times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def build_summary(cfg, info, model, device, state, final: dict, split: str) -> dict:
    """summary.json without the keys the finish adds (precision, skipped_files, spatial_maps): the config's
    identity, the final evaluation of `split`, the best epoch, size, speed and the dataset's description."""
    input_size = (info.in_chans, *info.image_size)
    rows = state.history
    last = rows[-1]
    return {
        "status": "complete", "model": cfg.model.name, "dataset": info.name, "seed": cfg.seed,
        "epochs": cfg.train.epochs, "split": split, "top1": final["top1"], "top5": final["top5"],
        "final": {k: v for k, v in last.items() if k not in ("epoch", "images_per_s", "epoch_time_s", "lr")
                  and v is not None},
        "best": state.best.to_dict(),
        "params": count_params(model), "macs": count_macs(model, input_size=input_size),
        "train_images_per_s": statistics.mean(r["images_per_s"] for r in rows),
        "inference_latency_ms": inference_latency_ms(model, input_size, device),
        "wall_time_s": state.wall_time_s, "device": device_name(device), "torch_version": torch.__version__,
        "classes": list(info.classes), "per_class_accuracy": final["per_class_accuracy"],
        "confusion_matrix": final["confusion_matrix"],
        "data": {"num_classes": info.num_classes, "in_chans": info.in_chans, "image_size": list(info.image_size),
                 "mean": list(info.mean), "std": list(info.std)},
        "preprocess": preprocess_for(info).to_dict(),  # what predict does to an image file: what eval did
    }
