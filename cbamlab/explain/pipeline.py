"""Explain models on one set of images and write the result files. Never trains.

For each model: softmax probabilities, Grad-CAM and Grad-CAM++ of the target class (the true class; for an
unlabelled file, the first model's prediction, so paired models are asked about the same class), CBAM's spatial
map per stage, channel attention per stage, deletion/insertion curves of every map and of a random order, and the
class-specificity of the channel attention. `write_results` stores them as maps.npz, scores.csv, explain.json;
`cbamlab.report.explain.write_explain_report` turns those files into explain.md / explain.html.
"""
from __future__ import annotations

import csv
import io
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .. import _io
from ..engine.runtime import select_device
from ..errors import CbamlabError
from . import faithfulness
from .channels import Specificity, class_specificity
from .images import ImageSet, from_files, from_split
from .maps import forward_with_maps, gradcam, upsample
from .selection import ExplainedModel, check_same_inputs, compare_seeds, select_models

log = logging.getLogger(__name__)

CAMS = ("gradcam", "gradcam++")
RANDOM = "random"
NOTES = {"none": "plain model: no attention of its own, so Grad-CAM only (no spatial or channel maps)",
         "se": "SE has channel attention only: no spatial maps"}
DELETION_BASELINE = "the dataset's mean colour (0 after normalisation)"


@dataclass
class ModelResult:
    prob: np.ndarray                          # (N, K) softmax probabilities
    maps: dict[str, np.ndarray]               # "gradcam", "gradcam++", "spatial/<stage>" -> (N, H, W)
    channel: dict[str, np.ndarray]            # stage -> (N, C) channel attention
    curves: dict[str, dict[str, np.ndarray]]  # "deletion"/"insertion" -> map name or "random" -> (N, steps + 1)
    specificity: dict[str, Specificity] = field(default_factory=dict)

    def auc(self, mode: str, name: str) -> np.ndarray:
        return faithfulness.auc(self.curves[mode][name])


@dataclass
class Explanation:
    images: ImageSet
    targets: np.ndarray       # (N,) the class every map explains
    classes: list[str]
    models: list[ExplainedModel]
    results: dict[str, ModelResult]
    pairs: list[tuple[str, str]]  # (variant label, baseline label)
    steps: int
    seed: int
    notes: list[str] = field(default_factory=list)


def _forward_all(model, x: torch.Tensor, batch_size: int):
    parts = [forward_with_maps(model, x[i:i + batch_size]) for i in range(0, x.shape[0], batch_size)]
    logits = torch.cat([p[0] for p in parts])
    spatial = {k: torch.cat([p[1][k] for p in parts]) for k in parts[0][1]}
    channel = {k: torch.cat([p[2][k] for p in parts]) for k in parts[0][2]}
    return logits, spatial, channel


def explain_model(model, x: torch.Tensor, targets, labels=None, *, steps: int = 32, seed: int = 0,
                  batch_size: int = 64) -> ModelResult:
    """Everything explain computes for one model on images `x` (N, C, H, W) and target classes (N,)."""
    n, _, h, w = x.shape
    targets = torch.as_tensor(np.asarray(targets), dtype=torch.int64)
    logits, spatial, channel = _forward_all(model, x, batch_size)
    maps = {m: gradcam(model, x, targets, method=m, batch_size=batch_size) for m in CAMS}
    maps.update({f"spatial/{k}": upsample(v, (h, w)).cpu().numpy() for k, v in spatial.items()})
    saliency = {**maps, RANDOM: faithfulness.random_maps(n, h, w, seed)}
    curves = faithfulness.deletion_insertion(model, x, targets, saliency, steps=steps, seed=seed)
    channel_np = {k: v.cpu().numpy() for k, v in channel.items()}
    labels = targets.numpy() if labels is None else np.asarray(labels)
    spec = {k: class_specificity(v, labels, seed=seed) for k, v in channel_np.items()}
    prob = torch.softmax(logits.float(), dim=1).cpu().numpy()
    return ModelResult(prob=prob, maps=maps, channel=channel_np, curves=curves, specificity=spec)


def explain(models: list[ExplainedModel], images: ImageSet, pairs=(), *, steps: int = 32, seed: int = 0,
            device: str = "cpu") -> Explanation:
    """Run `explain_model` for every model on `images`; targets are the true classes (see the module doc)."""
    check_same_inputs(models)
    dev = select_device(device)
    x = images.x.to(dev)
    targets = images.labels.copy()
    notes = []
    if (targets < 0).any():
        with torch.no_grad():
            pred = models[0].model.to(dev).eval()(x).argmax(1).cpu().numpy()
        targets = np.where(targets < 0, pred, targets)
        notes.append(f"{int((images.labels < 0).sum())} image(s) have no known class (not in a folder named after "
                     f"one): their maps explain {models[0].label}'s predicted class, for every model.")
    results = {}
    for m in models:
        if m.attn in NOTES and NOTES[m.attn] not in m.notes:
            m.notes.append(NOTES[m.attn])
        log.info("explaining %s on %d images", m.label, len(targets))
        results[m.label] = explain_model(m.model.to(dev), x, targets, images.labels, steps=steps, seed=seed)
    return Explanation(images, targets, list(models[0].data["classes"]), list(models), results, list(pairs),
                       steps, seed, notes)


def explain_run(run, against=None, *, images=None, split: str = "test", n: int = 64, classes=None,
                seed: int | None = None, checkpoint: str = "last", steps: int = 32, image_seed: int = 0,
                device: str = "cpu", out=None) -> Explanation:
    """Explain a run directory (alone or `against` another) or a compare folder (each SE/CBAM variant with its
    plain twin of run seed `seed`, default the smallest) on `images` (files or folders) or `n` images of `split`,
    drawn with `image_seed`, stratified by class, optionally only of `classes`. With `out`, write the result files
    there (see `write_results`)."""
    models, pairs = select_models(run, against, seed, checkpoint)
    first = models[0]
    if images:
        if classes:
            raise CbamlabError("--classes picks images from a split; with --images pass only the images you want")
        image_set = from_files(images, first.data)
    else:
        image_set = from_split(first.cfg, first.data, split, n, classes, image_seed)
    expl = explain(models, image_set, pairs, steps=steps, seed=image_seed, device=device)
    if out is not None:
        write_results(expl, out)
    return expl


def explain_seeds(run, seeds=None, *, out, **kw) -> dict[int, Explanation]:
    """`explain_run` for every training seed of a compare folder (or the `seeds` given), on the same images, each
    into out/seed<k>/: the per-seed files that `cbamlab.report.explain_seeds` pairs across seeds. Returns
    {seed: Explanation}."""
    known = compare_seeds(run)
    if not known:
        raise CbamlabError(f"{run} is not a compare folder (no <variant>/seed<k>/ runs under it): explaining "
                           "across seeds needs the runs of several seeds")
    seeds = known if seeds is None else sorted(set(seeds))
    missing = [s for s in seeds if s not in known]
    if missing:
        raise CbamlabError(f"{run} has no runs with seed {', '.join(map(str, missing))}; seeds there: "
                           f"{', '.join(map(str, known))}")
    return {s: explain_run(run, seed=s, out=Path(out) / f"seed{s}", **kw) for s in seeds}


def map_names(expl: Explanation) -> list[str]:
    """Every map name of any model, in a stable order, then "random"."""
    names = list(CAMS)
    for r in expl.results.values():
        names += [k for k in r.maps if k not in names]
    return names + [RANDOM]


def _scores_csv(expl: Explanation) -> str:
    names = map_names(expl)
    cols = [f"{mode}_{name.replace('/', '_')}" for name in names for mode in faithfulness.MODES]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["file", "model", "true", "target", "pred", "p_true", "p_target", *cols])
    for label, r in expl.results.items():
        aucs = {(mode, name): r.auc(mode, name) for name in names for mode in faithfulness.MODES
                if name in r.curves[mode]}
        pred = r.prob.argmax(1)
        for i, f in enumerate(expl.images.files):
            y, t = int(expl.images.labels[i]), int(expl.targets[i])
            row = [f, label, expl.classes[y] if y >= 0 else "", expl.classes[t], expl.classes[int(pred[i])],
                   f"{r.prob[i, y]:.6g}" if y >= 0 else "", f"{r.prob[i, t]:.6g}"]
            row += [f"{aucs[(mode, name)][i]:.6g}" if (mode, name) in aucs else ""
                    for name in names for mode in faithfulness.MODES]
            w.writerow(row)
    return buf.getvalue()


def _npz(expl: Explanation) -> bytes:
    arrays = {"files": np.asarray(expl.images.files), "labels": expl.images.labels, "targets": expl.targets,
              "classes": np.asarray(expl.classes),
              "images": np.rint(expl.images.display * 255).astype(np.uint8)}  # (N, H, W, C)
    for label, r in expl.results.items():
        arrays[f"{label}/prob"] = r.prob.astype(np.float32)
        arrays.update({f"{label}/{k}": v.astype(np.float32) for k, v in r.maps.items()})
        arrays.update({f"{label}/channel/{k}": v.astype(np.float32) for k, v in r.channel.items()})
        for mode, curves in r.curves.items():
            arrays.update({f"{label}/{mode}/{k}": v.astype(np.float32) for k, v in curves.items()})
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def _meta(expl: Explanation) -> dict:
    h, w = expl.images.x.shape[-2:]
    return {
        "source": expl.images.source, "n": len(expl.targets), "classes": expl.classes,
        "image_size": [int(h), int(w)], "in_chans": int(expl.images.x.shape[1]), "steps": expl.steps,
        "seed": expl.seed, "deletion_baseline": DELETION_BASELINE,
        "insertion_start": f"the image blurred (Gaussian, sigma {faithfulness.blur_sigma(h, w):.2g} px)",
        "maps": map_names(expl), "pairs": [list(p) for p in expl.pairs], "notes": expl.notes,
        "models": [{"label": m.label, "name": m.name, "attn": m.attn, "seed": m.seed, "run": m.run,
                    "notes": m.notes, "spatial_stages": [k.split("/", 1)[1] for k in expl.results[m.label].maps
                                                         if k.startswith("spatial/")],
                    "channel_stages": list(expl.results[m.label].channel),
                    "specificity": {k: {"ratio": _finite(s.ratio), "chance": _finite(s.chance)}
                                    for k, s in expl.results[m.label].specificity.items()}}
                   for m in expl.models],
    }


def _finite(v: float) -> float | None:
    return None if v is None or not np.isfinite(v) else float(v)


def write_results(expl: Explanation, out) -> list[Path]:
    """maps.npz, scores.csv and explain.json in `out` (written atomically)."""
    out = Path(out)
    paths = [_io.write_bytes(out / "maps.npz", _npz(expl)), _io.write_text(out / "scores.csv", _scores_csv(expl)),
             _io.write_json(out / "explain.json", _meta(expl))]
    log.info("wrote %s", ", ".join(str(p) for p in paths))
    return paths
