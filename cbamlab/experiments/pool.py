"""The one worker pool behind `compare --workers K` and `tune --workers K`: K spawned processes on one machine.

Each worker is a fresh interpreter (spawn: no inherited threads or locks) with cores // K intra-op threads, so K
runs share the cores instead of each fighting over all of them; it logs at the parent's level with a
"[worker i]" prefix. The parent hands a worker its next task only when it has reported the last one, over a pipe
of its own, so which tasks have started is always known:

- `on_done(task, value)` is called in the parent as each task ends, in the order they end;
- with `stop_on_error` (compare) a failure starts no further task, and the running ones finish; without it
  (tune) every task runs to its end;
- a task's `CbamlabError` comes back as one `WorkerError` raised in the parent once every worker has stopped
  (all failures in its message); any other exception is a bug: the worker logs its traceback and the parent
  raises a `RuntimeError`; a worker that dies without reporting (killed, out of memory) is a `WorkerError`
  naming its exit status;
- SIGTERM in a worker is a KeyboardInterrupt there, so `finally` blocks run and optuna marks the running trial
  failed; a KeyboardInterrupt in the parent (Ctrl-C, the CLI's SIGTERM) sends SIGTERM to every worker, waits
  for them, then raises.
"""
from __future__ import annotations

import logging
import multiprocessing
import signal
import time
import traceback
from multiprocessing.connection import wait
from typing import Any, Callable, Sequence

import torch

from ..engine.runtime import available_cores
from ..errors import CbamlabError

log = logging.getLogger(__name__)

STOP_GRACE_S = 30.0  # how long interrupted workers get to write their last files before they are killed


class WorkerError(CbamlabError):
    """A worker's task raised a CbamlabError, or a worker died without reporting."""


def threads_per_worker(workers: int, cores: int | None = None) -> int:
    """The intra-op threads each of `workers` processes gets: its share of the cores, at least one."""
    return max(1, (available_cores() if cores is None else cores) // workers)


def run(fn: Callable[[Any], Any], tasks: Sequence, workers: int, *,
        on_done: Callable[[Any, Any], None] | None = None, stop_on_error: bool = True) -> list:
    """`fn(task)` for each task in up to `workers` spawned processes; returns the values in the order of `tasks`
    (None for a task that did not run). `fn` and the tasks must pickle (`fn` a module-level function)."""
    cores = available_cores()
    threads = threads_per_worker(workers, cores)
    if workers > cores:
        log.warning("--workers %d on %d cores: each worker gets 1 thread and they still share cores", workers, cores)
    ctx = multiprocessing.get_context("spawn")
    level = logging.getLogger().getEffectiveLevel()
    pool = []  # (process, the parent's end of its pipe)
    for i in range(min(workers, len(tasks))):
        mine, theirs = ctx.Pipe()
        p = ctx.Process(target=_worker_main, args=(i, fn, theirs, threads, level), name=f"cbamlab-worker-{i}")
        p.start()
        theirs.close()
        pool.append((p, mine))
    try:
        return _drive(pool, tasks, on_done, stop_on_error)
    except KeyboardInterrupt:
        _stop(pool)
        raise
    finally:
        for p, conn in pool:
            conn.close()
            p.join()


def _drive(pool, tasks, on_done, stop_on_error) -> list:
    values: list = [None] * len(tasks)
    errors: list[str] = []
    crashes: list[str] = []
    pending = iter(range(len(tasks)))
    busy: dict[int, int] = {}  # worker -> the task it runs

    def hand_out(w: int) -> None:
        index = None if (errors or crashes) and stop_on_error else next(pending, None)
        try:
            pool[w][1].send(None if index is None else (index, tasks[index]))
        except OSError:  # it died while idle
            pool[w][0].join()
            errors.append(f"worker {w} stopped: exited with status {_exit_status(pool[w][0].exitcode)}")
            return
        if index is not None:
            busy[w] = index

    for w in range(len(pool)):
        hand_out(w)
    while busy:
        ready = set(wait([pool[w][1] for w in busy] + [pool[w][0].sentinel for w in busy]))
        for w in list(busy):
            p, conn = pool[w]
            if conn not in ready and p.sentinel not in ready:
                continue
            try:  # a dead worker's pipe reads as ready too, and ends before a whole report
                kind, value = conn.recv() if conn in ready or conn.poll() else (None, None)
            except EOFError:
                kind = None
            if kind is None:
                p.join()
                kind, value = "error", f"exited with status {_exit_status(p.exitcode)} without reporting"
            index = busy.pop(w)
            if kind == "ok":
                values[index] = value
                if on_done is not None:
                    on_done(tasks[index], value)
            else:
                (crashes if kind == "crash" else errors).append(f"worker {w} stopped: {value}")
            if kind != "interrupted" and p.is_alive():
                hand_out(w)
    if crashes:
        raise RuntimeError("; ".join(crashes + errors) + " (the worker's traceback is logged above)")
    if errors:
        raise WorkerError("; ".join(errors))
    return values


def _exit_status(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"{code} ({signal.Signals(-code).name})"
        except ValueError:
            pass
    return str(code)


def _stop(pool) -> None:
    """SIGTERM to every live worker; those still alive after STOP_GRACE_S are killed."""
    live = [p for p, _ in pool if p.is_alive()]
    for p in live:
        p.terminate()  # SIGTERM: a KeyboardInterrupt in the worker
    deadline = time.monotonic() + STOP_GRACE_S
    for p in live:
        p.join(max(0.0, deadline - time.monotonic()))
        if p.is_alive():
            log.warning("worker %s did not stop within %g s: killed", p.name, STOP_GRACE_S)
            p.kill()


def _on_sigterm(signum, frame):
    raise KeyboardInterrupt


def _worker_main(index: int, fn, conn, threads: int, level: int) -> None:
    """A worker's loop: take a task, run it, report ("ok", value), ("error" | "crash" | "interrupted", message);
    an interrupted worker ends there."""
    signal.signal(signal.SIGTERM, _on_sigterm)
    logging.basicConfig(level=level, format=f"[worker {index}] %(message)s", force=True)
    torch.set_num_threads(threads)  # fit's automatic thread count never exceeds it
    try:
        while (item := conn.recv()) is not None:
            try:
                report = ("ok", fn(item[1]))
            except CbamlabError as e:
                report = ("error", " ".join(str(e).split()))
            except KeyboardInterrupt:
                conn.send(("interrupted", "interrupted"))
                return
            except Exception as e:  # noqa: BLE001 - a bug: its traceback here, one error in the parent
                log.error("task %d crashed:\n%s", item[0], traceback.format_exc())
                report = ("crash", f"{type(e).__name__}: {e}")
            conn.send(report)
    except (KeyboardInterrupt, EOFError, BrokenPipeError):
        return  # interrupted while idle, or the parent is gone
