"""fit: the run directory, refusing to overwrite, eval_test=False, paired init, NaN stop, kill-and-resume equality."""
import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import cbamlab
import cbamlab.runs.state as run_state
from cbamlab import runs
from cbamlab.config import diff_configs, load_config
from cbamlab.engine import fit
from cbamlab.engine.build import build_model
from cbamlab.engine.loop import DivergedError
from cbamlab.runs import METRIC_COLUMNS, RunDirError, read_metrics

fitmod = sys.modules["cbamlab.engine.fit"]
QUICK = ["train.epochs=2", "train.batch_size=128", "model.name=resnet20_cbam", "train.threads=1"]


def _snapshot(d: Path) -> dict:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "r"
    cfg = load_config(None, QUICK)
    return cfg, out, fit(cfg, out)


def test_run_directory_contents(finished):
    cfg, out, s = finished
    assert sorted(p.name for p in out.iterdir()) == ["checkpoints", "config.yaml", "env.json", "metrics.csv",
                                                     "summary.json"]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["best.safetensors", "last.safetensors",
                                                                      "last.state.pt"]
    assert diff_configs(load_config(out / "config.yaml"), cfg) == []
    with open(out / "metrics.csv") as f:
        assert tuple(next(csv.reader(f))) == METRIC_COLUMNS
    rows = read_metrics(out)
    assert [r["epoch"] for r in rows] == [1, 2]
    assert rows[0]["val_top1"] is None and 0 <= rows[1]["test_top1"] <= 1  # no val split: empty cells
    assert json.loads((out / "summary.json").read_text()) == s
    assert s["status"] == "complete" and s["split"] == "test" and s["epochs"] == 2
    assert s["top1"] == pytest.approx(rows[-1]["test_top1"], abs=1e-6) and 0 <= s["top5"] <= 1
    assert s["top1"] > 0.5  # two epochs on digits learn something
    assert len(s["classes"]) == 10 and len(s["per_class_accuracy"]) == 10
    cm = torch.tensor(s["confusion_matrix"])
    assert cm.shape == (10, 10) and abs(cm.diag().sum().item() / cm.sum().item() - s["top1"]) < 1e-9
    for k in ("params", "macs", "inference_latency_ms", "wall_time_s", "train_images_per_s", "device",
              "torch_version", "best", "final"):
        assert s[k] is not None, k
    assert s["params"] > 0 and s["macs"] > 0 and s["torch_version"] == torch.__version__
    env = json.loads((out / "env.json").read_text())
    assert {"python", "torch", "platform", "cpu", "threads", "device"} <= set(env)
    assert env["code"] == runs.code_version() and env["code"]["cbamlab"] == cbamlab.__version__
    attention = env["attention"]  # what the CBAMs ran: the setting, the choice, the native build's status
    assert attention["attn_impl"] == [cfg.model.attn.attn_impl] == ["auto"]
    assert attention["runs"] == (["native"] if attention["native"]["available"] else ["reference"])
    assert (attention["why_reference"] is None) == attention["native"]["available"]
    state = torch.load(out / "checkpoints" / "last.state.pt", weights_only=True)
    assert state["epoch"] == 2 and len(state["history"]) == 2
    weights, meta = runs.load_weights(out / "checkpoints" / "last.safetensors")
    assert meta["epoch"] == "2" and all(torch.equal(weights[k], v) for k, v in state["model"].items())


def test_refuses_to_overwrite_a_finished_or_foreign_run(finished, tmp_path):
    cfg, out, s = finished
    before = _snapshot(out)
    with pytest.raises(RunDirError, match="finished run"):
        fit(cfg, out)
    assert fit(cfg, out, resume=True) == s  # nothing to resume: the summary comes back
    assert _snapshot(out) == before
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    for resume in (False, True):
        with pytest.raises(RunDirError, match="not a cbamlab run directory"):
            fit(cfg, foreign, resume=resume)
    assert _snapshot(foreign) == {"notes.txt": b"keep me"}


def test_unfinished_run_needs_resume_and_the_same_config(finished, tmp_path):
    cfg, out, _ = finished
    run = tmp_path / "unfinished"
    run.mkdir()
    for name in ("config.yaml", "metrics.csv"):
        (run / name).write_bytes((out / name).read_bytes())
    before = _snapshot(run)
    with pytest.raises(RunDirError, match="--resume"):
        fit(cfg, run)
    other = load_config(None, QUICK + ["optim.lr=0.05"])
    with pytest.raises(RunDirError, match="optim.lr"):
        fit(other, run, resume=True)
    assert _snapshot(run) == before


def test_eval_test_false_never_loads_the_test_split(tmp_path, monkeypatch):
    calls = []
    real = fitmod.load_dataset

    def spy(*a, **kw):
        calls.append(kw.get("include_test", True))
        return real(*a, **kw)

    monkeypatch.setattr(fitmod, "load_dataset", spy)
    seen = []
    cfg = load_config(None, ["train.epochs=1", "train.eval_test=false", "data.val_fraction=0.2",
                             "train.batch_size=128", "train.threads=1"])
    s = fit(cfg, tmp_path / "r", on_epoch=lambda e, row: seen.append((e, row)))
    assert calls == [False]
    assert s["split"] == "val" and s["best"]["metric"] == "val_top1"
    assert seen[0][0] == 1 and seen[0][1]["test_top1"] is None and seen[0][1]["val_top1"] == s["top1"]


def test_eval_every_evaluates_some_epochs_and_the_last_and_trains_the_same(tmp_path, monkeypatch):
    calls = []
    real = fitmod.evaluate
    monkeypatch.setattr(fitmod, "evaluate", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    base = ["train.epochs=3", "train.batch_size=128", "model.name=resnet20", "train.threads=1"]
    every = fit(load_config(None, [*base, "eval.every=2"]), tmp_path / "every2")
    assert len(calls) == 2  # epochs 2 and 3 (the last), test split only
    rows = read_metrics(tmp_path / "every2")
    assert [r["test_top1"] is not None for r in rows] == [False, True, True]
    assert every["best"]["epoch"] in (2, 3) and every["top1"] == pytest.approx(rows[-1]["test_top1"], abs=1e-6)
    each = fit(load_config(None, base), tmp_path / "every1")  # evaluation changes nothing that trains
    assert each["top1"] == every["top1"] and len(calls) == 5
    assert [r["train_loss"] for r in read_metrics(tmp_path / "every1")] == [r["train_loss"] for r in rows]


def test_on_epoch_exception_propagates_after_the_checkpoint(tmp_path):
    class Prune(Exception):
        pass

    def stop(epoch, row):
        raise Prune(epoch)

    cfg = load_config(None, QUICK)
    with pytest.raises(Prune):
        fit(cfg, tmp_path / "r", on_epoch=stop)
    assert runs.load_state(tmp_path / "r").epoch == 1
    assert not (tmp_path / "r" / "summary.json").exists()


def test_paired_init_from_the_plain_twin():
    cfg = load_config(None, ["model.name=resnet20_cbam"])
    cbam = build_model(cfg.model, 10, 1, seed=5).state_dict()
    cfg.model.name = "resnet20"
    plain = build_model(cfg.model, 10, 1, seed=5).state_dict()
    cfg.model.name = "resnet20_se"
    se = build_model(cfg.model, 10, 1, seed=5).state_dict()
    other = build_model(cfg.model, 10, 1, seed=6).state_dict()
    assert set(plain) < set(cbam) and set(plain) < set(se)
    for k, v in plain.items():
        assert torch.equal(cbam[k], v) and torch.equal(se[k], v), k
    assert not torch.equal(other["conv1.weight"], plain["conv1.weight"])


def test_nan_loss_stops_and_the_last_good_checkpoint_stays(tmp_path, monkeypatch):
    poison = {"on": False}
    real = fitmod.build_model

    def build(*a, **kw):
        model = real(*a, **kw)
        model.register_forward_hook(lambda m, i, o: o * float("nan") if poison["on"] and m.training else o)
        return model

    monkeypatch.setattr(fitmod, "build_model", build)
    out = tmp_path / "r"
    cfg = load_config(None, QUICK + ["train.epochs=3"])
    with pytest.raises(DivergedError, match="nan.*diverged"):
        fit(cfg, out, on_epoch=lambda e, row: poison.update(on=True))
    state = runs.load_state(out)
    assert state.epoch == 1
    _, meta = runs.load_weights(out / "checkpoints" / "last.safetensors")
    assert meta["epoch"] == "1" and all(torch.isfinite(v).all() for v in state.model.values())
    assert [r["epoch"] for r in read_metrics(out)] == [1]
    assert not (out / "summary.json").exists()


def _same_run(a: Path, b: Path) -> None:
    wa, _ = runs.load_weights(a / "checkpoints" / "last.safetensors")
    wb, _ = runs.load_weights(b / "checkpoints" / "last.safetensors")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    sa, sb = (json.loads((d / "summary.json").read_text()) for d in (a, b))
    for k in ("top1", "top5", "final", "best", "per_class_accuracy", "confusion_matrix"):
        assert sa[k] == sb[k], k
    timing = ("images_per_s", "epoch_time_s")
    ra, rb = read_metrics(a), read_metrics(b)
    assert [{k: v for k, v in r.items() if k not in timing} for r in ra] == \
        [{k: v for k, v in r.items() if k not in timing} for r in rb]


KILL_CFG = ["train.epochs=3", "train.batch_size=128", "model.name=resnet20_cbam", "schedule.name=multistep",
            "train.threads=1",
            "schedule.milestones=[2]", "data.val_fraction=0.1"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "r"
    fit(load_config(None, KILL_CFG), out)
    return out


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_gives_the_same_run(reference, tmp_path):
    out = tmp_path / "killed"
    code = ("import sys; from cbamlab.config import load_config; from cbamlab.engine import fit; "
            f"fit(load_config(None, {KILL_CFG!r}), sys.argv[1])")
    proc = subprocess.Popen([sys.executable, "-c", code, str(out)], stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    # kill after the first epoch's checkpoint, part-way through a later epoch
    while time.time() < deadline and not (out / "checkpoints" / "last.state.pt").exists():
        time.sleep(0.05)
    time.sleep(0.3)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "summary.json").exists()
    fit(load_config(out / "config.yaml"), out, resume=True)
    _same_run(reference, out)


def test_crash_between_checkpoint_writes_then_resume(reference, tmp_path, monkeypatch):
    out = tmp_path / "crashed"
    real = run_state.save_weights

    def save_weights(path, *a, **kw):  # die after epoch 2's state file, before its weights
        if runs.load_state(out).epoch == 2:
            raise KeyboardInterrupt
        return real(path, *a, **kw)

    monkeypatch.setattr(run_state, "save_weights", save_weights)
    with pytest.raises(KeyboardInterrupt):
        fit(load_config(None, KILL_CFG), out)
    monkeypatch.setattr(run_state, "save_weights", real)
    assert runs.load_weights(out / "checkpoints" / "last.safetensors")[1]["epoch"] == "1"  # stale
    assert [r["epoch"] for r in read_metrics(out)] == [1]
    fit(load_config(out / "config.yaml"), out, resume=True)
    _same_run(reference, out)
