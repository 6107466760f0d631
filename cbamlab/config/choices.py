"""The names a config key chooses among, each list in one place.

The config checks a value against its list; the engine's table that builds or applies each name is keyed by
the same list (`keyed` refuses a table whose names differ, when its module is imported), so a name added to a
table and not here, or here and not to the table, fails at once rather than being refused or accepted by
one side alone. The config sits under the engine and never imports it: the lists live here, the tables there.
"""
from __future__ import annotations

OPTIMIZERS = ("sgd", "adam", "adamw")                             # optim.name: engine.optim.OPTIMIZERS
SCHEDULES = ("constant", "step", "multistep", "cosine", "onecycle")  # schedule.name: engine.schedules.SCHEDULES
TTA = ("none", "hflip", "hflip_translate")                        # eval.tta: engine.loop.TTA_VIEWS
PRECISIONS = ("none", "bf16", "fp16")                             # engine.runtime.AUTOCAST_DTYPES
AMP = ("auto", *PRECISIONS)  # train.amp; auto: engine.runtime.resolve_precision picks a precision per device
DEVICES = ("auto", "cpu", "cuda")                                 # train.device (cuda:N too): runtime.select_device


def keyed(table: dict, names: tuple, what: str) -> dict:
    """`table` ({name: builder}), checked to hold exactly `names`, in their order: the engine's tables call this
    on their config list, so the two are one list."""
    if tuple(table) != tuple(names):
        raise RuntimeError(f"the {what} table has {', '.join(table)} but the config's list has {', '.join(names)} "
                           "(cbamlab.config.choices): they must be one list")
    return table
