"""A learning-rate schedule fitted to a time budget (`train.time_budget_min`).

The schedules of engine/schedules.py are functions of the optimizer step over `train.epochs` epochs. Under a
budget the step they are asked for is the run's progress, the larger of two fractions: the steps taken out of
`train.epochs` epochs' worth, and the training time spent out of the budget. So the schedule runs its whole course
(a one-cycle's warm-up, peak and anneal to the end) in whichever ends first, the epochs or the minutes, and the
run stops there: a slower machine takes fewer steps with the same shape of schedule instead of being cut off
mid-schedule. The time is the training passes' (each epoch's `epoch_time_s`, the report's minutes), evaluation not
counted.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable


@dataclass
class TimeBudget:
    """One epoch's view of the budget: `seconds` in all, `spent_before` of them in the earlier epochs' training
    passes, `total_steps` the steps of `train.epochs` epochs. `clock` is started by `start()` (the pass's start)."""

    seconds: float
    total_steps: int
    spent_before: float = 0.0
    clock: Callable[[], float] = time.perf_counter
    started: float | None = field(default=None, repr=False)

    def start(self) -> "TimeBudget":
        self.started = self.clock()
        return self

    def spent_s(self) -> float:
        """Training seconds spent so far, this pass included."""
        return self.spent_before + (self.clock() - self.started if self.started is not None else 0.0)

    def progress(self, step: int) -> float:
        """max(step / total_steps, spent / seconds), at most 1."""
        return min(max(step / max(self.total_steps, 1), self.spent_s() / self.seconds), 1.0)

    def schedule_step(self, step: int) -> int:
        """The step the schedule is evaluated at: the progress in steps of `train.epochs` (>= `step`, and at most
        the schedule's last step)."""
        return min(max(step, int(self.progress(step) * self.total_steps)), max(self.total_steps - 1, 0))

    def spent(self, step: int) -> bool:
        """The budget (or the epochs' steps) is used up: the run stops after this step."""
        return self.progress(step) >= 1.0


def budget_for(minutes: float | None, total_steps: int, history: list[dict]) -> TimeBudget | None:
    """The budget of the next epoch after `history` (the metrics rows so far, their `epoch_time_s`), or None when
    the run has no budget."""
    if minutes is None:
        return None
    return TimeBudget(seconds=minutes * 60.0, total_steps=total_steps,
                      spent_before=sum(float(r.get("epoch_time_s") or 0.0) for r in history))
