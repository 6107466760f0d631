"""The tuning report: from `STUDY_DIR/tune.json` (written by `cbamlab.experiments.tune`) to report.md and a
self-contained report.html, with the PNGs beside them.

Pure: it reads the record and never trains or opens the study's database. Parameter importances come from
`optuna.importance` (fANOVA, seeded) evaluated on an in-memory copy of the completed trials.
"""
from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import optuna
from optuna.distributions import json_to_distribution

from ..runs import read_tune_record  # noqa: E402
from . import render
from .document import Bullets, Document, Figure, Section, Table, Text
from .mpl import plt, png_bytes

log = logging.getLogger(__name__)

STATES = ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")


def load_record(study_dir) -> dict:
    return read_tune_record(study_dir)


def importances(record: dict) -> dict[str, float] | None:
    """fANOVA importance of each searched key for the objective, from the completed trials; None when there
    are too few (fewer than 2 completed, or no spread in the values)."""
    done = [t for t in record["trials"] if t["state"] == "COMPLETE" and t["value"] is not None]
    if len(done) < 2 or len({t["value"] for t in done}) < 2:
        return None
    study = optuna.create_study(direction=record["direction"])
    for t in done:
        dists = {k: json_to_distribution(json.dumps(v)) for k, v in t["distributions"].items()}
        study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.COMPLETE, value=t["value"],
                                                  params=t["params"], distributions=dists))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = optuna.importance.get_param_importances(
                study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0))
    except (ValueError, RuntimeError) as e:
        log.warning("parameter importances not computed: %s", e)
        return None
    return dict(result)


def history_plot(record: dict) -> bytes:
    """Objective per trial (completed dots, pruned crosses at their last report) and the best so far."""
    fig, ax = plt.subplots(figsize=(6.4, 3.6), layout="tight")
    sign = 1 if record["direction"] == "maximize" else -1
    best, xs, ys = None, [], []
    for t in sorted(record["trials"], key=lambda t: t["number"]):
        if t["state"] == "COMPLETE" and t["value"] is not None:
            ax.plot(t["number"], t["value"], "o", color="tab:blue", ms=5)
            best = t["value"] if best is None or sign * t["value"] > sign * best else best
        elif t["state"] == "PRUNED" and t["intermediate"]:
            last = list(t["intermediate"].values())[-1]
            ax.plot(t["number"], last, "x", color="tab:gray", ms=6)
        if best is not None:
            xs.append(t["number"])
            ys.append(best)
    if xs:
        ax.step(xs, ys, where="post", color="tab:red", label="best so far")
    if record.get("target") is not None:
        ax.axhline(record["target"], color="tab:green", ls=":", label="target")
    ax.plot([], [], "o", color="tab:blue", label="completed")
    ax.plot([], [], "x", color="tab:gray", label="pruned (last report)")
    ax.set_xlabel("trial")
    ax.set_ylabel(record["metric"])
    ax.set_title("optimisation history")
    ax.legend(loc="best", fontsize=8, framealpha=0.7)
    ax.grid(alpha=0.3)
    return png_bytes(fig)


def curves_plot(record: dict) -> bytes | None:
    """Per-epoch objective of every trial: what the pruner saw. Pruned trials dashed."""
    trials = [t for t in record["trials"] if t["intermediate"]]
    if not trials:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 3.6), layout="tight")
    for t in trials:
        steps = [int(k) for k in t["intermediate"]]
        pruned = t["state"] == "PRUNED"
        ax.plot(steps, list(t["intermediate"].values()), ls="--" if pruned else "-", marker=".",
                color="tab:gray" if pruned else None, alpha=0.6 if pruned else 0.9, lw=1)
    ax.set_xlabel("epoch")
    ax.set_ylabel(record["metric"])
    ax.set_title("per-epoch objective (dashed: pruned)")
    ax.grid(alpha=0.3)
    return png_bytes(fig)


def importance_plot(imp: dict[str, float]) -> bytes:
    keys = list(imp)[::-1]
    fig, ax = plt.subplots(figsize=(6.4, 1.2 + 0.45 * len(keys)), layout="tight")  # room for the title and x label
    ax.barh(keys, [imp[k] for k in keys], color="tab:blue")
    ax.set_xlabel("fANOVA importance")
    ax.set_xlim(0, 1)
    ax.set_title("parameter importances")
    return png_bytes(fig)


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return json.dumps(v) if not isinstance(v, str) else v


def _named(spec: dict) -> str:
    """{"name": "median", "n_startup_trials": 2} -> "median (n_startup_trials=2)"."""
    options = ", ".join(f"{k}={_fmt(v)}" for k, v in spec.items() if k != "name")
    return f"{spec['name']} ({options})" if options else spec["name"]


def _num(v, digits: int) -> str:
    return "" if v is None else f"{v:.{digits}f}"


def _pct(v) -> str:
    return "" if v is None else f"{100 * v:.2f}"


def _final(record: dict) -> list:
    final = record.get("final")
    if not final:
        return [Text("Not retrained (seeds 0).")]
    top1, runs = final["test_top1"], final["runs"]
    spread = f"{100 * top1['mean']:.2f} ± {100 * top1['std']:.2f} % (mean ± sample std, n = {top1['n']})"
    header = ["seed", "test top-1 (%)", "test top-5 (%)", "test loss", "wall time (s)", "run"]
    body = [[str(r["seed"]), _pct(r["test_top1"]), _pct(r["test_top5"]), _num(r["test_loss"], 4),
             _num(r["wall_time_s"], 1), f"`{r['run_dir']}`"] for r in runs]
    return [Text(f"Test top-1: **{spread}**, trial {final['trial']}'s configuration, {runs[0]['epochs']} epochs, "
                 f"on {runs[0]['device']} with torch {runs[0]['torch_version']}."), Table(header, body)]


def _trials(record: dict) -> Table:
    body = []
    for t in sorted(record["trials"], key=lambda t: t["number"]):
        value = "" if t["value"] is None else f"{t['value']:.4f}"
        dur = "" if t["duration_s"] is None else f"{t['duration_s']:.1f}"
        vals = ", ".join(f"{k}={_fmt(v)}" for k, v in t["params"].items())
        body.append([str(t["number"]), t["state"].lower(), value, str(len(t["intermediate"])), dur, vals])
    return Table(["trial", "state", record["metric"], "epochs", "time (s)", "values"], body)


def document(record: dict, imp: dict[str, float] | None, figures: dict[str, bytes]) -> Document:
    """The report of a study record, with its importances and figures ({file name: PNG})."""
    counts = record["counts"]
    c = ", ".join(f"{counts.get(s, 0)} {s.lower()}" for s in STATES if counts.get(s))
    intro = [f"objective: {record['metric']} on the validation split ({record['direction']}d); the test set is not "
             "read during the search", f"storage: `{record['storage']}`",
             f"sampler: {_named(record['sampler'])}; pruner: {_named(record['pruner'])}",
             f"trials: {record['trials_requested']} asked; {c}"]
    if record.get("target") is not None:
        intro.append(f"target {record['metric']} {record['target']:.4g}: "
                     f"{'reached' if record['target_reached'] else 'not reached'}")
    sections = [Section("Search space", [Table(["key", "range"], [[f"`{k}`", d] for k, d in
                                                                   record["space_description"].items()])])]
    best = record.get("best")
    if best:
        sections.append(Section(f"Best trial: {best['number']} ({record['metric']} {best['value']:.4f})", [
            Table(["key", "value"], [[f"`{k}`", _fmt(v)] for k, v in best["config_values"].items()])]))
    sections.append(Section("Optimisation history", [Figure(name, "", png) for name, png in figures.items()
                                                     if name != "importance.png"]))
    if imp:
        n = sum(1 for t in record["trials"] if t["state"] == "COMPLETE")
        blocks = [Text(f"fANOVA (optuna.importance, seed 0) over {n} completed trials; with few trials these are "
                       "rough."), Table(["key", "importance"], [[f"`{k}`", f"{v:.3f}"] for k, v in imp.items()])]
        blocks += [Figure("importance.png", "", figures["importance.png"])] if "importance.png" in figures else []
    else:
        blocks = [Text("Not enough completed trials with different results to estimate importances.")]
    sections += [Section("Parameter importances", blocks),
                 Section("Final test: the best configuration retrained on train + val", _final(record)),
                 Section("All trials", [_trials(record)])]
    return Document(f"Tuning report: {record['study']}", [Bullets(intro)], sections)


def write_tune_report(study_dir, record: dict | None = None) -> Path:
    """Write `report.md`, `report.html`, `history.png`, `curves.png` and `importance.png` into `study_dir`;
    returns report.md."""
    study_dir = Path(study_dir)
    record = record if record is not None else load_record(study_dir)
    figures = {"history.png": history_plot(record), "curves.png": curves_plot(record)}
    imp = importances(record)
    if imp:
        figures["importance.png"] = importance_plot(imp)
    doc = document(record, imp, {name: png for name, png in figures.items() if png is not None})
    return render.write(doc, study_dir, "report", figures_dir="").markdown
