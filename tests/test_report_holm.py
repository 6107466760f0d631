"""The report's multiple-comparison rule end to end: with 3 or more variants against one baseline (the main table
against the plain net, the ablation table against default CBAM) the table gains the Holm-adjusted sign-flip
column, one sentence under it names the family, and the verdicts go by the adjusted p-values; with 2 comparisons
the report has no trace of it."""
from cbamlab.report import ablation, tables
from cbamlab.report.groups import load_groups
from cbamlab.report.writer import write_report
from fake_runs import make_run

BASE = [0.900, 0.905, 0.910, 0.900, 0.905, 0.910]
GAIN = [0.010, 0.012, 0.015, 0.011, 0.013, 0.020]  # every seed up: sign-flip p = 2/64, t-test p < 0.001
OPTIONS = {"k3": {"kernel_size": 3}, "chan": {"spatial": False}, "avg": {"pool_types": ["avg"]}}


def write_study(root, variants):
    for variant in variants:
        model = variant if variant.startswith("resnet20") else "resnet20_cbam"
        recipe = {"model": {"label": variant, **OPTIONS[variant]}} if variant in OPTIONS else None
        for seed, base in enumerate(BASE):
            top1 = base + (GAIN[seed] if variant in ("resnet20_cbam", "k3") else 0.001 * (-1) ** seed)
            make_run(root, model, seed, top1=top1, recipe=recipe, path=root / "digits" / variant / f"seed{seed}")


def test_a_family_of_five_and_one_of_three_are_holm_adjusted(tmp_path):
    write_study(tmp_path, ["resnet20", "resnet20_se", "resnet20_cbam", "k3", "chan", "avg"])
    (group,), _ = load_groups(tmp_path)
    rows = {r.variant: r for r in tables.rows(group)}
    cbam = rows["resnet20_cbam"].delta_top1
    assert cbam.family == 5 and cbam.sign_flip_p == 2 / 64 and cbam.holm_sign_flip_p == 5 * 2 / 64
    header, body = tables.table(list(rows.values()))
    assert header[5:8] == ["p (paired t)", "p (sign-flip)", "p (Holm, sign-flip)"]
    assert {r[0]: r[7] for r in body} == {"resnet20": "", "resnet20_se": "1.00", "resnet20_cbam": "0.16",
                                          "k3": "0.16", "chan": "1.00", "avg": "1.00"}
    ablation_rows = ablation.rows(group)
    assert [r.delta_top1.family for r in ablation_rows if r.delta_top1] == [3, 3, 3]

    md = write_report(tmp_path).markdown.read_text(encoding="utf-8")
    assert ("\np-values are Holm-adjusted over the 5 comparisons with resnet20 in p (Holm, sign-flip) and in the "
            "sentences below") in md
    assert "\np-values are Holm-adjusted over the 3 comparisons with resnet20_cbam in p (Holm, sign-flip)" in md
    # raw: both tests < 0.05; over the family of 5 the sign-flip p is 5 x 2/64
    assert "resnet20_cbam +1.35 ± 0.40 points top-1 vs resnet20, not significant at n = 6 (Holm-adjusted over 5: " \
           "t-test p = " in md
    assert "sign-flip p = 0.16)." in md and ", significant at n = 6" not in md


def test_two_comparisons_leave_the_report_as_it_was(tmp_path):
    write_study(tmp_path, ["resnet20", "resnet20_se", "resnet20_cbam"])
    (group,), _ = load_groups(tmp_path)
    rows = tables.rows(group)
    assert all(r.delta_top1 is None or r.delta_top1.family == 1 for r in rows)
    header = tables.table(rows)[0]
    assert tables.HOLM_COLUMN not in header and len(header) == len(tables.COLUMNS)
    md = write_report(tmp_path).markdown.read_text(encoding="utf-8")
    assert "Holm" not in md
    assert "resnet20_cbam +1.35 ± 0.40 points top-1 vs resnet20, significant at n = 6 (t-test p = " in md
