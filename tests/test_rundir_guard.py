"""A run directory is claimed, checked and never mixed: two `cbamlab train` on one --out (one trains, the other
is refused), resume against the config the run recorded (finished runs alike), folders that are not runs or lost
their state refused untouched, and no temp files left behind (SIGTERM, a planted stale one)."""
import contextlib
import io
import json
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import time
from pathlib import Path

import pytest
import yaml

from cbamlab import __version__, _io
from cbamlab.cli import main
from cbamlab import runs
from cbamlab.config import config_to_dict, load_config, result_hash
from cbamlab.engine import fit
from cbamlab.runs import claim_path, code_version

# Fresh interpreters, not forks: a child forked from this process (which has trained with a thread pool in
# earlier tests) can hang in its first parallel region, and that was seen once under load.
_spawn = multiprocessing.get_context("spawn")
TINY = ["model.name=resnet20", "train.batch_size=256", "train.threads=1", "train.progress=false"]
SETS = [a for kv in TINY for a in ("--set", kv)]


def _snapshot(d: Path) -> dict:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def _call(capsys, argv) -> tuple[int, str]:
    rc = main([str(a) for a in argv])
    return rc, capsys.readouterr().err


def _refused(capsys, argv, *words) -> str:
    rc, err = _call(capsys, argv)
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert rc == 2 and len(errors) == 1 and "Traceback" not in err, err
    for w in words:
        assert w in errors[0], errors[0]
    return errors[0]


class _Stop(Exception):
    pass


def _stop_after_first(epoch, row):
    raise _Stop


@pytest.fixture(scope="module")
def templates(tmp_path_factory):
    """An unfinished run (epoch 1 of 2 done) and a finished one (1 epoch), copied by each test."""
    root = tmp_path_factory.mktemp("guard")
    with pytest.raises(_Stop):
        fit(load_config(None, TINY + ["train.epochs=2", "optim.lr=0.1"]), root / "unfinished",
            on_epoch=_stop_after_first)
    fit(load_config(None, TINY + ["train.epochs=1"]), root / "finished")
    return root


@pytest.fixture
def unfinished(templates, tmp_path):
    return Path(shutil.copytree(templates / "unfinished", tmp_path / "run"))


@pytest.fixture
def finished(templates, tmp_path):
    return Path(shutil.copytree(templates / "finished", tmp_path / "run"))


# ------------------------------------------------------------------------------------------ two processes, one --out

def _train_child(out, seed, start, results, pad_s):
    """In a child process: wait for `start`, then `cbamlab train --out OUT --set seed=SEED`; report what happened.
    `pad_s` slows each epoch so that this run is surely still training when the other process arrives."""
    start.wait()
    if pad_s:
        fitmod = sys.modules["cbamlab.engine.fit"]
        train = fitmod.train_one_epoch

        def slow(*a, **kw):
            time.sleep(pad_s)
            return train(*a, **kw)

        fitmod.train_one_epoch = slow
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = main(["train", "-q", "--out", str(out), "--set", f"seed={seed}", "--set", "train.epochs=2", *SETS])
    results.put((seed, os.getpid(), rc, err.getvalue()))


@pytest.mark.slow
@pytest.mark.parametrize("apart_s", [0.0, 1.0])
def test_two_trains_on_one_out_one_trains_the_other_is_refused(tmp_path, apart_s):
    out, results = tmp_path / "run", _spawn.Queue()
    starts = [_spawn.Event(), _spawn.Event()]
    procs = [_spawn.Process(target=_train_child, args=(out, seed, starts[i], results, 0.5 if apart_s else 0))
             for i, seed in enumerate((1, 2))]
    for p in procs:
        p.start()
    starts[0].set()
    time.sleep(apart_s)
    starts[1].set()
    got = sorted((results.get(timeout=300) for _ in procs), key=lambda r: r[2])
    for p in procs:
        p.join(60)
    (seed, pid, rc, err), (_, _, rc2, err2) = got
    assert (rc, rc2) == (0, 2), got
    assert err2 == f"error: {out} is in use by pid {pid} on {socket.gethostname()}; wait for it to finish, or use " \
                   "another --out\n"
    summary = json.loads((out / runs.SUMMARY).read_text())
    assert yaml.safe_load((out / runs.CONFIG).read_text())["seed"] == summary["seed"] == seed
    assert [r["epoch"] for r in runs.read_metrics(out)] == [1, 2]
    assert runs.load_state(out).config["seed"] == seed
    assert not claim_path(out).exists()


# ------------------------------------------------------------------------------------------ provenance on resume

def test_the_state_file_records_the_config_its_hash_and_the_code_version(finished):
    state = runs.load_state(finished)
    cfg = load_config(finished / runs.CONFIG)
    assert state.config == config_to_dict(cfg) and state.config_hash == result_hash(cfg)
    assert state.code_version["cbamlab"] == __version__ and state.code_version == code_version()
    assert runs.read_record(finished / runs.LAST_STATE)["config"] == state.config


def test_a_hand_edited_config_is_refused_on_resume_naming_the_key(unfinished, capsys):
    cfg_file = unfinished / runs.CONFIG
    cfg_file.write_text(cfg_file.read_text().replace("lr: 0.1\n", "lr: 0.9\n"))
    before = _snapshot(unfinished)
    _refused(capsys, ["train", "--resume", "--out", unfinished, "-q"], "optim.lr 0.1 -> 0.9",
             "its checkpoint was trained with", "config.yaml edited")
    assert _snapshot(unfinished) == before


@pytest.mark.parametrize("which", ["unfinished", "finished"])
def test_resume_with_a_result_key_changed_is_refused_for_finished_runs_alike(which, request, capsys):
    run = request.getfixturevalue(which)
    before = _snapshot(run)
    _refused(capsys, ["train", "--resume", "--out", run, "--set", "optim.lr=0.05", "-q"],
             f"cannot resume {run} with another config: optim.lr differ", "0.1 -> 0.05")
    assert _snapshot(run) == before


def test_resume_of_a_finished_run_with_a_cosmetic_key_changed_is_accepted(finished, capsys):
    before = _snapshot(finished)
    rc, err = _call(capsys, ["train", "--resume", "--out", finished, "--set", "train.threads=2", "--set",
                             "data.workers=0"])
    assert rc == 0 and "already complete" in err
    assert _snapshot(finished) == before


def test_resume_with_a_cosmetic_key_changed_continues(unfinished, capsys):
    rc, err = _call(capsys, ["train", "--resume", "--out", unfinished, "--set", "data.workers=1", "-q"])
    assert rc == 0, err
    assert [r["epoch"] for r in runs.read_metrics(unfinished)] == [1, 2]
    assert runs.load_state(unfinished).config["data"]["workers"] == 1


# ------------------------------------------------------------------------------------------ not a run, lost state

def test_a_folder_that_is_not_a_run_is_refused_untouched(tmp_path, capsys):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / runs.CONFIG).write_text("")
    (folder / runs.METRICS).write_text("epoch,my_own_column\n1,0.5\n")
    before = _snapshot(folder)
    for resume in (["--resume"], []):
        _refused(capsys, ["train", *resume, "--out", folder, *SETS, "-q"], f"{folder} is not a cbamlab run",
                 "config.yaml is empty", "it holds config.yaml, metrics.csv", "choose another --out",
                 "remove the folder")
    _refused(capsys, ["eval", "--run", folder], "config.yaml is empty")  # not "weights of another architecture"
    assert _snapshot(folder) == before


def test_a_folder_without_config_names_what_it_holds(tmp_path, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "cat.png").write_bytes(b"not really")
    _refused(capsys, ["train", "--resume", "--out", folder, *SETS, "-q"], "no config.yaml", "it holds cat.png")
    assert [p.name for p in folder.iterdir()] == ["cat.png"]


@pytest.mark.parametrize("lost", [runs.LAST_STATE, runs.CHECKPOINTS])
def test_a_run_whose_state_is_gone_is_refused_untouched(unfinished, capsys, lost):
    path = unfinished / lost
    shutil.rmtree(path) if path.is_dir() else path.unlink()
    before = _snapshot(unfinished)
    _refused(capsys, ["train", "--resume", "--out", unfinished, "-q"], "metrics.csv records 1 finished epoch",
             "state file checkpoints/last.state.pt is gone", "cannot be continued exactly")
    assert _snapshot(unfinished) == before


# ------------------------------------------------------------------------------------------ no debris

def test_stale_temp_files_are_removed_when_the_run_is_claimed_again(unfinished, capsys):
    stale = [unfinished / runs.CHECKPOINTS / ".last.safetensors.k3x_9a7q.tmp", unfinished / ".metrics.csv.abcd1234.tmp"]
    for p in stale:
        p.write_bytes(b"\0" * 1000)
    mine = [unfinished / "notes.tmp", unfinished / ".hidden.tmp"]  # not the temp-file pattern: kept
    for p in mine:
        p.write_text("keep")
    rc, err = _call(capsys, ["train", "--resume", "--out", unfinished])
    assert rc == 0, err
    assert not any(p.exists() for p in stale) and all(p.read_text() == "keep" for p in mine)
    assert "removed 2 temp file(s) left by a killed process" in err


def test_a_folder_holding_only_a_stale_temp_file_starts_fresh(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / ".config.yaml.zz99yy88.tmp").write_text("half")
    rc, err = _call(capsys, ["train", "--out", out, "--set", "train.epochs=1", *SETS, "-q"])
    assert rc == 0, err
    assert runs.is_complete(out) and not _io.stale_temp_files(out)


def _train_until_killed(out):
    """In a child process: a 3-epoch run, each epoch padded by 1 s so that SIGTERM lands in the second."""
    fitmod = sys.modules["cbamlab.engine.fit"]
    train = fitmod.train_one_epoch

    def slow(*a, **kw):
        time.sleep(1.0)
        return train(*a, **kw)

    fitmod.train_one_epoch = slow
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = main(["train", "-q", "--out", str(out), "--set", "train.epochs=3", *SETS])
    (out.parent / "result.json").write_text(json.dumps([rc, err.getvalue()]))


@pytest.mark.slow
def test_sigterm_unwinds_cleanly_and_the_run_resumes(tmp_path, capsys):
    out = tmp_path / "run"
    proc = _spawn.Process(target=_train_until_killed, args=(out,))
    proc.start()
    deadline = time.time() + 120
    while not (out / runs.METRICS).is_file() and time.time() < deadline:  # after the first epoch
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGTERM)
    proc.join(60)
    rc, err = json.loads((tmp_path / "result.json").read_text())
    assert (proc.exitcode, rc, err) == (0, 143, "error: terminated\n")
    assert not claim_path(out).exists()
    assert not _io.stale_temp_files(out) and not _io.stale_temp_files(out / runs.CHECKPOINTS)
    done = len(runs.read_metrics(out))
    assert 1 <= done < 3 and runs.load_state(out).epoch == done
    rc, err = _call(capsys, ["train", "--resume", "--out", out, "-q"])
    assert rc == 0, err
    assert [r["epoch"] for r in runs.read_metrics(out)] == [1, 2, 3] and runs.is_complete(out)
