"""tune.space and the tune: section: parsing, inference of kinds, checks against the engine's config, errors."""

import optuna
import pytest
import yaml

from cbamlab.config import Config, config_from_dict, config_to_dict
from cbamlab.errors import ConfigError
from cbamlab.experiments.tune import prepare
from cbamlab.experiments.tune.settings import parse_tune_section
from cbamlab.experiments.tune.space import parse_space


@pytest.fixture
def base():
    d = config_to_dict(Config())
    d["data"]["val_fraction"] = 0.1
    d["train"]["eval_test"] = False
    return d


def parse(spec, base):
    return parse_space(spec, base, config_from_dict)


def test_kinds_are_inferred_and_yaml_exponents_without_dot_are_numbers(base):
    spec = yaml.safe_load("""
      optim.lr: {low: 1e-3, high: 0.3, log: true}     # PyYAML reads 1e-3 as a string
      optim.momentum: {low: 0.8, high: 0.95, step: 0.05}
      model.reduction: {low: 4, high: 32, log: true}
      train.batch_size: {type: int, low: 32, high: 128, step: 32}
      model.kernel_size: {choices: [3, 5, 7]}
      schedule.milestones: {choices: [[2, 3], [1, 3]]}
      data.augment_overrides.crop_padding: {low: 0, high: 4}
    """)
    space = parse(spec, base)
    d = space.dists
    assert d["optim.lr"] == optuna.distributions.FloatDistribution(1e-3, 0.3, log=True)
    assert d["optim.momentum"] == optuna.distributions.FloatDistribution(0.8, 0.95, step=0.05)
    assert d["model.reduction"] == optuna.distributions.IntDistribution(4, 32, log=True)
    assert d["train.batch_size"] == optuna.distributions.IntDistribution(32, 128, step=32)
    assert d["model.kernel_size"] == optuna.distributions.CategoricalDistribution([3, 5, 7])
    assert isinstance(d["data.augment_overrides.crop_padding"], optuna.distributions.IntDistribution)
    assert space.encoded == {"schedule.milestones"}


def test_sampled_values_land_in_the_config_and_pass_its_checks(base):
    space = parse({"optim.lr": {"low": 0.01, "high": 0.3, "log": True},
                   "schedule.milestones": {"choices": [[2, 3], [1, 3]]},
                   "data.augment_overrides.hflip": {"choices": [True, False]}}, base)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    seen = set()
    for _ in range(20):
        trial = study.ask()
        cfg = config_from_dict(space.apply(base, space.suggest(trial)))
        assert 0.01 <= cfg.optim.lr <= 0.3
        assert cfg.schedule.milestones in ([2.0, 3.0], [1.0, 3.0])
        seen.add((tuple(cfg.schedule.milestones), cfg.data.augment_overrides["hflip"]))
        study.tell(trial, cfg.optim.lr)
    assert len(seen) == 4  # every combination of the two categoricals was drawn
    assert base["schedule"]["milestones"] == []  # apply works on a copy


def test_canonical_form_is_equal_for_equal_spaces_and_differs_otherwise(base):
    a = parse({"optim.lr": {"low": 0.01, "high": 0.3, "log": True}, "model.kernel_size": {"choices": [3, 7]}}, base)
    b = parse({"model.kernel_size": {"type": "categorical", "choices": [3, 7]},
               "optim.lr": {"type": "float", "low": "1e-2", "high": 0.3, "log": True}}, base)
    c = parse({"optim.lr": {"low": 0.01, "high": 0.2, "log": True}, "model.kernel_size": {"choices": [3, 7]}}, base)
    assert a.canonical() == b.canonical()
    assert a.canonical() != c.canonical()
    assert a.describe()["optim.lr"] == "float in [0.01, 0.3], log"


@pytest.mark.parametrize("spec, words", [
    ({"optim.lrr": {"low": 0.1, "high": 0.2}}, ["unknown config key 'optim.lrr'", "optim.lr"]),
    ({"data.augment_overrides.flipp": {"choices": [True, False]}}, ["unknown config key"]),
    ({"optim.lr": {"low": 0.3, "high": 0.01}}, ["impossible range", "0.3"]),
    ({"optim.lr": {"low": 0.1, "high": 0.1}}, ["impossible range"]),
    ({"optim.weight_decay": {"low": 0, "high": 0.01, "log": True}}, ["log range needs low > 0"]),
    ({"optim.lr": {"low": -0.1, "high": 0.2}}, ["optim.lr", "-0.1", "must be > 0"]),
    ({"model.kernel_size": {"choices": [3, 4]}}, ["model.kernel_size", "value 4", "odd"]),
    ({"model.reduction": {"low": 2.5, "high": 8}}, ["must be an integer"]),
    ({"model.reduction": {"type": "float", "low": 2.0, "high": 8.0}}, ["integer"]),
    ({"optim.name": {"low": 1, "high": 2}}, ["choices"]),
    ({"optim.lr": {"low": 0.1, "high": 0.2, "lg": True}}, ["unknown field 'lg'", "log"]),
    ({"optim.lr": {"type": "floating", "low": 0.1, "high": 0.2}}, ["unknown type 'floating'"]),
    ({"optim.lr": {"low": 0.1}}, ["needs 'high'"]),
    ({"optim.lr": {"low": "abc", "high": 0.2}}, ["must be a number"]),
    ({"optim.lr": {"low": 0.1, "high": 0.2, "step": 0.5}}, ["step"]),
    ({"optim.lr": {"low": 0.1, "high": 0.2, "log": True, "step": 0.01}}, ["step cannot be combined with log"]),
    ({"model.kernel_size": {"choices": []}}, ["non-empty list"]),
    ({"model.kernel_size": {"choices": [3, 3]}}, ["repeat"]),
    ({"optim.lr": [0.1, 0.2]}, ["expected a mapping"]),
    ({"seed": {"low": 0, "high": 9}}, ["cannot be searched"]),
    ({"data.val_fraction": {"low": 0.1, "high": 0.3}}, ["cannot be searched"]),
    ({"train.eval_test": {"choices": [True, False]}}, ["cannot be searched", "test set"]),
    ({"model": {"low": 1, "high": 2}}, ["unknown config key 'model'"]),
    ({}, ["non-empty mapping"]),
])
def test_bad_spaces_are_one_line_errors(base, spec, words):
    with pytest.raises(ConfigError) as e:
        parse(spec, base)
    msg = str(e.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg


def test_tune_section_defaults_and_checks(base):
    s = parse_tune_section({}, base, config_from_dict)
    assert set(s.space.dists) == {"optim.lr", "optim.weight_decay"}
    assert (s.metric, s.direction, s.pruner["name"], s.sampler["name"], s.n_seeds) == ("val_top1", "maximize",
                                                                                       "median", "tpe", 3)
    s = parse_tune_section({"metric": "val_loss", "pruner": "hyperband", "sampler": {"name": "random"}}, base)
    assert s.direction == "minimize" and s.pruner == {"name": "hyperband"}
    for section, words in [({"pruner": "medain"}, ["unknown tune.pruner 'medain'", "median"]),
                           ({"pruner": {"name": "median", "warmup": 2}}, ["unknown option 'warmup'"]),
                           ({"pruner": {"name": "hyperband", "reduction_factor": "x"}}, ["reduction_factor", "integer"]),
                           ({"pruner": {"name": "hyperband", "reduction_factor": 1}}, ["must be >= 2"]),
                           ({"sampler": "grid"}, ["unknown tune.sampler"]),
                           ({"metric": "test_top1"}, ["unknown tune.metric"]),
                           ({"metric": "val_top1", "direction": "minimize"}, ["maximized"]),
                           ({"target_accuracy": 97}, ["fraction in (0, 1]"]),
                           ({"metric": "val_loss", "target_accuracy": 0.9}, ["accuracy objective"]),
                           ({"trials": 0}, ["tune.trials"]),
                           ({"n_seeds": -1}, ["tune.n_seeds"]),
                           ({"timeout": -5}, ["tune.timeout"]),
                           ({"spaces": {}}, ["unknown key 'tune.spaces'", "space"])]:
        with pytest.raises(ConfigError) as e:
            parse_tune_section(section, base, config_from_dict)
        for w in words:
            assert w in str(e.value), (section, str(e.value))


def test_max_resource_follows_searched_epochs(base):
    from cbamlab.experiments.tune.settings import max_epochs

    s = parse_tune_section({"space": {"train.epochs": {"low": 2, "high": 9}}}, base, config_from_dict)
    assert max_epochs(s.space, base) == 9
    s = parse_tune_section({}, base, config_from_dict)
    assert max_epochs(s.space, base) == base["train"]["epochs"]


def test_val_fraction_sets_the_search_split_only_when_the_config_has_none():
    searched, _ = prepare({"tune": {"val_fraction": 0.3}})
    assert searched["data"]["val_fraction"] == 0.3 and searched["train"]["eval_test"] is False
    own, _ = prepare({"data": {"val_fraction": 0.2}, "tune": {"val_fraction": 0.3}})
    assert own["data"]["val_fraction"] == 0.2
    assert prepare({})[0]["data"]["val_fraction"] == 0.1  # the default
    for bad in (0, 1.0, "x", True):
        with pytest.raises(ConfigError, match="tune.val_fraction"):
            prepare({"tune": {"val_fraction": bad}})
