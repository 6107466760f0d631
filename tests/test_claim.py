"""The run-directory claim: one holder at a time across processes, released on exit, taken over from the dead;
and the one liveness check of a recorded process."""
import errno
import json
import multiprocessing
import os
import signal
import socket
import time

import pytest

from cbamlab.runs import RunDirError, RunDirInUse, claim_path, claim_run_dir, holder, process_alive, process_tag
from cbamlab.runs import claim as claim_mod

_fork = multiprocessing.get_context("fork")


def _try_claim(run_dir, start, hold_s, results):
    """In a forked child: wait for `start`, try to claim, report, hold a while."""
    start.wait()
    try:
        with claim_run_dir(run_dir):
            results.put(("ok", os.getpid()))
            time.sleep(hold_s)
    except RunDirInUse as e:
        results.put(("refused", str(e)))


def test_two_processes_started_together_one_claims_the_other_is_refused(tmp_path):
    run, start, results = tmp_path / "run", _fork.Event(), _fork.Queue()
    procs = [_fork.Process(target=_try_claim, args=(run, start, 1.0, results)) for _ in range(2)]
    for p in procs:
        p.start()
    start.set()
    got = dict(results.get(timeout=30) for _ in procs)
    for p in procs:
        p.join(30)
    assert sorted(got) == ["ok", "refused"]
    winner, refusal = got["ok"], got["refused"]
    assert refusal == f"{run} is in use by pid {winner} on {socket.gethostname()}; wait for it to finish, or use another --out"
    assert not claim_path(run).exists()  # released on exit: nothing left beside the run


def test_a_second_process_one_second_later_is_refused_until_the_first_is_killed(tmp_path):
    run, start, results = tmp_path / "run", _fork.Event(), _fork.Queue()
    first = _fork.Process(target=_try_claim, args=(run, start, 60.0, results))
    first.start()
    start.set()
    assert results.get(timeout=30) == ("ok", first.pid)
    time.sleep(1.0)
    with pytest.raises(RunDirError, match=f"is in use by pid {first.pid} on "):
        claim_run_dir(run)
    os.kill(first.pid, signal.SIGKILL)  # no clean-up: its claim file stays, its lock goes with it
    first.join(30)
    assert holder(run)["pid"] == first.pid
    with claim_run_dir(run) as c:
        assert c.taken_over["pid"] == first.pid and holder(run)["pid"] == os.getpid()
    assert not claim_path(run).exists()


def test_a_claim_is_reentrant_within_a_process_and_lives_beside_the_run(tmp_path):
    run = tmp_path / "deep" / "run"
    outer = claim_run_dir(run)
    inner = claim_run_dir(run)
    assert inner is outer and claim_path(run) == tmp_path / "deep" / ".run.claim"
    info = json.loads(claim_path(run).read_text())
    assert info["pid"] == os.getpid() and info["host"] == socket.gethostname()
    inner.release()
    assert outer.held and claim_path(run).exists()
    outer.release()
    outer.release()  # twice is harmless
    assert not claim_path(run).exists() and not run.exists()  # the run folder itself is never made here
    assert list(tmp_path.iterdir()) == []  # nor is the parent left behind when the run never started


def _no_locks(fd, op):
    raise OSError(errno.ENOLCK, "no locks")


def test_a_filesystem_without_locks_is_refused_and_left_as_it_was(tmp_path, monkeypatch):
    monkeypatch.setattr(claim_mod.fcntl, "flock", _no_locks)
    run = tmp_path / "deep" / "run"
    with pytest.raises(RunDirError, match="does not support file locks") as e:
        claim_run_dir(run)
    assert not isinstance(e.value, RunDirInUse) and list(tmp_path.iterdir()) == []


def test_a_recorded_process_is_alive_only_with_its_start_time():
    me = process_tag()
    assert me["pid"] == os.getpid() and me["host"] == socket.gethostname()
    assert process_alive(me) is True and process_alive({**me, "start": None}) is True
    if me["start"] is not None:  # Linux: /proc tells the start time
        assert process_alive({**me, "start": "1"}) is False  # the pid runs another process: the recorded one is gone
    dead = _fork.Process(target=time.sleep, args=(0,))
    dead.start()
    dead.join()
    assert process_alive({**me, "pid": dead.pid}) is False
    assert process_alive({**me, "host": "elsewhere"}) is None and process_alive({"host": me["host"]}) is None
