"""Test-time flip averaging (eval.tta): the mean of the softmax of each image and its mirror image, exact on a
hand-made model, a no-op on a flip-invariant one; recorded in the run and honoured (or overridden) by eval."""
import json
import re

import pytest
import torch
from torch import nn

from cbamlab.cli import main
from cbamlab.config import config_to_dict, load_config
from cbamlab.engine import fit
from cbamlab.engine.loop import evaluate
from cbamlab.inference.predict import evaluate_config, load_run
from cbamlab.errors import CbamlabError, ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")
CPU = torch.device("cpu")


class LeftRight(nn.Module):
    """Logits (2 * left-half sum, right-half sum, 1): not flip-invariant, and its mirror swaps the halves."""

    def forward(self, x):  # (B, C, H, W) -> (B, 3)
        w = x.shape[3] // 2
        left, right = x[..., :w].sum((1, 2, 3)), x[..., w:].sum((1, 2, 3))
        return torch.stack([2 * left, right, torch.ones_like(left)], dim=1)


def _batches(n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        x = torch.randn(16, 1, 4, 4, generator=g) * 0.3
        y = torch.randint(0, 3, (16,), generator=g)
        out.append((x, y))
    return out


def test_hflip_averages_the_two_softmaxes():
    model, data = LeftRight(), _batches()
    r = evaluate(model, data, device=CPU, num_classes=3, tta="hflip")
    x = torch.cat([b[0] for b in data])
    y = torch.cat([b[1] for b in data])
    p = (model(x).softmax(1) + model(x.flip(3)).softmax(1)) / 2  # the mean of the two, by hand
    assert r["loss"] == pytest.approx(float(-p[torch.arange(len(y)), y].log().mean()), rel=1e-6)
    assert r["top1"] == pytest.approx(float((p.argmax(1) == y).float().mean()))
    assert r["top5"] == 1.0 and sum(map(sum, r["confusion_matrix"])) == len(y)
    plain = evaluate(model, data, device=CPU, tta="none")
    q = model(x).softmax(1)
    assert plain["loss"] == pytest.approx(float(-q[torch.arange(len(y)), y].log().mean()), rel=1e-6)
    assert plain["loss"] != pytest.approx(r["loss"], rel=1e-3)  # the asymmetric model scores differently
    assert plain["top1"] != r["top1"]


def test_a_flip_invariant_model_is_unchanged():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    data = _batches()
    a = evaluate(model, data, device=CPU, num_classes=3, tta="none")
    b = evaluate(model, data, device=CPU, num_classes=3, tta="hflip")
    assert a["loss"] == pytest.approx(b["loss"], rel=1e-6) and a["top1"] == b["top1"]
    assert a["confusion_matrix"] == b["confusion_matrix"]


def test_unknown_modes_are_refused():
    with pytest.raises(CbamlabError, match="unknown test-time augmentation 'vflip'"):
        evaluate(LeftRight(), _batches(1), device=CPU, tta="vflip")
    with pytest.raises(ConfigError, match="eval.tta"):
        load_config(None, ["eval.tta=vflip"])
    assert load_config().eval.tta == "none"


def _top1(text: str) -> float:
    return float(re.search(r"top1=([0-9.]+)", text).group(1))


@pytest.mark.slow
def test_run_records_it_and_eval_honours_or_overrides_it(tmp_path, capsys):
    out = tmp_path / "r"
    s = fit(load_config(None, ["train.epochs=1", "train.batch_size=128", "model.name=resnet20", "train.threads=1",
                               "eval.tta=hflip"]), out)
    assert config_to_dict(load_config(out / "config.yaml"))["eval"] == {"tta": "hflip", "every": 1}
    assert main(["eval", "--run", str(out), "-q"]) == 0
    assert _top1(capsys.readouterr().out) == round(s["top1"], 6)
    loaded = load_run(out)
    assert evaluate_config(loaded.model, loaded.cfg)["loss"] == pytest.approx(s["final"]["test_loss"], rel=1e-6)
    plain = evaluate_config(loaded.model, load_config(config_to_dict(loaded.cfg), ["eval.tta=none"]))
    assert plain["loss"] != pytest.approx(s["final"]["test_loss"], rel=1e-4)  # what was recorded used the flips
    assert main(["eval", "--run", str(out), "--tta", "none", "-q"]) == 0
    assert _top1(capsys.readouterr().out) == round(plain["top1"], 6)
