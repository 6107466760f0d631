"""train.time_budget_min: the schedule fitted to a time budget (engine/budget.py). The budget's arithmetic on a
clock the test moves, one training pass stopped by it, and whole runs on digits that stop on their minutes, end
their schedule there, resume and are refused under torchrun; off, nothing changes."""
import itertools
from types import SimpleNamespace

import pytest
import torch

from cbamlab import runs
from cbamlab.config import OptimConfig, ScheduleConfig, load_config
from cbamlab.data import MemoryLoader
from cbamlab.data.types import TensorSplit
from cbamlab.engine import fit
from cbamlab.engine.budget import TimeBudget, budget_for
from cbamlab.engine.loop import train_one_epoch
from cbamlab.engine.optim import build_optimizer
from cbamlab.engine.schedules import build_schedule
from cbamlab.errors import ConfigError
from cbamlab.models import create_model
from cbamlab.report.writer import _recipe_line

pytestmark = pytest.mark.usefixtures("one_thread")
CPU = torch.device("cpu")


class Clock:
    """A clock the test sets."""

    def __init__(self, t=0.0):
        self.t = t

    def __call__(self):
        return self.t


def test_progress_is_the_larger_of_steps_and_minutes_and_the_schedule_step_never_lags_the_step():
    clock = Clock(100.0)
    b = TimeBudget(seconds=60.0, total_steps=1000, spent_before=15.0, clock=clock).start()
    assert b.spent_s() == 15.0 and b.progress(0) == 0.25 and b.schedule_step(0) == 250
    clock.t = 115.0  # 30 s of 60 spent
    assert b.progress(100) == 0.5 and b.schedule_step(100) == 500 and not b.spent(100)
    assert b.progress(800) == 0.8 and b.schedule_step(800) == 800  # the steps run ahead of the minutes
    for step in range(1, 1000):  # int(step / total * total) can round down: the schedule step is never behind
        assert b.schedule_step(step) >= step
    clock.t = 145.0
    assert b.spent(100) and b.progress(100) == 1.0 and b.schedule_step(100) == 999  # the schedule's last step
    clock.t = 500.0
    assert b.schedule_step(5) == 999


def test_the_next_epochs_budget_counts_the_saved_epochs_training_passes_only():
    assert budget_for(None, 100, [{"epoch_time_s": 3.0}]) is None
    b = budget_for(0.5, 100, [{"epoch_time_s": 3.0}, {"epoch_time_s": 4.5}])
    assert b.seconds == 30.0 and b.spent_before == 7.5 and b.total_steps == 100 and b.spent_s() == 7.5


def loader(n=96, batch=8):
    g = torch.Generator().manual_seed(0)
    s = TensorSplit(torch.randint(0, 256, (n, 1, 8, 8), generator=g, dtype=torch.uint8),
                    torch.randint(0, 3, (n,), generator=g))
    return MemoryLoader(s, batch, mean=(0.5,), std=(0.25,), shuffle=True, seed=1)


def one_pass(budget, lrs):
    torch.manual_seed(0)
    model = create_model("resnet20", num_classes=3, in_chans=1)
    opt = build_optimizer(model, OptimConfig(lr=0.1))
    data = loader()
    data.set_epoch(1)
    lr_at = build_schedule(ScheduleConfig(name="onecycle"), 0.1, len(data), 1)

    def recording(step):
        lrs.append(lr_at(step))
        return lrs[-1]

    out, step = train_one_epoch(model, data, opt, lr_at=recording, step=0, device=CPU, budget=budget)
    return out, step, model


def test_a_pass_stops_after_the_step_that_spends_the_budget_and_anneals_to_the_schedules_end():
    ticks = itertools.count(0.0, 1.0)  # every reading of the clock is one second later
    budget = TimeBudget(seconds=9.0, total_steps=12, clock=lambda: next(ticks))
    lrs = []
    out, step, _ = one_pass(budget, lrs)
    assert out["budget_spent"] and 1 <= step < 12 and out["n"] == 8 * step  # stopped inside the 12-step epoch
    assert budget.spent(step)
    # the lr of optimizer step i is the schedule's at a step >= i (lrs[0] is the one read before the loop)
    lr_at = build_schedule(ScheduleConfig(name="onecycle"), 0.1, 12, 1)
    assert len(lrs) == step + 1
    for i, lr in enumerate(lrs[1:]):
        assert lr in [lr_at(k) for k in range(i, 12)]
    assert lrs[-1] != lr_at(step - 1)  # the minutes ran ahead of the steps
    assert budget.schedule_step(step) == 11  # and the schedule is at its last step


def test_a_budget_the_pass_never_reaches_changes_nothing():
    plain_lrs, budget_lrs = [], []
    plain, s1, m1 = one_pass(None, plain_lrs)
    far, s2, m2 = one_pass(TimeBudget(seconds=1e9, total_steps=24), budget_lrs)  # two epochs' steps: 1 to go
    assert s1 == s2 == 12 and not far["budget_spent"] and not plain["budget_spent"]
    assert plain_lrs == budget_lrs and plain["loss"] == far["loss"]
    assert all(torch.equal(a, b) for a, b in zip(m1.state_dict().values(), m2.state_dict().values()))


BUDGET = ["model.name=resnet20", "train.batch_size=64", "train.threads=1", "train.progress=false",
          "schedule.name=onecycle", "optim.lr=0.1", "train.epochs=500", "train.time_budget_min=0.04"]


@pytest.fixture(scope="module")
def budget_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("budget") / "r"
    return out, fit(load_config(None, BUDGET), out)


def test_a_run_stops_on_its_minutes_with_its_schedule_annealed_and_its_last_epoch_evaluated(budget_run):
    out, s = budget_run
    tb = s["time_budget"]
    rows = runs.read_metrics(out)
    assert s["status"] == "complete" and s["epochs"] == 500
    assert 1 <= tb["epochs_trained"] == len(rows) < 500 and tb["steps"] < tb["steps_of_epochs"]
    assert tb["minutes"] == 0.04 and tb["train_minutes"] >= 0.04
    minutes = sum(r["epoch_time_s"] for r in rows) / 60.0
    assert tb["train_minutes"] == pytest.approx(minutes, rel=1e-4)  # metrics.csv rounds
    assert rows[-1]["test_top1"] is not None and rows[-1]["test_top1"] == pytest.approx(s["top1"], abs=1e-6)
    assert rows[-1]["lr"] < 0.02 * 0.1  # the one-cycle ran to its anneal, not cut off at its peak


def test_a_finished_budget_run_is_complete_and_one_cut_after_an_epoch_resumes_to_its_minutes(budget_run, tmp_path):
    out, s = budget_run
    assert fit(load_config(out / "config.yaml"), out, resume=True) == s

    class Stop(Exception):
        pass

    def stop(epoch, row):
        raise Stop

    cut = tmp_path / "cut"
    with pytest.raises(Stop):
        fit(load_config(None, BUDGET), cut, on_epoch=stop)
    assert runs.load_state(cut).epoch == 1
    resumed = fit(load_config(cut / "config.yaml"), cut, resume=True)
    assert resumed["time_budget"]["train_minutes"] >= 0.04 and resumed["time_budget"]["epochs_trained"] >= 1


def test_under_torchrun_a_budget_is_refused_before_anything_runs(tmp_path):
    fitmod = __import__("sys").modules["cbamlab.engine.fit"]
    with pytest.raises(ConfigError, match="train.time_budget_min is for one process"):
        fitmod.set_up(load_config(None, BUDGET), tmp_path / "r", False, SimpleNamespace(main=True))
    assert not (tmp_path / "r").exists()


def test_the_key_is_off_by_default_and_checked():
    assert load_config(None, []).train.time_budget_min is None
    assert load_config(None, ["train.time_budget_min=20"]).train.time_budget_min == 20.0
    with pytest.raises(ConfigError, match="train.time_budget_min"):
        load_config(None, ["train.time_budget_min=-1"])


def test_the_reports_recipe_line_names_the_budget_only_when_a_run_has_one():
    """Two recipes that differ only in the budget do not read alike in the report."""
    assert _recipe_line({"train": {"epochs": 32, "time_budget_min": 20.0}}) == \
        "train.epochs=32, train.time_budget_min=20.0"
    assert _recipe_line({"train": {"epochs": 32, "time_budget_min": None}}) == "train.epochs=32"
