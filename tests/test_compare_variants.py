"""Option variants in `compare` (the CBAM paper's ablations as named variants of one study): parsing and refusals,
the plan's folders and configs, the report's grouping by label with each ablation paired against default CBAM,
the spatial-map spread each run records, and one real study end to end through the CLI."""
import json

import pytest
import torch

from cbamlab import runs as rundirs
from cbamlab.cli import main
from cbamlab.engine.metrics import spatial_map_spread
from cbamlab.errors import CbamlabError, ConfigError
from cbamlab.experiments import compare
from cbamlab.experiments.variants import Variant, parse_variants
from cbamlab.models import create_model
from cbamlab.report import ablation, groups, stats, tables
from cbamlab.report.render import markdown_table
from cbamlab.report.writer import write_report
from fake_runs import make_run

K3 = {"name": "cbam_k3", "model": "resnet20_cbam", "options": {"kernel_size": 3}}


def test_both_forms_parse_and_record():
    plain, k3 = parse_variants(["resnet20", K3])
    assert plain == Variant("resnet20", "resnet20") and not plain.named and plain.record() == "resnet20"
    assert k3.named and k3.record() == K3 and k3.options == {"kernel_size": 3}
    assert [v.label for v in parse_variants("resnet20, resnet20_cbam")] == ["resnet20", "resnet20_cbam"]
    section = k3.model_section({"name": "resnet20", "kernel_size": 7, "width": 2, "label": None})
    assert section == {"name": "resnet20_cbam", "kernel_size": 3, "width": 2, "label": "cbam_k3"}
    assert plain.model_section({"name": "x", "label": "old"})["label"] is None


@pytest.mark.parametrize("value, message", [
    ([{"name": "a", "model": "resnet20_cbam", "opts": {}}], "unknown key 'opts'"),
    ([{"name": "a/b", "model": "resnet20_cbam"}], "needs a name"),
    ([{"model": "resnet20_cbam"}], "needs a name"),
    ([{"name": "resnet20_se", "model": "resnet20_cbam"}], "is a registered model"),
    ([{"name": "a", "model": "resnet20_cbam", "options": {"kernal_size": 3}}], "did you mean kernel_size"),
    ([{"name": "a", "model": "resnet20_cbam", "options": {"label": "b"}}], "unknown option 'model.label'"),
    ([{"name": "a", "model": "resnet99_cbam"}], "unknown model 'resnet99_cbam'"),
    (["resnet20_cbam", {"name": "a", "model": "resnet20_cbam"}], "build the same model with the same options"),
    ([K3, dict(K3, options={"kernel_size": 5})], "listed twice: cbam_k3"),
    ([], "non-empty list"),
    ([3], "expected a model name or a mapping"),
])
def test_bad_variants_are_config_errors(value, message):
    with pytest.raises(CbamlabError, match=message):
        parse_variants(value)


def test_plan_puts_each_named_variant_in_its_folder_with_its_options(tmp_path):
    cfg, spec = compare.load_compare_config(None, ["model.kernel_size=5", "compare.seeds=2", "compare.variants=["
                                                   "resnet20_cbam, {name: chan, model: resnet20_cbam, options: "
                                                   "{spatial: false, pool_types: [max]}}]"])
    runs = compare.plan(cfg, spec.variants, spec.seeds, tmp_path)
    assert [(r.variant, r.seed) for r in runs] == [("resnet20_cbam", 0), ("chan", 0), ("resnet20_cbam", 1),
                                                   ("chan", 1)]
    assert runs[1].path == tmp_path / "digits" / "chan" / "seed0"
    default, chan = runs[0].cfg.model, runs[1].cfg.model
    assert (default.label, default.attn.kernel_size, default.attn.spatial, default.attn.pool_types) == (
        None, 5, True, ("avg", "max"))
    assert (chan.name, chan.label, chan.attn.kernel_size, chan.attn.spatial, chan.attn.pool_types) == (
        "resnet20_cbam", "chan", 5, False, ("max",))


def test_an_option_the_model_refuses_names_the_variant(tmp_path):
    cfg, spec = compare.load_compare_config(None, ["compare.variants=[{name: k4, model: resnet20_cbam, options: "
                                                   "{kernel_size: 4}}]"])
    with pytest.raises(ConfigError, match="compare variant k4: model.kernel_size=4"):
        compare.plan(cfg, spec.variants, spec.seeds, tmp_path)


def _summary_with_maps(run, maps):
    summary = rundirs.read_summary(run)
    rundirs.write_summary(run, {**summary, "spatial_maps": maps})


def test_report_groups_by_label_and_pairs_ablations_with_default_cbam(tmp_path):
    top1 = {"resnet20": [0.90, 0.91, 0.92], "resnet20_cbam": [0.93, 0.92, 0.95], "k3": [0.92, 0.93, 0.93],
            "chan": [0.91, 0.93, 0.96]}
    options = {"k3": {"kernel_size": 3}, "chan": {"spatial": False}}
    for variant, values in top1.items():
        model = "resnet20" if variant == "resnet20" else "resnet20_cbam"
        for seed, value in enumerate(values):
            recipe = {"model": {"label": variant, **options[variant]}} if variant in options else None
            run = make_run(tmp_path, model, seed, top1=value, recipe=recipe,
                           path=tmp_path / "digits" / variant / f"seed{seed}")
            if variant != "chan" and model != "resnet20":
                _summary_with_maps(run, {"layer1": {"p05": 0.40 + seed / 100, "p95": 0.60, "range": 0.2,
                                                    "images": 512}})
    (group,), _ = groups.load_groups(tmp_path)
    assert group.variants == ["resnet20", "resnet20_cbam", "chan", "k3"]
    assert group.model_of("k3") == "resnet20_cbam" and group.baseline_for("k3") == "resnet20"
    assert group.default_cbam_for("k3") == "resnet20_cbam" and group.default_cbam_for("chan") == "resnet20_cbam"
    assert group.default_cbam_for("resnet20_cbam") is None and group.baseline_for("resnet20") is None

    main_rows = {r.variant: r for r in tables.rows(group)}
    assert main_rows["k3"].baseline == "resnet20" and not main_rows["k3"].is_baseline
    assert main_rows["k3"].delta_top1.mean == pytest.approx(stats.mean([0.02, 0.02, 0.01]))

    table = ablation.rows(group)
    assert [r.variant for r in table] == ["resnet20_cbam", "chan", "k3"]
    k3 = table[2]
    assert k3.reference == "resnet20_cbam"
    assert k3.delta_top1.mean == pytest.approx(stats.mean([-0.01, 0.01, -0.02]))
    assert k3.maps == {"layer1": pytest.approx((0.41, 0.60, 0.2))} and table[1].maps == {}
    text = markdown_table(*ablation.table(table))
    assert "| k3 | 3 | 92.67 ± 0.58 | -0.67 [" in text and "0.41–0.60 (0.20)" in text
    assert "| resnet20_cbam | 3 | 93.33 ± 1.53 | reference |" in text and "n/a (no spatial gate)" in text
    assert any(s.startswith("k3 -0.67 ± ") and "vs resnet20_cbam" in s for s in ablation.sentences(table))

    md = write_report(tmp_path).markdown.read_text(encoding="utf-8")
    assert "| k3 | 3 |" in md and "CBAM's options, each against default CBAM" in md


def test_two_labels_of_one_model_are_two_variants_and_one_label_cannot_name_two_models(tmp_path):
    make_run(tmp_path, "resnet20_cbam", 0, recipe={"model": {"label": "a"}}, path=tmp_path / "d" / "a" / "s0")
    make_run(tmp_path, "resnet20_cbam", 0, recipe={"model": {"label": "b"}}, path=tmp_path / "d" / "b" / "s0")
    (group,), _ = groups.load_groups(tmp_path)
    assert group.variants == ["a", "b"]
    make_run(tmp_path, "resnet20", 1, recipe={"model": {"label": "a"}}, path=tmp_path / "d" / "a" / "s1")
    with pytest.raises(CbamlabError, match="the label a names runs of"):
        groups.load_groups(tmp_path)


def test_spatial_map_spread_sees_a_constant_and_a_working_gate():
    images = [(torch.randn(40, 1, 12, 12), None) for _ in range(3)]
    torch.manual_seed(0)
    at_init = spatial_map_spread(create_model("resnet20_cbam", 10, 1), images, max_images=100)
    assert set(at_init) == {"layer1", "layer2", "layer3"}
    assert all(m == {"p05": 0.5, "p50": 0.5, "p95": 0.5, "range": 0.0, "images": 100} for m in at_init.values())
    torch.manual_seed(0)
    model = create_model("resnet20_cbam", 10, 1, spatial_bn_zero_init=False).train()
    spread = spatial_map_spread(model, images, max_images=100)
    assert model.training  # put back as it was
    for m in spread.values():
        assert 0 < m["p05"] < m["p50"] < m["p95"] < 1 and m["range"] > 0.05 and m["images"] == 100
    assert spatial_map_spread(create_model("resnet20_se", 10, 1), images) is None
    assert spatial_map_spread(create_model("resnet20_cbam", 10, 1, spatial=False), images) is None


def test_a_real_ablation_study_through_the_cli(tmp_path, capsys):
    out = tmp_path / "abl"
    variants = ("[resnet20, resnet20_cbam, {name: gamma1, model: resnet20_cbam, options: "
                "{spatial_bn_zero_init: false}}]")
    assert main(["compare", "--out", str(out), "-q", "--set", f"compare.variants={variants}",
                 "--set", "compare.seeds=1", "--set", "train.epochs=1", "--set", "train.threads=1",
                 "--set", "train.progress=false"]) == 0
    printed = capsys.readouterr().out
    assert "3 runs trained" in printed and "| gamma1 | 1 |" in printed
    record = json.loads((out / "compare.json").read_text())
    assert record["variants"][2] == {"name": "gamma1", "model": "resnet20_cbam",
                                     "options": {"spatial_bn_zero_init": False}}
    summary = rundirs.read_summary(out / "digits" / "gamma1" / "seed0")
    assert rundirs.load_run_config(out / "digits" / "gamma1" / "seed0").model.label == "gamma1"
    assert set(summary["spatial_maps"]) == {"layer1", "layer2", "layer3"}
    assert rundirs.read_summary(out / "digits" / "resnet20" / "seed0")["spatial_maps"] is None
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "| gamma1 | 1 |" in md and "spatial map p5–p95" in md
    # rerun: everything reused, the named variant too
    assert main(["compare", "--out", str(out), "-q", "--set", f"compare.variants={variants}",
                 "--set", "compare.seeds=1", "--set", "train.epochs=1", "--set", "train.threads=1",
                 "--set", "train.progress=false", "--no-report"]) == 0
    assert "0 runs trained, 3 reused" in capsys.readouterr().out


ABLATION = ["resnet20", "resnet20_cbam", K3, {"name": "gamma1", "model": "resnet20_cbam",
                                             "options": {"spatial_bn_zero_init": False}}]


@pytest.mark.parametrize("only, labels", [(None, ["resnet20", "resnet20_cbam", "cbam_k3", "gamma1"]),
                                          (["gamma1", "resnet20"], ["resnet20", "gamma1"]),  # the list's order
                                          ("cbam_k3", ["cbam_k3"])])
def test_compare_only_takes_labels_of_the_variant_list(only, labels):
    section = {"variants": ABLATION, "seeds": 2, **({"only": only} if only is not None else {})}
    spec = compare.parse_compare_section(section)
    assert [v.label for v in spec.variants] == labels
    assert all(v.options == {"kernel_size": 3} for v in spec.variants if v.label == "cbam_k3")


@pytest.mark.parametrize("only, message", [(["cbam_k4"], r"'cbam_k4' is not a variant of this comparison "
                                                         r"\(did you mean cbam_k3\?\); known: resnet20, "),
                                           ([], "expected a non-empty list of variant labels"),
                                           ([3], "expected a non-empty list of variant labels")])
def test_compare_only_refuses_what_the_list_does_not_hold(only, message):
    with pytest.raises(ConfigError, match=message):
        compare.parse_compare_section({"variants": ABLATION, "only": only})


def test_a_study_run_a_few_variants_at_a_time_fills_one_folder(tmp_path, capsys):
    """`--set compare.only=[...]` trains a share of a config's variants; a later call with others reuses those runs
    and the report of the folder holds every variant trained so far."""
    cfg = tmp_path / "study.yaml"
    cfg.write_text(json.dumps({"data": {"name": "digits"}, "train": {"epochs": 1, "threads": 1, "progress": False},
                               "compare": {"variants": ABLATION, "seeds": 1}}), encoding="utf-8")
    out = tmp_path / "study"
    base = ["compare", "--config", str(cfg), "--out", str(out), "-q"]
    assert main([*base, "--set", "compare.only=[resnet20,gamma1]"]) == 0
    assert "2 runs trained" in capsys.readouterr().out
    assert sorted(p.name for p in (out / "digits").iterdir()) == ["gamma1", "resnet20"]
    assert main([*base, "--set", "compare.only=[resnet20,resnet20_cbam]"]) == 0
    printed = capsys.readouterr().out
    assert "1 runs trained, 1 reused" in printed
    md = (out / "report.md").read_text(encoding="utf-8")
    assert all(f"| {label} | 1 |" in md for label in ("resnet20", "resnet20_cbam", "gamma1"))
    assert main([*base, "--set", "compare.only=[kernel3]"]) == 2
    assert capsys.readouterr().err.strip().startswith("error: compare.only: 'kernel3' is not a variant")
