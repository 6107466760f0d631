"""load_backbone: a plain backbone's weights into an attention model, from a dict, a file or torchvision."""
import pickle

import pytest
import torch
import torchvision

import cbamlab
from cbamlab.errors import CheckpointError
from cbamlab.models import load_backbone
from cbamlab.models.weights import adapt_input_conv


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tv18():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None)
    with torch.no_grad():  # non-trivial BN statistics, so a wrong load would show in the outputs
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return {k: v.clone() for k, v in model.state_dict().items()}


def _attention_keys(model):
    return {k for k in model.state_dict() if ".attn." in k}


@pytest.mark.parametrize("name", ["resnet18_cbam", "resnet18_se"])
def test_exactly_the_attention_is_left_new(tv18, name):
    model = cbamlab.create_model(name)
    fresh_attn = {k: v.clone() for k, v in model.state_dict().items() if ".attn." in k}
    report = load_backbone(model, tv18)
    assert set(report.missing) == _attention_keys(model) and fresh_attn
    assert report.unexpected == [] and report.skipped == [] and report.adapted == []
    sd = model.state_dict()
    for k, v in tv18.items():
        assert torch.equal(sd[k], v), k
    for k, v in fresh_attn.items():
        assert torch.equal(sd[k], v), k


def test_plain_model_loads_everything_and_matches_torchvision(tv18):
    model = cbamlab.create_model("resnet18").eval()
    report = load_backbone(model, tv18)
    assert report.missing == [] and report.loaded == len(tv18)
    ref = torchvision.models.resnet18(weights=None).eval()
    ref.load_state_dict(tv18)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x))


def test_from_files_safetensors_torch_and_checkpoint_dict(tv18, tmp_path):
    from safetensors.torch import save_file

    save_file(tv18, str(tmp_path / "w.safetensors"))
    torch.save(tv18, tmp_path / "w.pt")
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in tv18.items()}}, tmp_path / "ckpt.pt")
    for path in ("w.safetensors", "w.pt", "ckpt.pt"):
        model = cbamlab.create_model("resnet18_cbam")
        report = load_backbone(model, tmp_path / path)
        assert set(report.missing) == _attention_keys(model), path
        assert torch.equal(model.layer4[1].conv2.weight, tv18["layer4.1.conv2.weight"]), path
    model = cbamlab.create_model("resnet18_cbam", pretrained=str(tmp_path / "w.safetensors"))
    assert torch.equal(model.conv1.weight, tv18["conv1.weight"])


def test_weights_without_bn_step_counters_load(tv18):
    old_style = {k: v for k, v in tv18.items() if not k.endswith("num_batches_tracked")}
    assert len(old_style) < len(tv18)
    model = cbamlab.create_model("resnet18_cbam")
    report = load_backbone(model, old_style)
    assert {k for k in report.missing if ".attn." not in k} == set(tv18) - set(old_style)
    assert torch.equal(model.bn1.running_var, tv18["bn1.running_var"])


def test_new_class_count_skips_the_classifier(tv18):
    model = cbamlab.create_model("resnet18_cbam", num_classes=10)
    fc = model.fc.weight.clone()
    report = load_backbone(model, tv18)
    assert report.skipped == ["fc.weight", "fc.bias"]
    assert set(report.missing) == _attention_keys(model) | {"fc.weight", "fc.bias"}
    assert torch.equal(model.fc.weight, fc)
    assert torch.equal(model.layer1[0].conv1.weight, tv18["layer1.0.conv1.weight"])


def test_grayscale_stem_sums_over_rgb(tv18):
    gray = cbamlab.create_model("resnet18", in_chans=1).eval()
    report = load_backbone(gray, tv18)
    assert report.adapted == ["conv1.weight"]
    rgb = cbamlab.create_model("resnet18").eval()
    load_backbone(rgb, tv18)
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():  # a gray image seen as 1 channel == the same image repeated over RGB
        torch.testing.assert_close(gray(x), rgb(x.repeat(1, 3, 1, 1)), rtol=1e-4, atol=1e-4)


def test_more_input_channels_repeat_and_rescale():
    w = torch.randn(8, 3, 3, 3)
    w5 = adapt_input_conv(w, 5)
    assert w5.shape == (8, 5, 3, 3)
    torch.testing.assert_close(w5[:, :3], w * 3 / 5)
    torch.testing.assert_close(w5[:, 3:], w[:, :2] * 3 / 5)
    # with a multiple of 3 channels a constant image gives exactly the 3-channel response
    conv = torch.nn.functional.conv2d
    torch.testing.assert_close(conv(torch.ones(1, 6, 5, 5), adapt_input_conv(w, 6)), conv(torch.ones(1, 3, 5, 5), w))


def test_cbam_weights_into_plain_model_report_unused_attention(tv18):
    cbam = cbamlab.create_model("resnet18_cbam")
    load_backbone(cbam, tv18)
    plain = cbamlab.create_model("resnet18")
    report = load_backbone(plain, cbam.state_dict())
    assert set(report.unexpected) == _attention_keys(cbam) and report.missing == []
    assert torch.equal(plain.layer2[0].conv1.weight, tv18["layer2.0.conv1.weight"])


@pytest.mark.parametrize("other, target, message", [
    ("resnet34", "resnet18_cbam", "unexpected key layer1.2"),
    ("resnet18", "resnet50_cbam", "shape"),
    ("resnet18", "resnet34_cbam", "missing key layer1.2"),
    ("resnet20", "cifar_resnet18_cbam", "shape"),
])
def test_another_architecture_is_refused_and_model_untouched(other, target, message):
    model = cbamlab.create_model(target)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    weights = cbamlab.create_model(other).state_dict()
    with pytest.raises(CheckpointError, match=message):
        load_backbone(model, weights)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_torchvision_source_uses_the_plain_twins_weights(tv18, monkeypatch):
    calls = []

    def fake_get_state_dict(self, progress=True, check_hash=False):  # no network in tests
        calls.append(self.url)
        return tv18

    monkeypatch.setattr(torchvision.models.WeightsEnum, "get_state_dict", fake_get_state_dict)
    model = cbamlab.create_model("resnet18_cbam", num_classes=5, pretrained=True)
    assert len(calls) == 1 and "resnet18" in calls[0]
    assert torch.equal(model.layer3[1].bn2.running_var, tv18["layer3.1.bn2.running_var"])
    with pytest.raises(CheckpointError, match="no ImageNet weights for 'resnet20'"):
        load_backbone(cbamlab.create_model("resnet20_cbam"), "torchvision")


def test_unreadable_or_unsafe_files_are_refused(tmp_path):
    model = cbamlab.create_model("resnet20", num_classes=10)
    with pytest.raises(CheckpointError, match="no such weights file"):
        load_backbone(model, tmp_path / "missing.pt")
    (tmp_path / "bad.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="safetensors"):
        load_backbone(model, tmp_path / "bad.safetensors")

    class Payload:  # a pickle that would import and call code
        def __reduce__(self):
            return (print, ("pwned",))

    (tmp_path / "evil.pt").write_bytes(pickle.dumps({"conv1.weight": Payload()}, protocol=2))
    with pytest.raises(CheckpointError, match="refused|not a readable"):
        load_backbone(model, tmp_path / "evil.pt")
    torch.save({"epoch": 1, "lr": 0.1}, tmp_path / "nostate.pt")
    with pytest.raises(CheckpointError, match="holds no state_dict"):
        load_backbone(model, tmp_path / "nostate.pt")
    with pytest.raises(CheckpointError, match="takes a state_dict"):
        load_backbone(model, 42)
