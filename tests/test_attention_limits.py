"""benchmarks/attention_limits.py runs end to end on tiny settings: one primitive row per CBAM input shape, the
floor line, and an operator profile that names the CBAM's own autograd nodes."""
import importlib.util
import re
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def limits():
    sys.path.insert(0, str(BENCH))  # the script imports bench_attention from its folder
    try:
        spec = importlib.util.spec_from_file_location("attention_limits", BENCH / "attention_limits.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCH))
    return module


def test_smoke_table_floor_and_profile(limits, tmp_path):
    assert limits.main(["--quick", "--only", "resnet20", "--batch", "2", "--image-size", "16",
                        "--out", str(tmp_path)]) == 0
    md = (tmp_path / "attention_limits.md").read_text()
    # resnet20 at 16 px: three stages of three CBAM blocks, at 16, 8 and 4 px
    shapes = re.findall(r"^\| \((2, \d+, \d+, \d+)\) \| (\d+) \|", md, flags=re.M)
    assert shapes == [("2, 16, 16, 16", "3"), ("2, 32, 8, 8", "3"), ("2, 64, 4, 4", "3")]
    floor, measured = map(float, re.search(r"step ratio of \*\*x([\d.]+)\*\* against the measured \*\*x([\d.]+)",
                                           md).groups())
    assert floor >= 1.0 and measured > 0
    assert "`cbamlab::cbam_backward`" in md  # the native operator's backward ran and was profiled
    assert "torch threads" in md and "Load average" in md


def test_unknown_size_is_refused(limits, capsys):
    with pytest.raises(SystemExit) as e:
        limits.main(["--only", "resnet19"])
    assert e.value.code == 2 and "unknown size resnet19" in capsys.readouterr().err
