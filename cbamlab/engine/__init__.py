"""Training engine: typed config, optimizers, schedules, train/evaluate/fit, checkpoints, metrics, runtime."""
from .config import Config, config_from_dict, config_to_dict, load_config, split_sections
from .fit import fit
from .loop import DivergedError, evaluate, train_one_epoch

__all__ = ["Config", "load_config", "config_from_dict", "config_to_dict", "split_sections", "fit",
           "train_one_epoch", "evaluate", "DivergedError"]
