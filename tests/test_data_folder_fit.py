"""fit on an image folder: the data.* keys reach the loaders, unreadable files end in summary.json, bad budgets refused."""
import json

import pytest

from cbamlab.config import load_config
from cbamlab.engine import fit
from cbamlab.errors import ConfigError
from test_data_folder import add_corrupt, make_tree


@pytest.mark.parametrize("budget", [0.0, 4.0])
def test_fit_lists_unreadable_files_in_the_summary(tmp_path, monkeypatch, budget, one_thread):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # data.index_cache writes there
    make_tree(tmp_path / "data")
    bad = add_corrupt(tmp_path / "data")
    cfg = load_config(None, ["data.name=imagefolder", f"data.root={tmp_path / 'data'}", "data.image_size=16",
                             f"data.memory_budget_gb={budget}", "data.workers=0", "data.index_cache=true",
                             "model.name=resnet20", "train.epochs=1", "train.batch_size=8", "train.threads=1",
                             "train.progress=false"])
    summary = fit(cfg, tmp_path / "run")
    assert summary["status"] == "complete" and summary["skipped_files"] == bad
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["skipped_files"] == bad


def test_memory_budget_is_checked():
    assert load_config(None, ["data.memory_budget_gb=0"]).data.memory_budget_gb == 0.0
    assert load_config(None).data.memory_budget_gb > 0 and load_config(None).data.index_cache is False
    for bad in ("-1", ".nan", "inf"):
        with pytest.raises(ConfigError, match="data.memory_budget_gb"):
            load_config(None, [f"data.memory_budget_gb={bad}"])
