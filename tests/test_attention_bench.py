"""benchmarks/bench_attention.py runs end to end on tiny settings and writes a table with one row per case."""
import csv
import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_attention.py"

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_attention", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_smoke_writes_every_row(bench, tmp_path, capsys):
    variants = ["plain", "se", "cbam_reference", "cbam_native", "timm_cbam"]
    assert bench.main(["--quick", "--only", "resnet20", "--modes", "fp32,bf16_channels_last", "--batch", "2",
                       "--image-size", "8", "--variants", ",".join(variants), "--out", str(tmp_path)]) == 0
    with open(tmp_path / "bench_attention.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    expected = [v for v in variants if v != "timm_cbam" or bench.CbamModule is not None]
    assert [(r["mode"], r["variant"]) for r in rows] == \
        [(m, v) for m in ("fp32", "bf16_channels_last") for v in expected]
    for r in rows:
        assert r["size"] == "resnet20" and r["input"] == "1x8x8" and r["batch"] == "2"
        assert float(r["train_img_s"]) > 0 and float(r["latency_ms"]) > 0
        assert float(r["step_vs_plain"]) > 0 and (r["variant"] != "plain" or float(r["step_vs_plain"]) == 1.0)
    md = (tmp_path / "bench_attention.md").read_text()
    assert "torch threads" in md and "Load average" in md and "torch " in md
    assert md.count("| resnet20 | 1x8x8 | 2 |") == len(rows)
    assert "written:" in capsys.readouterr().out


def test_unknown_names_are_refused(bench):
    with pytest.raises(SystemExit, match="unknown size resnet19; known: resnet20"):
        bench.main(["--only", "resnet19"])
