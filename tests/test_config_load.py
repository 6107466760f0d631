"""load_config leaves the caller's mapping alone; the validation fraction has one rule, asked by the config and by
load_dataset alike."""
import copy

import pytest

from cbamlab.data import load_dataset
from cbamlab.config import load_config
from cbamlab.errors import ConfigError, DataError


def test_load_config_leaves_the_callers_mapping_alone():
    d = {"seed": 1, "data": {"augment_overrides": {"hflip": False}}, "optim": {"betas": [0.8, 0.9]},
         "compare": {"seeds": [0, 1]}}
    before = copy.deepcopy(d)
    cfg = load_config(d, ["data.augment_overrides.vflip=true", "optim.lr=0.05", "data.name=synthetic"])
    assert d == before
    assert cfg.data.augment_overrides == {"hflip": False, "vflip": True} and cfg.optim.lr == 0.05
    cfg.data.augment_overrides["erasing"] = 0.5  # nor does the config share its containers with the mapping
    cfg.optim.betas[0] = 0.1
    assert d == before
    again = load_config(d, ["data.augment_overrides.hflip=true"])
    assert again.data.augment_overrides == {"hflip": True} and d == before


@pytest.mark.parametrize("value", [1.0, -0.1, 1.5])
def test_val_fraction_has_one_rule(value):
    rule = "must be in [0, 1) (the fraction of the training set held out)"
    with pytest.raises(ConfigError) as from_config:
        load_config(None, [f"data.val_fraction={value}"])
    assert str(from_config.value) == f"data.val_fraction={value!r}: {rule}"
    with pytest.raises(DataError) as from_data:
        load_dataset("digits", val_fraction=value)
    assert str(from_data.value) == f"val_fraction={value!r}: {rule}"
