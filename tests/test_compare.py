"""`cbamlab compare`: the compare: section, the built-in default, unknown models refused before training,
finished runs reused and only what is missing trained after an interruption (counted fit calls, mtimes, and
one real SIGKILL of the command); a real fit reused by compare and grouped by the report; one rule for reuse
and resume."""
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import cbamlab.engine as engine
from cbamlab import runs as rundir
from cbamlab.cli import main
from cbamlab.config import config_to_dict
from cbamlab.errors import CbamlabError, ConfigError
from cbamlab.experiments import compare
from cbamlab.report import groups, tables
from cbamlab.report.render import markdown_table
from fake_runs import env_as_fit_writes

ROOT = Path(__file__).resolve().parents[1]


def test_parse_compare_section():
    spec = compare.parse_compare_section(None)
    assert [v.label for v in spec.variants] == ["resnet20", "resnet20_se", "resnet20_cbam"] and spec.seeds == [0, 1, 2]
    assert compare.parse_compare_section({"seeds": 4}).seeds == [0, 1, 2, 3]
    spec = compare.parse_compare_section({"variants": "resnet56, resnet56_cbam", "datasets": "fashion_mnist"})
    assert [v.label for v in spec.variants] == ["resnet56", "resnet56_cbam"] and spec.datasets == ["fashion_mnist"]


@pytest.mark.parametrize("section, message", [
    ({"variant": ["resnet20"]}, "unknown key 'compare.variant' (did you mean variants?)"),
    ({"variants": []}, "compare.variants"),
    ({"seeds": 0}, "compare.seeds=0"),
    ({"seeds": [0, -1]}, "compare.seeds"),
    ({"seeds": [1, 1]}, "listed twice: 1"),
    ({"variants": ["resnet20", "resnet20"]}, "listed twice: resnet20"),
    ("resnet20", "expected a mapping"),
])
def test_bad_compare_section(section, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        compare.parse_compare_section(section)


def test_default_equals_configs_compare_digits():
    cfg, spec = compare.load_compare_config(None)
    cfg2, spec2 = compare.load_compare_config(ROOT / "configs" / "compare_digits.yaml")
    assert spec == spec2
    assert config_to_dict(cfg) == config_to_dict(cfg2)
    assert cfg.data.name == "digits" and spec.seeds == [0, 1, 2]


def test_fashion_mnist_config():
    cfg, spec = compare.load_compare_config(ROOT / "configs" / "compare_fashion_mnist.yaml")
    assert cfg.data.name == "fashion_mnist"
    assert [v.label for v in spec.variants] == ["resnet20", "resnet20_se", "resnet20_cbam"] and spec.seeds == [0, 1, 2]


def test_overrides_reach_recipe_and_compare_section():
    cfg, spec = compare.load_compare_config(None, ["train.epochs=2", "compare.seeds=2",
                                                   "compare.variants=[resnet20,resnet20_cbam]"])
    assert cfg.train.epochs == 2 and spec.seeds == [0, 1] and [v.label for v in spec.variants] == ["resnet20", "resnet20_cbam"]
    with pytest.raises(ConfigError, match="compare.seed"):
        compare.load_compare_config(None, ["compare.seed=2"])


def test_plan_layout_and_order(tmp_path):
    cfg, _ = compare.load_compare_config(None)
    runs = compare.plan(cfg, ["resnet20", "resnet20_cbam"], [0, 1], tmp_path)
    assert [(r.variant, r.seed) for r in runs] == [("resnet20", 0), ("resnet20_cbam", 0), ("resnet20", 1),
                                                  ("resnet20_cbam", 1)]
    assert runs[3].path == tmp_path / "digits" / "resnet20_cbam" / "seed1"
    assert runs[3].cfg.model.name == "resnet20_cbam" and runs[3].cfg.seed == 1
    assert runs[3].cfg.train.epochs == cfg.train.epochs  # the shared recipe


class FakeFit:
    """Stands in for engine.fit: records calls and writes a finished run through cbamlab.runs, as fit does.
    `interrupt_at=k` makes the k-th call leave an unfinished run and raise KeyboardInterrupt, as a kill would."""

    def __init__(self, interrupt_at=None):
        self.calls = []
        self.interrupt_at = interrupt_at

    def __call__(self, cfg, out_dir, *, resume=False, on_epoch=None):
        out = Path(out_dir)
        self.calls.append((cfg.model.name, cfg.seed, resume))
        rundir.write_config(out, cfg)
        if len(self.calls) == self.interrupt_at:
            raise KeyboardInterrupt
        top1 = 0.9 + 0.01 * cfg.seed + (0.005 if cfg.model.name.endswith("cbam") else 0.0)
        rundir.write_metrics(out, [
            {"epoch": 1, "lr": 0.1, "train_loss": 1.0, "train_top1": 0.5, "test_loss": 0.9, "test_top1": top1 - 0.1,
             "test_top5": 0.99},
            {"epoch": 2, "lr": 0.01, "train_loss": 0.5, "train_top1": 0.8, "test_loss": 0.4, "test_top1": top1,
             "test_top5": 1.0}])
        summary = {"status": "complete", "model": cfg.model.name, "dataset": cfg.data.name, "seed": cfg.seed,
                   "top1": top1, "top5": 1.0, "params": 1000, "macs": 2000, "device": "cpu", "torch_version": "x"}
        rundir.write_summary(out, summary)
        rundir.write_env(out, env_as_fit_writes(cfg))
        return summary


def test_unknown_variant_fails_before_training(tmp_path, monkeypatch, capsys):
    fake = FakeFit()
    monkeypatch.setattr(engine, "fit", fake)
    cfg, _ = compare.load_compare_config(None)
    with pytest.raises(CbamlabError, match="unknown model 'resnet20_cbm' \\(did you mean resnet20_cbam"):
        compare.run_compare(cfg, ["resnet20", "resnet20_cbm"], [0], tmp_path)
    with pytest.raises(CbamlabError, match="unknown dataset 'digitz'"):
        compare.run_compare(cfg, ["resnet20"], [0], tmp_path, datasets=["digitz"])
    assert fake.calls == [] and not any(tmp_path.iterdir())
    code = main(["compare", "--out", str(tmp_path / "c"), "--set", "compare.variants=[resnet20,resnet20_cbm]"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: unknown model 'resnet20_cbm'") and len(err.splitlines()) == 1
    assert fake.calls == []


def test_interrupted_compare_trains_only_what_is_missing(tmp_path, monkeypatch):
    cfg, _ = compare.load_compare_config(None)
    variants, seeds = ["resnet20", "resnet20_se", "resnet20_cbam"], [0, 1]
    first = FakeFit(interrupt_at=4)  # killed in the 4th run: resnet20 seed 1
    monkeypatch.setattr(engine, "fit", first)
    with pytest.raises(KeyboardInterrupt):
        compare.run_compare(cfg, variants, seeds, tmp_path)
    assert len(first.calls) == 4
    finished = sorted(tmp_path.glob("digits/*/seed*/summary.json"))
    assert len(finished) == 3
    mtimes = {p: p.stat().st_mtime_ns for p in finished}

    second = FakeFit()
    monkeypatch.setattr(engine, "fit", second)
    result = compare.run_compare(cfg, variants, seeds, tmp_path)
    # the interrupted run is resumed (resume=True continues it from its checkpoint), the rest trained once
    assert second.calls == [("resnet20", 1, True), ("resnet20_se", 1, False), ("resnet20_cbam", 1, False)]
    assert len(result.reused) == 3 and len(result.trained) == 3
    assert all(p.stat().st_mtime_ns == m for p, m in mtimes.items())  # finished runs untouched
    assert not (tmp_path / "report.html").exists()  # run_compare trains; the caller writes the report

    third = FakeFit()
    monkeypatch.setattr(engine, "fit", third)
    again = compare.run_compare(cfg, variants, seeds, tmp_path)
    assert third.calls == [] and len(again.reused) == 6
    with pytest.warns(DeprecationWarning, match="write_report"):
        compare.run_compare(cfg, variants, seeds, tmp_path, report=True)
    assert not (tmp_path / "report.html").exists()


def test_finished_run_with_another_recipe_is_not_reused(tmp_path, monkeypatch):
    monkeypatch.setattr(engine, "fit", FakeFit())
    cfg, _ = compare.load_compare_config(None)
    compare.run_compare(cfg, ["resnet20"], [0], tmp_path)
    other, _ = compare.load_compare_config(None, ["optim.lr=0.05"])
    with pytest.raises(CbamlabError, match=r"another config \(optim.lr differ\)"):
        compare.run_compare(other, ["resnet20"], [0], tmp_path)
    harmless, _ = compare.load_compare_config(None, ["train.progress=false", "data.root=/elsewhere"])
    assert len(compare.run_compare(harmless, ["resnet20"], [0], tmp_path).reused) == 1


def test_cli_compare_with_fake_training(tmp_path, monkeypatch, capsys):
    fake = FakeFit()
    monkeypatch.setattr(engine, "fit", fake)
    out = tmp_path / "c"
    assert main(["compare", "--out", str(out), "-q", "--set", "compare.seeds=2"]) == 0
    text = capsys.readouterr().out
    assert "6 runs trained, 0 reused" in text and "| resnet20_cbam | 2 |" in text
    assert "resnet20_cbam +0.50 ± 0.00 points top-1 vs resnet20" in text
    assert (out / "report.html").is_file() and (out / "report.md").is_file()
    assert main(["compare", "--out", str(tmp_path / "n"), "-q", "--set", "compare.seeds=1", "--no-report"]) == 0
    assert "3 runs trained" in capsys.readouterr().out and not (tmp_path / "n" / "report.md").exists()


TINY = ["train.epochs=1", "train.batch_size=256", "train.threads=1", "train.progress=false"]


class Stop(Exception):
    pass


def _stop(epoch, row):
    raise Stop(epoch)


def test_real_fit_resumed_and_reused_across_threads_then_grouped_by_the_report(tmp_path):
    """One rule, read from the config fields: a run that differs only in train.threads is resumed by fit and
    reused by compare; the finished run is then grouped and tabled by the report. One epoch on digits."""
    def planned(threads):
        cfg, _ = compare.load_compare_config(None, TINY + [f"train.threads={threads}"])
        return compare.plan(cfg, ["resnet20"], [0], tmp_path)[0]

    first = planned(1)
    with pytest.raises(Stop):  # stopped after the epoch's checkpoint, before the summary, as by a kill
        engine.fit(first.cfg, first.path, on_epoch=_stop)
    assert not rundir.is_complete(first.path) and len(rundir.read_metrics(first.path)) == 1
    summary = engine.fit(planned(2).cfg, first.path, resume=True)  # other threads: resumed, not refused
    assert rundir.read_summary(first.path) == summary and summary["epochs"] == 1
    assert summary["top1"] == pytest.approx(rundir.read_metrics(first.path)[0]["test_top1"], abs=1e-6)

    cfg, _ = compare.load_compare_config(None, TINY + ["train.threads=3"])
    result = compare.run_compare(cfg, ["resnet20"], [0], tmp_path)
    assert result.reused == [first.path] and result.trained == []

    (group,), unfinished = groups.load_groups(tmp_path)
    assert unfinished == [] and group.dataset == "digits" and group.variants == ["resnet20"]
    assert group.runs["resnet20"][0].summary == summary
    (row,) = tables.rows(group)
    assert row.n == 1 and row.top1.mean == summary["top1"] and row.params == summary["params"]
    assert f"| resnet20 | 1 | {100 * summary['top1']:.2f} |" in markdown_table(*tables.table([row]))


@pytest.mark.slow
def test_sigkill_midway_then_rerun_real_training(tmp_path):
    """The real command, killed with SIGKILL once a run has finished, then run again: finished runs are kept
    as they were, and the comparison completes."""
    out = tmp_path / "c"
    cmd = [sys.executable, "-m", "cbamlab", "compare", "--out", str(out), "-q", "--set", "train.epochs=1",
           "--set", "compare.seeds=3", "--set", "compare.variants=[resnet20]"]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    deadline = time.time() + 300
    first = out / "digits" / "resnet20" / "seed0" / "summary.json"
    while not first.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert first.exists(), proc.stderr.read().decode() if proc.poll() is not None else "timed out"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = {p: p.stat().st_mtime_ns for p in out.glob("digits/*/seed*/summary.json")}
    assert 1 <= len(done) < 3
    rerun = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{3 - len(done)} runs trained, {len(done)} reused" in rerun.stdout
    assert all(p.stat().st_mtime_ns == m for p, m in done.items())
    assert len(list(out.glob("digits/*/seed*/summary.json"))) == 3
    page = (out / "report.html").read_text()
    assert "<td>resnet20</td><td>3</td>" in page and page.count("data:image/png;base64,") >= 3
