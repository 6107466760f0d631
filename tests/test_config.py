"""Config: defaults, YAML, `--set` overrides with type checks, unknown keys with suggestions, range checks, presets."""
from pathlib import Path

import pytest
import yaml

from cbamlab.config import (Config, config_from_dict, config_to_dict, diff_configs, dump_config, load_config,
                                   split_sections)
from cbamlab.errors import ConfigError

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


def test_defaults_are_the_quick_digits_preset():
    cfg = load_config()
    assert (cfg.model.name, cfg.data.name, cfg.seed) == ("resnet20_cbam", "digits", 0)
    assert cfg.model.num_classes is None and cfg.model.in_chans is None  # taken from the dataset
    preset = load_config(Path(__file__).resolve().parents[1] / "configs" / "digits_quick.yaml")
    assert diff_configs(cfg, preset) == []


def test_overrides_are_typed():
    cfg = load_config(None, ["optim.lr=0.05", "train.epochs=3", "seed=7", "schedule.milestones=[1, 2]",
                             "data.root=123", "train.grad_clip=1", "optim.weight_decay=1e-4",
                             "data.augment_overrides.hflip=false", "model.shortcut=null"])
    assert cfg.optim.lr == 0.05 and cfg.train.epochs == 3 and cfg.seed == 7
    assert cfg.schedule.milestones == [1.0, 2.0]
    assert cfg.data.root == "123"                  # a string field keeps the text
    assert cfg.train.grad_clip == 1.0 and isinstance(cfg.train.grad_clip, float)
    assert cfg.optim.weight_decay == 1e-4          # YAML 1.1 reads 1e-4 as text; still a number here
    assert cfg.data.augment_overrides == {"hflip": False}
    assert cfg.model.shortcut is None


@pytest.mark.parametrize("override, words", [
    ("train.epochs=abc", ["train.epochs", "integer"]),
    ("train.epochs=2.5", ["train.epochs", "integer"]),
    ("optim.lr=fast", ["optim.lr", "number"]),
    ("train.eval_test=maybe", ["train.eval_test", "true or false"]),
    ("optim.lr=0", ["optim.lr", "> 0"]),
    ("optim.lr=-0.1", ["optim.lr", "> 0"]),
    ("train.epochs=0", ["train.epochs", ">= 1"]),
    ("eval.every=0", ["eval.every", ">= 1", "last is always"]),
    ("train.batch_size=-4", ["train.batch_size", ">= 1"]),
    ("data.val_fraction=1.5", ["data.val_fraction"]),
    ("optim.momentum=1.0", ["optim.momentum"]),
    ("schedule.milestones=[60, 30]", ["schedule.milestones", "increasing"]),
    ("model.kernel_size=4", ["model.kernel_size", "odd"]),
    ("optim.name=sdg", ["optim.name", "did you mean sgd"]),
    ("schedule.name=cosin", ["schedule.name", "did you mean cosine"]),
    ("optim.lrr=0.1", ["optim.lrr", "did you mean", "lr"]),
    ("optimizer.lr=0.1", ["optimizer.lr", "did you mean optim"]),
    ("train.epochs", ["section.key=value"]),
])
def test_bad_overrides_name_the_key(override, words):
    with pytest.raises(ConfigError) as e:
        load_config(None, [override])
    msg = str(e.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg


def test_unknown_yaml_keys_and_sections(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown key 'train.epoch'.*did you mean epochs"):
        config_from_dict({"train": {"epoch": 3}})
    with pytest.raises(ConfigError, match=r"unknown key 'optimiser'.*did you mean optim"):
        config_from_dict({"optimiser": {"lr": 0.1}})
    with pytest.raises(ConfigError, match="split_sections"):
        config_from_dict({"compare": {"variants": ["a"]}})
    p = tmp_path / "bad.yaml"
    p.write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(p)
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "missing.yaml")


def test_roundtrip_through_yaml():
    cfg = load_config(None, ["optim.name=adamw", "schedule.name=onecycle", "seed=3", "data.image_size=16"])
    again = config_from_dict(yaml.safe_load(dump_config(cfg)))
    assert again == cfg
    assert config_to_dict(again)["optim"]["name"] == "adamw"


def test_split_sections_hands_over_compare_and_tune(tmp_path):
    d = {"seed": 1, "compare": {"variants": ["resnet20"]}, "tune": {"trials": 3}, "train": {"epochs": 2}}
    engine, extras = split_sections(d, ("compare", "tune"))
    assert set(extras) == {"compare", "tune"} and extras["tune"] == {"trials": 3}
    assert config_from_dict(engine).train.epochs == 2
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(d))
    assert load_config(p).seed == 1  # load_config sets the extra sections aside


def test_eval_test_false_needs_a_validation_split():
    with pytest.raises(ConfigError, match="val_fraction"):
        load_config(None, ["train.eval_test=false"])
    assert load_config(None, ["train.eval_test=false", "data.val_fraction=0.2"]).train.eval_test is False


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_preset_validates(path):
    from cbamlab import list_models
    from cbamlab.data import list_datasets, list_presets

    from cbamlab.config.load import read_yaml

    raw = read_yaml(path)  # follows `extends:`, as every command does
    assert "extends" not in raw
    engine, _ = split_sections(raw, ("compare", "tune"))
    cfg = config_from_dict(engine)
    assert isinstance(cfg, Config)
    assert cfg.model.name in list_models()
    assert cfg.data.name in list_datasets()
    assert cfg.data.augment in list_presets()


def test_article_presets_hold_the_article_recipe():
    root = CONFIGS[0].parent
    seed = load_config(root / "seed_cifar10_resnet50_cbam.yaml")
    assert (seed.model.name, seed.data.name, seed.train.epochs, seed.train.batch_size) == \
        ("cifar_resnet50_cbam", "cifar10", 90, 128)
    assert (seed.optim.name, seed.optim.lr, seed.optim.momentum) == ("sgd", 0.1, 0.9)
    assert (seed.schedule.name, seed.schedule.milestones, seed.schedule.gamma) == ("multistep", [30.0, 60.0], 0.1)
    twin = load_config(root / "seed_cifar10_resnet50.yaml")
    assert diff_configs(seed, twin) == ["model.name"] and twin.model.name == "cifar_resnet50"
    adam = load_config(root / "seed_cifar10_resnet50_cbam_adam.yaml")
    assert (adam.optim.name, adam.schedule.name, adam.schedule.step_size, adam.schedule.gamma) == \
        ("adam", "step", 30.0, 0.1)
    inet = load_config(root / "imagenet_resnet50_cbam.yaml")
    assert (inet.model.name, inet.data.name, inet.train.batch_size, inet.train.epochs) == \
        ("resnet50_cbam", "imagefolder", 256, 90)
    assert (inet.schedule.name, inet.schedule.step_size, inet.schedule.gamma) == ("step", 30.0, 0.1)


def test_the_model_section_holds_one_attn_options_under_flat_keys():
    from cbamlab.config import ModelConfig, non_result_keys, section_keys
    from cbamlab.models.options import ATTN_OPTIONS, AttnOptions

    cfg = load_config(None, ["model.kernel_size=3", "model.pool_types=[max]", "model.arrangement=parallel"])
    assert cfg.model.attn == AttnOptions(kernel_size=3, pool_types=("max",), arrangement="parallel")
    assert ModelConfig().attn == AttnOptions()  # the attention defaults: AttnOptions' own
    model = config_to_dict(cfg)["model"]
    assert list(model) == ["name", "reduction", "kernel_size", "arrangement", "spatial", "spatial_bn_zero_init",
                           "pool_types", "attn_impl", "shortcut", "width", "pretrained", "num_classes", "in_chans",
                           "label"]
    assert model["pool_types"] == ["max"] and "tuple" not in dump_config(cfg)  # YAML lists, not tuples
    assert config_from_dict(yaml.safe_load(dump_config(cfg))) == cfg
    assert [k.name for k in section_keys(ModelConfig) if k.path[0] == "attn"] == [
        o for o in ATTN_OPTIONS if o != "keep_map"]
    assert "model.attn_impl" in non_result_keys() and "model.kernel_size" not in non_result_keys()
    with pytest.raises(ConfigError, match="unknown key 'model.keep_map'"):
        load_config(None, ["model.keep_map=true"])


@pytest.mark.parametrize("override, message", [
    ("model.kernel_size=4", "model.kernel_size=4: must be a positive odd integer"),
    ("model.reduction=0", "model.reduction=0: must be a positive integer"),
    ("model.pool_types=[avg, avg]", "model.pool_types=['avg', 'avg']: must be a non-empty list of distinct pool"),
    ("model.pool_types=[]", "model.pool_types=[]: must be a non-empty list"),
    ("model.arrangement=spatial_frist", "unknown model.arrangement 'spatial_frist' (did you mean spatial_first?); "
                                        "known: channel_first, spatial_first, parallel"),
])
def test_attention_checks_live_in_attn_options_and_name_the_key(override, message):
    from cbamlab.errors import CbamlabError
    from cbamlab.models.options import AttnOptions

    with pytest.raises(ConfigError) as e:
        load_config(None, [override])
    assert str(e.value).startswith(message)
    key, value = override.split("=")
    with pytest.raises(CbamlabError):  # the same check, asked of the options themselves
        AttnOptions(**{key.split(".")[1]: yaml.safe_load(value)})


def test_sections_check_their_fields_when_built_and_when_validated():
    from cbamlab.config import OptimConfig, validate

    with pytest.raises(ConfigError, match="optim.lr=0: must be > 0"):
        OptimConfig(lr=0)
    cfg = load_config()
    cfg.train.epochs = 0  # changed after it was built: validate asks every check again
    with pytest.raises(ConfigError, match="train.epochs=0"):
        validate(cfg)
    cfg.train.epochs, cfg.schedule.warmup_epochs = 2, 3.0  # a check across sections: Config's
    with pytest.raises(ConfigError, match="schedule.warmup_epochs=3.0: must be in \\[0, train.epochs=2\\)"):
        validate(cfg)


def test_choice_lists_are_the_tables_that_build_them():
    from cbamlab import config
    from cbamlab.engine import loop, optim, runtime, schedules

    assert tuple(optim.OPTIMIZERS) == config.OPTIMIZERS
    assert tuple(schedules.SCHEDULES) == config.SCHEDULES
    assert tuple(loop.TTA_VIEWS) == config.TTA
    assert tuple(runtime.AUTOCAST_DTYPES) == config.PRECISIONS and config.AMP == ("auto", *config.PRECISIONS)
    with pytest.raises(RuntimeError, match="one list"):
        config.keyed({"sgd": None}, config.OPTIMIZERS, "optimizer")


def test_one_override_parser_for_the_config_and_the_extra_sections():
    from cbamlab.config import parse_override, section_overrides
    from cbamlab.experiments import tune

    assert parse_override("data.root = 123") == ("data.root", 123, "123")
    assert parse_override("optim.betas=[0.8, 0.9").value == "[0.8, 0.9"  # not YAML: kept as text
    sets, rest = section_overrides(["compare.seeds=5", "optim.lr=0.05"], "compare", ("variants", "seeds"))
    assert sets == {"seeds": 5} and [o.key for o in rest] == ["optim.lr"]
    assert load_config(None, rest).optim.lr == 0.05
    with pytest.raises(ConfigError, match="unknown key 'compare.seed' \\(did you mean seeds\\?\\)"):
        section_overrides(["compare.seed=5"], "compare", ("variants", "seeds"))
    with pytest.raises(ConfigError, match="section.key=value"):
        section_overrides(["compare.seeds"], "compare", ("seeds",))
    base, settings = tune.prepare(None, ["tune.trials=4", "train.epochs=2"])
    assert settings.trials == 4 and base["train"]["epochs"] == 2
    with pytest.raises(ConfigError, match="cbamlab tune"):
        load_config(None, ["tune.trials=4"])
