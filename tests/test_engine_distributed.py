"""DDP under real `torchrun` (gloo on CPU): equivalence with one process, two nodes, a killed worker, bad input.

The torchrun tests start 2-4 Python processes that each import torch; on a shared 2-core machine that alone
takes several seconds, so they are marked slow and kept few.
"""
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cbamlab import create_model
from cbamlab.cli import main
from cbamlab.data import load_dataset, make_loaders
from cbamlab.config import load_config
from cbamlab.engine import fit
from cbamlab.engine import distributed
from cbamlab.engine.loop import evaluate
from cbamlab.inference.predict import evaluate_config, load_run
from cbamlab.runs import LAST_WEIGHTS, load_weights, read_metrics

# digits: 1438 training images = 5 global batches of 256 and a last one of 158 (79 per rank); 359 test images
# are split 179 / 180 between the ranks (no padding in evaluation)
TINY = ["train.epochs=1", "train.batch_size=256", "train.threads=1", "train.progress=false", "data.augment=none",
        "schedule.name=constant", "optim.lr=0.01", "model.name=resnet20_cbam", "train.amp=none",
        "train.channels_last=false"]
# After these 6 SGD steps the 2-process weights (SyncBN on) match the 1-process ones within WEIGHT_ATOL.
# The math is the same (in float64 the gradients of one step agree to 1e-14); what differs is float32
# rounding (a mean of two half-batch means), which training amplifies: measured 4.7e-5 here. Without
# SyncBN each rank normalises with its own 128 images: ~1e-2 apart after 5 such steps (a separate check).
WEIGHT_ATOL = 2e-4


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(*args, **kw):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    return subprocess.Popen([sys.executable, "-m", "torch.distributed.run", *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **kw)


def _train_args(out, overrides):
    return ["-m", "cbamlab", "train", "--out", str(out), *[a for o in overrides for a in ("--set", o)]]


def _finish(p, timeout=400):
    out, _ = p.communicate(timeout=timeout)
    return p.returncode, out


@pytest.mark.slow
def test_two_processes_with_half_batches_reach_the_weights_and_metrics_of_one(tmp_path, one_thread):
    p = _torchrun("--nproc-per-node", "2", "--master-port", str(_port()),
                  *_train_args(tmp_path / "ddp", TINY + ["train.sync_bn=true"]))
    single = fit(load_config(None, TINY), tmp_path / "one")  # meanwhile, here: batch 256 in one process
    rc, log = _finish(p)
    assert rc == 0, log[-3000:]
    assert log.count("run: ") == 1  # only rank 0 prints
    ddp = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    w1, w2 = load_weights(tmp_path / "one" / LAST_WEIGHTS)[0], load_weights(tmp_path / "ddp" / LAST_WEIGHTS)[0]
    assert w1.keys() == w2.keys()
    diff = max(float((w1[k].double() - w2[k].double()).abs().max()) for k in w1)
    assert diff < WEIGHT_ATOL
    assert float((w1["layer1.0.bn1.running_var"] - w2["layer1.0.bn1.running_var"]).abs().max()) < WEIGHT_ATOL
    assert ddp["top1"] == pytest.approx(single["top1"], abs=0.01)
    assert ddp["final"]["train_loss"] == pytest.approx(single["final"]["train_loss"], rel=1e-3)  # all-reduced
    # the sharded evaluation (179 + 180 images, counts summed) gives exactly what one process gets
    # from the same weights
    model = create_model("resnet20_cbam", num_classes=10, in_chans=1)
    model.load_state_dict(w2)
    test = make_loaders(load_dataset("digits"), 256, augment=None).test
    here = evaluate(model, test, device=torch.device("cpu"), num_classes=10)
    assert ddp["confusion_matrix"] == here["confusion_matrix"] and sum(map(sum, here["confusion_matrix"])) == 359
    assert (ddp["top1"], ddp["top5"]) == (here["top1"], here["top5"])
    assert ddp["final"]["test_loss"] == pytest.approx(here["loss"], rel=1e-6)
    assert json.loads((tmp_path / "ddp" / "env.json").read_text())["world_size"] == 2


@pytest.mark.slow
@pytest.mark.parametrize("sync_bn", [False, True])
def test_the_top1_a_torchrun_run_records_is_the_saved_models(tmp_path, sync_bn, capsys):
    """Each rank evaluates its share of the test split; without train.sync_bn each rank's BatchNorm running
    statistics come from its own half of every batch, and the saved weights hold rank 0's. summary.json must be
    what `cbamlab eval --run` computes from the saved weights: the same confusion matrix, top-1 and loss."""
    out = tmp_path / "run"
    overrides = [o for o in TINY if not o.startswith("model.name")] + ["model.name=resnet20",
                                                                       f"train.sync_bn={str(sync_bn).lower()}"]
    rc, log = _finish(_torchrun("--nproc-per-node", "2", "--master-port", str(_port()), *_train_args(out, overrides)))
    assert rc == 0, log[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    loaded = load_run(out)
    here = evaluate_config(loaded.model, loaded.cfg)
    assert here["confusion_matrix"] == summary["confusion_matrix"] and sum(map(sum, here["confusion_matrix"])) == 359
    assert (here["top1"], here["top5"]) == (summary["top1"], summary["top5"])
    assert here["loss"] == pytest.approx(summary["final"]["test_loss"], rel=1e-6)
    assert main(["eval", "--run", str(out), "-q"]) == 0
    assert f"top1={summary['top1']:.6f}" in capsys.readouterr().out


@pytest.mark.slow
def test_two_torchrun_nodes_on_one_host_form_one_job(tmp_path):
    port, out = _port(), tmp_path / "nodes"
    nodes = [_torchrun("--nnodes", "2", "--nproc-per-node", "1", "--node-rank", str(i), "--rdzv-backend", "c10d",
                       "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "h12b",
                       *_train_args(out, TINY)) for i in range(2)]
    results = [_finish(p) for p in nodes]
    assert [rc for rc, _ in results] == [0, 0], results[0][1][-2000:] + results[1][1][-2000:]
    assert sum(log.count("run: ") for _, log in results) == 1
    assert json.loads((out / "env.json").read_text())["world_size"] == 2
    assert json.loads((out / "summary.json").read_text())["status"] == "complete"


def _children(pid: int) -> list[int]:
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.append(int(stat.parent.name))
    return kids


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the workers through /proc")
def test_a_worker_killed_mid_epoch_is_restarted_and_resumes_by_itself(tmp_path):
    out = tmp_path / "fault"
    p = _torchrun("--nproc-per-node", "2", "--max-restarts", "1", "--monitor-interval", "0.5",
                  "--master-port", str(_port()),
                  *_train_args(out, [o for o in TINY if not o.startswith(("train.epochs", "train.batch_size"))]
                               + ["train.epochs=3", "train.batch_size=32"]))
    deadline = time.time() + 300
    while not (out / "metrics.csv").exists() and time.time() < deadline and p.poll() is None:
        time.sleep(0.2)
    time.sleep(0.3)  # into epoch 2 (an epoch is 45 steps; on a fast machine it lasts under a second)
    assert [r["epoch"] for r in read_metrics(out)] == [1]
    workers = _children(p.pid)
    assert len(workers) == 2
    os.kill(max(workers), signal.SIGKILL)
    rc, log = _finish(p)
    assert rc == 0, log[-3000:]
    assert "torchrun restart 1: resuming" in log and "resuming" in log and "after epoch 1 of 3" in log
    assert [r["epoch"] for r in read_metrics(out)] == [1, 2, 3]  # epoch 2 retrained once, from the checkpoint
    assert json.loads((out / "summary.json").read_text())["status"] == "complete"


@pytest.mark.slow
def test_the_article_imagenet_recipe_runs_end_to_end_under_torchrun(tmp_path):
    """configs/imagenet_resnet50_cbam.yaml (ResNet-50 + CBAM, SGD, step schedule, bf16, channels_last) on a tiny
    ImageNet-layout folder of JPEG files, 2 processes, SyncBN, streaming from the files; only its size is cut."""
    from PIL import Image

    root = tmp_path / "imagenet"
    gen = torch.Generator().manual_seed(0)
    for split, per_class in (("train", 8), ("val", 3)):
        for c, wnid in enumerate(("n01440764", "n01443537", "n01484850", "n01491361")):
            (root / split / wnid).mkdir(parents=True)
            for i in range(per_class):
                pixels = (torch.rand(40, 48, 3, generator=gen) * 60 + 60 * c).to(torch.uint8).numpy()
                Image.fromarray(pixels).save(root / split / wnid / f"{wnid}_{i}.JPEG", quality=90)
    out = tmp_path / "run"
    config = Path(__file__).resolve().parents[1] / "configs" / "imagenet_resnet50_cbam.yaml"
    p = _torchrun("--nproc-per-node", "2", "--master-port", str(_port()), "-m", "cbamlab", "train",
                  "--config", str(config), "--out", str(out),
                  *[a for o in (f"data.root={root}", "data.image_size=32", "data.workers=0", "train.epochs=1",
                                "train.batch_size=8", "train.threads=1", "train.progress=false", "train.sync_bn=true",
                                "data.memory_budget_gb=0") for a in ("--set", o)])
    rc, log = _finish(p)
    assert rc == 0, log[-3000:]
    assert "streaming them from the files" in log
    s = json.loads((out / "summary.json").read_text())
    assert s["model"] == "resnet50_cbam" and s["dataset"] == "imagefolder" and s["epochs"] == 1
    assert sum(map(sum, s["confusion_matrix"])) == 12  # every val image counted once across the 2 ranks
    assert s["classes"] == ["n01440764", "n01443537", "n01484850", "n01491361"]
    assert json.loads((out / "env.json").read_text())["world_size"] == 2


def _rank_env(monkeypatch, world, rank, port, timeout="2"):
    for k, v in {"WORLD_SIZE": world, "RANK": rank, "LOCAL_RANK": rank, "MASTER_ADDR": "127.0.0.1",
                 "MASTER_PORT": port, distributed.TIMEOUT_ENV: timeout}.items():
        monkeypatch.setenv(k, str(v))


def test_a_world_that_does_not_divide_the_batch_is_one_error_line_and_writes_nothing(tmp_path, monkeypatch,
                                                                                  capfd):
    _rank_env(monkeypatch, 3, 0, _port())
    assert main(["train", "--out", str(tmp_path / "run"), "--set", "train.batch_size=64"]) == 2
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: train.batch_size=64 does not divide among the 3 processes")
    assert list(tmp_path.iterdir()) == []


def test_an_unreachable_rendezvous_fails_quickly_with_one_error_line(tmp_path, monkeypatch, capfd):
    _rank_env(monkeypatch, 2, 1, _port())  # rank 1 looks for rank 0's store, which nobody serves
    t0 = time.time()
    assert main(["train", "--out", str(tmp_path / "run")]) == 2
    assert time.time() - t0 < 30
    err = capfd.readouterr().err.strip().splitlines()  # c10d's C++ retries and stack traces hidden; rank 1 quiet
    assert len(err) == 1 and err[0].startswith("error: the 2 processes did not meet at 127.0.0.1:")
    assert distributed.TIMEOUT_ENV in err[0]
    assert list(tmp_path.iterdir()) == []


def test_a_restarted_attempt_resumes_only_a_run_it_started(tmp_path, monkeypatch):
    (tmp_path / "run").mkdir()
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")
    assert not distributed.resume_after_restart(tmp_path / "run", "config.yaml")  # nothing started: fresh
    (tmp_path / "run" / "config.yaml").write_text("seed: 0\n")
    assert distributed.resume_after_restart(tmp_path / "run", "config.yaml")
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "0")
    assert not distributed.resume_after_restart(tmp_path / "run", "config.yaml")  # a first attempt: as asked


def test_no_process_group_outside_torchrun(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert distributed.init_from_env(7) is None
    assert distributed.from_main(lambda: 42, None) == 42
    assert not torch.distributed.is_initialized()
