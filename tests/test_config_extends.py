"""`extends:` in a YAML config: a study's file names the recipe it runs under and lays its own keys over it."""
import pytest
import yaml

from cbamlab.cli import main
from cbamlab.config import load_config, read_yaml
from cbamlab.errors import ConfigError
from cbamlab.experiments.compare import load_compare_config


def _write(path, d):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(d), encoding="utf-8")
    return path


RECIPE = {"model": {"name": "resnet20_cbam"}, "data": {"name": "digits", "augment_overrides": {"hflip": True}},
          "optim": {"lr": 0.2, "betas": [0.8, 0.9]}, "train": {"epochs": 3}}


def test_a_file_extends_a_recipe_mapping_by_mapping(tmp_path):
    _write(tmp_path / "recipes" / "base.yaml", RECIPE)
    study = _write(tmp_path / "studies" / "ablation.yaml",
                   {"extends": "../recipes/base.yaml", "optim": {"betas": [0.5, 0.6]},
                    "data": {"augment_overrides": {"erasing": 0.25}},
                    "compare": {"variants": ["resnet20", "resnet20_cbam"], "seeds": 2}})
    raw = read_yaml(study)
    assert "extends" not in raw
    assert raw["optim"] == {"lr": 0.2, "betas": [0.5, 0.6]}  # a key of the mapping kept, a list replaced
    assert raw["data"]["augment_overrides"] == {"hflip": True, "erasing": 0.25}
    assert raw["model"] == RECIPE["model"] and raw["train"] == RECIPE["train"]
    cfg = load_config(study)
    assert (cfg.model.name, cfg.optim.lr, cfg.optim.betas, cfg.train.epochs) == ("resnet20_cbam", 0.2, [0.5, 0.6], 3)
    base, spec = load_compare_config(study)
    assert base == cfg and [v.label for v in spec.variants] == ["resnet20", "resnet20_cbam"]
    assert read_yaml(tmp_path / "recipes" / "base.yaml") == RECIPE  # the recipe itself is left as it was


def test_extends_chains_and_each_path_is_relative_to_its_own_file(tmp_path):
    _write(tmp_path / "a" / "root.yaml", RECIPE)
    _write(tmp_path / "a" / "b" / "mid.yaml", {"extends": "../root.yaml", "train": {"epochs": 5}})
    top = _write(tmp_path / "top.yaml", {"extends": "a/b/mid.yaml", "optim": {"lr": 0.05}})
    cfg = load_config(top)
    assert (cfg.train.epochs, cfg.optim.lr, cfg.data.name) == (5, 0.05, "digits")


def test_a_loop_of_extends_is_an_error_that_names_it(tmp_path):
    _write(tmp_path / "x.yaml", {"extends": "y.yaml"})
    _write(tmp_path / "y.yaml", {"extends": "x.yaml"})
    with pytest.raises(ConfigError, match=r"x\.yaml extends itself .*x\.yaml -> .*y\.yaml -> .*x\.yaml"):
        read_yaml(tmp_path / "x.yaml")


@pytest.mark.parametrize("value, match", [("missing.yaml", r"no such config file: .*missing\.yaml \(extended by "),
                                          (3, r"extends: must be the path of another YAML file, got 3"),
                                          ("", r"extends: must be the path of another YAML file, got ''")])
def test_a_bad_extends_is_one_error_line_with_exit_status_2(tmp_path, capsys, value, match):
    path = _write(tmp_path / "study.yaml", {"extends": value, "train": {"epochs": 1}})
    with pytest.raises(ConfigError, match=match):
        read_yaml(path)
    assert main(["train", "-c", str(path), "--print-config"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "Traceback" not in err[0]
