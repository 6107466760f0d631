"""Checkpoints: safetensors weights, the typed training state stored as a weights_only dict of the same keys as
ever, refused pickles, corrupt files, another architecture."""
import os
import pickle
import random

import numpy as np
import pytest
import torch
from torch import nn

from cbamlab import runs
from cbamlab.config import load_config
from cbamlab.errors import CheckpointError

# the keys of checkpoints/last.state.pt, in the order cbamlab has always written them
STATE_KEYS = ["epoch", "step", "history", "best", "wall_time_s", "model_name", "model", "optimizer", "rng", "scaler",
              "ema", "config", "config_hash", "code_version"]


def _small():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 3))


def test_weights_roundtrip_with_metadata(tmp_path):
    a, b = _small(), nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 3))
    a[1].running_mean.fill_(0.25)
    runs.save_weights(tmp_path / "w.safetensors", a, {"epoch": 3})
    meta = runs.load_into(b, tmp_path / "w.safetensors")
    assert meta["epoch"] == "3"
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k
    assert not list(tmp_path.glob(".*.tmp"))  # the atomic write left no temp file


def test_corrupt_and_truncated_weights_are_refused(tmp_path):
    p = tmp_path / "w.safetensors"
    runs.save_weights(p, _small())
    data = p.read_bytes()
    (tmp_path / "trunc.safetensors").write_bytes(data[: len(data) // 2])
    (tmp_path / "junk.safetensors").write_bytes(b"not a weights file at all")
    for name in ("trunc.safetensors", "junk.safetensors"):
        with pytest.raises(CheckpointError, match="not a valid safetensors file"):
            runs.load_weights(tmp_path / name)
    with pytest.raises(CheckpointError, match="no such weights file"):
        runs.load_weights(tmp_path / "missing.safetensors")


def test_weights_of_another_architecture_are_refused(tmp_path):
    runs.save_weights(tmp_path / "w.safetensors", _small())
    wider = nn.Sequential(nn.Linear(4, 16), nn.BatchNorm1d(16), nn.Linear(16, 3))
    before = [t.clone() for t in wider.state_dict().values()]
    with pytest.raises(CheckpointError, match="another architecture.*of another shape"):
        runs.load_into(wider, tmp_path / "w.safetensors")
    assert all(torch.equal(a, b) for a, b in zip(before, wider.state_dict().values()))  # untouched
    deeper = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 3), nn.Linear(3, 3))
    with pytest.raises(CheckpointError, match=r"2 missing \(e.g. 3.weight\)"):
        runs.load_into(deeper, tmp_path / "w.safetensors")
    with pytest.raises(CheckpointError, match="7 unexpected"):
        runs.load_into(nn.Sequential(nn.Linear(4, 8)), tmp_path / "w.safetensors")


class _Evil:
    """Unpickling this would create a marker file."""

    marker = ""

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickle_that_would_run_code_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "pwned"
    evil = _Evil()
    evil.marker = str(marker)
    path = tmp_path / runs.LAST_STATE
    path.parent.mkdir()
    torch.save({"epoch": 1, "payload": evil}, path, _use_new_zipfile_serialization=True)
    assert not marker.exists()
    with pytest.raises(CheckpointError, match="refused"):
        runs.load_state(tmp_path)
    assert not marker.exists()
    # the plain-pickle form too
    raw = tmp_path / "raw"
    (raw / runs.CHECKPOINTS).mkdir(parents=True)
    (raw / runs.LAST_STATE).write_bytes(pickle.dumps({"epoch": 1, "payload": evil}, protocol=2))
    with pytest.raises(CheckpointError):
        runs.load_state(raw)
    assert not marker.exists()
    # control: an unrestricted load of the same file would have run it
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_state_loads_weights_only_and_restores_rng(tmp_path):
    net = _small()
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    net(torch.randn(5, 4)).sum().backward()
    opt.step()
    torch.manual_seed(1), random.seed(2), np.random.seed(3)
    best = runs.Best.of_row({"epoch": 2, "val_top1": 0.5, "val_top5": 0.75, "test_top1": None}, "val_top1")
    state = runs.TrainState(epoch=2, step=8, history=[{"epoch": 1, "lr": 0.1, "val_top1": None}], best=best,
                            wall_time_s=1.5, model_name="small", model=runs.plain_state(net),
                            optimizer=opt.state_dict(), rng=runs.rng_state(), **runs.record(load_config(None)))
    runs.write_state(tmp_path, state)
    expect = (torch.rand(3), random.random(), np.random.rand())
    loaded = torch.load(tmp_path / runs.LAST_STATE, weights_only=True)  # the contract: weights_only loads it
    assert list(loaded) == STATE_KEYS and loaded["history"] == state.history
    assert loaded["best"] == {"epoch": 2, "metric": "val_top1", "value": 0.5, "val_top1": 0.5, "val_top5": 0.75}
    back = runs.load_state(tmp_path)
    assert back.best == best and back.config == state.config and back.ema is None and back.scaler is None
    assert all(torch.equal(back.model[k], v) for k, v in state.model.items()) and back.eval_weights is back.model
    runs.set_rng_state(back.rng)
    again = (torch.rand(3), random.random(), np.random.rand())
    assert torch.equal(expect[0], again[0]) and expect[1:] == again[1:]
    opt2 = torch.optim.SGD(_small().parameters(), lr=0.1, momentum=0.9)
    opt2.load_state_dict(loaded["optimizer"])
    buf = opt.state_dict()["state"][0]["momentum_buffer"]
    assert torch.equal(opt2.state_dict()["state"][0]["momentum_buffer"], buf)


def test_a_state_an_older_cbamlab_wrote_loads_and_one_without_epoch_is_refused(tmp_path):
    runs.write_state(tmp_path, runs.TrainState(epoch=1, model={"w": torch.ones(2)}))
    path = tmp_path / runs.LAST_STATE
    old = {k: v for k, v in torch.load(path, weights_only=True).items()
           if k not in ("ema", "config", "config_hash", "code_version")}  # before EMA and the provenance record
    torch.save(old, path)
    state = runs.load_state(tmp_path)
    assert state.epoch == 1 and state.ema is None and state.config is None and state.eval_weights is state.model
    torch.save({k: v for k, v in old.items() if k != "rng"}, path)
    with pytest.raises(CheckpointError, match=r"an incomplete cbamlab training state \(no rng\)"):
        runs.load_state(tmp_path)
    torch.save({"weights": torch.zeros(2)}, path)
    with pytest.raises(CheckpointError, match="not a cbamlab training state"):
        runs.load_state(tmp_path)
    os.remove(path)
