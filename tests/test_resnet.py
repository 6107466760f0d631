"""ResNet family: published parameter counts, torchvision parity, shortcut option A, initialisation."""
import pytest
import torch

import cbamlab
from cbamlab.errors import CbamlabError
from cbamlab.models import count_params
from cbamlab.models.attention import SpatialGate
from cbamlab.models.resnet import BasicBlock, PadShortcut


pytestmark = pytest.mark.usefixtures("one_thread")


# torchvision's model cards for the plain nets; resnet50_cbam is the CBAM paper's 28.09M (Table 4)
PUBLISHED = {
    "resnet18": 11_689_512, "resnet34": 21_797_672, "resnet50": 25_557_032, "resnet101": 44_549_160,
    "resnet152": 60_192_808, "resnet18_cbam": 11_779_392, "resnet34_cbam": 21_960_468,
    "resnet50_cbam": 28_089_624, "resnet101_cbam": 49_330_172, "resnet50_se": 28_088_024,
}


@pytest.mark.parametrize("name, expected", PUBLISHED.items())
def test_parameter_counts_match_published(name, expected):
    assert count_params(cbamlab.create_model(name)) == expected


def test_resnet20_is_the_papers_027m():
    # He et al. 2016 Table 6: 0.27M with option A; 10 classes
    assert count_params(cbamlab.create_model("resnet20", num_classes=10)) == 269_722


def test_option_b_adds_projection_parameters():
    a = count_params(cbamlab.create_model("resnet20", num_classes=10))
    b = count_params(cbamlab.create_model("resnet20", num_classes=10, shortcut="B"))
    # two projections: 16->32 and 32->64 1x1 convs, each with a BN (weight + bias)
    assert b - a == (16 * 32 + 2 * 32) + (32 * 64 + 2 * 64)


@pytest.mark.parametrize("name", ["resnet18", "resnet34", "resnet50"])
def test_torchvision_parity(name):
    import torchvision

    torch.manual_seed(0)
    reference = getattr(torchvision.models, name)(weights=None).eval()
    ours = cbamlab.create_model(name).eval()
    ours.load_state_dict(reference.state_dict(), strict=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x), rtol=0, atol=0)


def test_option_a_handles_stride_and_channel_growth():
    shortcut = PadShortcut(16, 32, stride=2)
    x = torch.randn(2, 16, 8, 8)
    y = shortcut(x)
    assert y.shape == (2, 32, 4, 4)
    torch.testing.assert_close(y[:, 8:24], x[:, :, ::2, ::2])  # the old channels, subsampled, in the middle
    assert y[:, :8].abs().sum() == 0 and y[:, 24:].abs().sum() == 0
    block = BasicBlock(16, 32, stride=2, downsample=shortcut)
    assert block(x).shape == (2, 32, 4, 4)
    with pytest.raises(CbamlabError, match="shrink"):
        PadShortcut(32, 16, stride=1)


def test_he_nets_have_6n_plus_2_layers():
    for depth in (20, 32, 44, 56, 110):
        model = cbamlab.create_model(f"resnet{depth}", num_classes=10)
        convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
        assert len(convs) + 1 == depth  # + fc; option A has no shortcut convs
        assert [len(model.layer1), model.layer3[0].conv1.out_channels] == [(depth - 2) // 6, 64]


def test_cifar_stem_keeps_resolution():
    model = cbamlab.create_model("cifar_resnet18", num_classes=10).eval()
    with torch.no_grad():
        assert model.forward_features(torch.randn(1, 3, 32, 32)).shape == (1, 512, 4, 4)
    assert model.conv1.kernel_size == (3, 3) and isinstance(model.maxpool, torch.nn.Identity)


def test_attention_sits_on_the_residual_branch_with_output_channels():
    model = cbamlab.create_model("resnet50_cbam")
    block = model.layer3[2]
    assert block.attn.channel.mlp[0].in_features == 1024  # planes 256 * expansion 4
    assert model.layer1[0].attn.channel.mlp[0].out_features == 256 // 16


@pytest.mark.parametrize("zero_init", [True, False])
def test_spatial_bn_zero_init_both_ways(zero_init):
    model = cbamlab.create_model("resnet20_cbam", num_classes=10, spatial_bn_zero_init=zero_init)
    gates = [m for m in model.modules() if isinstance(m, SpatialGate)]
    assert len(gates) == 9
    for gate in gates:
        assert gate.bn.weight.item() == (0.0 if zero_init else 1.0)
        assert gate.bn.bias.item() == 0.0
    others = [m for n, m in model.named_modules() if isinstance(m, torch.nn.BatchNorm2d) and ".spatial." not in n]
    assert all(bool((m.weight == 1).all() and (m.bias == 0).all()) for m in others)
    if zero_init:  # every spatial map starts at sigmoid(0) = 0.5 everywhere
        gate = gates[0].eval()
        torch.testing.assert_close(gate.attention(torch.randn(2, 16, 8, 8)), torch.full((2, 1, 8, 8), 0.5))


def test_convs_use_kaiming_fan_out():
    torch.manual_seed(0)
    model = cbamlab.create_model("resnet50")
    w = model.layer3[0].conv2.weight  # 256 out channels, 3x3: fan_out = 2304
    expected_std = (2.0 / (256 * 9)) ** 0.5
    assert abs(w.std().item() / expected_std - 1) < 0.05


def test_submodules_apply_their_own_init_after_the_generic_pass():
    class Marked(torch.nn.Module):
        def __init__(self, channels):
            super().__init__()
            self.conv = torch.nn.Conv2d(channels, channels, 1)

        def init_weights(self):
            torch.nn.init.constant_(self.conv.weight, 0.25)

        def forward(self, x):
            return self.conv(x)

    from cbamlab.models.resnet import build_resnet

    model = build_resnet("resnet20", num_classes=10, attn_layer=Marked)
    marked = [m for m in model.modules() if isinstance(m, Marked)]
    assert len(marked) == 9 and all(bool((m.conv.weight == 0.25).all()) for m in marked)
    assert model.conv1.weight.std() > 0  # the generic Kaiming pass still ran on the others


def test_no_dead_attributes():
    model = cbamlab.create_model("resnet20_cbam", num_classes=10)
    assert not hasattr(model, "stem_type")
    assert not hasattr(model.layer2[0], "stride") and model.layer2[0].downsample.stride == 2  # option A's own
    assert list(model.model_info.__dataclass_fields__) == ["name", "base", "attn", "family"]
