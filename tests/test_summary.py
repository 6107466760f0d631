"""count_params / count_macs / stage_table and the `cbamlab summary` command."""
import json
import subprocess
import sys

import pytest
import torch

import cbamlab
from cbamlab.cli import main
from cbamlab.errors import CbamlabError
from cbamlab.models import count_macs, count_params, stage_table
from cbamlab.models.profile import parse_input_size


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def macs50():
    return count_macs(cbamlab.create_model("resnet50"))


def test_resnet50_macs_match_the_published_4_09g(macs50):
    # torchvision's model card: 4.09 GFLOPS (counted as multiply-accumulates)
    assert round(macs50 / 1e9, 2) == 4.09


def test_cbam_adds_at_most_0_2_percent_macs(macs50):
    macs = count_macs(cbamlab.create_model("resnet50_cbam"))
    assert macs50 < macs <= 1.002 * macs50


def test_macs_by_hand_for_a_small_net():
    model = torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3, padding=1, bias=False), torch.nn.Flatten(),
                                torch.nn.Linear(4 * 5 * 5, 3))
    # conv: 4 out x 5 x 5 positions x (2 x 3 x 3); linear: 100 x 3; BN/ReLU/bias adds are not counted
    assert count_macs(model, (2, 5, 5)) == 4 * 25 * 18 + 100 * 3


def test_count_macs_restores_training_mode():
    model = cbamlab.create_model("resnet20_cbam", num_classes=10).train()
    count_macs(model, (3, 32, 32))
    assert model.training and model.layer1[0].bn1.training
    model.eval()
    count_macs(model, (3, 32, 32))
    assert not model.layer1[0].bn1.training


def test_count_params_trainable_only():
    model = cbamlab.create_model("resnet20", num_classes=10)
    model.fc.requires_grad_(False)
    assert count_params(model) == 269_722
    assert count_params(model, trainable_only=True) == 269_722 - 650


def test_stage_table_adds_up():
    model = cbamlab.create_model("resnet20_cbam", num_classes=10)
    rows = stage_table(model, (3, 32, 32))
    assert [r.name for r in rows] == ["stem", "layer1", "layer2", "layer3", "head"]
    assert [r.output_shape for r in rows] == [(16, 32, 32), (16, 32, 32), (32, 16, 16), (64, 8, 8), (10,)]
    assert sum(r.params for r in rows) == count_params(model)
    assert sum(r.macs for r in rows) == count_macs(model, (3, 32, 32))
    assert rows[0].macs == 16 * 32 * 32 * 3 * 9


@pytest.mark.parametrize("text, expected", [("3x224x224", (3, 224, 224)), ("1x28x28", (1, 28, 28)),
                                            ("32x32", (3, 32, 32)), ((1, 8, 8), (1, 8, 8))])
def test_parse_input_size(text, expected):
    assert parse_input_size(text) == expected


@pytest.mark.parametrize("text", ["224", "3x224x", "axbxc", "0x32x32", "3x32x32x32", "-1x4x4"])
def test_parse_input_size_rejects(text):
    with pytest.raises(CbamlabError, match="input size"):
        parse_input_size(text)


def test_cli_summary_table(capsys):
    assert main(["summary", "resnet20_cbam", "--num-classes", "10", "--input-size", "1x28x28"]) == 0
    out = capsys.readouterr().out
    model = cbamlab.create_model("resnet20_cbam", num_classes=10, in_chans=1)
    assert f"parameters  {count_params(model):,}" in out
    assert f"MACs        {count_macs(model, (1, 28, 28)):,}" in out
    assert "input 1x28x28, 10 classes" in out
    lines = {line.split()[0]: line.split() for line in out.splitlines() if line.strip()}
    assert lines["layer3"][1] == "64x7x7"
    assert lines["head"][1] == "10"


def test_cli_summary_json_and_defaults(capsys):
    assert main(["summary", "resnet20", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["params"] == 269_722 and data["input_size"] == [3, 32, 32] and data["num_classes"] == 10
    assert data["attention_params"] == 0 and [s["name"] for s in data["stages"]][-1] == "head"
    assert main(["summary", "resnet20_se", "--json", "--reduction", "8"]) == 0
    se = json.loads(capsys.readouterr().out)
    assert se["attention_params"] > 0 and se["params"] == 269_722 + se["attention_params"]


def test_cli_list(capsys):
    assert main(["summary", "--list", "*_se"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in out] == cbamlab.list_models("*_se")
    assert main(["summary", "--list"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 39


@pytest.mark.parametrize("argv, message", [
    (["summary", "resnet19_cbam"], "error: unknown model 'resnet19_cbam' (did you mean resnet18_cbam"),
    (["summary", "resnet20", "--input-size", "3by32"], "error: input size '3by32'"),
    (["summary", "resnet20_cbam", "--reduction", "64"], "error: attention reduction 64 leaves no hidden unit"),
    (["summary", "resnet20_cbam", "--kernel-size", "4"], "error: spatial attention kernel size"),
    (["summary"], "error: summary needs a MODEL"),
    (["summary", "--list", "vgg*"], "error: no model matches 'vgg*'"),
])
def test_cli_bad_input_is_one_error_line(capsys, argv, message):
    assert main(argv) == 2
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(message), captured.err
    assert "Traceback" not in captured.err


def test_cli_unknown_option_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["summary", "resnet20_cbam", "--attn", "x"])
    assert exc.value.code == 2
    assert capsys.readouterr().err.startswith("error: cbamlab: unrecognized arguments: --attn x")


def test_cli_subprocess_error_exit_status():
    proc = subprocess.run([sys.executable, "-m", "cbamlab", "summary", "resnet20", "--input-size", "3x0x0"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: input size") and "Traceback" not in proc.stderr
