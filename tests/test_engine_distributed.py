"""DDP under torchrun: ranks take disjoint shards of each epoch; a 2-process CPU run (gloo) writes one run dir."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cbamlab.engine.distributed import ShardedLoader
from cbamlab.engine.rundir import read_metrics


class _Loader:
    def __init__(self, n):
        self.n, self.epoch, self.num_samples = n, 0, n * 4

    def __len__(self):
        return self.n

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __iter__(self):
        return iter([(self.epoch, i) for i in range(self.n)])


def test_shards_are_disjoint_equal_and_follow_the_epoch():
    base = _Loader(7)
    shards = [ShardedLoader(base, r, 3) for r in range(3)]
    shards[0].set_epoch(4)
    got = [list(s) for s in shards]
    assert [len(g) for g in got] == [2, 2, 2] == [len(s) for s in shards]  # the ragged 7th batch is dropped
    flat = sorted(i for g in got for _, i in g)
    assert flat == list(range(6)) and all(e == 4 for g in got for e, _ in g)


@pytest.mark.slow
def test_torchrun_two_processes_one_tiny_epoch(tmp_path):
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).with_name("torchrun"))
    out = tmp_path / "ddp"
    r = subprocess.run([torchrun, "--nproc-per-node", "2", "--master-port", "29517", "-m", "cbamlab", "train",
                        "--out", str(out), "--set", "train.epochs=1", "--set", "train.threads=1",
                        "--set", "schedule.name=constant", "--set", "optim.lr=0.05"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.count("run: ") == 1  # only rank 0 prints
    s = json.loads((out / "summary.json").read_text())
    assert s["status"] == "complete" and 0 <= s["top1"] <= 1
    assert [row["epoch"] for row in read_metrics(out)] == [1]
    assert json.loads((out / "env.json").read_text())["world_size"] == 2
