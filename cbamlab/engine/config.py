"""Typed run configuration: YAML sets it, `section.key=value` overrides it, every value is type- and range-checked.

The defaults are the quick digits preset, so `Config()` alone trains something useful in under a minute.
YAML files may carry extra top-level sections (`compare:`, `tune:`) read by the experiments code;
`load_config` sets them aside, `split_sections` hands them over, `config_from_dict` refuses them.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import yaml

from ..data.loaders import MEMORY_BUDGET_GB
from ..data.registry import check_val_fraction
from ..errors import CbamlabError, ConfigError, suggest
from ..models import model_info
from ..models.options import ARRANGEMENTS, ATTN_IMPLS, POOL_TYPES

EXTRA_SECTIONS = ("compare", "tune")
OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "step", "multistep", "cosine", "onecycle")
AMP = ("auto", "none", "bf16", "fp16")  # auto: runtime.resolve_precision picks per device
DEVICES = ("auto", "cpu", "cuda")
TTA = ("none", "hflip")
# Value bounds: a seed is a signed 64-bit integer for torch and numpy; a learning rate above MAX_LR or a weight decay
# above MAX_WEIGHT_DECAY diverges or erases the weights with every optimizer here (SGD, Adam, AdamW), so it is a typo.
MAX_SEED = 2**63 - 1
LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}")  # a variant label: also a folder name under a study
MAX_LR = 10.0
MAX_WEIGHT_DECAY = 1.0
# Field metadata of a key that does not change what a run computes (where it runs from, how it shows progress):
# fit resumes, compare reuses, tune and the report group across such differences. `result_differences` reads it.
NO_RESULT = {"affects_result": False}
# Field metadata of a key whose "auto" each machine resolves when a run starts (runtime.resolve_precision,
# select_device): a Zen 3 CPU trains train.amp=auto in float32, a Zen 4 one in bf16. What a run computes is the
# resolved value, so a run's result identity holds that in place of the configured one (`result_identity`); fit
# records it in the run's env.json.
PER_MACHINE = {"per_machine": True}


@dataclass
class ModelConfig:
    name: str = "resnet20_cbam"
    reduction: int = 16
    kernel_size: int = 7
    arrangement: str = "channel_first"
    spatial: bool = True               # false: CBAM's channel gate alone (the paper's channel-only ablation)
    spatial_bn_zero_init: bool = True
    pool_types: list = field(default_factory=lambda: ["avg", "max"])  # the channel gate's descriptors
    # auto | native | reference: one CBAM computed two ways (models/native/), as threads change only rounding;
    # auto runs the native operator where it is built and supports the call, else the reference
    attn_impl: str = field(default="auto", metadata=NO_RESULT)
    shortcut: Optional[str] = None
    width: int = 1                     # He et al.'s CIFAR nets: stage widths 16k/32k/64k (WRN-style)
    pretrained: Optional[str] = None   # a weights file whose backbone is loaded (load_backbone)
    num_classes: Optional[int] = field(default=None, metadata=NO_RESULT)  # None: from the dataset; set: must match
    in_chans: Optional[int] = field(default=None, metadata=NO_RESULT)     # None: from the dataset; set: must match
    # the name reports give this variant (compare sets it for a named variant); None: the model name, and the
    # attention options where runs of one model differ in them
    label: Optional[str] = field(default=None, metadata=NO_RESULT)


@dataclass
class DataConfig:
    name: str = "digits"
    root: Optional[str] = field(default=None, metadata=NO_RESULT)
    download: bool = field(default=False, metadata=NO_RESULT)
    image_size: Optional[int] = None
    val_fraction: float = 0.0
    augment: str = "auto"
    augment_overrides: dict = field(default_factory=dict)  # e.g. {hflip: false, crop_padding: 2}
    workers: int = field(default=2, metadata=NO_RESULT)
    # an image folder whose decoded images (all splits, at the training size) fit is decoded once into memory;
    # a larger one streams from its files (data/loaders.py). 0: always stream
    memory_budget_gb: float = MEMORY_BUDGET_GB
    index_cache: bool = field(default=False, metadata=NO_RESULT)  # image folder: reuse its file list while unchanged


@dataclass
class TrainConfig:
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


@dataclass
class OptimConfig:
    name: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    no_decay_bn_bias: bool = False     # SGD/Adam/AdamW: no weight decay on BN weights and biases
    betas: list = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8


@dataclass
class ScheduleConfig:
    name: str = "cosine"
    milestones: list = field(default_factory=list)  # epochs, for multistep: the article's [30, 60]
    step_size: float = 30.0            # epochs, for step
    gamma: float = 0.1
    warmup_epochs: float = 0.0
    warmup_start: float = 0.0          # warmup starts at this fraction of the lr
    min_lr: float = 0.0                # cosine ends here
    pct_start: float = 0.3             # onecycle: fraction of the steps spent rising
    div_factor: float = 25.0           # onecycle: initial lr = lr / div_factor
    final_div_factor: float = 1e4      # onecycle: final lr = initial lr / final_div_factor


@dataclass
class EvalConfig:
    tta: str = "none"                  # none | hflip: average the softmax of each image and its mirror image
    every: int = 1                     # evaluate the held-out splits every N epochs; the last epoch always


@dataclass
class Config:
    seed: int = 0
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


# element types of the untyped containers above
_ELEMENT = {("optim", "betas"): (float, 2), ("schedule", "milestones"): (float, None)}


def _hints(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _type_name(tp) -> str:
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string", list: "a list",
            dict: "a mapping"}.get(tp, getattr(tp, "__name__", str(tp)))


def _coerce(key: str, value: Any, tp, *, raw: str | None = None) -> Any:
    """Check `value` against the annotation `tp`; return it converted (int -> float, '1e-3' -> float)."""
    if typing.get_origin(tp) is typing.Union:
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        if type(None) in typing.get_args(tp) and (
                value is None or (isinstance(value, str) and value.lower() in ("none", "null"))):
            return None
        if len(inner) > 1:  # Union[bool, str]: the first type that takes the value
            for t in inner:
                try:
                    return _coerce(key, value, t)
                except ConfigError:
                    pass
            names = " or ".join(_type_name(t) for t in inner)
            raise ConfigError(f"{key}: expected {names}, got {value!r} ({type(value).__name__})")
        tp = inner[0]
    bad = ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r} ({type(value).__name__})")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise bad
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise bad
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string
            try:
                return float(value)
            except ValueError:
                raise bad from None
        raise bad
    if tp is str:
        if isinstance(value, str):
            return value
        if raw is not None:  # from --set: `data.root=123` means the string "123"
            return raw
        raise bad
    if tp is list:
        if isinstance(value, (list, tuple)):
            return list(value)
        raise bad
    if tp is dict:
        if isinstance(value, dict):
            return dict(value)
        raise bad
    raise bad


def _section_from_dict(name: str, cls, d: Any):
    if not isinstance(d, dict):
        raise ConfigError(f"{name}: expected a mapping of keys, got {d!r}")
    hints = _hints(cls)
    kw = {}
    for k, v in d.items():
        if k not in hints:
            raise ConfigError(f"unknown key '{name}.{k}'{suggest(k, hints)}; known: {', '.join(hints)}")
        kw[k] = _coerce(f"{name}.{k}", v, hints[k])
        elem = _ELEMENT.get((name, k))
        if elem:
            kw[k] = [_coerce(f"{name}.{k}[{i}]", x, elem[0]) for i, x in enumerate(kw[k])]
    return cls(**kw)


def with_defaults(d: dict) -> dict:
    """A recorded config mapping with this version's defaults for keys added since (as config.yaml is read back),
    so an older run or study is compared key for key; as recorded when this version cannot read it (a key since
    removed, a value since refused)."""
    try:
        return config_to_dict(config_from_dict(d))
    except CbamlabError:
        return d


def config_from_dict(d: dict | None) -> Config:
    """A `Config` from a nested mapping (as in YAML); missing keys keep their defaults. Validated."""
    d = dict(d or {})
    hints = _hints(Config)
    kw = {}
    for k, v in d.items():
        if k not in hints:
            hint = " (pop it with split_sections first)" if k in EXTRA_SECTIONS else suggest(k, hints)
            raise ConfigError(f"unknown key '{k}'{hint}; known: {', '.join(hints)}")
        if k == "seed":
            kw[k] = _coerce("seed", v, int)
        else:
            kw[k] = _section_from_dict(k, hints[k], v if v is not None else {})
    cfg = Config(**kw)
    validate(cfg)
    return cfg


def config_to_dict(cfg: Config) -> dict:
    """Plain nested dict (YAML-ready) of every value, defaults included."""
    return dataclasses.asdict(cfg)


def split_sections(d: dict, names=EXTRA_SECTIONS) -> tuple[dict, dict]:
    """Split a YAML mapping into (engine part, {name: section}) for the top-level `names` (compare:, tune:)."""
    d = dict(d or {})
    extras = {n: d.pop(n) for n in list(names) if n in d}
    return d, extras


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"no such config file: {path}")
    try:
        d = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {e.start}); "
                          "save it as UTF-8") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({' '.join(str(e).split())})") from None
    if d is None:
        return {}
    if not isinstance(d, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    return d


def apply_override(d: dict, override: str) -> None:
    """Apply one `section.key=value` (or `seed=3`) to the nested dict `d`, checking the key and the type."""
    if "=" not in override:
        raise ConfigError(f"override '{override}' is not of the form section.key=value")
    key, raw = (s.strip() for s in override.split("=", 1))
    try:
        value = yaml.safe_load(raw) if raw else ""
    except yaml.YAMLError:
        value = raw
    parts = key.split(".")
    top = _hints(Config)
    if parts[0] not in top:
        raise ConfigError(f"unknown key '{key}'{suggest(parts[0], top)}; known sections: {', '.join(top)}")
    if parts[0] == "seed":
        if len(parts) != 1:
            raise ConfigError(f"unknown key '{key}': seed has no sub-keys")
        d["seed"] = _coerce("seed", value, int)
        return
    section, cls = parts[0], top[parts[0]]
    hints = _hints(cls)
    if len(parts) < 2 or parts[1] not in hints:
        name = parts[1] if len(parts) > 1 else ""
        raise ConfigError(f"unknown key '{key}'{suggest(name, [f'{section}.{h}' for h in hints] + list(hints))}"
                          f"; known in {section}: {', '.join(hints)}")
    sec = d.setdefault(section, {}) or {}
    d[section] = sec
    if len(parts) == 3 and hints[parts[1]] is dict:  # data.augment_overrides.hflip=false
        sec.setdefault(parts[1], {})[parts[2]] = value
        return
    if len(parts) != 2:
        raise ConfigError(f"unknown key '{key}'")
    sec[parts[1]] = _coerce(key, value, hints[parts[1]], raw=raw)


def load_config(path_or_dict: str | Path | dict | None = None, overrides=()) -> Config:
    """Defaults <- YAML file or mapping <- `section.key=value` overrides; checked. Extra sections are set aside."""
    if path_or_dict is None:
        d = {}
    elif isinstance(path_or_dict, dict):
        d = copy.deepcopy(path_or_dict)  # overrides write into nested mappings: never into the caller's
    else:
        d = read_yaml(path_or_dict)
    d, _ = split_sections(d)
    d = {k: (dict(v) if isinstance(v, dict) else v) for k, v in d.items()}
    for o in overrides or ():
        apply_override(d, o)
    return config_from_dict(d)


def dump_config(cfg: Config) -> str:
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False)


def diff_configs(a: Config, b: Config) -> list[str]:
    """Dotted keys whose values differ between two configs."""
    da, db = config_to_dict(a), config_to_dict(b)
    out = ["seed"] if da["seed"] != db["seed"] else []
    for sec in da:
        if isinstance(da[sec], dict):
            out += [f"{sec}.{k}" for k in da[sec] if da[sec][k] != db[sec][k]]
    return out


def _keys_where(declared) -> list[str]:
    """Dotted keys of the config's sections whose field metadata satisfies `declared`, in declaration order."""
    return [f"{section.name}.{f.name}" for section in dataclasses.fields(Config)
            if dataclasses.is_dataclass(section.default_factory)
            for f in dataclasses.fields(section.default_factory) if declared(f.metadata)]


def non_result_keys() -> set[str]:
    """Dotted keys declared `metadata=NO_RESULT`: they do not change what a run computes."""
    return set(_keys_where(lambda m: not m.get("affects_result", True)))


def per_machine_keys() -> list[str]:
    """Dotted keys declared `metadata=PER_MACHINE`: "auto" resolves per machine (train.amp, train.channels_last,
    train.device)."""
    return _keys_where(lambda m: m.get("per_machine", False))


def resolved_values(amp: str | None, eval_amp: str | None, channels_last: bool | None,
                    device_type: str | None) -> dict:
    """The per-machine keys as a run resolved them, in the form a result identity compares: the autocast dtype it
    trained in, with the one it evaluated in where they differ ("bf16 (evaluation: none)": only train.amp=auto
    does that), the memory layout and the device type ("cpu", "cuda"). None: not known."""
    if amp is not None and eval_amp is not None and eval_amp != amp:
        amp = f"{amp} (evaluation: {eval_amp})"
    return {"train.amp": amp, "train.channels_last": channels_last, "train.device": device_type}


def result_part(d: dict) -> dict:
    """A copy of the config mapping `d` without the keys that do not change a result (keys this version does
    not know are kept: a run written by another version is compared on everything it recorded)."""
    skip = non_result_keys()
    return {k: ({kk: vv for kk, vv in v.items() if f"{k}.{kk}" not in skip} if isinstance(v, dict) else v)
            for k, v in d.items()}


def result_identity(cfg: Config | dict, resolved: dict | None = None) -> dict:
    """What a run's result depends on, as flat dotted keys: the config's result part (`result_part`) and, given
    `resolved` (`resolved_values` of the machine the run ran or runs on), each per-machine key's resolved value in
    place of its configured one. So "auto" that trained in bf16 on one machine and in float32 on another differs,
    and train.amp=none pinned on one is train.amp=auto resolved to float32 on the other; a value not known (None)
    equals only another not known."""
    flat = _flat(result_part(config_to_dict(cfg) if isinstance(cfg, Config) else cfg))
    if resolved is not None:
        flat.update({k: resolved.get(k) for k in per_machine_keys()})
    return flat


def result_differences(a: Config | dict, b: Config | dict,
                       resolved: tuple[dict | None, dict | None] | None = None) -> list[str]:
    """Dotted keys whose values differ between two configs (or config mappings) in a way that changes a result;
    with `resolved` = (a's, b's) what each resolved per machine (`result_identity`), else the configs alone.
    The one rule behind fit's resume, compare's reuse and shard check, tune's base-config check and the report's
    grouping."""
    ra, rb = resolved if resolved is not None else (None, None)
    if resolved is not None:  # a side that records nothing is "not known" on every per-machine key
        ra, rb = ra or {}, rb or {}
    fa, fb = result_identity(a, ra), result_identity(b, rb)
    return [k for k in sorted(set(fa) | set(fb)) if fa.get(k, _MISSING) != fb.get(k, _MISSING)]


def per_machine_note(changed: list[str], theirs: dict | None, ours: dict | None) -> str:
    """For a refusal that names `changed`: what the per-machine keys among them resolved to in the existing run or
    study (`theirs`) and here (`ours`), and the --set flags that pin them here to its values; "" when none is
    among them."""
    keys = [k for k in per_machine_keys() if k in changed]
    if not keys:
        return ""
    theirs, ours = theirs or {}, ours or {}
    seen = "; ".join(f"{k} {_shown(theirs.get(k))} there, {_shown(ours.get(k))} here" for k in keys)
    pins = [f"--set {k}={_as_override(theirs.get(k))}" for k in keys if _pinnable(k, theirs.get(k))]
    how = [f"pin {'it' if len(pins) == 1 else 'them'} to its values: {' '.join(pins)}"] if pins else []
    how += [f"{k} cannot be pinned to {_shown(theirs.get(k))}: continue on a machine that resolves it so"
            for k in keys if not _pinnable(k, theirs.get(k))]
    return f": {seen}; \"auto\" resolves per machine, so {'; '.join(how)}"


def _shown(value) -> str:
    return "not recorded" if value is None else repr(value)


def _as_override(value) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _pinnable(key: str, value) -> bool:
    """Whether `--set key=value` sets `value` (a resolved "bf16 (evaluation: none)" or an unknown one does not)."""
    if value is None:
        return False
    try:
        load_config(None, [f"{key}={_as_override(value)}"])
    except ConfigError:
        return False
    return True


def result_hash(cfg: Config | dict) -> str:
    """sha256 of the config's result part (`result_part`, canonical JSON): equal for configs that give the same
    result, so a run directory's state records it and a resume compares it."""
    d = result_part(config_to_dict(cfg) if isinstance(cfg, Config) else cfg)
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()


_MISSING = object()


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v and not prefix:  # sections; mappings inside a section are values
            out.update(_flat(v, f"{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _check_finite(cfg: Config) -> None:
    """Every number of the config is finite: inf and nan pass some range checks (inf > 0) and then fail, or
    silently misbehave, inside torch."""
    d = config_to_dict(cfg)
    for sec, values in d.items():
        for k, v in (values.items() if isinstance(values, dict) else [(None, values)]):
            key = f"{sec}.{k}" if k is not None else sec
            for x in (v if isinstance(v, list) else [v]):
                if isinstance(x, float) and not math.isfinite(x):
                    raise ConfigError(f"{key}={v!r}: must be a finite number")


def _check(ok: bool, key: str, msg: str, value) -> None:
    if not ok:
        raise ConfigError(f"{key}={value!r}: {msg}")


def _choice(key: str, value: str, known) -> None:
    if value not in known:
        raise ConfigError(f"unknown {key} '{value}'{suggest(value, known)}; known: {', '.join(known)}")


def validate(cfg: Config) -> Config:
    """Range and choice checks; each error names the key and the value."""
    m, d, t, o, s = cfg.model, cfg.data, cfg.train, cfg.optim, cfg.schedule
    _check_finite(cfg)
    _check(0 <= cfg.seed <= MAX_SEED, "seed", f"must be in 0..2^63-1 ({MAX_SEED})", cfg.seed)
    model_info(m.name)  # an unknown model is refused here, before anything runs or logs
    _check(m.reduction >= 1, "model.reduction", "must be >= 1", m.reduction)
    _check(m.kernel_size >= 1 and m.kernel_size % 2 == 1, "model.kernel_size", "must be a positive odd number",
           m.kernel_size)
    _choice("model.arrangement", m.arrangement, ARRANGEMENTS)
    _choice("model.attn_impl", m.attn_impl, ATTN_IMPLS)
    _check(len(m.pool_types) >= 1 and len(set(m.pool_types)) == len(m.pool_types)
           and all(p in POOL_TYPES for p in m.pool_types), "model.pool_types",
           f"must be a non-empty list of distinct pool types from {', '.join(POOL_TYPES)}", m.pool_types)
    _check(m.width >= 1, "model.width", "must be >= 1", m.width)
    _check(m.label is None or LABEL.fullmatch(m.label) is not None, "model.label",
           "must be 1-64 letters, digits, '_', '-', '.' or '+', starting with a letter or digit (it names a folder)",
           m.label)
    for k in ("num_classes", "in_chans"):
        v = getattr(m, k)
        _check(v is None or v >= 1, f"model.{k}", "must be >= 1 (or null: from the dataset)", v)
    _check(d.image_size is None or d.image_size >= 1, "data.image_size", "must be >= 1", d.image_size)
    check_val_fraction(d.val_fraction, "data.val_fraction", ConfigError)  # the data layer's one rule
    _check(d.workers >= 0, "data.workers", "must be >= 0", d.workers)
    _check(math.isfinite(d.memory_budget_gb) and d.memory_budget_gb >= 0, "data.memory_budget_gb",
           "must be a number of GB >= 0 (0: always stream image folders from their files)", d.memory_budget_gb)
    _check(t.epochs >= 1, "train.epochs", "must be >= 1", t.epochs)
    _check(t.batch_size >= 1, "train.batch_size", "must be >= 1", t.batch_size)
    _check(t.eval_batch_size is None or t.eval_batch_size >= 1, "train.eval_batch_size", "must be >= 1",
           t.eval_batch_size)
    _check(t.eval_test or d.val_fraction > 0, "train.eval_test", "false needs data.val_fraction > 0 "
           "(otherwise nothing is evaluated)", t.eval_test)
    _check(0.0 <= t.label_smoothing < 1.0, "train.label_smoothing", "must be in [0, 1)", t.label_smoothing)
    _check(t.grad_clip is None or t.grad_clip > 0, "train.grad_clip", "must be > 0 (or null: off)", t.grad_clip)
    _choice("train.amp", t.amp, AMP)
    _check(t.channels_last in (True, False, "auto"), "train.channels_last", "must be true, false or auto",
           t.channels_last)
    _choice("train.device", t.device.split(":")[0], DEVICES)
    _check(t.threads >= 0, "train.threads", "must be >= 0 (0: automatic)", t.threads)
    _check(0 < t.ema_decay < 1, "train.ema_decay", "must be in (0, 1)", t.ema_decay)
    _choice("eval.tta", cfg.eval.tta, TTA)
    _check(cfg.eval.every >= 1, "eval.every", "must be >= 1 (epochs between evaluations; the last is always "
           "evaluated)", cfg.eval.every)
    _choice("optim.name", o.name, OPTIMIZERS)
    _check(0 < o.lr <= MAX_LR, "optim.lr", f"must be > 0 and <= {MAX_LR:g}", o.lr)
    _check(0.0 <= o.momentum < 1.0, "optim.momentum", "must be in [0, 1)", o.momentum)
    _check(not (o.nesterov and o.momentum == 0), "optim.nesterov", "needs optim.momentum > 0", o.nesterov)
    _check(0 <= o.weight_decay <= MAX_WEIGHT_DECAY, "optim.weight_decay", f"must be >= 0 and <= {MAX_WEIGHT_DECAY:g}",
           o.weight_decay)
    _check(len(o.betas) == 2 and all(0 <= b < 1 for b in o.betas), "optim.betas", "must be two numbers in [0, 1)",
           o.betas)
    _check(o.eps > 0, "optim.eps", "must be > 0", o.eps)
    _choice("schedule.name", s.name, SCHEDULES)
    _check(all(x > 0 for x in s.milestones), "schedule.milestones", "must be positive epochs", s.milestones)
    _check(list(s.milestones) == sorted(s.milestones), "schedule.milestones", "must be increasing", s.milestones)
    _check(not (s.name == "multistep" and not s.milestones), "schedule.milestones", "multistep needs milestones",
           s.milestones)
    _check(s.step_size > 0, "schedule.step_size", "must be > 0 epochs", s.step_size)
    _check(0 < s.gamma <= 1, "schedule.gamma", "must be in (0, 1]", s.gamma)
    _check(0 <= s.warmup_epochs < t.epochs, "schedule.warmup_epochs", f"must be in [0, train.epochs={t.epochs})",
           s.warmup_epochs)
    _check(0 <= s.warmup_start <= 1, "schedule.warmup_start", "must be in [0, 1]", s.warmup_start)
    _check(0 <= s.min_lr <= o.lr, "schedule.min_lr", f"must be in [0, optim.lr={o.lr}]", s.min_lr)
    _check(0 < s.pct_start < 1, "schedule.pct_start", "must be in (0, 1)", s.pct_start)
    _check(s.div_factor >= 1 and s.final_div_factor >= 1, "schedule.div_factor",
           "div_factor and final_div_factor must be >= 1", (s.div_factor, s.final_div_factor))
    return cfg
