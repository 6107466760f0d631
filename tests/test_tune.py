"""The search loop with constructed objectives (fast): resuming to N trials in all, killed trials, pruning,
the target, the timeout, two worker processes on one study, the report, and the CLI's errors."""
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from cbamlab import runs
from cbamlab.cli import main
from cbamlab.config import read_yaml
from cbamlab.experiments import tune
from cbamlab.experiments.tune import worker
from cbamlab.experiments.tune.storage import WORKER_ATTR, open_storage, resolve_storage

ROOT = Path(__file__).resolve().parents[1]
EPOCHS = 6


def search_settings(space=None, pruner=None, sampler=None, **extra):
    section = {"space": space or {"optim.lr": {"low": 0.001, "high": 1.0, "log": True},
                                  "optim.weight_decay": {"low": 1e-5, "high": 1e-2, "log": True}},
               "sampler": sampler or {"name": "random"}, **extra}
    if pruner is not None:
        section["pruner"] = pruner
    return tune.prepare({"train": {"epochs": EPOCHS}, "tune": section})


def quality(lr):
    return 1.0 - (math.log10(lr) + 1.0) ** 2 / 4.0


def curve_objective(trial, ctx):
    """A learning curve whose height depends on lr alone (peak at lr = 0.1), reported like fit reports epochs."""
    quality_ = quality(ctx.params["optim.lr"])
    value = 0.0
    for epoch in range(1, EPOCHS + 1):
        value = quality_ * epoch / EPOCHS
        trial.report(value, epoch)
        if trial.should_prune():
            raise optuna.TrialPruned()
    return value


def slow_objective(trial, ctx):
    """Half a second per trial, recording which process ran it."""
    trial.set_user_attr("pid", os.getpid())
    time.sleep(0.5)
    return curve_objective(trial, ctx)


def constant_objective(trial, ctx):
    trial.report(0.9, 1)
    return 0.9


def load(tmp_path, name="digits-quick", kind_workers=1):
    spec = resolve_storage(None, tmp_path, kind_workers)
    return optuna.load_study(study_name=name, storage=open_storage(spec))


def test_default_is_the_quick_digits_preset_file():
    a_base, a = tune.prepare(None)
    b_base, b = tune.prepare(read_yaml(ROOT / "configs" / "tune_digits.yaml"))
    assert a_base == b_base and a.space.canonical() == b.space.canonical()
    assert (a.trials, a.n_seeds, a.pruner, a.sampler, a.study) == (b.trials, b.n_seeds, b.pruner, b.sampler, b.study)
    assert a_base["data"]["name"] == "digits" and set(a.space.dists) == {"optim.lr", "optim.weight_decay"}
    assert a_base["train"]["eval_test"] is False and a_base["data"]["val_fraction"] > 0


def test_fashion_mnist_preset_searches_the_cbam_knobs():
    base, s = tune.prepare(read_yaml(ROOT / "configs" / "tune_fashion_mnist.yaml"))
    assert base["model"]["name"] == "resnet20_cbam" and base["data"]["name"] == "fashion_mnist"
    assert set(s.space.dists) == {"optim.lr", "optim.weight_decay", "model.reduction", "model.kernel_size"}
    assert s.pruner["name"] == "hyperband"


def test_trials_means_trials_in_the_study_in_all(tmp_path):
    base, settings = search_settings()
    r = tune.run_tune(base, settings, tmp_path, trials=3, n_seeds=0, objective=curve_objective)
    assert r["trials_run_now"] == 3 and len(r["trials"]) == 3
    r = tune.run_tune(base, settings, tmp_path, trials=5, n_seeds=0, objective=curve_objective)
    assert r["trials_run_now"] == 2 and [t["number"] for t in r["trials"]] == [0, 1, 2, 3, 4]
    r = tune.run_tune(base, settings, tmp_path, trials=5, n_seeds=0, objective=curve_objective)
    assert r["trials_run_now"] == 0
    saved = runs.read_tune_record(tmp_path / "digits-quick")
    assert saved["best"]["value"] == max(t["value"] for t in saved["trials"] if t["state"] == "COMPLETE")
    assert all(t["run_dir"] == f"trials/{t['number']:04d}" for t in saved["trials"])


KILLED = textwrap.dedent("""
    import pathlib, sys, time
    from cbamlab.experiments import tune
    def hang(trial, ctx):
        trial.report(0.5, 1)  # stored before the marker appears
        pathlib.Path(sys.argv[1], "started").touch()
        time.sleep(600)
    base, settings = tune.prepare({"tune": {"sampler": "random"}})
    tune.run_tune(base, settings, sys.argv[1], trials=4, n_seeds=0, objective=hang)
""")


def test_a_killed_trial_is_marked_failed_and_the_study_completes(tmp_path):
    # The worker says when its trial has reported by touching a file: polling the study's SQLite file instead
    # opened the storage (which creates its schema) while the worker was creating it, and the worker could die
    # of that race before its trial started.
    script, log = tmp_path / "killed.py", tmp_path / "worker.log"
    script.write_text(KILLED)
    with open(log, "wb") as err:
        proc = subprocess.Popen([sys.executable, str(script), str(tmp_path)], stderr=err)
    try:
        deadline = time.time() + 120
        while not (tmp_path / "started").exists():
            if proc.poll() is not None or time.time() > deadline:
                pytest.fail(f"the worker never started its trial (exit {proc.poll()}): "
                            f"{log.read_text(errors='replace')[-2000:]}")
            time.sleep(0.3)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert [t.state for t in load(tmp_path).trials] == [TrialState.RUNNING]  # left behind by the kill
    base, settings = tune.prepare({"tune": {"sampler": "random"}})
    r = tune.run_tune(base, settings, tmp_path, trials=4, n_seeds=0, objective=constant_objective)
    states = [t.state for t in load(tmp_path).trials]
    assert states == [TrialState.FAIL] + [TrialState.COMPLETE] * 4
    assert r["counts"]["FAIL"] == 1 and r["counts"]["RUNNING"] == 0


@pytest.mark.parametrize("pruner", [{"name": "median", "n_startup_trials": 3, "n_warmup_steps": 1},
                                    {"name": "hyperband", "min_resource": 1, "reduction_factor": 3},
                                    {"name": "percentile", "percentile": 25.0, "n_startup_trials": 3}])
def test_pruning_stops_weak_trials_early(tmp_path, pruner):
    base, settings = search_settings(pruner=pruner)
    r = tune.run_tune(base, settings, tmp_path, trials=14, n_seeds=0, objective=curve_objective)
    pruned = [t for t in r["trials"] if t["state"] == "PRUNED"]
    done = [t for t in r["trials"] if t["state"] == "COMPLETE"]
    assert len(pruned) >= 3 and done
    assert all(len(t["intermediate"]) < EPOCHS for t in pruned)  # stopped before the last epoch
    # the pruned ones were the weak ones: their curves sit below the median of the completed at the same epoch
    final = sorted(t["value"] for t in done)
    assert sum(1 for t in pruned if t["intermediate"][max(t["intermediate"], key=int)] * EPOCHS /
               int(max(t["intermediate"], key=int)) < final[len(final) // 2]) >= len(pruned) * 0.8


def test_no_pruner_prunes_nothing(tmp_path):
    base, settings = search_settings(pruner="none")
    r = tune.run_tune(base, settings, tmp_path, trials=10, n_seeds=0, objective=curve_objective)
    assert r["counts"]["COMPLETE"] == 10 and r["counts"]["PRUNED"] == 0


def test_target_stops_the_search(tmp_path):
    base, settings = search_settings()
    r = tune.run_tune(base, settings, tmp_path, trials=10, target=0.85, n_seeds=0, objective=constant_objective)
    assert r["target_reached"] and r["counts"]["COMPLETE"] == 1
    r = tune.run_tune(base, settings, tmp_path, trials=10, target=0.85, n_seeds=0, objective=constant_objective)
    assert r["trials_run_now"] == 0
    r = tune.run_tune(base, settings, tmp_path, trials=3, target=0.95, n_seeds=0, objective=constant_objective)
    assert not r["target_reached"] and r["counts"]["COMPLETE"] == 3


def test_timeout_stops_starting_trials(tmp_path):
    base, settings = search_settings()
    t0 = time.time()
    r = tune.run_tune(base, settings, tmp_path, trials=100, timeout=1.0, n_seeds=0, objective=slow_objective)
    assert 1 <= r["trials_run_now"] <= 4 and time.time() - t0 < 30


@pytest.mark.slow
def test_two_worker_processes_share_one_study(tmp_path):
    base, settings = search_settings()
    r = tune.run_tune(base, settings, tmp_path, trials=7, workers=2, n_seeds=0, objective=slow_objective)
    study = load(tmp_path, kind_workers=2)  # the journal file
    assert (tmp_path / "tune.journal").is_file() and not (tmp_path / "tune.db").exists()
    trials = study.trials
    assert sorted(t.number for t in trials) == list(range(7))
    assert len({t._trial_id for t in trials}) == 7
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    pids = {t.user_attrs["pid"] for t in trials}
    assert len(pids) == 2 and os.getpid() not in pids  # both spawned workers ran trials, the parent none
    assert {t.user_attrs[WORKER_ATTR]["pid"] for t in trials} == pids
    assert r["trials_run_now"] == 7
    # run again without --workers: the folder's journal is kept (not a new tune.db) and continued to the new total
    r = tune.run_tune(base, settings, tmp_path, trials=9, n_seeds=0, objective=curve_objective)
    assert r["trials_run_now"] == 2 and len(load(tmp_path, kind_workers=2).trials) == 9
    assert not (tmp_path / "tune.db").exists()


def test_report_from_a_study(tmp_path):
    from cbamlab.report.tune_report import importances, write_tune_report

    base, settings = search_settings(pruner="none", sampler={"name": "random"})
    record = tune.run_tune(base, settings, tmp_path, trials=10, n_seeds=0, objective=curve_objective)
    imp = importances(record)
    assert imp["optim.lr"] > imp["optim.weight_decay"]  # the objective depends on lr alone
    assert abs(sum(imp.values()) - 1) < 1e-6
    path = write_tune_report(tmp_path / "digits-quick")
    text = path.read_text()
    best = record["best"]
    assert f"## Best trial: {best['number']} (val_top1 {best['value']:.4f})" in text
    assert "| `optim.lr` | float in [0.001, 1], log |" in text
    assert text.count("| complete |") == 10 and "Not retrained" in text
    assert "- sampler: random; pruner: none" in text
    for png in ("history.png", "curves.png", "importance.png"):
        assert (tmp_path / "digits-quick" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"({png})" in text
    page = (tmp_path / "digits-quick" / "report.html").read_text()  # the same document, figures embedded
    assert page.count('src="data:image/png;base64,') == 3 and "<code>optim.lr</code>" in page


def test_report_final_table_from_a_record(tmp_path):
    from cbamlab.report import render
    from cbamlab.report.tune_report import document

    base, settings = search_settings()
    record = tune.run_tune(base, settings, tmp_path, trials=2, n_seeds=0, objective=constant_objective)
    runs = [{"seed": s, "run_dir": f"final/trial0000/seed{s}", "test_top1": v, "test_top5": 0.99, "test_loss": 0.2,
             "epochs": 4, "wall_time_s": 3.0, "device": "cpu", "torch_version": "2"} for s, v in ((0, 0.9), (1, 0.94))]
    record["final"] = {"trial": 0, "runs": runs, "test_top1": tune.mean_std([0.9, 0.94])}
    text = render.markdown(document(record, None, {}))
    assert "92.00 ± 2.83 % (mean ± sample std, n = 2)" in text
    assert "| 1 | 94.00 | 99.00 | 0.2000 | 3.0 | `final/trial0000/seed1` |" in text


# ---------------------------------------------------------------------------------------------- CLI errors

def write_config(path, space):
    path.write_text(yaml.safe_dump({"train": {"epochs": 2}, "tune": {"space": space}}))
    return str(path)


@pytest.mark.parametrize("args, words", [
    (["--target-accuracy", "97"], ["--target-accuracy", "fraction"]),
    (["--storage", "postgresql+psycopg2://u:pw@127.0.0.1:1/db"], ["cannot open storage", "u:***@"]),
    (["--trials", "0"], ["--trials", "must be > 0"]),
    (["--study", "a/b"], ["cannot be used as a folder name"]),
])
def test_cli_errors_are_one_line_exit_2(tmp_path, capsys, args, words):
    try:
        rc = main(["tune", "--out", str(tmp_path), *args])
    except SystemExit as e:  # argparse's own checks exit from the parser
        rc = e.code
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err and "Traceback" not in err
    assert all(w in err for w in words), err


def test_cli_bad_space_key(tmp_path, capsys):
    cfg = write_config(tmp_path / "t.yaml", {"optim.lrr": {"low": 0.01, "high": 0.1}})
    assert main(["tune", "--config", cfg, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: tune.space: unknown config key 'optim.lrr' (did you mean optim.lr")
    assert not (tmp_path / "tune.db").exists()


def test_cli_changed_space_leaves_the_study_untouched(tmp_path, capsys, monkeypatch):
    """The first run goes through the real CLI with a constructed objective (run_tune's default objective is
    `worker.train_objective`, looked up when it runs); the second changes the space."""
    monkeypatch.setattr(worker, "train_objective", curve_objective)
    a = write_config(tmp_path / "a.yaml", {"optim.lr": {"low": 0.01, "high": 0.5, "log": True}})
    out = tmp_path / "out"
    assert main(["tune", "--config", a, "--study", "s", "--trials", "3", "--seeds", "0", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "study s: 3 complete (3 asked)" in printed and (out / "s" / "report.md").is_file()
    trials = load(out, "s").trials  # the constructed objective ran, not a real training
    assert [t.value for t in trials] == [pytest.approx(quality(t.params["optim.lr"])) for t in trials]
    assert not (out / "s" / "trials").exists()
    db = out / "tune.db"
    before = db.read_bytes()
    b = write_config(tmp_path / "a.yaml", {"optim.lr": {"low": 0.01, "high": 0.9, "log": True}})
    assert main(["tune", "--config", b, "--study", "s", "--trials", "5", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("error: study 's' exists with a different search space ('optim.lr' differs); use the same "
                   "space or another --study name")
    assert db.read_bytes() == before
