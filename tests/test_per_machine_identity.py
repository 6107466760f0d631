"""train.amp, train.channels_last and train.device are "auto" in the config and resolved per machine when a run
starts (a Zen 3 CPU trains in float32, a Zen 4 one in bf16 with channels_last): a run's result identity holds the
resolved values, so compare does not reuse, the shard check does not accept, resume does not continue and the
report does not pool runs whose resolved values differ, and pinning the keys to a run's values makes them equal.
The two machines are stood in for by `runtime.device_facts`."""
import json
import re
from pathlib import Path

import pytest

import cbamlab.engine as engine
from cbamlab import runs as rundir
from cbamlab.cli import main
from cbamlab import config
from cbamlab.config import load_config
from cbamlab.engine import runtime
from cbamlab.inference import predict
from cbamlab.engine.build import build_model
from cbamlab.engine.runtime import DeviceFacts, resolve_precision
from cbamlab.errors import CbamlabError
from cbamlab.experiments import compare
from cbamlab.report.groups import group_runs, load_groups
from cbamlab.report.writer import write_report
from cbamlab.runs import COMPARE_RECORD

from fake_runs import env_as_fit_writes, make_run

ROOT = Path(__file__).resolve().parents[1]
ZEN3 = DeviceFacts("cpu", "AVX2", frozenset({"avx2", "fma"}))  # auto: float32, NCHW
ZEN4 = DeviceFacts("cpu", "AVX512", frozenset({"avx2", "avx512f", "avx512_bf16"}))  # auto: bf16, channels_last
ON_ZEN3 = {"train.amp": "none", "train.channels_last": False, "train.device": "cpu"}
ON_ZEN4 = {"train.amp": "bf16 (evaluation: none)", "train.channels_last": True, "train.device": "cpu"}
PIN_ZEN3 = ["train.amp=none", "train.channels_last=false"]


def on(monkeypatch, facts):
    monkeypatch.setattr(runtime, "device_facts", lambda device: facts)


def test_the_resolved_values_are_the_per_machine_keys_of_the_config():
    assert config.per_machine_keys() == ["train.amp", "train.channels_last", "train.device"]
    assert runtime.resolved(runtime.select_device("cpu"), resolve_precision("auto", "auto", ZEN3)) == ON_ZEN3
    assert runtime.resolved(runtime.select_device("cpu"), resolve_precision("auto", "auto", ZEN4)) == ON_ZEN4
    assert set(config.resolved_values(None, None, None, None)) == set(config.per_machine_keys())


def test_the_identity_holds_what_auto_resolved_to_in_place_of_auto():
    auto, pinned = load_config(None), load_config(None, PIN_ZEN3)
    assert config.result_differences(auto, auto) == []
    assert config.result_differences(auto, pinned) == ["train.amp", "train.channels_last"]  # the configs alone
    assert config.result_differences(auto, auto, (ON_ZEN3, ON_ZEN4)) == ["train.amp", "train.channels_last"]
    assert config.result_differences(auto, pinned, (ON_ZEN3, ON_ZEN3)) == []  # none pinned is auto resolved to none
    # auto on Zen 4 trains in bf16 but evaluates in float32; train.amp=bf16 evaluates in bf16: not the same
    bf16 = load_config(None, ["train.amp=bf16", "train.channels_last=true"])
    here = runtime.resolved(runtime.select_device("cpu"), resolve_precision("bf16", True, ZEN4))
    assert here["train.amp"] == "bf16" and config.result_differences(auto, bf16, (ON_ZEN4, here)) == ["train.amp"]
    # a run that records nothing is not known to equal anything but another such run
    assert config.result_differences(auto, auto, (None, ON_ZEN3)) == config.per_machine_keys()
    assert config.result_differences(auto, auto, (None, None)) == []
    assert config.result_identity(auto, ON_ZEN4)["train.amp"] == "bf16 (evaluation: none)"
    assert config.result_identity(auto)["train.amp"] == "auto"


class FakeFit:
    """Stands in for engine.fit: a finished run with the env.json fit writes (`env_as_fit_writes`); with
    `finish=False` it leaves the run unfinished, as a shard still training elsewhere."""

    def __init__(self, finish=True):
        self.calls, self.finish = [], finish

    def __call__(self, cfg, out, resume=False, on_epoch=None):
        self.calls.append((cfg.model.name, cfg.seed, resume))
        rundir.write_config(out, cfg)
        rundir.write_env(out, env_as_fit_writes(cfg))
        if not self.finish:
            raise KeyboardInterrupt
        summary = {"status": "complete", "model": cfg.model.name, "dataset": cfg.data.name, "seed": cfg.seed,
                   "top1": 0.9, "top5": 1.0, "params": 1, "macs": 1, "device": "cpu"}
        rundir.write_summary(out, summary)
        return summary


def _tree(root):
    return sorted((str(p.relative_to(root)), p.stat().st_mtime_ns) for p in root.rglob("*"))


STUDY_ARGS = ["--set", "compare.variants=[resnet20]", "--set", "compare.seeds=2", "--no-report", "-q"]


def test_compare_does_not_reuse_a_run_trained_where_auto_resolved_otherwise(tmp_path, monkeypatch, capfd):
    out = tmp_path / "c"
    on(monkeypatch, ZEN3)
    monkeypatch.setattr(engine, "fit", FakeFit())
    assert main(["compare", "--out", str(out), *STUDY_ARGS]) == 0
    assert rundir.read_env(out / "digits" / "resnet20" / "seed0")["precision"]["amp"] == "none"
    capfd.readouterr()
    before = _tree(out)

    on(monkeypatch, ZEN4)
    fit = FakeFit()
    monkeypatch.setattr(engine, "fit", fit)
    assert main(["compare", "--out", str(out), *STUDY_ARGS]) == 2
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "holds a finished run with another config" in err[0]
    assert ("(train.amp, train.channels_last differ: train.amp 'none' there, 'bf16 (evaluation: none)' here; "
            "train.channels_last False there, True here;") in err[0]
    assert "pin them to its values: --set train.amp=none --set train.channels_last=false" in err[0]
    assert fit.calls == [] and _tree(out) == before

    # pinned to the values the study resolved to, this machine trains as the other did: reused
    result = compare.run_compare(load_config(None, ["train.epochs=5", *PIN_ZEN3]), ["resnet20"], [0, 1], out)
    assert len(result.reused) == 2 and fit.calls == []


def test_a_shard_on_a_machine_that_resolves_auto_otherwise_is_refused_before_writing(tmp_path, monkeypatch, capfd):
    out = tmp_path / "c"
    on(monkeypatch, ZEN3)
    monkeypatch.setattr(engine, "fit", FakeFit(finish=False))  # shard 0's run is still training
    assert main(["compare", "--out", str(out), "--shard", "0/2", *STUDY_ARGS]) == 130  # "error: interrupted"
    capfd.readouterr()
    before = _tree(out)

    on(monkeypatch, ZEN4)
    fit = FakeFit()
    monkeypatch.setattr(engine, "fit", fit)
    assert main(["compare", "--out", str(out), "--shard", "1/2", *STUDY_ARGS]) == 2
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "another config (train.amp, train.channels_last differ: " in err[0]
    assert "train.amp 'none' there, 'bf16 (evaluation: none)' here" in err[0]
    assert "--set train.amp=none --set train.channels_last=false" in err[0]
    assert fit.calls == [] and _tree(out) == before
    assert json.loads((out / COMPARE_RECORD).read_text())["resolved"] == ON_ZEN3  # what shard 0's machine resolved

    assert main(["compare", "--out", str(out), "--shard", "1/2", *STUDY_ARGS,
                 *[a for p in PIN_ZEN3 for a in ("--set", p)]]) == 0
    assert fit.calls == [("resnet20", 1, False)]


def test_a_study_recorded_before_the_resolved_values_is_checked_on_its_recipe_and_its_runs(tmp_path, monkeypatch,
                                                                                          capfd):
    out = tmp_path / "c"
    on(monkeypatch, ZEN3)
    monkeypatch.setattr(engine, "fit", FakeFit())
    assert main(["compare", "--out", str(out), "--shard", "0/2", *STUDY_ARGS]) == 0
    record = json.loads((out / COMPARE_RECORD).read_text())
    del record["resolved"]  # as the committed studies' compare.json
    (out / COMPARE_RECORD).write_text(json.dumps(record))
    on(monkeypatch, ZEN4)
    assert main(["compare", "--out", str(out), "--shard", "1/2", *STUDY_ARGS]) == 2  # its finished run says so
    assert "'none' there, 'bf16 (evaluation: none)' here" in capfd.readouterr().err


TINY = ["train.epochs=2", "train.batch_size=256", "train.threads=1", "train.progress=false", "data.augment=none",
        "model.name=resnet20"]


class Stop(Exception):
    pass


def _stop(epoch, row):
    raise Stop(epoch)


def test_resume_on_a_machine_that_resolves_auto_otherwise_is_refused_and_pinned_continues(tmp_path, monkeypatch):
    out = tmp_path / "run"
    on(monkeypatch, ZEN3)
    with pytest.raises(Stop):  # stopped after its first epoch's checkpoint, as by a kill
        engine.fit(load_config(None, TINY), out, on_epoch=_stop)
    state = (out / rundir.LAST_STATE).stat().st_mtime_ns
    on(monkeypatch, ZEN4)
    with pytest.raises(rundir.RunDirError) as e:
        engine.fit(load_config(None, TINY), out, resume=True)
    assert str(e.value).startswith(f"cannot resume {out} on this machine: train.amp, train.channels_last resolve "
                                   "otherwise than it trained: train.amp 'none' there, 'bf16 (evaluation: none)' here")
    assert "--set train.amp=none --set train.channels_last=false" in str(e.value)
    assert (out / rundir.LAST_STATE).stat().st_mtime_ns == state and rundir.read_resolved(out) == ON_ZEN3
    summary = engine.fit(load_config(None, TINY + PIN_ZEN3), out, resume=True)
    assert summary["status"] == "complete" and summary["precision"]["amp"] == "none"
    assert [r["epoch"] for r in rundir.read_metrics(out)] == [1, 2] and rundir.read_resolved(out) == ON_ZEN3


@pytest.mark.parametrize("facts, amp, channels_last", [(ZEN3, "none", False), (ZEN4, "none", True)])
def test_eval_resolves_auto_as_fit_does(monkeypatch, facts, amp, channels_last):
    """`cbamlab eval --run` (predict.evaluate_config) evaluates a train.amp=auto, train.channels_last=auto run in the
    precision and memory layout fit evaluated it in on this machine (float32; channels_last only where resolved)."""
    on(monkeypatch, facts)
    seen = {}
    monkeypatch.setattr(predict, "evaluate", lambda model, loader, **kw: seen.update(kw) or {"top1": 0.0})
    cfg = load_config(None, ["model.name=resnet20"])
    predict.evaluate_config(build_model(cfg.model, 10, 1), cfg)
    assert (seen["amp"], seen["channels_last"]) == (amp, channels_last)


def _precision(facts, amp="auto", channels_last="auto"):
    return resolve_precision(amp, channels_last, facts)


def test_the_report_does_not_pool_runs_whose_auto_resolved_otherwise(tmp_path):
    for seed in (0, 1):
        for model in ("resnet20", "resnet20_cbam"):
            make_run(tmp_path / "zen3", model, seed, precision=_precision(ZEN3))
            make_run(tmp_path / "zen4", model, seed + 2, precision=_precision(ZEN4), top1=0.8)
    make_run(tmp_path / "pinned", "resnet20", 4, precision=_precision(ZEN4, "none", False),
             recipe={"train": {"amp": "none", "channels_last": False}})
    make_run(tmp_path / "pinned", "resnet20_cbam", 4, precision=_precision(ZEN4, "none", False),
             recipe={"train": {"amp": "none", "channels_last": False}})
    groups, _ = load_groups(tmp_path)
    assert [{v: g.seeds(v) for v in g.variants} for g in groups] == [
        {"resnet20": [0, 1, 4], "resnet20_cbam": [0, 1, 4]},  # none pinned pools with auto resolved to none
        {"resnet20": [2, 3], "resnet20_cbam": [2, 3]}]
    assert [g.resolved for g in groups] == [ON_ZEN3, ON_ZEN4]
    text = Path(write_report(tmp_path, tmp_path / "report").markdown).read_text()
    assert ("Not pooled with recipe 2: the recipes differ in train.amp (resolved): none vs bf16 (evaluation: none); "
            "train.channels_last (resolved): False vs True.") in text
    # runs that record no precision (written by hand) are pooled only with each other
    make_run(tmp_path / "unknown", "resnet20", 5)
    found = group_runs(rundir.find_runs(tmp_path))
    assert [g.resolved["train.amp"] for g in found] == ["none", "bf16 (evaluation: none)", None]


def test_every_committed_run_records_what_it_resolved():
    """The committed studies' env.json files hold the precision and device each run resolved: none is unknown, and
    each study was trained on one kind of machine (ablation_digits and fashion_mnist_best on Zen 3, in float32;
    fashion_20min_xeon on an Intel Xeon with AMX, which resolves as Zen 4 does; the others on Zen 4)."""
    found = {}
    for run in rundir.find_runs(ROOT / "results"):
        found.setdefault(run.path.relative_to(ROOT / "results").parts[0], set()).add(
            json.dumps(run.resolved, sort_keys=True))
    assert {study: [json.loads(r) for r in rs] for study, rs in found.items()} == {
        "ablation_digits": [ON_ZEN3], "digits_seeds": [ON_ZEN4], "fashion_mnist_best": [ON_ZEN3],
        "fashion_mnist_converged": [ON_ZEN4], "fashion_20min": [ON_ZEN4], "fashion_20min_xeon": [ON_ZEN4]}
