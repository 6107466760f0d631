"""One comparison over several machines (`--shard I/N`) and several runs at once on one machine (`--workers K`).

A study's runs live in one folder on a shared filesystem. `--shard I/N` (0 <= I < N, 0-based, as Slurm's
`--array=0-{N-1}` numbers its tasks: `--shard $SLURM_ARRAY_TASK_ID/N`) takes the runs whose position in the
study's plan (dataset, seed, variant order) is I modulo N: a disjoint, deterministic share, and the N shares
cover the study. Each run is claimed before it is trained (`runs.claim_run_dir`: an OS lock held while it
trains), so two processes never train one run even when their shares overlap (the same shard started twice, or
an unsharded compare beside the shards); a run held by another process is left to it, and a claim left by a
killed process is taken over, so rerunning a killed shard finishes its runs. `cbamlab report OUT` joins the
shards; the last shard to finish writes the report itself.

The first process of a study records its recipe, grid and what its machine resolves the per-machine keys to
(train.amp, train.channels_last, train.device: "auto" is bf16 on one CPU, float32 on another) in
OUT/compare.json (`runs.check_study`); every later one (any shard) is checked against it before anything is
written, so a shard started with another config, or on a machine that resolves "auto" otherwise, is refused
with the keys that differ instead of adding runs of another recipe.

`--workers K` trains K runs at once, each claimed and trained by `train_one` in a worker of `pool.py` (cores // K
intra-op threads each), instead of K runs fighting over every core.
"""
from __future__ import annotations

import logging
import re

from .. import engine  # engine.fit is looked up at call time (tests stand in for it)
from ..errors import ConfigError
from ..runs import CONFIG, RunDirInUse, claim_run_dir, is_complete, read_summary

log = logging.getLogger(__name__)


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """'I/N' -> (I, N) with 0 <= I < N (0-based); None for None."""
    if text is None:
        return None
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
    if not m:
        raise ConfigError(f"--shard {text!r}: expected I/N, e.g. 0/4 (I from 0 to N-1, as $SLURM_ARRAY_TASK_ID "
                          "with --array=0-3)")
    i, n = int(m[1]), int(m[2])
    if n < 1 or i >= n:
        raise ConfigError(f"--shard {text}: I must be in 0..N-1 (0-based), and N >= 1")
    return i, n


def take_shard(runs: list, shard: tuple[int, int] | None) -> list:
    """The runs at positions I, I + N, I + 2N, ... of the plan."""
    if shard is None:
        return list(runs)
    i, n = shard
    return [r for j, r in enumerate(runs) if j % n == i]


def train_one(run) -> tuple[str, object]:
    """The per-run step: claim the run, then train or resume it, unless it is finished or held elsewhere.
    Returns ("trained" | "resumed", summary), ("reused", summary) or ("busy", message)."""
    try:
        with claim_run_dir(run.path):
            if is_complete(run.path):  # finished by another process meanwhile
                return "reused", read_summary(run.path)
            started = (run.path / CONFIG).is_file()
            return ("resumed" if started else "trained"), engine.fit(run.cfg, run.path, resume=started)
    except RunDirInUse as e:
        return "busy", str(e)
