"""The report from run directories written in the documented format: table values, sentences, separate
sections for separate datasets and recipes, a self-contained HTML with embedded PNG figures, the CLI."""
import base64
import io
import math
import re

import numpy as np
import pytest

from cbamlab import runs
from cbamlab.cli import main
from cbamlab.errors import CbamlabError
from cbamlab.report import class_plots, plots, tables
from cbamlab.report.groups import group_runs
from cbamlab.report.writer import write_report
from cbamlab.runs import find_runs
from fake_runs import make_run

BASE = [0.900, 0.910, 0.905]
CBAM = [0.906, 0.913, 0.915]  # differences 0.006, 0.003, 0.010 (points: 0.6, 0.3, 1.0)
SE = [0.899, 0.912, 0.904]


def t2_two_sided_p(t):  # Student t with 2 degrees of freedom, closed form
    return 1.0 - abs(t) / math.sqrt(2.0 + t * t)


def write_comparison(root, epochs=4):
    for seed in range(3):
        make_run(root, "resnet20", seed, top1=BASE[seed], top5=0.99, epochs=epochs, params=272_474, macs=41_000_000)
        make_run(root, "resnet20_se", seed, top1=SE[seed], top5=0.995, epochs=epochs)
        make_run(root, "resnet20_cbam", seed, top1=CBAM[seed], top5=0.997, epochs=epochs, latency_ms=3.5,
                 per_class=[0.95, 0.9, 0.88])


def test_table_numbers_match_hand_computation(tmp_path):
    write_comparison(tmp_path)
    (group,) = group_runs(find_runs(tmp_path))
    rows = {r.variant: r for r in tables.rows(group)}
    assert list(rows) == ["resnet20", "resnet20_se", "resnet20_cbam"]
    base = rows["resnet20"]
    m = sum(BASE) / 3
    s = math.sqrt(sum((x - m) ** 2 for x in BASE) / 2)
    assert base.n == 3 and base.top1.mean == pytest.approx(m) and base.top1.std == pytest.approx(s)
    assert base.delta_top1 is None and base.cells()[4] == "baseline"
    assert base.cells()[2] == f"{100 * m:.2f} ± {100 * s:.2f}"
    assert base.cells()[5:9] == ["", "", "272.47 k", "41.00 M"]

    cbam = rows["resnet20_cbam"]
    d = [c - b for c, b in zip(CBAM, BASE)]
    dm = sum(d) / 3
    ds = math.sqrt(sum((x - dm) ** 2 for x in d) / 2)
    t = dm / (ds / math.sqrt(3))
    half = 0.95 * math.sqrt(2 / (1 - 0.95 ** 2)) * ds / math.sqrt(3)  # t quantile, df = 2, closed form
    assert cbam.delta_top1.mean == pytest.approx(dm)
    assert cbam.delta_top1.p_value == pytest.approx(t2_two_sided_p(t), rel=1e-9)
    assert cbam.cells()[4] == f"{100 * dm:+.2f} [{100 * (dm - half):+.2f}, {100 * (dm + half):+.2f}] vs resnet20"
    assert cbam.cells()[6] == "0.25"  # exact sign-flip: 3 positive differences, 2 of 8 sign patterns
    assert cbam.cells()[10] == "3.50" and cbam.cells()[11] == "cpu (test)" and cbam.cells()[12] == "2.14.1"

    sentences = tables.sentences(tables.rows(group))
    assert len(sentences) == 2  # one per non-baseline variant
    assert sentences[1] == (f"resnet20_cbam {100 * dm:+.2f} ± {100 * ds:.2f} points top-1 vs resnet20, "
                            f"not significant at n = 3 (t-test p = {t2_two_sided_p(t):.2f}, sign-flip p = 0.25; "
                            "fewer than 6 seeds can never reach p < 0.05).")


def test_report_files_md_and_self_contained_html(tmp_path):
    write_comparison(tmp_path)
    make_run(tmp_path, "resnet20_cbam", 7, complete=False)
    paths = write_report(tmp_path)
    md = paths.markdown.read_text()
    page = paths.html.read_text()
    # the table, the sentences and the unfinished run, in both
    assert "| variant | n | top-1 % |" in md and "| resnet20_cbam | 3 |" in md
    assert "| Δ top-1 vs resnet20 (95 % CI) |" in md  # one baseline for all: named once, in the header
    assert "not significant at n = 3" in md and "not significant at n = 3" in page
    assert "Unfinished runs" in md and "seed7" in page
    assert '<table class="results main">' in page
    for variant in ("resnet20", "resnet20_se", "resnet20_cbam"):
        assert f"<td>{variant}</td>" in page
    # markdown links figure files that exist; HTML embeds every figure and links nothing outside
    linked = re.findall(r"\]\(figures/([^)]+)\)", md)
    assert len(linked) >= 6 and all((tmp_path / "figures" / f).is_file() for f in linked)
    embedded = re.findall(r'<img [^>]*src="data:image/png;base64,([^"]+)"', page)
    assert len(embedded) == len(linked)
    for data in embedded:
        png = base64.b64decode(data)
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    assert not re.search(r'src="(?!data:)', page) and "<link" not in page


def test_figures_are_real_images(tmp_path):
    import matplotlib.image as mpimg

    write_comparison(tmp_path)
    (group,) = group_runs(find_runs(tmp_path))
    for png in (plots.accuracy_curves(group), plots.loss_curves(group), plots.lr_schedule(group),
                plots.accuracy_vs_minutes(group), class_plots.per_class_accuracy(group, "resnet20_cbam", "resnet20"),
                class_plots.confusion_matrices(group)):
        img = mpimg.imread(io.BytesIO(png), format="png")
        assert img.shape[0] > 300 and img.shape[1] > 500
        assert img[..., :3].std() > 0.05  # something is drawn, not a blank canvas


def test_accuracy_against_minutes_sums_each_runs_epoch_times(tmp_path):
    write_comparison(tmp_path, epochs=3)
    for run in find_runs(tmp_path):  # the CBAM runs take twice as long per epoch, seed k adds k seconds
        slow = 2.0 if run.path.parts[-2] == "resnet20_cbam" else 1.0
        seed = int(run.path.name[len("seed"):])
        runs.write_metrics(run.path, [{**r, "epoch_time_s": 60.0 * slow + seed} for r in run.metrics])
    (group,) = group_runs(find_runs(tmp_path))
    minutes, accuracy, n = plots.minutes_and_accuracy(group, "resnet20_cbam")
    assert n == 3
    np.testing.assert_allclose(minutes, [(120 + 1) / 60, 2 * 121 / 60, 3 * 121 / 60])  # mean seed adds 1 s
    np.testing.assert_allclose(accuracy, [100 * sum(CBAM) / 3 * e / 3 for e in (1, 2, 3)], rtol=1e-5)  # csv: 6 digits
    minutes, _, _ = plots.minutes_and_accuracy(group, "resnet20")
    np.testing.assert_allclose(minutes, [61 / 60, 122 / 60, 183 / 60])
    for run in find_runs(tmp_path):  # evaluated every 2nd epoch and the last (eval.every=2): those epochs only
        runs.write_metrics(run.path, [{**r, "test_top1": r["test_top1"] if r["epoch"] != 1 else None}
                                        for r in run.metrics])
    (group,) = group_runs(find_runs(tmp_path))
    minutes, accuracy, _ = plots.minutes_and_accuracy(group, "resnet20")
    np.testing.assert_allclose(minutes, [122 / 60, 183 / 60])
    assert accuracy.shape == (2,) and plots.accuracy_curves(group)[:4] == b"\x89PNG"
    for run in find_runs(tmp_path):  # no epoch times recorded: no curve, and the figure says so
        runs.write_metrics(run.path, [{**r, "epoch_time_s": None} for r in run.metrics])
    (group,) = group_runs(find_runs(tmp_path))
    assert plots.minutes_and_accuracy(group, "resnet20") is None
    assert plots.accuracy_vs_minutes(group)[:4] == b"\x89PNG"


def test_validation_only_runs_plot_validation(tmp_path):
    write_comparison(tmp_path)
    for run in find_runs(tmp_path):  # test columns become val columns
        runs.write_metrics(run.path, [{**r, **{f"val_{k}": r[f"test_{k}"] for k in ("loss", "top1", "top5")},
                                         "test_loss": None, "test_top1": None, "test_top5": None}
                                        for r in run.metrics])
    (group,) = group_runs(find_runs(tmp_path))
    assert plots._test_or_val(group, "top1") == "val_top1"
    assert plots.accuracy_curves(group)[:4] == b"\x89PNG"


def test_datasets_and_recipes_get_separate_sections(tmp_path):
    write_comparison(tmp_path)
    for seed in range(2):
        make_run(tmp_path / "lr005", "resnet20", seed, recipe={"optim": {"lr": 0.05}})
        make_run(tmp_path / "lr005", "resnet20_cbam", seed, recipe={"optim": {"lr": 0.05}})
        make_run(tmp_path, "resnet20", seed, dataset="fashion_mnist")
    paths = write_report(tmp_path)
    titles = [c.title for c in paths.comparisons]
    assert titles == ["digits, recipe 1 of 2", "digits, recipe 2 of 2", "fashion_mnist"]
    assert [c.rows[0].n for c in paths.comparisons] == [3, 2, 2]
    md = paths.markdown.read_text()
    assert "3 separate comparisons" in md
    assert "the recipes differ in optim.lr: 0.1 vs 0.05" in md
    # never a pooled comparison: the lr=0.05 CBAM runs are compared with the lr=0.05 baseline only
    lr005 = paths.comparisons[1]
    assert lr005.rows[1].delta_top1.n == 2
    assert {p.name for p in paths.figures} >= {"digits-recipe1-accuracy.png", "digits-recipe2-accuracy.png",
                                               "fashion_mnist-accuracy.png"}


def test_attention_variant_without_baseline_says_so(tmp_path):
    make_run(tmp_path, "resnet20_cbam", 0)
    make_run(tmp_path, "resnet20_se", 0)
    (group,) = group_runs(find_runs(tmp_path))
    rows = tables.rows(group)
    assert all(r.delta_top1 is None for r in rows)
    assert all("no plain variant" in s for s in tables.sentences(rows))


def test_report_out_dir_and_regeneration(tmp_path):
    write_comparison(tmp_path / "runs")
    first = write_report(tmp_path / "runs", tmp_path / "rep")
    assert first.html.parent == tmp_path / "rep" and not (tmp_path / "runs" / "report.html").exists()
    second = write_report(tmp_path / "rep" / ".." / "runs")  # regenerating beside the runs works too
    assert second.html.is_file()


def test_cli_report(tmp_path, capsys):
    write_comparison(tmp_path)
    assert main(["report", str(tmp_path), "-q"]) == 0
    out = capsys.readouterr().out
    assert "| resnet20_cbam | 3 |" in out and "report:" in out
    assert (tmp_path / "report.html").is_file()


@pytest.mark.parametrize("setup, message", [
    (lambda p: None, "holds no cbamlab run directories"),
    (lambda p: (p / "photo.jpg").write_bytes(b"\xff\xd8"), "holds no cbamlab run directories"),
    (lambda p: make_run(p, "resnet20", 0, complete=False), "none finished"),
])
def test_cli_report_bad_folders(tmp_path, capsys, setup, message):
    setup(tmp_path)
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1


def test_cli_report_missing_folder(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nope")]) == 2
    assert "no such folder" in capsys.readouterr().err


def test_missing_top1_is_an_error(tmp_path):
    run = make_run(tmp_path, "resnet20", 0)
    s = runs.read_summary(run)
    del s["top1"]
    runs.write_summary(run, s)
    with pytest.raises(CbamlabError, match="no top1"):
        write_report(tmp_path)


def test_per_seed_table_shows_the_pairs(tmp_path):
    write_comparison(tmp_path)
    make_run(tmp_path, "resnet20_cbam", 3, top1=0.92, epochs=4)  # a seed the baseline lacks
    (group,) = group_runs(find_runs(tmp_path))
    header, body = tables.per_seed(group)
    assert header == ["variant", "seed 0", "seed 1", "seed 2", "seed 3"]
    assert body[0] == ["resnet20"] + [f"{100 * x:.2f}" for x in BASE] + ["-"]
    assert body[2] == ["resnet20_cbam"] + [f"{100 * x:.2f}" for x in CBAM] + ["92.00"]
    cbam = tables.rows(group)[2]
    assert cbam.n == 4 and cbam.delta_top1.n == 3  # paired on the three common seeds only
    assert cbam.cells()[4].endswith("vs resnet20 (n = 3)")
