"""cbamlab explain: maps aligned with the input, faithfulness against a random order, channel specificity,
models from torchvision weights, the command end to end, and bad input as one `error:` line with exit 2."""
import json

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from cbamlab import _io, runs
from cbamlab.cli import main
from cbamlab.config import load_config
from cbamlab.explain import (class_specificity, deletion_insertion, gradcam, spatial_maps, stage_modules)
from cbamlab.explain.faithfulness import auc, ranking
from cbamlab.explain.images import stratified_pick
from cbamlab.explain.selection import select_models
from cbamlab.models import create_model, get_attn, load_backbone
from cbamlab.models.attention import SpatialGate
from cbamlab.models.resnet import BasicBlock, ResNet

pytestmark = pytest.mark.usefixtures("one_thread")

CELL = 4  # the toy model's stride


class Toy(nn.Module):
    """One stage: average-pool by CELL, then a spatial gate whose map is sigmoid(GAIN * channel max), known exactly.
    Logit 0 is the mean of the gated features, logit 1 its negative."""

    GAIN = 3.0

    def __init__(self):
        super().__init__()
        gate = SpatialGate(kernel_size=1)
        with torch.no_grad():
            gate.conv.weight.copy_(torch.tensor([self.GAIN, 0.0]).view(1, 2, 1, 1))  # (max, mean) -> GAIN * max
            gate.bn.weight.fill_(1.0)
        self.layer1 = nn.Sequential(nn.AvgPool2d(CELL), gate)
        self.eval()

    def stage_names(self):
        return ["layer1"]

    def forward(self, x):
        s = self.layer1(x).mean(dim=(1, 2, 3))
        return torch.stack([s, -s], dim=1)


def _bilinear_profile(size: int, cell: int) -> np.ndarray:
    """The bilinear (half-pixel centres) upsampling by `size / (size // CELL)` of a one-hot at feature cell `cell`,
    along one axis, written out from the definition."""
    p = np.arange(size)
    src = np.clip((p + 0.5) / CELL - 0.5, 0, size // CELL - 1)
    return np.maximum(0.0, 1.0 - np.abs(src - cell))


@pytest.mark.parametrize("chans, cell", [(1, (0, 0)), (3, (2, 4)), (1, (3, 5))])
def test_maps_align_with_the_input_to_the_pixel(chans, cell):
    h, w = 16, 24  # not square: a transposed or shifted map cannot pass
    x = torch.zeros(1, chans, h, w)
    i, j = cell
    x[:, :, CELL * i:CELL * (i + 1), CELL * j:CELL * (j + 1)] = 1.0  # the object fills feature cell (i, j)
    expected = np.outer(_bilinear_profile(h, i), _bilinear_profile(w, j))
    model = Toy()
    for method in ("gradcam", "gradcam++"):
        cam = gradcam(model, x, 0, method=method)
        assert cam.shape == (1, h, w) and cam.dtype == np.float32
        np.testing.assert_allclose(cam[0], expected / expected.max(), atol=1e-5)  # CAMs are scaled to max 1
        assert np.unravel_index(cam[0].argmax(), (h, w))[0] // CELL == i
    maps = spatial_maps(model, x)
    gate = model.layer1[1]
    assert list(maps) == ["layer1"] and gate.keep_map is False and gate.last_map is None  # settings restored
    peak = torch.sigmoid(torch.tensor(Toy.GAIN)).item()
    np.testing.assert_allclose(maps["layer1"][0], 0.5 + (peak - 0.5) * expected, atol=1e-5)


def test_plain_and_torchvision_weighted_models_get_gradcam_and_no_spatial_maps():
    torch.manual_seed(0)
    tv = torchvision.models.resnet18(num_classes=10)  # random weights: no network
    for in_chans, size in ((3, (40, 56)), (1, (33, 47))):
        model = create_model("resnet18", num_classes=10, in_chans=in_chans)
        report = load_backbone(model, tv.state_dict())
        assert report.loaded > 0
        x = torch.randn(2, in_chans, *size)
        cam = gradcam(model, x, [3, 7])
        assert cam.shape == (2, *size) and cam.min() >= 0 and np.isclose(cam.max(), 1.0)
        assert spatial_maps(model, x) == {}
    assert list(stage_modules(tv)) == ["layer1", "layer2", "layer3", "layer4"]  # a bare torchvision model too
    x = torch.randn(1, 3, 80, 64)  # layer4 is 3 x 2: a map with some resolution
    cam = gradcam(tv, x, 1)
    assert cam.shape == (1, 80, 64) and np.isclose(cam.max(), 1.0)
    for p in tv.parameters():
        p.requires_grad_(False)  # frozen weights give the same map
    np.testing.assert_allclose(gradcam(tv, x, 1), cam, atol=1e-6)
    cbam = create_model("resnet18_cbam", num_classes=10, in_chans=1)
    load_backbone(cbam, tv.state_dict())
    maps = spatial_maps(cbam, torch.randn(2, 1, 36, 20))
    assert list(maps) == ["layer1", "layer2", "layer3", "layer4"]
    assert all(m.shape == (2, 36, 20) and ((m > 0) & (m < 1)).all() for m in maps.values())


def test_auc_ranking_and_curve_end_points():
    np.testing.assert_allclose(auc(np.linspace(1, 0, 33)), 0.5)
    np.testing.assert_allclose(auc(np.ones((2, 9))), [1.0, 1.0])
    m = np.array([[0.0, 2.0], [2.0, 0.0]])
    orders = {tuple(ranking(m, np.random.default_rng(s))) for s in range(20)}
    assert all(set(o[:2]) == {1, 2} for o in orders) and len(orders) > 1  # ties broken at random, best first
    model = Toy()
    x = torch.zeros(3, 1, 16, 24)
    for k in range(3):
        x[k, :, 4 * k:4 * k + 4, 8:12] = 2.0
    p_full = torch.softmax(model(x), 1)[:, 0].detach().numpy()
    curves = deletion_insertion(model, x, [0, 0, 0], {"a": np.random.rand(3, 16, 24).astype(np.float32)}, steps=8)
    assert curves["deletion"]["a"].shape == (3, 9)
    np.testing.assert_allclose(curves["deletion"]["a"][:, 0], p_full, rtol=1e-5)    # nothing deleted yet
    np.testing.assert_allclose(curves["insertion"]["a"][:, -1], p_full, rtol=1e-5)  # everything put back
    np.testing.assert_allclose(curves["deletion"]["a"][:, -1], 0.5, rtol=1e-5)      # all baseline: no evidence


def test_deletion_of_the_true_object_beats_a_random_order():
    model = Toy()
    n, h, w = 6, 16, 24
    x = torch.zeros(n, 1, h, w)
    truth = np.zeros((n, h, w), dtype=np.float32)
    for k in range(n):
        r, c = 4 * (k % 4), 4 * (k % 6)
        x[k, :, r:r + 4, c:c + 4] = 2.0
        truth[k, r:r + 4, c:c + 4] = 1.0
    rnd = np.random.default_rng(0).random((n, h, w)).astype(np.float32)
    curves = deletion_insertion(model, x, [0] * n, {"truth": truth, "random": rnd}, steps=16)
    d_true, d_rand = auc(curves["deletion"]["truth"]), auc(curves["deletion"]["random"])
    i_true, i_rand = auc(curves["insertion"]["truth"]), auc(curves["insertion"]["random"])
    assert (d_true < d_rand).all() and (i_true > i_rand).all()


def test_channel_specificity_against_shuffled_labels():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 10)
    centres = rng.normal(size=(4, 16))
    specific = centres[labels] + 0.3 * rng.normal(size=(40, 16))
    s = class_specificity(specific, labels)
    assert s.ratio > 3 * s.chance and s.means.shape == (4, 16) and list(s.classes) == [0, 1, 2, 3]
    flat = class_specificity(rng.normal(size=(40, 16)), labels)
    assert abs(flat.ratio / flat.chance - 1) < 0.3
    assert np.isnan(class_specificity(specific[:3], np.array([0, 1, 2])).ratio)  # no class with 2 images


def test_stratified_pick_takes_classes_in_turn_with_a_fixed_seed():
    labels = np.repeat(np.arange(10), [5, 3, 4, 6, 2, 5, 5, 5, 5, 5])
    picked = stratified_pick(labels, 25, seed=0)
    counts = np.bincount(labels[picked], minlength=10)
    assert len(set(picked)) == 25 and counts.max() - counts.min() <= 1 and counts.sum() == 25
    assert list(labels[picked[:10]]) == list(range(10))
    assert (stratified_pick(labels, 25, seed=0) == picked).all()
    assert not (stratified_pick(labels, 25, seed=1) == picked).all()


# ---------------------------------------------------------------------------------------- a known answer

def _squares(n: int, seed: int, size: int = 16):
    """Class 0: a bright 3 x 3 square, class 1: a dark one, at a random place in noise; also the squares' corners."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, size, size, generator=g) * 0.3
    y = torch.arange(n) % 2
    corners = []
    for k in range(n):
        r, c = (int(v) for v in torch.randint(0, size - 3, (2,), generator=g))
        x[k, 0, r:r + 3, c:c + 3] += 2.0 if y[k] == 0 else -2.0
        corners.append((r, c))
    return x, y, corners


@pytest.mark.slow
def test_gradcam_finds_the_object_after_a_short_training():
    torch.manual_seed(0)
    model = ResNet(BasicBlock, (1, 1), (16, 32), num_classes=2, in_chans=1, stem="cifar",
                   attn_layer=get_attn("cbam", reduction=4, kernel_size=3))
    x, y, _ = _squares(512, seed=0)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for epoch in range(3):
        for i in range(0, len(y), 32):
            loss = nn.functional.cross_entropy(model(x[i:i + 32]), y[i:i + 32])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    xt, yt, corners = _squares(64, seed=1)
    assert (model(xt).argmax(1) == yt).float().mean() > 0.9
    cam = gradcam(model, xt, yt)
    on_object = []
    truth = np.zeros((64, 16, 16), dtype=np.float32)
    for k, (r, c) in enumerate(corners):
        pr, pc = np.unravel_index(cam[k].argmax(), cam[k].shape)
        on_object.append(r - 1 <= pr <= r + 3 and c - 1 <= pc <= c + 3)  # on the square, give or take a pixel
        truth[k, r:r + 3, c:c + 3] = 1.0
    assert np.mean(on_object) >= 0.8, np.mean(on_object)
    rnd = np.random.default_rng(0).random(truth.shape).astype(np.float32)
    curves = deletion_insertion(model, xt, yt, {"truth": truth, "gradcam": cam, "random": rnd}, steps=16)
    d = {k: auc(v).mean() for k, v in curves["deletion"].items()}
    assert d["truth"] < d["random"] and d["gradcam"] < d["random"], d


# ---------------------------------------------------------------------------------------- the command

def _fake_run(path, model_name: str, weights: bool = True):
    """A finished-looking digits run of an untrained model: config, summary and (optionally) last weights."""
    cfg = load_config({"model": {"name": model_name}, "data": {"name": "digits"}, "train": {"epochs": 1}})
    runs.write_config(path, cfg)
    _io.write_json(path / runs.SUMMARY, {
        "status": "complete", "model": model_name, "dataset": "digits", "seed": 0,
        "classes": [str(i) for i in range(10)],
        "data": {"num_classes": 10, "in_chans": 1, "image_size": [8, 8], "mean": [0.3], "std": [0.4]}})
    if weights:
        torch.manual_seed(0)
        runs.save_weights(path / runs.LAST_WEIGHTS, create_model(model_name, num_classes=10, in_chans=1))
    return path


@pytest.fixture(scope="module")
def compare_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("explain") / "cmp"
    for name in ("resnet20", "resnet20_cbam"):
        _fake_run(root / "digits" / name / "seed0", name)
    return root


def test_explain_command_writes_every_output(compare_dir, tmp_path, capsys):
    out = tmp_path / "ex"
    assert main(["explain", str(compare_dir), "--n", "10", "--steps", "4", "--figure-images", "2",
                 "--out", str(out), "-q"]) == 0
    printed = capsys.readouterr().out
    assert "resnet20_cbam: top-1" in printed and "explain.html" in printed
    with np.load(out / "maps.npz", allow_pickle=False) as z:
        assert z["files"].shape == (10,) and sorted(set(z["labels"])) == list(range(10))
        assert z["resnet20/prob"].shape == (10, 10) and np.allclose(z["resnet20/prob"].sum(1), 1, atol=1e-5)
        for label in ("resnet20", "resnet20_cbam"):
            cam = z[f"{label}/gradcam"]
            assert cam.shape == (10, 8, 8) and cam.min() >= 0 and cam.max() <= 1
        assert [k for k in z.files if k.startswith("resnet20/spatial")] == []
        assert all(z[f"resnet20_cbam/spatial/layer{i}"].shape == (10, 8, 8) for i in (1, 2, 3))
    meta = json.loads((out / "explain.json").read_text())
    assert meta["pairs"] == [["resnet20_cbam", "resnet20"]]
    plain = next(m for m in meta["models"] if m["label"] == "resnet20")
    assert plain["spatial_stages"] == [] and any("Grad-CAM only" in note for note in plain["notes"])
    rows = (out / "scores.csv").read_text().splitlines()
    assert len(rows) == 21 and "deletion_gradcam" in rows[0] and "insertion_spatial_layer3" in rows[0]
    page = (out / "explain.html").read_text()
    assert page.count('src="data:image/png;base64,') >= 3 and "http" not in page.replace("https://", "")
    assert (out / "explain.md").read_text().count("](figures/") >= 3


def test_runs_are_paired_with_their_plain_twin_or_against_another(compare_dir):
    cbam, plain = compare_dir / "digits" / "resnet20_cbam" / "seed0", compare_dir / "digits" / "resnet20" / "seed0"
    models, pairs = select_models(cbam, against=plain)
    assert [m.label for m in models] == ["resnet20_cbam", "resnet20"] and pairs == [("resnet20_cbam", "resnet20")]
    models, pairs = select_models(plain, against=plain)  # one name twice: the labels still differ
    assert len({m.label for m in models}) == 2 and pairs == [(models[0].label, models[1].label)]
    models, pairs = select_models(compare_dir / "digits")  # a compare folder one level down works too
    assert [m.attn for m in models] == ["none", "cbam"] and pairs == [("resnet20_cbam", "resnet20")]
    assert select_models(cbam)[1] == []


def _error(capsys, argv, *words):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    for w in words:
        assert w in err, err
    return err


def test_bad_input_is_one_error_line(compare_dir, tmp_path, capsys):
    run = str(compare_dir / "digits" / "resnet20_cbam" / "seed0")
    no_ckpt = _fake_run(tmp_path / "bare", "resnet20", weights=False)
    _error(capsys, ["explain", str(no_ckpt), "-q"], "checkpoint")
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    _error(capsys, ["explain", run, "--images", str(text), "-q"], "not a readable PNG or JPEG")
    (tmp_path / "empty").mkdir()
    _error(capsys, ["explain", run, "--images", str(tmp_path / "empty"), "-q"], "no PNG or JPEG")
    _error(capsys, ["explain", run, "--n", "100000", "-q"], "larger than", "359")
    _error(capsys, ["explain", run, "--classes", "3", "eleven", "-q"], "unknown class 'eleven'")
    _error(capsys, ["explain", str(tmp_path / "empty"), "-q"], "neither a run directory")
    _error(capsys, ["explain", str(compare_dir), "--seed", "4", "-q"], "seed 4")
