"""The run configuration's schema: one dataclass per section, each checking its own fields beside them.

The defaults are the quick digits preset, so `Config()` alone trains something useful in under a minute. A
section checks its values when it is built (`__post_init__`) and again in `validate`, after code changed it;
`Config` adds the checks that span sections. Each error names the key and the value.

A key's field metadata (keys.py) says how results treat it: `NO_RESULT` (it does not change what a run
computes), `PER_MACHINE` ("auto" resolves per machine); `items` types a list's elements. The model section holds one
`AttnOptions` (models/options.py: the attention options' defaults and checks, in one place) whose fields are
keys of the section itself, `model.kernel_size` and not `model.attn.kernel_size` (`inline`); `section_keys`
lists every section's keys as YAML, `--set` and the result identity see them.
"""
from __future__ import annotations

import math
import re
import typing
from dataclasses import dataclass, field
from typing import ClassVar, Optional, Union

from ..data.loaders import MEMORY_BUDGET_GB
from ..data.registry import check_val_fraction
from ..errors import ConfigError, suggest
from ..models import model_info
from ..models.options import AttnOptions
from .choices import AMP, DEVICES, OPTIMIZERS, SCHEDULES, TTA
from .keys import NO_RESULT, PER_MACHINE, inline, items, section_keys

# Value bounds: a seed is a signed 64-bit integer for torch and numpy; a learning rate above MAX_LR or a weight decay
# above MAX_WEIGHT_DECAY diverges or erases the weights with every optimizer here (SGD, Adam, AdamW), so it is a typo.
MAX_SEED = 2**63 - 1
MAX_LR = 10.0
MAX_WEIGHT_DECAY = 1.0
MAX_BN_LR_SCALE = 1000.0  # optim.bn_lr_scale: airbench trains BatchNorm biases at 64x; beyond 1000x is a typo
LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}")  # a variant label: also a folder name under a study


def _check(ok: bool, key: str, msg: str, value) -> None:
    if not ok:
        raise ConfigError(f"{key}={value!r}: {msg}")


def _choice(key: str, value: str, known) -> None:
    if value not in known:
        raise ConfigError(f"unknown {key} '{value}'{suggest(value, known)}; known: {', '.join(known)}")


class Section:
    """A config section: `NAME` is its key in the config; `check` holds the checks of its own fields, run with a
    check that every number is finite when it is built and by `validate`."""

    NAME: ClassVar[str] = ""

    def __post_init__(self):
        self.validate()

    def validate(self):
        """Every number finite (inf and nan pass some range checks, inf > 0, and then fail or silently misbehave
        inside torch), then the section's own checks; returns the section."""
        for key in section_keys(type(self)):
            value = key.get(self)
            for x in (value if isinstance(value, (list, tuple)) else [value]):
                if isinstance(x, float) and not math.isfinite(x):
                    raise ConfigError(f"{self.NAME}.{key.name}={value!r}: must be a finite number")
        self.check()
        return self

    def check(self) -> None:
        """The range and choice checks of this section's fields."""


@dataclass
class ModelConfig(Section):
    NAME: ClassVar[str] = "model"
    name: str = "resnet20_cbam"
    # the attention options, keys of this section (model.reduction, model.kernel_size, model.arrangement,
    # model.spatial, model.spatial_bn_zero_init, model.pool_types, model.attn_impl): models.options.AttnOptions
    # holds their defaults and checks. attn_impl (auto | native | reference) is one CBAM computed two ways
    # (models/native/), as threads change only rounding. keep_map is the explainer's, not the config's
    attn: AttnOptions = field(default_factory=AttnOptions, metadata=inline(omit=("keep_map",),
                                                                           keys={"attn_impl": NO_RESULT}))
    shortcut: Optional[str] = None
    width: int = 1                     # He et al.'s CIFAR nets: stage widths 16k/32k/64k (WRN-style)
    pretrained: Optional[str] = None   # a weights file whose backbone is loaded (load_backbone)
    num_classes: Optional[int] = field(default=None, metadata=NO_RESULT)  # None: from the dataset; set: must match
    in_chans: Optional[int] = field(default=None, metadata=NO_RESULT)     # None: from the dataset; set: must match
    # the name reports give this variant (compare sets it for a named variant); None: the model name, and the
    # attention options where runs of one model differ in them
    label: Optional[str] = field(default=None, metadata=NO_RESULT)

    def validate(self):
        if not isinstance(self.attn, AttnOptions):
            raise ConfigError(f"model.attn: expected an AttnOptions, got {self.attn!r}")
        return super().validate()

    def check(self) -> None:
        model_info(self.name)  # an unknown model is refused here, before anything runs or logs
        _check(not self.attn.keep_map, "model.attn.keep_map", "not a config key (explain keeps the maps it reads)",
               self.attn.keep_map)
        _check(self.width >= 1, "model.width", "must be >= 1", self.width)
        _check(self.label is None or LABEL.fullmatch(self.label) is not None, "model.label",
               "must be 1-64 letters, digits, '_', '-', '.' or '+', starting with a letter or digit (it names a "
               "folder)", self.label)
        for k in ("num_classes", "in_chans"):
            v = getattr(self, k)
            _check(v is None or v >= 1, f"model.{k}", "must be >= 1 (or null: from the dataset)", v)


@dataclass
class DataConfig(Section):
    NAME: ClassVar[str] = "data"
    name: str = "digits"
    root: Optional[str] = field(default=None, metadata=NO_RESULT)
    download: bool = field(default=False, metadata=NO_RESULT)
    image_size: Optional[int] = None
    val_fraction: float = 0.0
    augment: str = "auto"
    augment_overrides: dict = field(default_factory=dict)  # e.g. {hflip: alternate, crop_padding: 2} (data.presets)
    workers: int = field(default=2, metadata=NO_RESULT)
    # an image folder whose decoded images (all splits, at the training size) fit is decoded once into memory;
    # a larger one streams from its files (data/loaders.py). 0: always stream
    memory_budget_gb: float = MEMORY_BUDGET_GB
    index_cache: bool = field(default=False, metadata=NO_RESULT)  # image folder: reuse its file list while unchanged

    def check(self) -> None:
        _check(self.image_size is None or self.image_size >= 1, "data.image_size", "must be >= 1", self.image_size)
        check_val_fraction(self.val_fraction, "data.val_fraction", ConfigError)  # the data layer's one rule
        _check(self.workers >= 0, "data.workers", "must be >= 0", self.workers)
        _check(self.memory_budget_gb >= 0, "data.memory_budget_gb",
               "must be a number of GB >= 0 (0: always stream image folders from their files)", self.memory_budget_gb)


@dataclass
class TrainConfig(Section):
    NAME: ClassVar[str] = "train"
    epochs: int = 15
    batch_size: int = 64
    eval_batch_size: Optional[int] = None
    eval_test: bool = True            # False: the test split is never loaded (tuning)
    label_smoothing: float = 0.0
    grad_clip: Optional[float] = None  # max global grad norm
    amp: str = field(default="auto", metadata=PER_MACHINE)  # auto | none | bf16 (CPU, GPU) | fp16 (GPU, grad scaler)
    channels_last: Union[bool, str] = field(default="auto", metadata=PER_MACHINE)  # true | false | auto
    compile: bool = False
    device: str = field(default="auto", metadata=PER_MACHINE)
    threads: int = field(default=0, metadata=NO_RESULT)  # 0: one per available core
    deterministic: bool = True
    progress: bool = field(default=True, metadata=NO_RESULT)  # a tqdm bar, shown only on a terminal
    tensorboard: bool = field(default=False, metadata=NO_RESULT)
    ema: bool = False                  # evaluate and save an EMA of the weights (engine/ema.py)
    ema_decay: float = 0.999
    ema_warmup: bool = True            # timm ModelEmaV3 warm-up: decay min(ema_decay, 1 - (1 + step)^(-2/3))
    sync_bn: bool = False              # under torchrun: BatchNorm statistics of the global batch (SyncBatchNorm)
    # minutes of training passes: the schedule runs its course in these or in train.epochs, whichever ends first
    time_budget_min: Optional[float] = None  # (engine/budget.py); null: off

    def check(self) -> None:
        _check(self.epochs >= 1, "train.epochs", "must be >= 1", self.epochs)
        _check(self.batch_size >= 1, "train.batch_size", "must be >= 1", self.batch_size)
        _check(self.eval_batch_size is None or self.eval_batch_size >= 1, "train.eval_batch_size", "must be >= 1",
               self.eval_batch_size)
        _check(0.0 <= self.label_smoothing < 1.0, "train.label_smoothing", "must be in [0, 1)", self.label_smoothing)
        _check(self.grad_clip is None or self.grad_clip > 0, "train.grad_clip", "must be > 0 (or null: off)",
               self.grad_clip)
        _choice("train.amp", self.amp, AMP)
        _check(self.channels_last in (True, False, "auto"), "train.channels_last", "must be true, false or auto",
               self.channels_last)
        _choice("train.device", self.device.split(":")[0], DEVICES)
        _check(self.threads >= 0, "train.threads", "must be >= 0 (0: automatic)", self.threads)
        _check(0 < self.ema_decay < 1, "train.ema_decay", "must be in (0, 1)", self.ema_decay)
        _check(self.time_budget_min is None or self.time_budget_min > 0, "train.time_budget_min",
               "must be a number of minutes > 0 (or null: off)", self.time_budget_min)


@dataclass
class OptimConfig(Section):
    NAME: ClassVar[str] = "optim"
    name: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    no_decay_bn_bias: bool = False     # SGD/Adam/AdamW: no weight decay on BN weights and biases
    # BatchNorm weights and biases train at lr x this, their weight decay / this (airbench's bias_scaler); 1: off
    bn_lr_scale: float = 1.0
    betas: list = field(default_factory=lambda: [0.9, 0.999], metadata=items(float))
    eps: float = 1e-8

    def check(self) -> None:
        _choice("optim.name", self.name, OPTIMIZERS)
        _check(0 < self.lr <= MAX_LR, "optim.lr", f"must be > 0 and <= {MAX_LR:g}", self.lr)
        _check(0.0 <= self.momentum < 1.0, "optim.momentum", "must be in [0, 1)", self.momentum)
        _check(not (self.nesterov and self.momentum == 0), "optim.nesterov", "needs optim.momentum > 0",
               self.nesterov)
        _check(0 <= self.weight_decay <= MAX_WEIGHT_DECAY, "optim.weight_decay",
               f"must be >= 0 and <= {MAX_WEIGHT_DECAY:g}", self.weight_decay)
        _check(len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas), "optim.betas",
               "must be two numbers in [0, 1)", self.betas)
        _check(self.eps > 0, "optim.eps", "must be > 0", self.eps)
        _check(0 < self.bn_lr_scale <= MAX_BN_LR_SCALE, "optim.bn_lr_scale",
               f"must be > 0 and <= {MAX_BN_LR_SCALE:g} (1: BatchNorm at the schedule's lr)", self.bn_lr_scale)


@dataclass
class ScheduleConfig(Section):
    NAME: ClassVar[str] = "schedule"
    name: str = "cosine"
    # epochs, for multistep: the article's [30, 60]
    milestones: list = field(default_factory=list, metadata=items(float))
    step_size: float = 30.0            # epochs, for step
    gamma: float = 0.1
    warmup_epochs: float = 0.0
    warmup_start: float = 0.0          # warmup starts at this fraction of the lr
    min_lr: float = 0.0                # cosine ends here
    pct_start: float = 0.3             # onecycle: fraction of the steps spent rising
    div_factor: float = 25.0           # onecycle: initial lr = lr / div_factor
    final_div_factor: float = 1e4      # onecycle: final lr = initial lr / final_div_factor

    def check(self) -> None:
        m = self.milestones
        _choice("schedule.name", self.name, SCHEDULES)
        _check(all(x > 0 for x in m), "schedule.milestones", "must be positive epochs", m)
        _check(list(m) == sorted(m), "schedule.milestones", "must be increasing", m)
        _check(not (self.name == "multistep" and not m), "schedule.milestones", "multistep needs milestones", m)
        _check(self.step_size > 0, "schedule.step_size", "must be > 0 epochs", self.step_size)
        _check(0 < self.gamma <= 1, "schedule.gamma", "must be in (0, 1]", self.gamma)
        _check(0 <= self.warmup_start <= 1, "schedule.warmup_start", "must be in [0, 1]", self.warmup_start)
        # warmup_epochs and min_lr: Config.check (their bounds are train.epochs and optim.lr)
        _check(0 < self.pct_start < 1, "schedule.pct_start", "must be in (0, 1)", self.pct_start)
        _check(self.div_factor >= 1 and self.final_div_factor >= 1, "schedule.div_factor",
               "div_factor and final_div_factor must be >= 1", (self.div_factor, self.final_div_factor))


@dataclass
class EvalConfig(Section):
    NAME: ClassVar[str] = "eval"
    # none | hflip: the mean softmax of each image and its mirror | hflip_translate: those two and both shifted by
    # one pixel either way (airbench's six views, engine.loop.mirror_translate)
    tta: str = "none"
    every: int = 1                     # evaluate the held-out splits every N epochs; the last epoch always

    def check(self) -> None:
        _choice("eval.tta", self.tta, TTA)
        _check(self.every >= 1, "eval.every", "must be >= 1 (epochs between evaluations; the last is always "
               "evaluated)", self.every)


@dataclass
class Config:
    seed: int = 0
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self):
        self.check()

    def check(self) -> None:
        """The seed's range and the checks that span sections (each section checks its own fields)."""
        t, s = self.train, self.schedule
        _check(0 <= self.seed <= MAX_SEED, "seed", f"must be in 0..2^63-1 ({MAX_SEED})", self.seed)
        _check(t.eval_test or self.data.val_fraction > 0, "train.eval_test", "false needs data.val_fraction > 0 "
               "(otherwise nothing is evaluated)", t.eval_test)
        _check(0 <= s.warmup_epochs < t.epochs, "schedule.warmup_epochs",
               f"must be in [0, train.epochs={t.epochs})", s.warmup_epochs)
        _check(0 <= s.min_lr <= self.optim.lr, "schedule.min_lr", f"must be in [0, optim.lr={self.optim.lr}]",
               s.min_lr)


# name -> section dataclass, in the config's order
SECTIONS: dict[str, type] = {n: t for n, t in typing.get_type_hints(Config).items() if n != "seed"}


def validate(cfg: Config) -> Config:
    """Every check again, for a config code changed after it was built: each section's, then the config's."""
    for name in SECTIONS:
        getattr(cfg, name).validate()
    cfg.check()
    return cfg
