"""The run directory: each file written and read back by the one package that owns the format (`cbamlab.runs`),
corrupt files named, the training state typed and stored as it always was, and the one rule (declared on the
config fields) by which fit resumes and compare reuses a run."""
import csv

import pytest

from cbamlab import runs
from cbamlab.config import (load_config, non_result_keys, result_differences, result_part,
                                   config_to_dict)
from cbamlab.errors import CbamlabError
from fake_runs import make_run


def test_every_file_round_trips(tmp_path):
    cfg = load_config(None, ["model.name=resnet20_se", "optim.lr=0.05", "seed=3"])
    runs.write_config(tmp_path, cfg)
    runs.write_metrics(tmp_path, [{"epoch": 1, "lr": 0.1, "train_loss": 1.25, "test_top1": 0.5},
                                    {"epoch": 2, "lr": 0.01, "train_loss": 0.5, "test_top1": None}])
    runs.write_summary(tmp_path, {"status": "complete", "model": "resnet20_se", "seed": 3, "top1": 0.5})
    runs.write_env(tmp_path, {"torch": "2.x"})
    with open(tmp_path / runs.METRICS) as f:
        assert tuple(next(csv.reader(f))) == runs.METRIC_COLUMNS
    run = runs.read_run(tmp_path)
    assert config_to_dict(run.load_config()) == config_to_dict(cfg)
    assert run.config["optim"]["lr"] == 0.05 and run.seed == 3 and run.model == "resnet20_se"
    assert run.metrics[0]["epoch"] == 1 and isinstance(run.metrics[0]["epoch"], int)
    assert run.column("train_loss") == [1.25, 0.5]
    assert run.column("test_top1") == [0.5, None] and run.column("val_top1") == [None, None]
    assert run.column("no_such_column") == []
    assert run.complete and run.summary["top1"] == 0.5 and run.env == {"torch": "2.x"}
    assert runs.is_complete(tmp_path)


def test_an_unfinished_run_reads_back_without_summary(tmp_path):
    run = runs.read_run(make_run(tmp_path, "resnet20_cbam", seed=2, complete=False))
    assert not run.complete and run.summary == {} and run.seed == 2 and len(run.metrics) == 3
    assert runs.read_summary(run.path) is None and not runs.is_complete(run.path)


def test_find_runs_skips_checkpoints_and_sorts(tmp_path):
    make_run(tmp_path, "resnet20_se", 0)
    make_run(tmp_path, "resnet20", 1, complete=False)
    (tmp_path / "digits" / "resnet20_se" / "seed0" / runs.CHECKPOINTS).mkdir()
    (tmp_path / "digits" / "resnet20_se" / "seed0" / runs.CHECKPOINTS / runs.CONFIG).write_text("seed: 0\n")
    assert [(r.model, r.seed, r.complete) for r in runs.find_runs(tmp_path)] == [("resnet20", 1, False),
                                                                                ("resnet20_se", 0, True)]
    with pytest.raises(CbamlabError, match="no such folder"):
        runs.find_runs(tmp_path / "missing")


def test_corrupt_files_are_named(tmp_path):
    run = make_run(tmp_path, "resnet20", 0)
    (run / runs.SUMMARY).write_text("{not json")
    with pytest.raises(CbamlabError, match="summary.json: not valid JSON"):
        runs.read_run(run)
    (run / runs.SUMMARY).write_text("[1, 2]")
    with pytest.raises(CbamlabError, match="summary.json: expected a JSON object"):
        runs.read_run(run)
    (run / runs.CONFIG).write_text("- just\n- a list\n")
    with pytest.raises(CbamlabError, match="config.yaml"):
        runs.read_run(run)
    with pytest.raises(CbamlabError, match="not a cbamlab run directory"):
        runs.read_run(tmp_path)


def test_unreadable_metric_cells_are_not_measured(tmp_path):
    (tmp_path / runs.METRICS).write_text("epoch,lr,test_top1\n1,0.1,nan-ish\n2,,0.5\n")
    assert runs.read_metrics(tmp_path) == [{"epoch": 1, "lr": 0.1, "test_top1": None},
                                             {"epoch": 2, "lr": None, "test_top1": 0.5}]
    assert runs.read_metrics(tmp_path / "nothing") == []


def test_which_keys_change_a_result_is_declared_once():
    declared = non_result_keys()
    assert {"data.root", "data.download", "data.workers", "model.num_classes", "model.in_chans", "train.threads",
            "train.progress", "train.tensorboard"} <= declared
    assert not declared & {"seed", "model.name", "model.reduction", "data.name", "data.augment", "train.epochs",
                           "train.batch_size", "optim.lr", "schedule.name"}
    a = load_config(None, ["train.threads=1", "data.workers=0"])
    b = load_config(None, ["train.threads=4", "train.progress=false"])
    assert result_differences(a, b) == []
    assert result_differences(a, load_config(None, ["optim.lr=0.05", "seed=1"])) == ["optim.lr", "seed"]
    # mappings work alike, and a key only one side has is a difference
    d = config_to_dict(a)
    assert result_differences(d, {**d, "extra": {"x": 1}}) == ["extra.x"]
    assert "threads" not in result_part(d)["train"] and result_part(d)["optim"] == d["optim"]


def _unfinished(run_dir, cfg):
    """An interrupted run as fit leaves it: config, metrics of epoch 1 and a training state."""
    runs.write_config(run_dir, cfg)
    runs.write_metrics(run_dir, [{"epoch": 1}])
    runs.write_state(run_dir, runs.TrainState(epoch=1))


def test_prepare_names_an_older_state_file_only_when_there_is_one(tmp_path, caplog):
    """A run stopped before its first epoch ended has a config.yaml and no state file: it starts afresh, and
    is not reported as a state file an older cbamlab wrote; a state file without a record is."""
    cfg = load_config(None, ["train.threads=1"])
    fresh, old = tmp_path / "fresh", tmp_path / "old"
    runs.write_config(fresh, cfg)
    _unfinished(old, cfg)  # a state without the config record runs now write
    with caplog.at_level("INFO", logger="cbamlab"):
        assert runs.prepare(fresh, cfg, resume=True) is runs.Prepared.FRESH
        assert "older cbamlab" not in caplog.text
        assert runs.prepare(old, cfg, resume=True) is runs.Prepared.RESUME
        assert f"{old}: its state file records no config (an older cbamlab wrote it)" in caplog.text


def test_prepare_resumes_across_non_result_keys_only(tmp_path):
    cfg = load_config(None, ["train.threads=1"])
    _unfinished(tmp_path, cfg)
    cosmetic = load_config(None, ["train.threads=2", "data.root=/x"])
    assert runs.prepare(tmp_path, cosmetic, resume=True) is runs.Prepared.RESUME
    with pytest.raises(runs.RunDirError, match="optim.lr differ"):
        runs.prepare(tmp_path, load_config(None, ["train.threads=1", "optim.lr=0.05"]), resume=True)
    with pytest.raises(runs.RunDirError, match="--resume"):
        runs.prepare(tmp_path, cfg, resume=False)


def test_prepare_says_a_finished_run_is_complete_and_a_new_folder_fresh(tmp_path):
    finished = runs.read_run(make_run(tmp_path, "resnet20", 0))
    assert runs.prepare(finished.path, finished.load_config(), resume=True) is runs.Prepared.COMPLETE
    assert runs.prepare(tmp_path / "new", finished.load_config(), resume=False) is runs.Prepared.FRESH
