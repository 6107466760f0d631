"""Checkpoints: safetensors weights, weights_only state, refused pickles, corrupt files, another architecture."""
import os
import pickle
import random

import numpy as np
import pytest
import torch
from torch import nn

from cbamlab.engine import checkpoint as ckpt
from cbamlab.errors import CheckpointError


def _small():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 3))


def test_weights_roundtrip_with_metadata(tmp_path):
    a, b = _small(), nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 3))
    a[1].running_mean.fill_(0.25)
    ckpt.save_weights(tmp_path / "w.safetensors", a, {"epoch": 3})
    meta = ckpt.load_into(b, tmp_path / "w.safetensors")
    assert meta["epoch"] == "3"
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k
    assert not list(tmp_path.glob(".*.tmp"))  # the atomic write left no temp file


def test_corrupt_and_truncated_weights_are_refused(tmp_path):
    p = tmp_path / "w.safetensors"
    ckpt.save_weights(p, _small())
    data = p.read_bytes()
    (tmp_path / "trunc.safetensors").write_bytes(data[: len(data) // 2])
    (tmp_path / "junk.safetensors").write_bytes(b"not a weights file at all")
    for name in ("trunc.safetensors", "junk.safetensors"):
        with pytest.raises(CheckpointError, match="not a valid safetensors file"):
            ckpt.load_weights(tmp_path / name)
    with pytest.raises(CheckpointError, match="no such weights file"):
        ckpt.load_weights(tmp_path / "missing.safetensors")


def test_weights_of_another_architecture_are_refused(tmp_path):
    ckpt.save_weights(tmp_path / "w.safetensors", _small())
    wider = nn.Sequential(nn.Linear(4, 16), nn.BatchNorm1d(16), nn.Linear(16, 3))
    before = [t.clone() for t in wider.state_dict().values()]
    with pytest.raises(CheckpointError, match="another architecture.*of another shape"):
        ckpt.load_into(wider, tmp_path / "w.safetensors")
    assert all(torch.equal(a, b) for a, b in zip(before, wider.state_dict().values()))  # untouched
    deeper = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 3), nn.Linear(3, 3))
    with pytest.raises(CheckpointError, match=r"2 missing \(e.g. 3.weight\)"):
        ckpt.load_into(deeper, tmp_path / "w.safetensors")
    with pytest.raises(CheckpointError, match="7 unexpected"):
        ckpt.load_into(nn.Sequential(nn.Linear(4, 8)), tmp_path / "w.safetensors")


class _Evil:
    """Unpickling this would create a marker file."""

    marker = ""

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickle_that_would_run_code_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "pwned"
    evil = _Evil()
    evil.marker = str(marker)
    path = tmp_path / "last.state.pt"
    torch.save({"epoch": 1, "payload": evil}, path, _use_new_zipfile_serialization=True)
    assert not marker.exists()
    with pytest.raises(CheckpointError, match="refused"):
        ckpt.load_state(path)
    assert not marker.exists()
    # the plain-pickle form too
    raw = tmp_path / "raw.pt"
    raw.write_bytes(pickle.dumps({"epoch": 1, "payload": evil}, protocol=2))
    with pytest.raises(CheckpointError):
        ckpt.load_state(raw)
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
    state = {"epoch": 2, "model": ckpt.plain_state(net), "optimizer": opt.state_dict(), "rng": ckpt.rng_state(),
             "history": [{"epoch": 1, "lr": 0.1, "val_top1": None}]}
    ckpt.save_state(tmp_path / "s.pt", state)
    expect = (torch.rand(3), random.random(), np.random.rand())
    loaded = torch.load(tmp_path / "s.pt", weights_only=True)  # the contract: weights_only loads it
    assert loaded["history"] == state["history"]
    ckpt.set_rng_state(ckpt.load_state(tmp_path / "s.pt")["rng"])
    again = (torch.rand(3), random.random(), np.random.rand())
    assert torch.equal(expect[0], again[0]) and expect[1:] == again[1:]
    opt2 = torch.optim.SGD(_small().parameters(), lr=0.1, momentum=0.9)
    opt2.load_state_dict(loaded["optimizer"])
    buf = opt.state_dict()["state"][0]["momentum_buffer"]
    assert torch.equal(opt2.state_dict()["state"][0]["momentum_buffer"], buf)


def test_state_without_epoch_is_not_a_cbamlab_state(tmp_path):
    ckpt.save_state(tmp_path / "s.pt", {"weights": torch.zeros(2)})
    with pytest.raises(CheckpointError, match="not a cbamlab training state"):
        ckpt.load_state(tmp_path / "s.pt")
    os.remove(tmp_path / "s.pt")
