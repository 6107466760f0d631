"""Training engine: optimizers, schedules, train/evaluate/fit, metrics, runtime (the config: cbamlab.config)."""
from .fit import fit
from .loop import DivergedError, evaluate, train_one_epoch

__all__ = ["fit", "train_one_epoch", "evaluate", "DivergedError"]
