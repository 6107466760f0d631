"""Use a trained model: load it from a run directory or a weights file, evaluate it, classify image files."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..config import Config
from ..data import load_dataset, make_loaders
from ..data.preprocess import Preprocess, for_dataset, read_file, to_input
from ..data.types import DatasetInfo
from ..errors import CbamlabError, CheckpointError
from .. import runs
from ..engine.build import build_model, check_fits
from ..engine.loop import evaluate
from ..engine.runtime import precision_for, select_device, set_threads

log = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    model: nn.Module
    cfg: Config
    data: dict  # num_classes, in_chans, image_size, mean, std, classes, preprocess (Preprocess.to_dict())
    weights: Path


def _data_info(cfg: Config, summary: dict | None) -> dict:
    if summary and "data" in summary:
        data = {**summary["data"], "classes": summary["classes"]}
        if "preprocess" not in summary:  # written before runs recorded it: the rule of that time
            info = DatasetInfo(cfg.data.name, data["num_classes"], data["in_chans"], tuple(data["image_size"]),
                               data["classes"], tuple(data["mean"]), tuple(data["std"]), source="")
            return {**data, "preprocess": for_dataset(info).to_dict()}
        return {**data, "preprocess": summary["preprocess"]}
    d = cfg.data  # an unfinished run: read the dataset's description (never the test split)
    info = load_dataset(d.name, d.root, image_size=d.image_size, val_fraction=0.0, seed=cfg.seed,
                        include_test=False).info
    return {"num_classes": info.num_classes, "in_chans": info.in_chans, "image_size": list(info.image_size),
            "mean": list(info.mean), "std": list(info.std), "classes": list(info.classes),
            "preprocess": for_dataset(info).to_dict()}


def load_run(run_dir, checkpoint: str = "last") -> LoadedModel:
    """The model of a run directory with its `last` or `best` weights, in eval mode on the CPU. The files are
    read by `runs.read_run`, the one reader of run directories."""
    weights = runs.weights_path(run_dir, checkpoint)
    run = runs.read_run(run_dir)
    cfg = run.load_config()
    if not weights.is_file():
        raise CheckpointError(f"{run_dir} has no {checkpoint} checkpoint yet ({weights} is missing)")
    data = _data_info(cfg, run.summary)
    model = build_model(cfg.model.__class__(**{**cfg.model.__dict__, "pretrained": None}), data["num_classes"],
                        data["in_chans"])
    runs.load_into(model, weights)
    return LoadedModel(model.eval(), cfg, data, weights)


def load_weights_file(weights, model_cfg, num_classes: int, in_chans: int) -> nn.Module:
    """A model from the registry with the weights of `weights` (strict: another architecture is refused)."""
    model = build_model(model_cfg, num_classes, in_chans)
    runs.load_into(model, weights)
    return model.eval()


def evaluate_config(model: nn.Module, cfg: Config, split: str | None = None) -> dict:
    """Evaluate `model` on the split `cfg` names (test, else validation), loaded exactly as `fit` loads it."""
    set_threads(cfg.train.threads)
    device = select_device(cfg.train.device)
    d = cfg.data
    want_test = split != "val"
    bundle = load_dataset(d.name, d.root, download=d.download, image_size=d.image_size, val_fraction=d.val_fraction,
                          seed=cfg.seed, include_test=want_test)
    check_fits(cfg.model, bundle.info.num_classes, bundle.info.in_chans, bundle.info.name)
    if getattr(model, "num_classes", bundle.info.num_classes) != bundle.info.num_classes:
        raise CbamlabError(f"the model has {model.num_classes} classes but dataset '{d.name}' has "
                           f"{bundle.info.num_classes}")
    loaders = make_loaders(bundle, cfg.train.batch_size, augment=None, device=device, seed=cfg.seed,
                           eval_batch_size=cfg.train.eval_batch_size, workers=d.workers)
    split = split or ("test" if loaders.test is not None else "val")
    loader = getattr(loaders, split)
    if loader is None:
        raise CbamlabError(f"dataset '{d.name}' has no {split} split here (data.val_fraction={d.val_fraction})")
    precision = precision_for(device, cfg.train.amp, cfg.train.channels_last)  # "auto" as fit resolves it here
    model = model.to(device)
    if precision.channels_last:
        model = model.to(memory_format=torch.channels_last)
    out = evaluate(model, loader, device=device, num_classes=bundle.info.num_classes, amp=precision.eval_amp,
                   channels_last=precision.channels_last, tta=cfg.eval.tta)
    out["split"] = split
    out["classes"] = list(bundle.info.classes)
    return out


def load_input_batch(path, in_chans: int, image_size, mean, std, *,
                     preprocess: dict | Preprocess | None = None) -> torch.Tensor:
    """A PNG/JPEG file as the model's normalised input, a batch of one (1, C, H, W), preprocessed exactly as
    evaluation preprocesses the run's images: `preprocess` is the run's record (`LoadedModel.data["preprocess"]`);
    without it the whole image is resized to `image_size` (the in-memory datasets' rule). The file's decoded
    pixels alone (uint8) are `cbamlab.data.decode.read_image`."""
    if preprocess is None:
        preprocess = Preprocess(int(in_chans), tuple(image_size), None, tuple(mean), tuple(std))
    elif isinstance(preprocess, dict):
        preprocess = Preprocess.from_dict(preprocess)
    return to_input(read_file(path, preprocess), preprocess)


@torch.no_grad()
def predict_topk(model: nn.Module, x: torch.Tensor, classes: list[str], k: int = 5) -> list[tuple[str, float]]:
    """The k most probable classes of one input (1, C, H, W) with their softmax probabilities."""
    probs = torch.softmax(model.eval()(x).float(), dim=1)[0]
    p, idx = probs.topk(min(k, probs.numel()))
    return [(classes[int(i)], float(v)) for v, i in zip(p, idx)]
