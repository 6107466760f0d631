"""The commands train, eval, predict, export: results, and bad input as one `error:` line with exit status 2."""
import contextlib
import io
import json
import re
import subprocess
import sys

import pytest
import torch
import yaml
from PIL import Image

from cbamlab.cli import main
from cbamlab.config import load_config
from cbamlab.engine import fit

QUICK = ["--set", "train.epochs=2", "--set", "train.batch_size=128", "--set", "train.threads=1"]
PRINTED = {}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        assert main(["train", "--quiet", "--out", str(out), *QUICK]) == 0
    PRINTED["train"] = stdout.getvalue()
    return out


def _error(capsys, argv, *words):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    for w in words:
        assert w in err, err
    return err


def test_train_prints_the_result_and_writes_the_run(run_dir):
    s = json.loads((run_dir / "summary.json").read_text())
    assert s["model"] == "resnet20_cbam" and s["dataset"] == "digits" and s["epochs"] == 2
    printed = PRINTED["train"].splitlines()
    assert len(printed) == 1  # --quiet: the result line only
    assert re.fullmatch(rf"resnet20_cbam on digits: test top-1 {100 * s['top1']:.2f} %  top-5 {100 * s['top5']:.2f} %"
                        rf"  \(2 epochs, [0-9.]+ s, [0-9]+ img/s\)  run: {re.escape(str(run_dir))}", printed[0])


def test_eval_run_prints_the_summary_top1(run_dir, capsys):
    s = json.loads((run_dir / "summary.json").read_text())
    assert main(["eval", "--run", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert f"top1={s['top1']:.6f}" in out and f"top5={s['top5']:.6f}" in out
    weights = run_dir / "checkpoints" / "last.safetensors"
    assert main(["eval", "--weights", str(weights), "--model", "resnet20_cbam", "--data", "digits"]) == 0
    assert f"top1={s['top1']:.6f}" in capsys.readouterr().out


def test_predict_png_and_jpeg(run_dir, tmp_path, capsys):
    from sklearn.datasets import load_digits

    d = load_digits()
    img = Image.fromarray((d.images[0] * 255 / 16).astype("uint8"))
    img.resize((32, 32)).save(tmp_path / "zero.png")
    img.convert("RGB").save(tmp_path / "zero.jpg")
    assert main(["predict", "--run", str(run_dir), "-k", "3", str(tmp_path / "zero.png"),
                 str(tmp_path / "zero.jpg")]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2
    for line in lines:
        pairs = line.split(": ", 1)[1].split("  ")
        probs = [float(p.split()[-1]) for p in pairs]
        assert len(probs) == 3 and probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.0001


@pytest.mark.parametrize("fmt", ["onnx", "torchscript", pytest.param("pt2", marks=pytest.mark.slow)])
def test_export_matches_the_model(run_dir, tmp_path, fmt, capsys):
    from cbamlab.inference.export import SUFFIX, load_export
    from cbamlab.inference.predict import load_run

    assert main(["export", "--run", str(run_dir), "--format", fmt]) == 0
    out = run_dir / "export" / f"model{SUFFIX[fmt]}"  # the default place
    assert out.stat().st_size > 10_000
    assert capsys.readouterr().out.startswith(f"wrote {out} ({fmt}); max |difference| vs PyTorch ")
    model, run = load_run(run_dir).model, load_export(out.read_bytes(), fmt)
    for batch in (1, 3):  # a dynamic batch size
        x = torch.randn(batch, 1, 8, 8)
        with torch.no_grad():
            torch.testing.assert_close(run(x), model(x), atol=1e-4, rtol=1e-4)
    out.unlink()


def test_bad_input_is_one_error_line(run_dir, tmp_path, capsys):
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    _error(capsys, ["train", "--set", "optim.lrr=0.1"], "optim.lrr", "did you mean")
    _error(capsys, ["train", "--set", "train.epochs=two"], "train.epochs", "integer")
    _error(capsys, ["train", "--set", "optim.lr=0"], "optim.lr")
    _error(capsys, ["train", "--set", "train.batch_size=0"], "train.batch_size")
    _error(capsys, ["train", "--out", str(run_dir), *QUICK], "finished run")
    _error(capsys, ["train", "--out", str(tmp_path / "x"), "--set", "model.in_chans=3"], "model.in_chans",
           "does not fit")
    _error(capsys, ["train", "--out", str(tmp_path / "y"), "--set", "model.num_classes=100"], "model.num_classes")
    _error(capsys, ["train", "--out", str(tmp_path / "z"), "--set", "model.name=resnet20_cbm"], "did you mean")
    _error(capsys, ["train", "--config", str(tmp_path / "missing.yaml")], "no such config file")
    (tmp_path / "not.png").write_text("plain text")
    _error(capsys, ["predict", "--run", str(run_dir), str(tmp_path / "not.png")], "not a readable PNG or JPEG")
    weights = run_dir / "checkpoints" / "last.safetensors"
    (tmp_path / "trunc.safetensors").write_bytes(weights.read_bytes()[:1000])
    _error(capsys, ["eval", "--weights", str(tmp_path / "trunc.safetensors"), "--model", "resnet20_cbam"],
           "corrupt or truncated")
    _error(capsys, ["eval", "--weights", str(weights), "--model", "resnet32_cbam"], "another architecture")
    _error(capsys, ["eval", "--run", str(tmp_path)], "not a cbamlab run directory")
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == before


class _Stop(Exception):
    pass


def test_resume_without_config_uses_the_runs_own(tmp_path, capsys):
    """An unfinished run with a config far from the defaults: `train --resume --out RUN` alone must finish it
    under its own config (the defaults would train 15 epochs of another recipe, or be refused)."""
    own = load_config(None, ["seed=3", "train.epochs=2", "train.batch_size=256", "optim.lr=0.05", "train.threads=1",
                             "model.name=resnet20", "train.progress=false"])
    run = tmp_path / "run"

    def stop_after_first(epoch, row):
        raise _Stop

    with pytest.raises(_Stop):
        fit(own, run, on_epoch=stop_after_first)
    assert not (run / "summary.json").exists()
    saved = (run / "config.yaml").read_text()
    assert main(["train", "--quiet", "--resume", "--out", str(run)]) == 0
    s = json.loads((run / "summary.json").read_text())
    assert (s["status"], s["model"], s["seed"], s["epochs"]) == ("complete", "resnet20", 3, 2)
    assert (run / "config.yaml").read_text() == saved
    assert yaml.safe_load(saved)["optim"]["lr"] == 0.05
    rows = (run / "metrics.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["1", "2"]  # continued from epoch 1, not restarted
    assert "(2 epochs," in capsys.readouterr().out


@pytest.mark.slow
def test_subprocess_error_exit_status(tmp_path):
    r = subprocess.run([sys.executable, "-m", "cbamlab", "train", "--set", "optim.momentom=0.9"],
                       capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert r.returncode == 2 and r.stderr.startswith("error: ") and "did you mean" in r.stderr
    assert r.stdout == "" and not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_train_with_no_arguments_reaches_95_percent(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--quiet"]) == 0
    s = json.loads((tmp_path / "runs" / "resnet20_cbam-digits-s0" / "summary.json").read_text())
    assert (s["model"], s["dataset"], s["split"]) == ("resnet20_cbam", "digits", "test")
    assert s["top1"] >= 0.95
    assert "top-1" in capsys.readouterr().out
