"""`fit`: one training run from a config into a run directory, resumable after a kill at any moment.

Per epoch: train, evaluate (val, test), then in this order write the state file (model, optimizer, RNG,
metric history), last/best weights and metrics.csv, then call `on_epoch`. With `train.ema` the weight average
(engine/ema.py) is what is evaluated and what the best/last weights files hold, so `cbamlab eval --run` equals
summary.json; the state file keeps the raw weights and the average, so a resumed run continues both exactly.
The state file is the single source of truth on resume, so a kill between any two writes loses at most the
epoch in progress, and the resumed run sees the same batches (the loader is seeded by (seed, epoch)) and ends
with the same weights.
"""
from __future__ import annotations

import logging
import statistics
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

import torch

from ..config import Config, validate
from ..data import load_dataset, make_loaders, resolve_augment
from ..data.preprocess import for_dataset as preprocess_for
from ..errors import ConfigError
from ..models import count_macs, count_params
from ..models.attention import attn_impl_report
from .. import runs
from . import distributed
from .build import build_model, check_fits
from .ema import ModelEma
from .loop import evaluate, train_one_epoch
from .metrics import spatial_map_spread
from .optim import build_optimizer
from .runtime import (AUTOCAST_DTYPES, env_info, device_name, log_precision, precision_for, resolved,
                      seed_everything, select_device, set_threads)
from .schedules import build_schedule

log = logging.getLogger(__name__)


def _load_data(cfg: Config, device, dist=None):
    d = cfg.data
    bundle = load_dataset(d.name, d.root, download=d.download, image_size=d.image_size,
                          val_fraction=d.val_fraction, seed=cfg.seed, include_test=cfg.train.eval_test,
                          index_cache=d.index_cache)
    check_fits(cfg.model, bundle.info.num_classes, bundle.info.in_chans, bundle.info.name)  # before any log line
    augment = resolve_augment(d.augment, d.name, image_size=bundle.info.image_size, **d.augment_overrides)
    loaders = make_loaders(bundle, cfg.train.batch_size, augment=augment, device=device, seed=cfg.seed,
                           eval_batch_size=cfg.train.eval_batch_size, workers=d.workers,
                           memory_budget_gb=d.memory_budget_gb,
                           **({"rank": dist.rank, "world": dist.world} if dist is not None else {}))
    return bundle.info, loaders


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


def _row(epoch: int, train: dict, val: dict | None, test: dict | None) -> dict:
    row = {"epoch": epoch, "lr": train["lr"], "train_loss": train["loss"], "train_top1": train["top1"],
           "images_per_s": train["images_per_s"], "epoch_time_s": train["time_s"]}
    for split, m in (("val", val), ("test", test)):
        for k in ("loss", "top1", "top5"):
            row[f"{split}_{k}"] = m[k] if m else None
    return row


def fit(cfg: Config, out_dir, *, resume: bool = False, on_epoch: Callable[[int, dict], None] | None = None) -> dict:
    """Train `cfg` into `out_dir` and return the summary (also written to summary.json)."""
    validate(cfg)
    out = Path(out_dir)
    dist = distributed.init_from_env(cfg.train.batch_size, cfg.train.device)  # torchrun: one process per rank
    resume = resume or distributed.resume_after_restart(out, runs.CONFIG)
    held = []  # rank 0 claims the run directory; its refusal is raised on every rank
    try:
        distributed.from_main(lambda: held.append(runs.claim_run_dir(out)), dist)
        return _fit(cfg, out, resume, on_epoch, dist)
    finally:
        for c in held:
            c.release()
        distributed.close(dist)


def _fit(cfg: Config, out: Path, resume: bool, on_epoch, dist) -> dict:
    main = dist is None or dist.main
    device = dist.device if dist is not None else select_device(cfg.train.device)
    precision = precision_for(device, cfg.train.amp, cfg.train.channels_last)  # "auto" resolved
    # a run that trained with other resolved values (another machine's "auto") is not continued here
    found = distributed.from_main(lambda: runs.prepare(out, cfg, resume, resolved(device, precision)), dist)
    if found is runs.Prepared.COMPLETE:
        log.info("%s is already complete; nothing to resume", out)
        return runs.read_summary(out)
    set_threads(cfg.train.threads)
    seed_everything(cfg.seed, cfg.train.deterministic)
    info, loaders = _load_data(cfg, device, dist)  # a model that does not fit the data is refused in there
    log_precision(precision)
    train_loader = loaders.train  # under DDP: this rank's share (cbamlab.data.shard)
    model = build_model(cfg.model, info.num_classes, info.in_chans, seed=cfg.seed).to(device)
    if cfg.train.sync_bn:
        model = distributed.sync_batchnorm(model, dist)
    if precision.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, cfg.optim)
    lr_at = build_schedule(cfg.schedule, cfg.optim.lr, len(train_loader), cfg.train.epochs)
    scaler = torch.amp.GradScaler("cuda") if precision.amp == "fp16" and device.type == "cuda" else None
    ema = ModelEma(model, cfg.train.ema_decay, cfg.train.ema_warmup) if cfg.train.ema else None
    eval_model = ema.module if ema is not None else model

    state = runs.TrainState()
    if found is runs.Prepared.RESUME:
        state = distributed.from_main(lambda: runs.load_state(out), dist)  # every rank: rank 0's state
        runs.check_state_fits(model, state.model, str(out / runs.LAST_STATE))
        model.load_state_dict(state.model)
        optimizer.load_state_dict(state.optimizer)
        if ema is not None:
            ema.load_state_dict(state.ema)
        if scaler is not None and state.scaler:
            scaler.load_state_dict(state.scaler)
        runs.set_rng_state(state.rng)
        if main:
            runs.repair(out, state)
        log.info("resuming %s after epoch %d of %d", out, state.epoch, cfg.train.epochs)
    elif main:
        out.mkdir(parents=True, exist_ok=True)
        runs.write_config(out, cfg)
    if main:
        runs.write_env(out, {**env_info(device), "world_size": dist.world if dist else 1,
                             "precision": precision.as_dict(),  # with "device": what runs.read_resolved reads
                             "code": runs.code_version(),  # the commit the run's numbers came from
                             "attention": attn_impl_report(model, device.type,  # the dtype a CBAM sees
                                                            AUTOCAST_DTYPES[precision.amp] or torch.float32)})

    net = torch.compile(model) if cfg.train.compile else model
    if dist is not None:
        net = distributed.wrap(net, dist)
    eval_split = "test" if loaders.test is not None else "val"
    best_key = "val_top1" if loaders.val is not None else "test_top1"
    tb = _tensorboard(out) if cfg.train.tensorboard and main else None
    common = dict(device=device, amp=precision.amp, channels_last=precision.channels_last,
                  all_reduce=dist is not None)  # DDP: metrics summed over ranks
    eval_opts = dict(common, amp=precision.eval_amp, tta=cfg.eval.tta)
    final = None
    for epoch in range(state.epoch + 1, cfg.train.epochs + 1):
        t0 = time.perf_counter()
        train_loader.set_epoch(epoch)
        train, step = train_one_epoch(net, train_loader, optimizer, lr_at=lr_at, step=state.step,
                                      label_smoothing=cfg.train.label_smoothing, scaler=scaler,
                                      grad_clip=cfg.train.grad_clip, progress=cfg.train.progress,
                                      desc=f"epoch {epoch}/{cfg.train.epochs}", ema=ema, **common)
        last = epoch == cfg.train.epochs
        evaluated = last or epoch % cfg.eval.every == 0
        evals = {}
        if evaluated:
            distributed.broadcast_buffers(eval_model, dist)  # DDP: each rank's BatchNorm statistics -> rank 0's
        for split in ("val", "test") if evaluated else ():
            loader = getattr(loaders, split)
            if loader is not None:
                n_cls = info.num_classes if last and split == eval_split else None
                evals[split] = evaluate(eval_model, loader, num_classes=n_cls, **eval_opts)
        final = evals.get(eval_split)
        row = _row(epoch, train, evals.get("val"), evals.get("test"))
        is_best = row[best_key] is not None and row[best_key] > state.best.value
        state = replace(state, epoch=epoch, step=step, history=state.history + [row], model_name=cfg.model.name,
                        best=runs.Best.of_row(row, best_key) if is_best else state.best,
                        model=runs.plain_state(model), optimizer=optimizer.state_dict(), rng=runs.rng_state(),
                        scaler=scaler.state_dict() if scaler is not None else None,
                        ema=runs.plain_state(ema.module) if ema is not None else None,
                        wall_time_s=state.wall_time_s + time.perf_counter() - t0,
                        **runs.record(cfg))  # the config and code this state came from: resume checks it
        if not main:
            continue
        runs.save_checkpoint(out, state, is_best)
        runs.write_metrics(out, state.history)
        if tb is not None:
            for k, v in row.items():
                if k != "epoch" and v is not None:
                    tb.add_scalar(k, v, epoch)
            tb.flush()
        log.info("epoch %d/%d  lr %.4g  train loss %.4f top1 %.4f  %s  %.0f img/s  %.1fs", epoch,
                 cfg.train.epochs, row["lr"], row["train_loss"], row["train_top1"],
                 "  ".join(f"{s} loss {m['loss']:.4f} top1 {m['top1']:.4f} top5 {m['top5']:.4f}"
                           for s, m in evals.items()), row["images_per_s"], row["epoch_time_s"])
        if on_epoch is not None:
            on_epoch(epoch, row)
    if final is None or "confusion_matrix" not in final:  # resumed after the last epoch's checkpoint
        distributed.broadcast_buffers(eval_model, dist)
        final = evaluate(eval_model, getattr(loaders, eval_split), num_classes=info.num_classes, **eval_opts)
    summary = None
    if main:
        summary = _summary(cfg, info, eval_model, device, state, final, eval_split)
        summary["precision"] = precision.as_dict()
        summary["skipped_files"] = loaders.skipped_files()  # unreadable image-folder files: skipped, never a crash
        # is the spatial gate doing anything? the spread of its maps on the first images of the evaluation split
        summary["spatial_maps"] = spatial_map_spread(eval_model, getattr(loaders, eval_split))
        runs.write_summary(out, summary)
    summary = distributed.broadcast(summary, dist)
    if tb is not None:
        tb.close()
    return summary


def _summary(cfg, info, model, device, state, final, split) -> dict:
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


def _tensorboard(out: Path):
    try:  # optional dependency (the tensorboard extra): imported only when asked for
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ConfigError("train.tensorboard=true needs the tensorboard extra (pip install 'cbamlab[tensorboard]')")
    return SummaryWriter(str(out / "tensorboard"))
