"""`fit`: one training run from a config into a run directory, resumable after a kill at any moment.

`fit` reads as its three steps: `set_up` (device and precision, data, model, optimizer, schedule, EMA, and the
state file on resume), `train_epochs` (the epoch loop) and `finish` (the final evaluation and summary.json).
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
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from ..config import Config, validate
from ..data import load_dataset, make_loaders, resolve_augment
from ..data.types import DatasetInfo
from ..errors import ConfigError
from ..models.attention import attn_impl_report
from .. import runs
from . import distributed
from .budget import budget_for
from .build import build_model, check_fits
from .ema import ModelEma
from .loop import evaluate, train_one_epoch
from .metrics import spatial_map_spread
from .optim import build_optimizer
from .runtime import (AUTOCAST_DTYPES, Precision, env_info, log_precision, precision_for, resolved, seed_everything,
                      select_device, set_threads)
from .schedules import build_schedule
from .summary import build_summary, epoch_row

log = logging.getLogger(__name__)


def fit(cfg: Config, out_dir, *, resume: bool = False, on_epoch: Callable[[int, dict], None] | None = None) -> dict:
    """Train `cfg` into `out_dir` and return the summary (also written to summary.json)."""
    validate(cfg)  # before torchrun's processes meet and before the claim: a bad config waits for nothing
    out = Path(out_dir)
    dist = distributed.init_from_env(cfg.train.batch_size, cfg.train.device)  # torchrun: one process per rank
    resume = resume or distributed.resume_after_restart(out, runs.CONFIG)
    held = []  # rank 0 claims the run directory; its refusal is raised on every rank
    try:
        distributed.from_main(lambda: held.append(runs.claim_run_dir(out)), dist)
        run = set_up(cfg, out, resume, dist)
        if run is None:
            return runs.read_summary(out)
        state, final = train_epochs(run, on_epoch)
        return finish(run, state, final)
    finally:
        for c in held:
            c.release()
        distributed.close(dist)


@dataclass(frozen=True)
class Setup:
    """What `set_up` hands the epoch loop and the finish: the run's objects, built once."""

    cfg: Config
    out: Path
    dist: distributed.Dist | None
    device: torch.device
    precision: Precision
    info: DatasetInfo
    loaders: Any               # cbamlab.data's loaders: train (under DDP this rank's share), val, test
    model: nn.Module           # the raw weights: what the optimizer steps and the state file holds
    net: nn.Module             # what trains: the model, compiled and/or wrapped in DDP
    optimizer: torch.optim.Optimizer
    lr_at: Callable[[int], float]
    scaler: torch.amp.GradScaler | None
    ema: ModelEma | None
    state: runs.TrainState     # fresh, or the state file's on resume
    tb: Any                    # a tensorboard SummaryWriter (rank 0, train.tensorboard) or None
    eval_split: str            # "test" when the test split is loaded, else "val": what summary.json reports
    best_key: str              # the metrics column the best checkpoint is chosen by

    @property
    def main(self) -> bool:
        return self.dist is None or self.dist.main

    @property
    def eval_model(self) -> nn.Module:
        return self.ema.module if self.ema is not None else self.model

    @property
    def common(self) -> dict:
        return dict(device=self.device, amp=self.precision.amp, channels_last=self.precision.channels_last,
                    all_reduce=self.dist is not None)  # DDP: metrics summed over ranks

    @property
    def eval_opts(self) -> dict:
        return dict(self.common, amp=self.precision.eval_amp, tta=self.cfg.eval.tta)


def set_up(cfg: Config, out: Path, resume: bool, dist: distributed.Dist | None) -> Setup | None:
    """Everything the epochs need, from a fresh start or the state file; writes config.yaml (fresh) and env.json.
    None when `out` already holds the finished run."""
    main = dist is None or dist.main
    if dist is not None and cfg.train.time_budget_min is not None:
        raise ConfigError("train.time_budget_min is for one process: under torchrun each rank would stop at its own "
                          "step; set train.epochs instead")
    device = dist.device if dist is not None else select_device(cfg.train.device)
    precision = precision_for(device, cfg.train.amp, cfg.train.channels_last)  # "auto" resolved
    # a run that trained with other resolved values (another machine's "auto") is not continued here
    found = distributed.from_main(lambda: runs.prepare(out, cfg, resume, resolved(device, precision)), dist)
    if found is runs.Prepared.COMPLETE:
        log.info("%s is already complete; nothing to resume", out)
        return None
    set_threads(cfg.train.threads)
    seed_everything(cfg.seed, cfg.train.deterministic)
    info, loaders = _load_data(cfg, device, dist)  # a model that does not fit the data is refused in there
    log_precision(precision)
    model = build_model(cfg.model, info.num_classes, info.in_chans, seed=cfg.seed).to(device)
    if cfg.train.sync_bn:
        model = distributed.sync_batchnorm(model, dist)
    if precision.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, cfg.optim)
    lr_at = build_schedule(cfg.schedule, cfg.optim.lr, len(loaders.train), cfg.train.epochs)
    scaler = torch.amp.GradScaler("cuda") if precision.amp == "fp16" and device.type == "cuda" else None
    ema = ModelEma(model, cfg.train.ema_decay, cfg.train.ema_warmup) if cfg.train.ema else None

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
    return Setup(cfg=cfg, out=out, dist=dist, device=device, precision=precision, info=info, loaders=loaders,
                 model=model, net=net, optimizer=optimizer, lr_at=lr_at, scaler=scaler, ema=ema, state=state,
                 tb=_tensorboard(out) if cfg.train.tensorboard and main else None,
                 eval_split="test" if loaders.test is not None else "val",
                 best_key="val_top1" if loaders.val is not None else "test_top1")


def train_epochs(run: Setup, on_epoch: Callable[[int, dict], None] | None = None
                 ) -> tuple[runs.TrainState, dict | None]:
    """The epochs after `run.state`'s, each checkpointed before `on_epoch` sees it. Returns the last state and
    the last epoch's evaluation of the evaluation split (None when no epoch ran or that one was not evaluated)."""
    cfg, state, final = run.cfg, run.state, None
    for epoch in range(state.epoch + 1, cfg.train.epochs + 1):
        budget = budget_for(cfg.train.time_budget_min, len(run.loaders.train) * cfg.train.epochs, state.history)
        if budget is not None and budget.spent(state.step):  # resumed after the epoch that used the budget up
            break
        t0 = time.perf_counter()
        run.loaders.train.set_epoch(epoch)
        train, step = train_one_epoch(run.net, run.loaders.train, run.optimizer, lr_at=run.lr_at, step=state.step,
                                      label_smoothing=cfg.train.label_smoothing, scaler=run.scaler,
                                      grad_clip=cfg.train.grad_clip, progress=cfg.train.progress,
                                      desc=f"epoch {epoch}/{cfg.train.epochs}", ema=run.ema, budget=budget,
                                      **run.common)
        last = epoch == cfg.train.epochs or train["budget_spent"]
        evaluated = last or epoch % cfg.eval.every == 0
        evals = {}
        if evaluated:
            distributed.broadcast_buffers(run.eval_model, run.dist)  # DDP: each rank's BatchNorm statistics -> rank 0's
        for split in ("val", "test") if evaluated else ():
            loader = getattr(run.loaders, split)
            if loader is not None:
                n_cls = run.info.num_classes if last and split == run.eval_split else None
                evals[split] = evaluate(run.eval_model, loader, num_classes=n_cls, **run.eval_opts)
        final = evals.get(run.eval_split)
        row = epoch_row(epoch, train, evals.get("val"), evals.get("test"))
        is_best = row[run.best_key] is not None and row[run.best_key] > state.best.value
        state = replace(state, epoch=epoch, step=step, history=state.history + [row], model_name=cfg.model.name,
                        best=runs.Best.of_row(row, run.best_key) if is_best else state.best,
                        model=runs.plain_state(run.model), optimizer=run.optimizer.state_dict(),
                        rng=runs.rng_state(), scaler=run.scaler.state_dict() if run.scaler is not None else None,
                        ema=runs.plain_state(run.ema.module) if run.ema is not None else None,
                        wall_time_s=state.wall_time_s + time.perf_counter() - t0,
                        **runs.record(cfg))  # the config and code this state came from: resume checks it
        if not run.main:
            continue
        runs.save_checkpoint(run.out, state, is_best)
        runs.write_metrics(run.out, state.history)
        if run.tb is not None:
            for k, v in row.items():
                if k != "epoch" and v is not None:
                    run.tb.add_scalar(k, v, epoch)
            run.tb.flush()
        log.info("epoch %d/%d  lr %.4g  train loss %.4f top1 %.4f  %s  %.0f img/s  %.1fs", epoch,
                 cfg.train.epochs, row["lr"], row["train_loss"], row["train_top1"],
                 "  ".join(f"{s} loss {m['loss']:.4f} top1 {m['top1']:.4f} top5 {m['top5']:.4f}"
                           for s, m in evals.items()), row["images_per_s"], row["epoch_time_s"])
        if on_epoch is not None:
            on_epoch(epoch, row)
        if last:
            break
    return state, final


def finish(run: Setup, state: runs.TrainState, final: dict | None) -> dict:
    """The final evaluation (again only when the loop did not end with it) and summary.json, written by rank 0
    and returned on every rank."""
    loader = getattr(run.loaders, run.eval_split)
    if final is None or "confusion_matrix" not in final:  # resumed after the last epoch's checkpoint
        distributed.broadcast_buffers(run.eval_model, run.dist)
        final = evaluate(run.eval_model, loader, num_classes=run.info.num_classes, **run.eval_opts)
    summary = None
    if run.main:
        summary = build_summary(run.cfg, run.info, run.eval_model, run.device, state, final, run.eval_split)
        summary["precision"] = run.precision.as_dict()
        summary["skipped_files"] = run.loaders.skipped_files()  # unreadable image-folder files: skipped, never a crash
        # is the spatial gate doing anything? the spread of its maps on the first images of the evaluation split
        summary["spatial_maps"] = spatial_map_spread(run.eval_model, loader)
        if run.cfg.train.time_budget_min is not None:  # how much of the epochs' schedule the minutes allowed
            summary["time_budget"] = {"minutes": run.cfg.train.time_budget_min, "epochs_trained": state.epoch,
                                      "steps": state.step,
                                      "steps_of_epochs": len(run.loaders.train) * run.cfg.train.epochs,
                                      "train_minutes": sum(r["epoch_time_s"] for r in state.history) / 60.0}
        runs.write_summary(run.out, summary)
    summary = distributed.broadcast(summary, run.dist)
    if run.tb is not None:
        run.tb.close()
    return summary


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


def _tensorboard(out: Path):
    try:  # optional dependency (the tensorboard extra): imported only when asked for
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ConfigError("train.tensorboard=true needs the tensorboard extra (pip install 'cbamlab[tensorboard]')")
    return SummaryWriter(str(out / "tensorboard"))
