"""Schedules as pure functions of the step: values at milestones, warmup, cosine and one-cycle ends."""
import math

import pytest
import torch

from cbamlab.config import ScheduleConfig
from cbamlab.engine.schedules import build_schedule, cosine, multistep, one_cycle, step_decay


def test_multistep_article_milestones_in_epochs():
    spe = 391  # CIFAR-10 at batch 128
    lr_at = build_schedule(ScheduleConfig(name="multistep", milestones=[30, 60], gamma=0.1), 0.1, spe, 90)
    assert lr_at(0) == pytest.approx(0.1)
    assert lr_at(30 * spe - 1) == pytest.approx(0.1)      # last step of epoch 30
    assert lr_at(30 * spe) == pytest.approx(0.01)         # first step of epoch 31
    assert lr_at(60 * spe - 1) == pytest.approx(0.01)
    assert lr_at(60 * spe) == pytest.approx(0.001)
    assert lr_at(90 * spe - 1) == pytest.approx(0.001)


def test_step_matches_torch_steplr_per_epoch():
    spe, epochs = 5, 9
    lr_at = build_schedule(ScheduleConfig(name="step", step_size=3, gamma=0.5), 0.2, spe, epochs)
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.2)
    ref = torch.optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.5)
    for epoch in range(epochs):
        for i in range(spe):
            assert lr_at(epoch * spe + i) == pytest.approx(opt.param_groups[0]["lr"])
        opt.step()
        ref.step()


def test_cosine_start_middle_end():
    assert cosine(0, lr=0.1, total=100) == pytest.approx(0.1)
    assert cosine(50, lr=0.1, total=100) == pytest.approx(0.05)
    assert cosine(100, lr=0.1, total=100, min_lr=0.001) == pytest.approx(0.001)
    lr_at = build_schedule(ScheduleConfig(name="cosine", min_lr=0.0), 0.1, 10, 5)
    values = [lr_at(s) for s in range(50)]
    assert all(a >= b for a, b in zip(values, values[1:]))  # never rises
    assert values[-1] < 0.001


def test_linear_warmup_then_schedule():
    spe = 10
    sched = ScheduleConfig(name="cosine", warmup_epochs=2, warmup_start=0.0)
    lr_at = build_schedule(sched, 0.4, spe, 10)
    assert lr_at(0) == pytest.approx(0.0)
    assert lr_at(10) == pytest.approx(0.2)        # half-way through the warmup: half the lr
    assert lr_at(20) == pytest.approx(0.4)        # warmup over: cosine starts at the full lr
    assert lr_at(100) == pytest.approx(0.0, abs=1e-12)
    warm_step = build_schedule(ScheduleConfig(name="multistep", milestones=[5], warmup_epochs=1,
                                              warmup_start=0.1), 1.0, spe, 10)
    assert warm_step(0) == pytest.approx(0.1)
    assert warm_step(5) == pytest.approx(0.55)
    assert warm_step(49) == pytest.approx(1.0) and warm_step(50) == pytest.approx(0.1)


def test_one_cycle_rises_to_peak_then_falls_to_the_floor():
    total = 1000
    lrs = [one_cycle(s, lr=1.0, total=total, pct_start=0.3, div_factor=25, final_div_factor=1e4)
           for s in range(total)]
    assert lrs[0] == pytest.approx(1 / 25)
    peak = max(range(total), key=lambda i: lrs[i])
    assert lrs[peak] == pytest.approx(1.0) and abs(peak - 300) <= 2
    assert lrs[-1] == pytest.approx(1 / 25 / 1e4)
    # agrees with torch's OneCycleLR (cosine annealing, no momentum cycling)
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    ref = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1.0, total_steps=total, pct_start=0.3,
                                              cycle_momentum=False)
    for s in range(total):
        assert lrs[s] == pytest.approx(opt.param_groups[0]["lr"], rel=1e-6, abs=1e-9)
        opt.step()
        ref.step()


def test_pure_functions_of_the_step():
    assert step_decay(7, lr=1.0, step_size=3, gamma=0.5) == 0.25
    assert multistep(4, lr=1.0, milestones=[2, 4], gamma=0.1) == pytest.approx(0.01)
    lr_at = build_schedule(ScheduleConfig(name="onecycle"), 0.1, 7, 3)
    assert [lr_at(s) for s in (5, 3, 5)] == [lr_at(5), lr_at(3), lr_at(5)]  # no hidden state
    assert math.isfinite(lr_at(10_000))
