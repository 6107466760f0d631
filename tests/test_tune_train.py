"""Tuning with real training (engine.fit on real data): a digits study killed and resumed to the asked number
of trials, a real trial pruned mid-run, and a search that never touches the (corrupt) test files."""
import gzip
import signal
import struct
import subprocess
import sys
import time

import numpy as np
import optuna
import pytest
import yaml
from optuna.trial import TrialState

from cbamlab import runs
from cbamlab.cli import main
from cbamlab.config import result_part
from cbamlab.experiments import tune
from cbamlab.experiments.tune.storage import open_storage, open_study, resolve_storage


def _study(out, name="digits-quick"):
    return optuna.load_study(study_name=name, storage=open_storage(resolve_storage(None, out)))


@pytest.mark.slow
def test_digits_study_killed_then_rerun_reaches_six_trials(tmp_path, capsys):
    out = tmp_path / "out"
    args = ["tune", "--out", str(out), "--set", "train.epochs=1", "--seeds", "1", "-q"]
    proc = subprocess.Popen([sys.executable, "-m", "cbamlab", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 900  # generous: CI machines may be shared
        while time.time() < deadline and proc.poll() is None:
            try:
                trials = _study(out).trials
            except Exception:  # noqa: BLE001 - the database or the study is not there yet
                trials = []
            finished = [t for t in trials if t.state.is_finished()]
            if len(finished) >= 1 and any(t.state == TrialState.RUNNING for t in trials):
                break
            time.sleep(0.2)
        else:
            pytest.fail("the first run neither reached its second trial nor kept running")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    states = [t.state for t in _study(out).trials]
    assert TrialState.RUNNING in states and len(states) < 6

    t0 = time.time()
    assert main(args) == 0
    rerun_s = time.time() - t0
    printed = capsys.readouterr().out
    trials = _study(out).trials
    done = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(done) == 6, [t.state for t in trials]
    assert [t.state for t in trials].count(TrialState.FAIL) == 1  # the killed one, no longer RUNNING
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    best = _study(out).best_trial
    assert best.value > 0.3  # 1 epoch on digits: well above chance (0.1)
    assert f"best trial {best.number}: val_top1 {best.value:.4f}" in printed
    assert "test top-1 of the best configuration retrained on train+val" in printed
    run = out / "digits-quick" / "final" / f"trial{best.number:04d}" / "seed0"
    summary = runs.read_summary(run)
    assert summary["status"] == "complete" and summary["split"] == "test" and summary["top1"] > 0.3
    cfg = runs.read_config(run)
    assert cfg["data"]["val_fraction"] == 0.0 and cfg["train"]["eval_test"] is True
    assert cfg["optim"]["lr"] == pytest.approx(best.params["optim.lr"])
    report = (out / "digits-quick" / "report.md").read_text()
    assert "## Final test" in report and "| 0 |" in report
    print(f"rerun of the remaining trials + retrain: {rerun_s:.0f} s")


@pytest.mark.slow
def test_a_weak_real_trial_is_pruned_mid_run(tmp_path):
    base, settings = tune.prepare({
        "train": {"epochs": 2}, "data": {"val_fraction": 0.2},
        "tune": {"space": {"optim.lr": {"low": 1e-5, "high": 0.5, "log": True}},
                 "pruner": {"name": "median", "n_startup_trials": 1, "n_warmup_steps": 0}}})
    storage = open_storage(resolve_storage(None, tmp_path))
    study, _ = open_study(storage, "p", direction="maximize", space=settings.space.canonical(), metric="val_top1",
                          base_config=result_part(base))
    study.enqueue_trial({"optim.lr": 0.1})
    study.enqueue_trial({"optim.lr": 1e-5})  # learns nothing in one epoch
    record = tune.run_tune(base, settings, tmp_path, study_name="p", trials=2, n_seeds=0)
    good, weak = record["trials"]
    assert good["state"] == "COMPLETE" and len(good["intermediate"]) == 2
    assert weak["state"] == "PRUNED" and list(weak["intermediate"]) == ["1"]
    assert weak["intermediate"]["1"] < good["intermediate"]["1"]
    assert [r["epoch"] for r in runs.read_metrics(tmp_path / "p" / weak["run_dir"])] == [1]  # stopped there
    assert not runs.is_complete(tmp_path / "p" / weak["run_dir"])


def _idx(path, array: np.ndarray, gz=True):
    code = 0x08
    header = struct.pack(">BBBB", 0, 0, code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if gz else data)


def test_search_never_reads_the_test_set(tmp_path, capsys):
    """Fashion-MNIST-format IDX files whose test files are garbage: the search runs; the retraining (which must
    read them) fails on them, which shows they would have been noticed."""
    rng = np.random.default_rng(0)
    root = tmp_path / "fmnist"
    root.mkdir()
    labels = np.arange(240) % 10
    images = rng.integers(0, 60, size=(240, 28, 28))
    for i, y in enumerate(labels):  # a learnable signal: a bright bar whose row depends on the class
        images[i, 2 + 2 * y: 4 + 2 * y, 4:24] = 250
    _idx(root / "train-images-idx3-ubyte.gz", images)
    _idx(root / "train-labels-idx1-ubyte.gz", labels)
    (root / "t10k-images-idx3-ubyte.gz").write_bytes(b"not an idx file")
    (root / "t10k-labels-idx1-ubyte.gz").write_bytes(b"\x00garbage")
    cfg = tmp_path / "t.yaml"
    cfg.write_text(yaml.safe_dump({
        "data": {"name": "fashion_mnist", "root": str(root), "val_fraction": 0.25},
        "train": {"epochs": 1, "batch_size": 32},
        "tune": {"space": {"optim.lr": {"low": 0.01, "high": 0.2, "log": True}}, "trials": 2}}))
    out = tmp_path / "out"
    assert main(["tune", "--config", str(cfg), "--out", str(out), "--seeds", "0", "-q"]) == 0
    assert "study t: 2 complete" in capsys.readouterr().out
    assert main(["tune", "--config", str(cfg), "--out", str(out), "--seeds", "1", "-q"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "t10k" in err
