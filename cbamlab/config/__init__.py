"""The typed run configuration: YAML sets it, `section.key=value` overrides it, every value is type- and
range-checked; and what of it a run's result depends on.

    schema.py    the sections (ModelConfig, DataConfig, TrainConfig, OptimConfig, ScheduleConfig, EvalConfig)
                 and Config, each checking its own fields beside them; the model section holds one
                 models.options.AttnOptions
    keys.py      a key's declaration: field metadata (NO_RESULT, PER_MACHINE, items, inline), section_keys
    choices.py   the names optim.name, schedule.name, eval.tta, train.amp and train.device choose among: the
                 engine's tables that build them are keyed by these lists
    coerce.py    mappings to configs and back: typed coercion, the flat section mapping YAML holds
    load.py      read_yaml, split_sections, the one `key=value` override parser, load_config, dump_config
    identity.py  result identity: result_part, result_identity, result_differences, result_hash, ...

Its layer sits on models and data, under runs and the engine: nothing here imports them.
"""
from .choices import AMP, DEVICES, OPTIMIZERS, PRECISIONS, SCHEDULES, TTA, keyed
from .coerce import EXTRA_SECTIONS, config_from_dict, config_to_dict, with_defaults
from .identity import (diff_configs, non_result_keys, per_machine_keys, per_machine_note, resolved_values,
                       result_differences, result_hash, result_identity, result_part)
from .keys import NO_RESULT, PER_MACHINE, Key, section_keys
from .load import (Override, apply_override, dump_config, load_config, parse_override, read_yaml,
                   section_overrides, split_sections)
from .schema import (LABEL, SECTIONS, Config, DataConfig, EvalConfig, ModelConfig, OptimConfig, ScheduleConfig,
                     TrainConfig, validate)

__all__ = [
    "Config", "ModelConfig", "DataConfig", "TrainConfig", "OptimConfig", "ScheduleConfig", "EvalConfig",
    "SECTIONS", "Key", "section_keys", "validate", "NO_RESULT", "PER_MACHINE", "LABEL",
    "OPTIMIZERS", "SCHEDULES", "TTA", "PRECISIONS", "AMP", "DEVICES", "keyed",
    "EXTRA_SECTIONS", "config_from_dict", "config_to_dict", "with_defaults",
    "Override", "parse_override", "apply_override", "section_overrides", "split_sections", "read_yaml",
    "load_config", "dump_config",
    "non_result_keys", "per_machine_keys", "resolved_values", "result_part", "result_identity",
    "result_differences", "per_machine_note", "result_hash", "diff_configs",
]
