"""Every file in configs/ loads the way its commands load it (`cbamlab train -c FILE --print-config`, the
compare: and tune: sections), and the issue-10 recipes hold what their comments promise."""
from pathlib import Path

import pytest
import yaml

from cbamlab import list_models
from cbamlab.cli import main
from cbamlab.data import resolve_augment
from cbamlab.config import config_to_dict, diff_configs, load_config, read_yaml
from cbamlab.experiments import compare, tune
from cbamlab.experiments.compare import load_compare_config

ROOT = Path(__file__).resolve().parents[1] / "configs"
CONFIGS = sorted(ROOT.glob("*.yaml"))
THREE = ["resnet20", "resnet20_se", "resnet20_cbam"]


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_config_loads_as_its_commands_load_it(path, capsys):
    assert main(["train", "-c", str(path), "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    cfg = load_config(path)
    assert printed == config_to_dict(cfg) and load_config(printed) == cfg  # what train would run, and it reloads
    assert cfg.model.name in list_models()
    resolve_augment(cfg.data.augment, cfg.data.name, **cfg.data.augment_overrides)  # the augmentation resolves
    raw = read_yaml(path)
    if "compare" in raw:
        base, spec = load_compare_config(path)
        assert base == cfg and all(v.model in list_models() for v in spec.variants) and spec.seeds
    if "tune" in raw:
        base, settings = tune.prepare(raw)
        assert base["train"]["eval_test"] is False and base["data"]["val_fraction"] > 0  # test never read
        assert settings.space.dists and settings.n_seeds >= 1


SEARCHED = {"optim.lr", "optim.weight_decay", "train.label_smoothing", "data.augment_overrides.erasing"}


def test_the_best_fashion_mnist_recipe():
    cfg = load_config(ROOT / "fashion_mnist_best.yaml")
    assert cfg.model.name.endswith("_cbam") and cfg.data.name == "fashion_mnist"
    assert (cfg.optim.name, cfg.optim.nesterov, cfg.schedule.name) == ("sgd", True, "onecycle")
    assert cfg.train.ema and cfg.eval.tta == "hflip" and cfg.train.eval_test
    spec = resolve_augment(cfg.data.augment, cfg.data.name, **cfg.data.augment_overrides)
    assert spec.hflip and spec.translate == 2 and spec.erasing == cfg.data.augment_overrides["erasing"] > 0
    assert "CANDIDATE" not in (ROOT / "fashion_mnist_best.yaml").read_text()


def test_its_tuning_config_is_the_same_recipe_with_a_validation_split():
    best = load_config(ROOT / "fashion_mnist_best.yaml")
    raw = read_yaml(ROOT / "tune_fashion_mnist_best.yaml")
    base, settings = tune.prepare(raw)
    # epochs held fixed; the search scores the validation split every epoch, the recipe reads the test split once,
    # after the last epoch; the searched keys carry the search's winner
    assert sorted(diff_configs(best, load_config(base))) == sorted(
        ["data.val_fraction", "train.eval_test", "eval.every", "optim.lr", "optim.weight_decay",
         "train.label_smoothing", "data.augment_overrides"])
    tuned_aug = dict(base["data"]["augment_overrides"], erasing=best.data.augment_overrides["erasing"])
    assert tuned_aug == best.data.augment_overrides  # of the overrides, only erasing was searched
    assert load_config(base).eval.every == 1 and best.eval.every == best.train.epochs
    assert base["data"]["val_fraction"] == 0.1
    assert set(settings.space.dists) == SEARCHED
    final = tune.final_config(base, settings, {"optim.lr": 0.05, "optim.weight_decay": 1e-4,
                                               "train.label_smoothing": 0.05, "data.augment_overrides.erasing": 0.4},
                              seed=1)
    assert final["train"]["eval_test"] is True and final["data"]["val_fraction"] == 0.0  # retrained, tested once
    assert final["data"]["augment_overrides"]["erasing"] == 0.4 and final["model"]["width"] == 1


def _value(cfg, key: str):
    """A dotted key's value in a config (`data.augment_overrides.hflip`)."""
    v = config_to_dict(cfg)
    for part in key.split("."):
        v = v[part]
    return v


# (recipe, the search that found it, its committed study): each recipe holds its search's best trial
SEARCHES = [("fashion_mnist_best.yaml", "tune_fashion_mnist_best.yaml", "tune_fashion_best"),
            ("fashion_mnist_20min.yaml", "tune_fashion_mnist_20min.yaml", "tune_fashion_20min")]


@pytest.mark.parametrize("recipe, search, study_dir", SEARCHES, ids=[s[0] for s in SEARCHES])
def test_the_recipe_holds_the_best_trial_of_the_committed_search(tmp_path, recipe, search, study_dir):
    """The recipe's searched values are the best complete trial of the committed optuna journal (numbers to the 4
    significant digits the config keeps), the study has the trials its config asks for, and every other key is
    the search's base, read on all training images with the test split read once, after the last epoch."""
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    journal = tmp_path / "tune.journal"  # a copy: opening a journal writes a lock file beside it
    journal.write_bytes((ROOT.parent / "results" / study_dir / "tune.journal").read_bytes())
    raw = read_yaml(ROOT / search)
    base, settings = tune.prepare(raw)
    study = optuna.load_study(study_name=raw["tune"]["study"], storage=JournalStorage(JournalFileBackend(str(journal))))
    states = [t.state for t in study.trials]
    counted = sum(s in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED) for s in states)
    assert counted == raw["tune"]["trials"] and optuna.trial.TrialState.RUNNING not in states
    searched = set(settings.space.dists)
    assert set(study.best_trial.params) == searched
    cfg = load_config(ROOT / recipe)
    for key, value in study.best_trial.params.items():
        assert _value(cfg, key) == (pytest.approx(value, rel=5e-4) if isinstance(value, float) else value), key
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) > 1 and max(t.value for t in complete) == study.best_trial.value
    final = load_config(tune.final_config(base, settings, study.best_trial.params, seed=cfg.seed))
    final_d, cfg_d = config_to_dict(final), config_to_dict(cfg)
    for key in searched:  # numbers rounded to 4 digits in the recipe
        final_d_key, cfg_key = final_d, cfg_d
        *head, last = key.split(".")
        for part in head:
            final_d_key, cfg_key = final_d_key[part], cfg_key[part]
        final_d_key[last] = cfg_key[last]
    final_d["eval"]["every"] = cfg_d["eval"]["every"]  # the search scores once at the end, the recipe tests then
    assert final_d == cfg_d
    assert cfg.train.eval_test and cfg.data.val_fraction == 0 and cfg.eval.every == cfg.train.epochs


def test_converged_fashion_mnist_comparison():
    cfg, spec = load_compare_config(ROOT / "compare_fashion_mnist_converged.yaml")
    assert [v.label for v in spec.variants] == THREE and spec.seeds == [0, 1, 2, 3, 4]
    assert (cfg.data.name, cfg.train.epochs, cfg.train.batch_size) == ("fashion_mnist", 30, 128)
    assert (cfg.optim.name, cfg.optim.lr, cfg.optim.momentum, cfg.optim.weight_decay) == ("sgd", 0.1, 0.9, 5e-4)
    assert cfg.schedule.name in ("multistep", "cosine")
    spec_aug = resolve_augment(cfg.data.augment, cfg.data.name, **cfg.data.augment_overrides)
    assert spec_aug.hflip and (spec_aug.translate or spec_aug.crop_padding)


def test_digits_comparison_with_ten_seeds():
    cfg, spec = load_compare_config(ROOT / "compare_digits_seeds.yaml")
    assert [v.label for v in spec.variants] == THREE and spec.seeds == list(range(10)) and cfg.data.name == "digits"
    assert diff_configs(cfg, load_config(ROOT / "digits_quick.yaml")) == []  # the full quick digits recipe


def test_resnet56_pair_is_the_converged_recipe():
    cfg, spec = load_compare_config(ROOT / "compare_fashion_mnist_resnet56.yaml")
    converged, _ = load_compare_config(ROOT / "compare_fashion_mnist_converged.yaml")
    assert [v.label for v in spec.variants] == ["resnet56", "resnet56_cbam"] and len(spec.seeds) >= 3
    assert diff_configs(cfg, converged) == []  # the same recipe; only the compared variants differ


def test_digits_ablation_is_the_ten_seed_recipe_with_the_papers_variants(tmp_path):
    cfg, spec = load_compare_config(ROOT / "compare_ablation_digits.yaml")
    seeds_cfg, _ = load_compare_config(ROOT / "compare_digits_seeds.yaml")
    assert diff_configs(cfg, seeds_cfg) == [] and spec.seeds == list(range(10))
    default = load_config(None).model.attn
    changed = {}
    for run in compare.plan(cfg, spec.variants, [0], tmp_path):
        m = run.cfg.model
        changed[run.variant] = (m.name, {k: getattr(m.attn, k) for k in ("kernel_size", "arrangement", "spatial",
                                                                           "spatial_bn_zero_init", "pool_types")
                                          if getattr(m.attn, k) != getattr(default, k)})
    assert changed == {
        "resnet20": ("resnet20", {}), "resnet20_se": ("resnet20_se", {}), "resnet20_cbam": ("resnet20_cbam", {}),
        "channel_only": ("resnet20_cbam", {"spatial": False}), "pool_avg": ("resnet20_cbam", {"pool_types": ("avg",)}),
        "pool_max": ("resnet20_cbam", {"pool_types": ("max",)}), "kernel3": ("resnet20_cbam", {"kernel_size": 3}),
        "spatial_first": ("resnet20_cbam", {"arrangement": "spatial_first"}),
        "parallel": ("resnet20_cbam", {"arrangement": "parallel"}),
        "gamma1": ("resnet20_cbam", {"spatial_bn_zero_init": False})}


def test_fashion_mnist_ablation_is_the_20_minute_recipe_with_the_digits_ablations_variants():
    cfg, spec = load_compare_config(ROOT / "compare_ablation_fashion_mnist.yaml")
    assert diff_configs(cfg, load_config(ROOT / "fashion_mnist_20min.yaml")) == []  # extends, changes nothing
    _, digits = load_compare_config(ROOT / "compare_ablation_digits.yaml")
    records = [v.record() for v in spec.variants]
    assert sorted(map(str, records)) == sorted(str(v.record()) for v in digits.variants)
    assert [v.label for v in spec.variants[:5]] == ["resnet20", "resnet20_cbam", "channel_only", "parallel", "kernel3"]
    assert spec.seeds == [0, 1, 2, 3, 4] and cfg.model.name == "resnet20_cbam" and cfg.data.name == "fashion_mnist"
