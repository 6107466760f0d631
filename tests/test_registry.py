"""Every registered model builds, runs forward and backward at small size, and every parameter gets a gradient."""
import pytest
import torch

import cbamlab
from cbamlab.errors import CbamlabError
from cbamlab.models import model_info


pytestmark = pytest.mark.usefixtures("one_thread")


ALL = cbamlab.list_models()


def test_registry_has_the_39_names():
    bases = ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "cifar_resnet18", "cifar_resnet34",
             "cifar_resnet50", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110"]
    expected = {b + s for b in bases for s in ("", "_se", "_cbam")}
    assert len(ALL) == 39
    assert set(ALL) == expected


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("in_chans", [1, 3])
def test_forward_backward_every_model(name, in_chans):
    torch.manual_seed(0)
    # spatial_bn_zero_init=False: with gamma 0 the spatial conv's gradient is exactly zero at init
    model = cbamlab.create_model(name, num_classes=10, in_chans=in_chans, spatial_bn_zero_init=False)
    assert model.num_classes == 10 and model.in_chans == in_chans
    x = torch.randn(2, in_chans, 32, 32)
    out = model(x)
    assert out.shape == (2, 10)
    assert torch.isfinite(out).all()
    out.square().mean().backward()
    nonzero = 0
    params = list(model.named_parameters())
    for pname, p in params:
        assert p.grad is not None, f"{name}: {pname} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{name}: {pname} has a non-finite gradient"
        nonzero += bool(p.grad.abs().sum() > 0)
    # a 1-unit attention MLP (16 channels // 16) can have its ReLU off for a whole tiny batch: allow a few zeros
    assert nonzero >= 0.9 * len(params), f"{name}: only {nonzero} of {len(params)} parameters moved"


def test_imagenet_model_at_224():
    model = cbamlab.create_model("resnet18_cbam", num_classes=7).eval()
    with torch.no_grad():
        feats = model.forward_features(torch.randn(1, 3, 224, 224))
        out = model.forward_head(feats)
    assert feats.shape == (1, 512, 7, 7)
    assert out.shape == (1, 7) and torch.isfinite(out).all()


def test_list_models_pattern():
    assert cbamlab.list_models("*_cbam") == [n for n in ALL if n.endswith("_cbam")]
    assert len(cbamlab.list_models("*_cbam")) == 13
    assert cbamlab.list_models("resnet2*") == ["resnet20", "resnet20_se", "resnet20_cbam"]
    assert cbamlab.list_models("nothing*") == []


def test_model_info_names_the_plain_twin():
    info = model_info("resnet20_cbam")
    assert (info.name, info.base, info.attn, info.family) == ("resnet20_cbam", "resnet20", "cbam", "he2016")
    assert model_info("cifar_resnet50_se").base == "cifar_resnet50"
    assert model_info("resnet50").attn == "none" and model_info("resnet50").family == "imagenet"
    for name in ALL:
        assert model_info(model_info(name).base).attn == "none"


def test_unknown_model_names_it_and_suggests():
    with pytest.raises(CbamlabError, match=r"unknown model 'resnet19_cbam'.*did you mean.*resnet18_cbam"):
        cbamlab.create_model("resnet19_cbam")
    with pytest.raises(CbamlabError, match="unknown model 'vgg16'"):
        model_info("vgg16")


def test_attention_options_apply_where_they_exist():
    # plain models ignore the attention options; SE uses reduction alone
    plain = cbamlab.create_model("resnet20", num_classes=10, reduction=8, kernel_size=3)
    assert sum(p.numel() for p in plain.parameters()) == 269_722
    se8 = cbamlab.create_model("resnet20_se", num_classes=10, reduction=8, kernel_size=3)
    se16 = cbamlab.create_model("resnet20_se", num_classes=10)
    assert sum(p.numel() for p in se8.parameters()) > sum(p.numel() for p in se16.parameters())
    cbam3 = cbamlab.create_model("resnet20_cbam", num_classes=10, kernel_size=3)
    assert cbam3.layer1[0].attn.spatial.conv.kernel_size == (3, 3)
    assert cbamlab.create_model("resnet20_cbam", arrangement="parallel").layer2[0].attn.arrangement == "parallel"


@pytest.mark.parametrize("kwargs, message", [
    (dict(num_classes=0), "num_classes"),
    (dict(in_chans=0), "in_chans"),
    (dict(num_classes=2.5), "num_classes"),
    (dict(in_chans=True), "in_chans"),
    (dict(shortcut="C"), "shortcut"),
    (dict(kernel_size=4), "kernel size"),
    (dict(reduction=0), "reduction"),
    (dict(reduction=32), "no hidden unit"),  # layer1 has 16 channels
    (dict(arrangement="sideways"), "arrangement 'sideways'"),
    (dict(dropout=0.5), "dropout"),
])
def test_bad_options_name_the_problem(kwargs, message):
    with pytest.raises(CbamlabError, match=message):
        cbamlab.create_model("resnet20_cbam", **kwargs)


def test_bad_attention_option_rejected_even_for_plain_model():
    # an even kernel is wrong whatever the model, so a sweep config fails fast on its first (plain) run
    with pytest.raises(CbamlabError, match="kernel size"):
        cbamlab.create_model("resnet20", kernel_size=6)


def test_model_carries_its_name():
    model = cbamlab.create_model("resnet32_se", num_classes=10)
    assert model.model_name == "resnet32_se" and model.model_info.base == "resnet32"
    assert len(model.layer1) == 5


def test_numpy_integers_and_keep_map_pass_through():
    import numpy as np

    model = cbamlab.create_model("resnet20_cbam", num_classes=np.int64(7), in_chans=np.int32(1), keep_map=True)
    assert model.num_classes == 7 and model.in_chans == 1
    model.eval()(torch.randn(1, 1, 16, 16))
    assert model.layer3[-1].attn.spatial.last_map.shape == (1, 1, 4, 4)
    assert model.layer1[0].attn.channel.last_map.shape == (1, 16, 1, 1)


def test_numpy_reduction_and_attn_options_object():
    import numpy as np

    from cbamlab.models.options import AttnOptions

    a = cbamlab.create_model("resnet20_cbam", num_classes=10, reduction=np.int64(8))
    b = cbamlab.create_model("resnet20_cbam", num_classes=10, reduction=8)
    assert {k: v.shape for k, v in a.state_dict().items()} == {k: v.shape for k, v in b.state_dict().items()}
    c = cbamlab.create_model("resnet20_cbam", num_classes=10, attn=AttnOptions(reduction=8, kernel_size=3),
                             keep_map=True)
    assert c.layer1[0].attn.channel.mlp[0].out_features == 2 and c.layer1[0].attn.spatial.conv.kernel_size == (3, 3)
    assert c.layer1[0].attn.channel.keep_map
    assert cbamlab.create_model("resnet20_se", num_classes=10, attn_impl="reference") is not None
    with pytest.raises(CbamlabError, match="unknown attention implementation 'slow'"):
        cbamlab.create_model("resnet20", attn_impl="slow")
