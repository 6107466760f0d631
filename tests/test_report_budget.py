"""Accuracy against the training budget (report/budget.py): runs of one recipe at several epoch counts."""
import io

import matplotlib.image as mpimg
import pytest

from cbamlab.report import budget
from cbamlab.report.groups import group_runs
from cbamlab.report.writer import write_report
from cbamlab.runs import find_runs
from fake_runs import make_run

TOP1 = {("resnet20", 3): [0.80, 0.82], ("resnet20", 6): [0.85, 0.86],
        ("resnet20_cbam", 3): [0.81, 0.84], ("resnet20_cbam", 6): [0.88, 0.87]}


def write_sweep(root, extra=None):
    for (model, epochs), values in TOP1.items():
        for seed, top1 in enumerate(values):
            make_run(root, model, seed, epochs=epochs, top1=top1, recipe={"eval": {"every": epochs}},
                     path=root / f"e{epochs}" / model / f"seed{seed}")
    for model, epochs, lr in extra or ():
        make_run(root, model, 0, epochs=epochs, top1=0.5, recipe={"optim": {"lr": lr}},
                 path=root / f"lr{lr}" / model / "seed0")
    return group_runs(find_runs(root))


def test_groups_differing_only_in_epochs_form_a_sweep(tmp_path):
    groups = write_sweep(tmp_path, extra=[("resnet20", 3, 0.05)])
    assert len(groups) == 3
    (sweep,) = budget.sweeps(groups)  # the lr 0.05 group differs in more than the budget
    assert [g.recipe["train"]["epochs"] for g in sweep] == [3, 6]
    pts = budget.points(sweep)
    assert [(p.variant, p.epochs, p.n) for p in pts] == [("resnet20", 3, 2), ("resnet20", 6, 2),
                                                          ("resnet20_cbam", 3, 2), ("resnet20_cbam", 6, 2)]
    cbam6 = pts[3]
    assert cbam6.top1.mean == pytest.approx(0.875) and cbam6.minutes == pytest.approx(6 * 1.5 / 60)
    header, body = budget.table(pts)
    assert header[3].startswith("training min") and body[3][4] == f"87.50 ± {100 * 0.0070711:.2f}"


def test_a_single_budget_is_no_sweep(tmp_path):
    for model in ("resnet20", "resnet20_cbam"):
        make_run(tmp_path, model, 0, epochs=3)
    assert budget.sweeps(group_runs(find_runs(tmp_path))) == []


def test_the_report_has_the_sweep_table_and_figure(tmp_path):
    write_sweep(tmp_path / "runs")
    report = write_report(tmp_path / "runs", tmp_path / "out")
    md = report.markdown.read_text(encoding="utf-8")
    assert "## digits: accuracy against the training budget" in md
    assert "| resnet20_cbam | 6 | 2 | 0.15 | 87.50 ± 0.71 |" in md  # 6 epochs x 1.5 s
    assert "digits, recipe 1 of 2" in md  # each budget keeps its own comparison section
    assert len(report.sweeps) == 1
    png = (tmp_path / "out" / "figures" / "digits-budget.png").read_bytes()
    img = mpimg.imread(io.BytesIO(png), format="png")
    assert img.shape[0] > 300 and img[..., :3].std() > 0.05
    assert "accuracy against the training budget" in report.html.read_text(encoding="utf-8")
