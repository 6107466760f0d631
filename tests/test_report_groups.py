"""Grouping run directories into fair comparisons: one group per dataset and result recipe, variants paired by
seed, attention options that differ within a model as separate labelled variants."""
import copy

import pytest

from cbamlab import runs
from cbamlab.config import config_from_dict, config_to_dict
from cbamlab.errors import CbamlabError
from cbamlab.report import groups
from fake_runs import RECIPE, make_run


def test_find_runs_and_unfinished(tmp_path):
    make_run(tmp_path, "resnet20", 0)
    make_run(tmp_path, "resnet20_cbam", 0, complete=False)
    (tmp_path / "digits" / "resnet20" / "seed0" / "checkpoints").mkdir()
    found, unfinished = groups.load_groups(tmp_path)
    assert [u.model for u in unfinished] == ["resnet20_cbam"]
    assert found[0].variants == ["resnet20"]


def test_empty_or_foreign_folder_is_an_error(tmp_path):
    with pytest.raises(CbamlabError, match="holds no cbamlab run directories"):
        groups.load_groups(tmp_path)
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "sub").mkdir()
    with pytest.raises(CbamlabError, match="holds no cbamlab run directories"):
        groups.load_groups(tmp_path)
    with pytest.raises(CbamlabError, match="no such folder"):
        groups.load_groups(tmp_path / "missing")
    make_run(tmp_path, "resnet20", 0, complete=False)
    with pytest.raises(CbamlabError, match="none finished"):
        groups.load_groups(tmp_path)


def test_recipe_ignores_model_seed_attention_options_and_what_changes_no_result():
    a = copy.deepcopy(RECIPE)
    b = copy.deepcopy(RECIPE)
    b["model"].update(name="resnet20_cbam", reduction=8, kernel_size=3)
    b["seed"] = 5
    b["data"].update(root="/elsewhere", workers=0)
    b["train"]["threads"] = 1  # declared on the config field: changes no result
    assert groups.recipe_of(a) == groups.recipe_of(b)
    b["optim"]["lr"] = 0.05
    assert groups.recipe_of(a) != groups.recipe_of(b)
    assert groups.recipe_differences(groups.recipe_of(a), groups.recipe_of(b)) == ["optim.lr: 0.1 vs 0.05"]
    b["optim"]["lr"], b["model"]["shortcut"] = 0.1, "B"  # not an attention option: another recipe
    assert groups.recipe_of(a) != groups.recipe_of(b)
    assert a["model"]["name"] == "resnet20" and "threads" not in a["train"]  # the input is not modified


def test_a_default_added_later_does_not_split_a_group():
    older = copy.deepcopy(RECIPE)  # as if written before the sections had every key they have now
    assert groups.recipe_of(older) == groups.recipe_of(config_to_dict(config_from_dict(older)))
    foreign = copy.deepcopy(RECIPE)
    foreign["train"]["warp_speed"] = 9  # a key this version does not know: the config is compared as written
    assert groups.recipe_of(foreign)["train"] == {"epochs": 3, "batch_size": 64, "eval_test": True, "warp_speed": 9}


def test_groups_split_datasets_and_recipes(tmp_path):
    for seed in (0, 1):
        for model in ("resnet20_cbam", "resnet20", "resnet20_se"):
            make_run(tmp_path, model, seed)
        make_run(tmp_path / "other", "resnet20", seed, recipe={"optim": {"lr": 0.05}})
        make_run(tmp_path, "resnet20", seed, dataset="fashion_mnist")
    found = groups.group_runs(runs.find_runs(tmp_path))
    assert len(found) == 3
    keyed = {(g.dataset, g.recipe["optim"]["lr"]): g for g in found}
    main = keyed[("digits", 0.1)]
    assert main.variants == ["resnet20", "resnet20_se", "resnet20_cbam"]  # plain first, then SE, then CBAM
    assert main.seeds("resnet20_cbam") == [0, 1]
    assert main.baseline_for("resnet20_cbam") == "resnet20" and main.baseline_for("resnet20") is None
    assert keyed[("digits", 0.05)].variants == ["resnet20"]
    assert keyed[("fashion_mnist", 0.1)].variants == ["resnet20"]


def test_runs_differing_only_in_threads_or_workers_are_one_group(tmp_path):
    make_run(tmp_path, "resnet20", 0, recipe={"train": {"threads": 1}})
    make_run(tmp_path, "resnet20", 1, recipe={"train": {"threads": 4}, "data": {"workers": 0}})
    (group,) = groups.group_runs(runs.find_runs(tmp_path))
    assert group.seeds("resnet20") == [0, 1]


def test_varying_attention_options_become_separate_variants(tmp_path):
    make_run(tmp_path, "resnet20", 0)
    make_run(tmp_path, "resnet20_cbam", 0, reduction=16)
    make_run(tmp_path, "resnet20_cbam", 0, reduction=8, path=tmp_path / "r8")
    (group,) = groups.group_runs(runs.find_runs(tmp_path))
    assert group.variants == ["resnet20", "resnet20_cbam (reduction=16)", "resnet20_cbam (reduction=8)"]
    assert group.baseline_for("resnet20_cbam (reduction=8)") == "resnet20"


def test_duplicate_run_is_an_error(tmp_path):
    make_run(tmp_path, "resnet20", 0)
    make_run(tmp_path, "resnet20", 0, path=tmp_path / "copy")
    with pytest.raises(CbamlabError, match="two finished runs of resnet20 seed 0"):
        groups.group_runs(runs.find_runs(tmp_path))
