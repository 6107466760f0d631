"""Accuracy against the training budget (report/budget.py): runs of one recipe at several epoch counts."""
import io

import matplotlib.image as mpimg
import pytest

from cbamlab.engine import runtime
from cbamlab.report import budget
from cbamlab.report.groups import group_runs
from cbamlab.report.writer import write_report
from cbamlab.runs import find_runs
from fake_runs import make_run

TOP1 = {("resnet20", 3): [0.80, 0.82], ("resnet20", 6): [0.85, 0.86],
        ("resnet20_cbam", 3): [0.81, 0.84], ("resnet20_cbam", 6): [0.88, 0.87]}


def write_sweep(root, extra=None, **machine):
    for (model, epochs), values in TOP1.items():
        for seed, top1 in enumerate(values):
            make_run(root, model, seed, epochs=epochs, top1=top1, recipe={"eval": {"every": epochs}},
                     path=root / f"e{epochs}" / model / f"seed{seed}", **machine)
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


def test_budgets_trained_on_other_machines_are_not_one_sweep(tmp_path):
    """Minutes on one CPU say nothing about another's: the same recipe's budgets form one sweep per machine, told
    apart by the device name and, where recorded, the CPU's family and model (a virtual machine names a Zen 3 and
    a Zen 4 alike "AMD EPYC")."""
    epyc, zen3, zen4 = "cpu (AMD EPYC, 2 threads)", "AuthenticAMD family 25 model 1", "AuthenticAMD family 25 model 17"
    write_sweep(tmp_path / "zen3", device=epyc, cpu_id=zen3)  # 3 and 6 epochs
    for epochs, machine in ((9, dict(device=epyc, cpu_id=zen4)), (12, dict(device=epyc, cpu_id=zen4)),
                            (24, dict(device="cpu (Intel Xeon, 2 threads)"))):
        make_run(tmp_path, "resnet20", 0, epochs=epochs, recipe={"eval": {"every": epochs}},
                 path=tmp_path / f"m{epochs}" / "resnet20" / "seed0", **machine)
    groups = group_runs(find_runs(tmp_path))
    assert len(groups) == 5  # one recipe at five budgets
    found = budget.sweeps(groups)
    assert len(found) == 2  # the Xeon's single budget joins neither
    assert sorted(budget.machines(s[0]) for s in found) == [[f"{epyc}, {zen3}"], [f"{epyc}, {zen4}"]]
    assert sorted([g.recipe["train"]["epochs"] for g in s] for s in found) == [[3, 6], [9, 12]]
    report = write_report(tmp_path, tmp_path / "out")
    md = report.markdown.read_text(encoding="utf-8")
    assert f"Trained on: {epyc}, {zen4}." in md and f"Trained on: {epyc}, {zen3}." in md
    assert sorted(s.machines for s in report.sweeps) == [[f"{epyc}, {zen3}"], [f"{epyc}, {zen4}"]]


def test_a_run_without_a_recorded_cpu_id_is_named_by_its_device(tmp_path):
    write_sweep(tmp_path, device="cpu (test)")
    (sweep,) = budget.sweeps(group_runs(find_runs(tmp_path)))
    assert budget.machines(sweep[0]) == ["cpu (test)"]


def test_cpu_id_reads_vendor_family_and_model_of_the_first_processor(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 17\n"
                    "model name\t: AMD EPYC\n\nprocessor\t: 1\nvendor_id\t: Other\ncpu family\t: 1\nmodel\t: 2\n")
    assert runtime.cpu_id(str(info)) == "AuthenticAMD family 25 model 17"
    info.write_text("processor\t: 0\nmodel name\t: some ARM core\n")
    assert runtime.cpu_id(str(info)) == ""
    assert runtime.cpu_id(str(tmp_path / "missing")) == ""
