"""Study storage: where it lives, one-line errors, a changed space refused untouched, dead and stale trials failed,
and one real study on a throwaway PostgreSQL server (when CBAMLAB_TEST_POSTGRES=1)."""
import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import optuna
import pytest
from optuna.trial import TrialState

from cbamlab.experiments.tune import storage as ts
from cbamlab.experiments.tune.storage import StorageError, StorageSpec, open_storage, open_study, resolve_storage
from cbamlab.runs import process_tag

SPACE_A = {"optim.lr": {"name": "FloatDistribution", "attributes": {"low": 0.01, "high": 0.5, "log": True,
                                                                       "step": None}}}
SPACE_B = {"optim.lr": {"name": "FloatDistribution", "attributes": {"low": 0.01, "high": 0.9, "log": True,
                                                                       "step": None}}}


def make_study(storage, space=SPACE_A, name="s", direction="maximize"):
    return open_study(storage, name, direction=direction, space=space, metric="val_top1", base_config={"seed": 0})


def test_resolve_storage(tmp_path):
    assert resolve_storage(None, tmp_path) == StorageSpec("rdb", f"sqlite:///{tmp_path.resolve()}/tune.db")
    assert resolve_storage(None, tmp_path, workers=3) == StorageSpec("journal", f"{tmp_path.resolve()}/tune.journal")
    assert resolve_storage(str(tmp_path / "x.journal"), tmp_path).kind == "journal"
    assert resolve_storage(str(tmp_path / "x.db"), tmp_path) == StorageSpec("rdb", f"sqlite:///{tmp_path}/x.db")
    url = "postgresql+psycopg2://bob:hunter2@db.example:5432/optuna"
    spec = resolve_storage(url, tmp_path)
    assert spec == StorageSpec("rdb", url)
    assert "hunter2" not in spec.display() and "bob" in spec.display()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("url, words", [
    (f"postgresql+psycopg2://bob:hunter2@127.0.0.1:{_free_port()}/x", ["cannot open storage", "refused"]),
    ("nosuchdialect://host/db", ["cannot open storage", "nosuchdialect"]),
    ("mysql://u@localhost/db", ["cannot open storage"]),  # no MySQL driver installed
])
def test_unreachable_storage_is_one_line_without_password(url, words):
    with pytest.raises(StorageError) as e:
        open_storage(StorageSpec("rdb", url))
    msg = str(e.value)
    assert "\n" not in msg and "hunter2" not in msg
    for w in words:
        assert w in msg


def test_sqlite_under_a_file_is_an_error(tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(StorageError, match="cannot open storage"):
        open_storage(resolve_storage(str(tmp_path / "afile" / "t.db"), tmp_path))


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_existing_study_with_another_space_is_refused_and_untouched(tmp_path, kind):
    spec = resolve_storage(str(tmp_path / ("t.db" if kind == "sqlite" else "t.journal")), tmp_path)
    study, created = make_study(open_storage(spec))
    assert created and study.user_attrs[ts.SPACE_ATTR] == SPACE_A
    study.optimize(lambda t: t.suggest_float("optim.lr", 0.01, 0.5, log=True), n_trials=2)
    again, created = make_study(open_storage(spec))
    assert not created and len(again.trials) == 2

    before = (os.path.getsize(spec.url.replace("sqlite:///", "")), os.path.getmtime(spec.url.replace("sqlite:///", "")))
    for kwargs, words in [({"space": SPACE_B}, ["different search space", "'optim.lr' differs"]),
                          ({"direction": "minimize"}, ["direction maximize"])]:
        with pytest.raises(StorageError) as e:
            make_study(open_storage(spec), **kwargs)
        assert all(w in str(e.value) for w in words), str(e.value)
    after = (os.path.getsize(spec.url.replace("sqlite:///", "")), os.path.getmtime(spec.url.replace("sqlite:///", "")))
    assert before == after  # not a byte written
    study = optuna.load_study(study_name="s", storage=open_storage(spec))
    assert len(study.trials) == 2 and study.user_attrs[ts.SPACE_ATTR] == SPACE_A


def test_foreign_study_is_refused(tmp_path):
    storage = open_storage(resolve_storage(None, tmp_path))
    optuna.create_study(storage=storage, study_name="s").optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    with pytest.raises(StorageError, match="not made by cbamlab tune"):
        make_study(storage)


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")
@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_trials_of_dead_workers_are_failed_live_ones_kept(tmp_path, kind, monkeypatch):
    spec = resolve_storage(None, tmp_path, workers=2 if kind == "journal" else 1)
    assert spec.kind == ("journal" if kind == "journal" else "rdb")
    study, _ = make_study(open_storage(spec))
    dead, alive, elsewhere, untagged = (study.ask() for _ in range(4))
    dead.set_user_attr(ts.WORKER_ATTR, {**process_tag(), "pid": _dead_pid()})
    alive.set_user_attr(ts.WORKER_ATTR, process_tag())
    elsewhere.set_user_attr(ts.WORKER_ATTR, {"host": "another-machine", "pid": 1, "start": "1"})
    assert ts.fail_dead_trials(study) == [dead.number]
    monkeypatch.setattr(ts, "UNTAGGED_GRACE_S", 0)
    time.sleep(0.05)
    assert ts.fail_dead_trials(study) == [untagged.number]
    states = {t.number: t.state for t in optuna.load_study(study_name="s", storage=open_storage(spec)).trials}
    assert states == {dead.number: TrialState.FAIL, alive.number: TrialState.RUNNING,
                      elsewhere.number: TrialState.RUNNING, untagged.number: TrialState.FAIL}
    assert ts.count_trials(study) == 2  # the two RUNNING ones


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")
def test_sql_storages_fail_trials_whose_heartbeat_stopped(tmp_path, monkeypatch):
    monkeypatch.setattr(ts, "HEARTBEAT_S", 1)
    monkeypatch.setattr(ts, "GRACE_S", 1)
    storage = open_storage(resolve_storage(None, tmp_path))
    assert storage.get_heartbeat_interval() == 1
    study, _ = make_study(storage)
    trial = study.ask()  # on another machine, so only its heartbeat can tell
    trial.set_user_attr(ts.WORKER_ATTR, {"host": "another-machine", "pid": 1, "start": "1"})
    storage.record_heartbeat(trial._trial_id)
    assert ts.fail_dead_trials(study) == [] and study.trials[0].state == TrialState.RUNNING
    time.sleep(2.5)
    ts.fail_dead_trials(study)
    assert optuna.load_study(study_name="s", storage=storage).trials[0].state == TrialState.FAIL


# ---------------------------------------------------------------- PostgreSQL: a throwaway server, a real study

def _pg_bin() -> str | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(p.split("/")[4]))
    return os.path.dirname(found[-1]) if found else (os.path.dirname(shutil.which("pg_ctl") or "") or None)


@pytest.fixture(scope="module")
def postgres_url():
    if os.environ.get("CBAMLAB_TEST_POSTGRES") != "1":
        pytest.skip("set CBAMLAB_TEST_POSTGRES=1 (with Debian's postgresql installed) to run against PostgreSQL")
    bindir = _pg_bin()
    if bindir is None:
        pytest.fail("CBAMLAB_TEST_POSTGRES=1 but no PostgreSQL binaries (pg_ctl) were found")
    work = tempfile.mkdtemp(prefix="cbamlab-pg-")
    os.chmod(work, 0o755)
    data, sock, logfile = (os.path.join(work, n) for n in ("data", "sock", "server.log"))
    os.mkdir(sock)
    prefix = []
    if os.geteuid() == 0:  # initdb refuses root: run the server as the postgres user
        shutil.chown(work, "postgres")
        shutil.chown(sock, "postgres")
        prefix = ["runuser", "-u", "postgres", "--"]
    port = _free_port()

    def pg(*cmd):
        subprocess.run(prefix + [os.path.join(bindir, cmd[0]), *cmd[1:]], check=True, capture_output=True,
                       timeout=120)

    pg("initdb", "-D", data, "-U", "postgres", "-A", "trust", "--no-sync")
    pg("pg_ctl", "-D", data, "-l", logfile, "-w", "-t", "60",
       "-o", f"-p {port} -k {sock} -c listen_addresses=127.0.0.1 -c fsync=off", "start")
    try:
        pg("createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "cbamlab_test")
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/cbamlab_test"
    finally:
        pg("pg_ctl", "-D", data, "-m", "immediate", "-w", "stop")
        shutil.rmtree(work, ignore_errors=True)


@pytest.mark.postgres
def test_a_real_study_on_postgresql(postgres_url, tmp_path):
    from test_tune import curve_objective, search_settings

    from cbamlab.experiments.tune import run_tune

    base, settings = search_settings(pruner={"name": "median", "n_startup_trials": 2, "n_warmup_steps": 1})
    record = run_tune(base, settings, tmp_path, storage=postgres_url, study_name="pg", trials=8, n_seeds=0,
                      objective=curve_objective)
    assert record["storage"] == postgres_url
    assert record["counts"]["COMPLETE"] + record["counts"]["PRUNED"] == 8
    record = run_tune(base, settings, tmp_path, storage=postgres_url, study_name="pg", trials=10, n_seeds=0,
                      objective=curve_objective)
    assert record["trials_run_now"] == 2 and len(record["trials"]) == 10
    study = optuna.load_study(study_name="pg", storage=postgres_url)
    assert len(study.trials) == 10 and study.user_attrs[ts.SPACE_ATTR] == settings.space.canonical()
    assert open_storage(StorageSpec("rdb", postgres_url)).get_heartbeat_interval() == ts.HEARTBEAT_S
    _, other = search_settings(space={"optim.lr": {"low": 0.001, "high": 0.5, "log": True}})
    with pytest.raises(StorageError, match="different search space"):
        run_tune(base, other, tmp_path, storage=postgres_url, study_name="pg", trials=12, n_seeds=0,
                 objective=curve_objective)
    assert len(optuna.load_study(study_name="pg", storage=postgres_url).trials) == 10
