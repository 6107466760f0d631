"""One study over several processes: `compare --shard I/N`, claimed runs, the study record, `--workers K`."""
import json
import multiprocessing
import os
import re
import signal
import subprocess
import sys
import time

import pytest

import cbamlab.engine as engine
from cbamlab import runs as rundir
from cbamlab.cli import main
from cbamlab.engine.runtime import available_cores
from cbamlab.errors import ConfigError
from cbamlab.experiments import compare
from cbamlab.experiments.compare_shard import parse_shard, take_shard
from cbamlab.runs import COMPARE_RECORD, claim_run_dir
from fake_runs import env_as_fit_writes

TINY = ["train.epochs=1", "train.batch_size=256", "train.progress=false", "train.amp=none",
        "train.channels_last=false", "compare.variants=[resnet20,resnet20_cbam]", "compare.seeds=2"]


class FakeFit:
    """Stands in for engine.fit: writes a finished run directory at once and records the calls."""

    def __init__(self):
        self.calls = []

    def __call__(self, cfg, out, resume=False, on_epoch=None):
        self.calls.append((cfg.model.name, cfg.seed, resume))
        rundir.write_config(out, cfg)
        summary = {"status": "complete", "model": cfg.model.name, "dataset": cfg.data.name, "seed": cfg.seed,
                   "top1": 0.5 + 0.01 * cfg.seed, "top5": 1.0, "params": 1, "macs": 1, "device": "cpu"}
        rundir.write_summary(out, summary)
        rundir.write_env(out, env_as_fit_writes(cfg))
        return summary


def _tree(root):
    return sorted((str(p.relative_to(root)), p.stat().st_mtime_ns) for p in root.rglob("*"))


def test_parse_shard():
    assert parse_shard("0/4") == (0, 4) and parse_shard(" 3 / 4 ") == (3, 4) and parse_shard(None) is None
    for bad in ("3/2", "2/2", "x", "1/0", "-1/2", "1", "1/2/3"):
        with pytest.raises(ConfigError, match="--shard"):
            parse_shard(bad)


def test_shards_are_disjoint_deterministic_and_cover_the_study(tmp_path):
    cfg, _ = compare.load_compare_config(None)
    runs = compare.plan(cfg, ["resnet20", "resnet20_se", "resnet20_cbam"], [0, 1, 2, 3], tmp_path)
    for n in (1, 2, 3, 5, 13):
        shares = [[r.path for r in take_shard(runs, (i, n))] for i in range(n)]
        flat = [p for s in shares for p in s]
        assert sorted(flat) == sorted(r.path for r in runs) and len(set(flat)) == len(runs)
        assert max(map(len, shares)) - min(map(len, shares)) <= 1
    again = compare.plan(cfg, ["resnet20", "resnet20_se", "resnet20_cbam"], [0, 1, 2, 3], tmp_path)
    assert [r.path for r in take_shard(again, (1, 3))] == [r.path for r in take_shard(runs, (1, 3))]


@pytest.mark.parametrize("args, message", [
    (["--shard", "3/2"], "error: --shard 3/2: I must be in 0..N-1"),
    (["--shard", "x"], "error: --shard 'x': expected I/N"),
    (["--workers", "0"], "error: --workers 0: must be >= 1"),
    (["--workers", "two"], "error: cbamlab compare: argument --workers: invalid int value"),
])
def test_bad_shard_or_workers_is_one_error_line_and_writes_nothing(tmp_path, monkeypatch, capfd, args, message):
    monkeypatch.setattr(engine, "fit", FakeFit())
    try:
        code = main(["compare", "--out", str(tmp_path / "c"), *args])
    except SystemExit as e:  # argparse's own usage errors
        code = e.code
    assert code == 2
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(message)
    assert list(tmp_path.iterdir()) == []


def test_a_shard_with_another_config_or_grid_is_refused_before_writing(tmp_path, monkeypatch, capfd):
    fake = FakeFit()
    monkeypatch.setattr(engine, "fit", fake)
    out = tmp_path / "c"
    assert main(["compare", "--out", str(out), "--shard", "0/2", "--set", "compare.seeds=2"]) == 0
    assert len(fake.calls) == 3 and json.loads((out / COMPARE_RECORD).read_text())["seeds"] == [0, 1]
    capfd.readouterr()
    before = _tree(out)
    for extra, message in ((["--set", "optim.lr=0.05"], r"another config \(optim.lr differ\)"),
                           (["--set", "train.epochs=9"], r"another config \(train.epochs differ\)"),
                           ([], r"another grid")):  # compare.seeds=3 (the default) instead of 2
        seeds = [] if not extra else ["--set", "compare.seeds=2"]
        assert main(["compare", "--out", str(out), "--shard", "1/2", *seeds, *extra]) == 2
        err = capfd.readouterr().err.strip().splitlines()
        assert len(err) == 1 and re.search(message, err[0]), err
    assert _tree(out) == before and len(fake.calls) == 3
    # the same recipe (threads and progress change no result) completes the study; that shard writes the report
    assert main(["compare", "--out", str(out), "--shard", "1/2", "--set", "compare.seeds=2",
                 "--set", "train.threads=1", "-q"]) == 0
    text = capfd.readouterr().out
    assert "shard 1/2: 3 runs trained, 0 reused" in text and (out / "report.html").is_file()


def _hold(path, ready, release):
    with claim_run_dir(path):
        ready.set()
        release.wait(60)


def test_a_run_held_by_another_process_is_left_to_it_and_trained_by_a_rerun(tmp_path, monkeypatch, capsys):
    fake = FakeFit()
    monkeypatch.setattr(engine, "fit", fake)
    cfg, _ = compare.load_compare_config(None)
    held = compare.plan(cfg, ["resnet20", "resnet20_cbam"], [0], tmp_path)[1].path
    ctx = multiprocessing.get_context("fork")
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold, args=(held, ready, release))
    holder.start()
    assert ready.wait(30)
    result = compare.run_compare(cfg, ["resnet20", "resnet20_cbam"], [0], tmp_path)
    assert result.busy == [held] and len(result.trained) == 1 and not result.complete
    assert fake.calls == [("resnet20", 0, False)]
    release.set()
    holder.join(30)
    assert main(["compare", "--out", str(tmp_path), "--set", "compare.variants=[resnet20,resnet20_cbam]",
                 "--set", "compare.seeds=1", "-q"]) == 0
    assert "1 runs trained, 1 reused" in capsys.readouterr().out and fake.calls[-1] == ("resnet20_cbam", 0, False)


def _compare(out, *args):
    cmd = [sys.executable, "-m", "cbamlab", "compare", "--out", str(out),
           *[a for o in TINY for a in ("--set", o)], *args]  # args last: their --set win
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


@pytest.mark.slow
def test_two_shards_at_once_fill_the_study_and_no_run_is_trained_twice(tmp_path):
    out = tmp_path / "c"
    procs = [_compare(out, "--shard", f"{i}/2") for i in range(2)]
    logs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], logs
    trained = [re.findall(r"\] digits (\S+) seed (\d): trained", err) for _, err in logs]
    assert sorted(trained[0] + trained[1]) == sorted((v, s) for v in ("resnet20", "resnet20_cbam") for s in "01")
    assert not set(trained[0]) & set(trained[1])
    assert all(f"shard {i}/2: 2 runs trained, 0 reused" in logs[i][0] for i in range(2))
    for run in out.glob("digits/*/seed*"):
        assert rundir.is_complete(run) and [r["epoch"] for r in rundir.read_metrics(run)] == [1]
    assert (out / "report.html").is_file()  # written by the shard that finished last (both, if at once)
    assert sum("report: " in o for o, _ in logs) >= 1


@pytest.mark.slow
def test_a_killed_shard_is_finished_by_a_rerun(tmp_path):
    out = tmp_path / "c"
    args = ["--shard", "0/2", "--set", "train.epochs=3", "--set", "train.batch_size=32"]  # epochs of 45 steps
    p = _compare(out, *args)
    run = out / "digits" / "resnet20" / "seed0"
    deadline = time.time() + 300
    while p.poll() is None and time.time() < deadline and not (run / "metrics.csv").exists():
        time.sleep(0.02)
    p.send_signal(signal.SIGKILL)  # in epoch 2 of its first run
    p.wait()
    assert [r["epoch"] for r in rundir.read_metrics(run)] == [1]
    rerun = _compare(out, *args)
    stdout, stderr = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, stderr
    assert "took over the claim left by pid" in stderr and "seed 0: resuming" in stderr
    assert "shard 0/2: 2 runs trained, 0 reused" in stdout and "not complete yet" in stdout
    assert [r["epoch"] for r in rundir.read_metrics(run)] == [1, 2, 3]


@pytest.mark.slow
def test_workers_train_runs_at_once_each_with_its_share_of_the_cores(tmp_path):
    out = tmp_path / "c"
    p = _compare(out, "--workers", "2", "--set", "compare.variants=[resnet20]")
    stdout, stderr = p.communicate(timeout=600)
    assert p.returncode == 0, stderr
    threads = max(1, available_cores() // 2)
    assert f"2 runs at once, {threads} intra-op thread(s) each" in stderr
    assert "2 runs trained, 0 reused" in stdout and (out / "report.html").is_file()
    for run in out.glob("digits/resnet20/seed*"):
        assert json.loads((run / "env.json").read_text())["threads"] == threads


def test_a_study_recorded_before_a_key_existed_continues(tmp_path, monkeypatch, capfd):
    # compare.json written by an older cbamlab lacks keys added since (eval.every): their defaults stand in, as
    # they do for the runs' config.yaml, so the study is not refused; a recorded value that differs still is
    fake = FakeFit()
    monkeypatch.setattr(engine, "fit", fake)
    out = tmp_path / "c"
    assert main(["compare", "--out", str(out), "--shard", "0/2", "--set", "compare.seeds=2", "-q"]) == 0
    record = json.loads((out / COMPARE_RECORD).read_text())
    del record["recipe"]["eval"]["every"]
    (out / COMPARE_RECORD).write_text(json.dumps(record))
    assert main(["compare", "--out", str(out), "--shard", "1/2", "--set", "compare.seeds=2", "-q"]) == 0
    assert len(fake.calls) == 6
    capfd.readouterr()
    record["recipe"]["eval"]["tta"] = "hflip"
    (out / COMPARE_RECORD).write_text(json.dumps(record))
    assert main(["compare", "--out", str(out), "--shard", "1/2", "--set", "compare.seeds=2"]) == 2
    assert "another config (eval.tta differ)" in capfd.readouterr().err
