"""model.width: He et al.'s CIFAR nets widened WRN-style (stages 16k/32k/64k, stem 16); width 1 is unchanged."""
import pytest
import torch

from cbamlab import create_model
from cbamlab.engine.build import build_model
from cbamlab.config import load_config
from cbamlab.errors import CbamlabError, ConfigError
from cbamlab.models import count_params

pytestmark = pytest.mark.usefixtures("one_thread")


def resnet20_params(k: int, in_chans: int = 3, num_classes: int = 10) -> int:
    """Parameters of resnet20 at width k counted from its layer shapes: a 3x3 stem conv to 16 channels + BN,
    three stages of three basic blocks (two 3x3 convs + two BNs each) at 16k, 32k, 64k channels, shortcut A
    (no parameters), and the fc layer."""
    conv = lambda cin, cout: cin * cout * 9  # noqa: E731  3x3, no bias
    bn = lambda c: 2 * c  # noqa: E731  weight and bias (running stats are buffers)
    total = conv(in_chans, 16) + bn(16)
    cin = 16
    for planes in (16 * k, 32 * k, 64 * k):
        for _ in range(3):
            total += conv(cin, planes) + bn(planes) + conv(planes, planes) + bn(planes)
            cin = planes
    return total + 64 * k * num_classes + num_classes


def test_the_hand_count_is_the_published_resnet20():
    assert resnet20_params(1) == 269_722  # He et al. 2016, Table 6: 0.27M


@pytest.mark.parametrize("k", [1, 2, 4])
def test_parameter_count_at_width_k(k):
    model = create_model("resnet20", num_classes=10, in_chans=3, width=k)
    assert count_params(model) == resnet20_params(k)


def test_width_1_is_unchanged_and_names_stay_the_same():
    default = create_model("resnet20", num_classes=10, in_chans=3)
    one = create_model("resnet20", num_classes=10, in_chans=3, width=1)
    assert count_params(default) == 269_722
    assert {k: v.shape for k, v in default.state_dict().items()} == {k: v.shape for k, v in one.state_dict().items()}
    wide = create_model("resnet20_cbam", num_classes=10, in_chans=3, width=2).state_dict()
    assert set(wide) == set(create_model("resnet20_cbam", num_classes=10, in_chans=3).state_dict())
    assert wide["conv1.weight"].shape == (16, 3, 3, 3)            # the stem stays at 16 (WRN)
    assert wide["layer1.0.conv1.weight"].shape == (32, 16, 3, 3)  # 16 -> 16k
    assert wide["layer3.2.conv2.weight"].shape == (128, 128, 3, 3)
    assert wide["fc.weight"].shape == (10, 128)


@pytest.mark.parametrize("name, k", [("resnet20", 2), ("resnet20_cbam", 4), ("resnet32_se", 2)])
def test_forward_and_backward_at_width_k(name, k):
    model = create_model(name, num_classes=10, in_chans=1, width=k)
    x = torch.randn(2, 1, 28, 28)
    out = model(x)
    assert out.shape == (2, 10) and torch.isfinite(out).all()
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    assert model.forward_features(x).shape == (2, 64 * k, 7, 7)


def test_width_goes_through_the_config_and_pairs_with_the_plain_twin():
    cfg = load_config(None, ["model.name=resnet20_cbam", "model.width=2"])
    cbam = build_model(cfg.model, 10, 1, seed=3).state_dict()
    cfg.model.name = "resnet20"
    plain = build_model(cfg.model, 10, 1, seed=3)
    assert count_params(plain) == resnet20_params(2, in_chans=1)
    for k, v in plain.state_dict().items():
        assert torch.equal(cbam[k], v), k


def test_bad_widths_are_refused():
    with pytest.raises(CbamlabError, match="resnet20..resnet110"):
        create_model("resnet18", width=2)
    with pytest.raises(CbamlabError, match="cifar_resnet18"):
        create_model("cifar_resnet18_cbam", width=2)
    for bad in (0, 1.5, True):
        with pytest.raises(CbamlabError, match="width"):
            create_model("resnet20", width=bad)
    with pytest.raises(ConfigError, match="model.width"):
        load_config(None, ["model.width=0"])
    assert count_params(create_model("resnet18", width=1)) == 11_689_512  # width 1 is fine everywhere
