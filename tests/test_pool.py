"""The one worker pool of compare --workers and tune --workers: callback order, errors as one parent error, a dead
worker's exit status, threads per worker, the log prefix, interrupts. The tasks run in real spawned processes."""
import logging
import multiprocessing
import os
import re
import signal
import time

import pytest
import torch

from cbamlab.errors import CbamlabError
from cbamlab.experiments import pool

WAIT_S = 60  # a task waiting for a file gives up after this: a broken pool fails the test instead of hanging it


def _wait_for(path) -> None:
    deadline = time.monotonic() + WAIT_S
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} never appeared")
        time.sleep(0.02)


def task(spec):
    """What a worker runs; module-level so that it pickles into a spawned process."""
    kind, *args = spec
    if kind == "echo":
        return args[0]
    if kind == "wait":  # until the file exists
        _wait_for(args[0])
        return "waited"
    if kind == "touch":
        args[0].touch()
        return "touched"
    if kind == "wait_then_fail":
        _wait_for(args[0])
        raise CbamlabError(f"bad\n   value {args[1]}")
    if kind == "touch_then_sleep":
        args[0].touch()
        time.sleep(args[1])
        return "finished"
    if kind == "fail":
        raise CbamlabError(args[0])
    if kind == "bug":
        return 1 / 0
    if kind == "exit":
        os._exit(args[0])
    if kind == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if kind == "threads":
        return torch.get_num_threads()
    if kind == "log":
        logging.getLogger("cbamlab.test").info("info line %s", args[0])
        logging.getLogger("cbamlab.test").debug("debug line %s", args[0])
        return None
    if kind == "interruptible":  # what fit and optuna do with a KeyboardInterrupt: clean up, then re-raise
        args[0].touch()
        try:
            time.sleep(WAIT_S)
        except KeyboardInterrupt:
            args[1].touch()
            raise
        return "not interrupted"
    raise AssertionError(kind)


def test_on_done_is_called_as_each_task_ends_and_values_come_back_in_task_order(tmp_path):
    release = tmp_path / "release"
    tasks = [("wait", release), ("echo", 1), ("echo", 2)]
    seen = []

    def on_done(t, value):
        seen.append((t, value))
        if t == ("echo", 2):  # the first task ends only after this callback: on_done cannot wait for all
            release.touch()

    values = pool.run(task, tasks, 2, on_done=on_done)
    assert values == ["waited", 1, 2]
    assert seen == [(("echo", 1), 1), (("echo", 2), 2), (("wait", release), "waited")]  # worker 1 ran two
    assert multiprocessing.active_children() == []


def test_a_task_error_is_one_error_in_the_parent_and_no_further_task_starts(tmp_path):
    never = tmp_path / "never"
    with pytest.raises(pool.WorkerError, match=r"^worker 0 stopped: no such dataset$") as e:
        pool.run(task, [("fail", "no such dataset"), ("touch", never)], 1)
    assert isinstance(e.value, CbamlabError) and not never.exists()

    # two workers: the running task finishes (and is reported), the one not started never starts
    started, seen = tmp_path / "started", []
    tasks = [("wait_then_fail", started, 7), ("touch_then_sleep", started, 3.0), ("touch", never)]
    with pytest.raises(pool.WorkerError, match=r"^worker 0 stopped: bad value 7$"):  # one line
        pool.run(task, tasks, 2, on_done=lambda t, v: seen.append(v))
    assert seen == ["finished"] and not never.exists()


def test_without_stop_on_error_every_task_runs_and_the_errors_are_raised_together(tmp_path):
    seen = []
    with pytest.raises(pool.WorkerError, match=r"^worker 0 stopped: one; worker 0 stopped: two$"):
        pool.run(task, [("fail", "one"), ("echo", 5), ("fail", "two")], 1, on_done=lambda t, v: seen.append(v),
                 stop_on_error=False)
    assert seen == [5]


@pytest.mark.parametrize("spec, status", [(("exit", 3), "3"), (("kill",), "-9 (SIGKILL)")])
def test_a_worker_that_dies_without_reporting_is_an_error_naming_its_exit_status(spec, status):
    with pytest.raises(pool.WorkerError, match=rf"^worker 0 stopped: exited with status {re.escape(status)} "
                                               "without reporting$"):
        pool.run(task, [spec, ("echo", 1)], 1)
    assert multiprocessing.active_children() == []


def test_a_bug_in_a_task_is_a_runtime_error_and_its_traceback_is_logged(capfd):
    with pytest.raises(RuntimeError, match="worker 0 stopped: ZeroDivisionError: division by zero") as e:
        pool.run(task, [("bug",)], 1)
    assert not isinstance(e.value, CbamlabError)
    err = capfd.readouterr().err
    assert "[worker 0] task 0 crashed:" in err and "Traceback" in err and "1 / 0" in err


def test_threads_per_worker_and_the_warning_when_workers_outnumber_cores(monkeypatch, caplog):
    assert pool.threads_per_worker(3, cores=8) == 2 and pool.threads_per_worker(4, cores=2) == 1
    monkeypatch.setattr(pool, "available_cores", lambda: 4)
    assert pool.run(task, [("threads",), ("threads",)], 2) == [2, 2]  # each worker: its share of the cores
    assert "still share cores" not in caplog.text
    monkeypatch.setattr(pool, "available_cores", lambda: 1)
    assert pool.run(task, [("threads",), ("threads",)], 2) == [1, 1]
    assert "--workers 2 on 1 cores: each worker gets 1 thread and they still share cores" in caplog.text


def test_workers_log_at_the_parents_level_with_their_prefix(caplog, capfd):
    caplog.set_level(logging.INFO)
    pool.run(task, [("log", "a"), ("log", "b")], 2)
    err = capfd.readouterr().err
    assert "[worker 0] info line a" in err and "[worker 1] info line b" in err and "debug line" not in err


def test_an_interrupt_in_the_parent_stops_the_running_workers(tmp_path):
    started, cleaned = tmp_path / "started", tmp_path / "cleaned"

    def on_done(t, value):
        raise KeyboardInterrupt  # as Ctrl-C, or the CLI's SIGTERM, would in the parent

    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        pool.run(task, [("wait", started), ("interruptible", started, cleaned)], 2, on_done=on_done)
    assert cleaned.exists()  # the worker's KeyboardInterrupt ran its clean-up, as optuna's marks the trial failed
    assert time.monotonic() - t0 < pool.STOP_GRACE_S and multiprocessing.active_children() == []
