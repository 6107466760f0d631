"""The report's "has training stopped improving?" table, sentences and close-up figure (report/convergence.py)."""
import io
import math

import matplotlib.image as mpimg
import numpy as np
import pytest

from cbamlab import runs
from cbamlab.report import convergence
from cbamlab.report.groups import group_runs
from cbamlab.report.writer import write_report
from cbamlab.runs import find_runs
from fake_runs import make_run

EPOCHS = 8


def curve(seed, slope, end=0.90):
    """Held-out top-1 per epoch that changes by `slope` per epoch into `end`, plus a seed-dependent wiggle."""
    return [end - slope * (EPOCHS - e) + 0.001 * ((seed + e) % 3) for e in range(1, EPOCHS + 1)]


def write_study(root, slopes, seeds=3, epoch_times=None):
    for model, slope in slopes.items():
        for seed in range(seeds):
            run = make_run(root, model, seed, epochs=EPOCHS, top1=0.9)
            values = curve(seed, slope)
            times = epoch_times(seed) if epoch_times else [10.0] * EPOCHS
            runs.write_metrics(run, [{**r, "test_top1": v, "epoch_time_s": t}
                                       for r, v, t in zip(runs.read_metrics(run), values, times)])
    (group,) = group_runs(find_runs(root))
    return group


def test_table_values_are_the_seed_means_and_the_per_seed_change(tmp_path):
    group = write_study(tmp_path, {"resnet20": 0.0, "resnet20_cbam": 0.004})
    conv = convergence.convergence(group)
    assert conv.split == "test" and conv.epochs == [4, 5, 6, 7, 8]
    rows = {r.variant: r for r in conv.rows}
    cbam = rows["resnet20_cbam"]
    values = np.array([curve(s, 0.004) for s in range(3)]) * 100
    np.testing.assert_allclose(cbam.top1, values[:, 3:].mean(axis=0), atol=1e-4)  # metrics.csv keeps 6 digits
    changes = values[:, 7] - values[:, 3]
    assert cbam.change == pytest.approx(changes.mean(), abs=1e-4)
    half = 4.302652729911275 * changes.std(ddof=1) / math.sqrt(3)  # t(0.975, df=2)
    assert cbam.change_ci == pytest.approx((changes.mean() - half, changes.mean() + half), abs=1e-4)
    assert cbam.best_epochs == [8, 8, 8] and cbam.n == 3
    assert cbam.train_minutes == pytest.approx(EPOCHS * 10 / 60)

    header, body = convergence.table(conv)
    assert header[2:7] == [f"epoch {e}" for e in range(4, 9)]
    assert header[7] == "change 4 → 8 (points, 95 % CI)"
    assert body[1][7] == f"{cbam.change:+.2f} [{cbam.change_ci[0]:+.2f}, {cbam.change_ci[1]:+.2f}]"


def test_sentences_say_rising_flat_or_falling_from_the_interval(tmp_path):
    group = write_study(tmp_path, {"resnet20": 0.0, "resnet20_se": -0.004, "resnet20_cbam": 0.004})
    said = dict(zip(["resnet20", "resnet20_se", "resnet20_cbam"],
                    convergence.sentences(convergence.convergence(group))))
    assert said["resnet20"].endswith("spans zero: no change that 3 seeds show.")
    assert said["resnet20_cbam"].endswith("above zero: still improving.")
    assert said["resnet20_se"].endswith("below zero: getting worse.")
    assert said["resnet20_cbam"].startswith("resnet20_cbam: test top-1 +1.60 points from epoch 4 to 8 (n = 3)")


def test_one_seed_has_no_interval(tmp_path):
    group = write_study(tmp_path, {"resnet20": 0.002}, seeds=1)
    conv = convergence.convergence(group)
    assert math.isnan(conv.rows[0].change_ci[0])
    assert convergence.sentences(conv)[0].endswith("one seed, so no interval.")
    assert convergence.table(conv)[1][0][7] == "+0.90"  # 4 epochs x 0.2 points, and the wiggle 0.1 -> 0.2


def test_only_evaluated_epochs_count_and_a_paused_epoch_does_not_inflate_the_minutes(tmp_path):
    # seed 1's third epoch was paused for ten minutes: the median epoch time ignores it
    group = write_study(tmp_path, {"resnet20": 0.001},
                        epoch_times=lambda s: [10.0, 10.0, 610.0 if s == 1 else 10.0] + [10.0] * (EPOCHS - 3))
    assert convergence.convergence(group).rows[0].train_minutes == pytest.approx(EPOCHS * 10 / 60)
    for run in find_runs(tmp_path):  # eval.every = 2: the odd epochs were not evaluated
        runs.write_metrics(run.path, [{**r, "test_top1": r["test_top1"] if r["epoch"] % 2 == 0 else None}
                                        for r in run.metrics])
    (group,) = group_runs(find_runs(tmp_path))
    conv = convergence.convergence(group, last=3)
    assert conv.epochs == [4, 6, 8]
    for run in find_runs(tmp_path):  # evaluated at the last epoch only: nothing to say
        runs.write_metrics(run.path, [{**r, "test_top1": r["test_top1"] if r["epoch"] == EPOCHS else None}
                                        for r in run.metrics])
    (group,) = group_runs(find_runs(tmp_path))
    assert convergence.convergence(group) is None and convergence.close_up(group) is None


def test_validation_runs_use_validation(tmp_path):
    group = write_study(tmp_path, {"resnet20": 0.0})
    for run in find_runs(tmp_path):
        runs.write_metrics(run.path, [{**r, "val_top1": r["test_top1"], "test_top1": None} for r in run.metrics])
    (group,) = group_runs(find_runs(tmp_path))
    conv = convergence.convergence(group)
    assert conv.split == "val" and convergence.sentences(conv)[0].startswith("resnet20: val top-1")


def test_the_report_carries_the_table_and_the_close_up(tmp_path):
    write_study(tmp_path / "runs", {"resnet20": 0.0, "resnet20_cbam": 0.004})
    report = write_report(tmp_path / "runs", tmp_path / "out")
    md = report.markdown.read_text(encoding="utf-8")
    assert "Has training stopped improving? test top-1 %" in md
    assert "| variant | n | epoch 4 | epoch 5 | epoch 6 | epoch 7 | epoch 8 |" in md
    assert "- resnet20_cbam: test top-1 +1.60 points from epoch 4 to 8 (n = 3)" in md
    assert "Has training stopped improving?" in report.html.read_text(encoding="utf-8")
    close_up = tmp_path / "out" / "figures" / "fashion_mnist-last-epochs.png"
    assert not close_up.exists()  # the dataset here is digits
    png = (tmp_path / "out" / "figures" / "digits-last-epochs.png").read_bytes()
    img = mpimg.imread(io.BytesIO(png), format="png")
    assert img.shape[0] > 300 and img[..., :3].std() > 0.05
