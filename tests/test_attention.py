"""Attention gates: value ranges, shapes, the formulas of the paper, arrangements, options and bad input."""
import pytest
import torch

from cbamlab.errors import CbamlabError
from cbamlab.models.attention import CBAM, SE, ChannelGate, SpatialGate, get_attn, list_attn


@pytest.fixture
def x():
    torch.manual_seed(0)
    return torch.randn(4, 32, 9, 7)


@pytest.mark.parametrize("pool_types", [("avg", "max"), ("avg",), ("max",), ("lp",), ("lse",), ("avg", "max", "lp", "lse")])
def test_channel_gate_range_and_shape(x, pool_types):
    gate = ChannelGate(32, reduction=4, pool_types=pool_types)
    a = gate.attention(x)
    assert a.shape == (4, 32, 1, 1)
    assert bool(((a > 0) & (a < 1)).all())
    assert gate(x).shape == x.shape


def test_channel_gate_is_shared_mlp_on_avg_and_max(x):
    gate = ChannelGate(32, reduction=8)
    mlp = gate.mlp
    expected = torch.sigmoid(mlp(x.mean((2, 3))) + mlp(x.amax((2, 3))))[:, :, None, None]
    torch.testing.assert_close(gate(x), x * expected)
    # one MLP with biases: Linear(32, 4) + Linear(4, 32)
    assert sum(p.numel() for p in gate.parameters()) == 32 * 4 + 4 + 4 * 32 + 32


def test_lp_and_lse_pools(x):
    torch.testing.assert_close(ChannelGate._pool(x, "lp"), x.flatten(2).norm(dim=2))
    torch.testing.assert_close(ChannelGate._pool(x, "lse"), x.flatten(2).exp().sum(2).log())


@pytest.mark.parametrize("k", [3, 7])
def test_spatial_gate_range_shape_and_formula(x, k):
    gate = SpatialGate(k, bn_zero_init=False).eval()
    with torch.no_grad():
        gate.bn.weight.fill_(1.3)
        gate.bn.bias.fill_(0.2)
    a = gate.attention(x)
    assert a.shape == (4, 1, 9, 7)
    assert bool(((a > 0) & (a < 1)).all())
    pooled = torch.cat([x.amax(1, keepdim=True), x.mean(1, keepdim=True)], 1)
    torch.testing.assert_close(a, torch.sigmoid(gate.bn(gate.conv(pooled))))
    assert gate.conv.bias is None and gate.conv.weight.shape == (1, 2, k, k)
    assert gate(x).shape == x.shape


def test_cbam_channel_first_is_spatial_after_channel(x):
    cbam = CBAM(32, reduction=8, spatial_bn_zero_init=False).eval()
    refined = x * cbam.channel.attention(x)
    torch.testing.assert_close(cbam(x), refined * cbam.spatial.attention(refined))


def test_three_arrangements_differ(x):
    torch.manual_seed(1)
    first = CBAM(32, reduction=8, spatial_bn_zero_init=False).eval()
    outs = {}
    for arrangement in ("channel_first", "spatial_first", "parallel"):
        m = CBAM(32, reduction=8, arrangement=arrangement, spatial_bn_zero_init=False).eval()
        m.load_state_dict(first.state_dict())  # same weights: only the order differs
        outs[arrangement] = m(x)
        assert outs[arrangement].shape == x.shape
    assert not torch.allclose(outs["channel_first"], outs["spatial_first"])
    assert not torch.allclose(outs["channel_first"], outs["parallel"])
    assert not torch.allclose(outs["spatial_first"], outs["parallel"])
    m = CBAM(32, reduction=8, arrangement="parallel", spatial_bn_zero_init=False).eval()
    m.load_state_dict(first.state_dict())
    torch.testing.assert_close(outs["parallel"], x * m.channel.attention(x) * m.spatial.attention(x))


def test_cbam_without_spatial_is_channel_gate_alone(x):
    cbam = CBAM(32, reduction=8, spatial=False)
    assert cbam.spatial is None
    torch.testing.assert_close(cbam(x), cbam.channel(x))


def test_se_formula_and_parameters(x):
    se = SE(32, reduction=8)
    expected = torch.sigmoid(se.fc(x.mean((2, 3))))[:, :, None, None]
    torch.testing.assert_close(se(x), x * expected)
    assert sum(p.numel() for p in se.parameters()) == sum(p.numel() for p in ChannelGate(32, 8).parameters())


def test_keep_map_off_by_default_and_on_when_asked(x):
    cbam = CBAM(32, reduction=8)
    cbam(x)
    assert cbam.channel.last_map is None and cbam.spatial.last_map is None
    cbam = CBAM(32, reduction=8, keep_map=True)
    y = cbam(x)
    assert cbam.channel.last_map.shape == (4, 32, 1, 1)
    assert cbam.spatial.last_map.shape == (4, 1, 9, 7)
    assert not cbam.spatial.last_map.requires_grad
    se = SE(32, keep_map=True)
    se(x)
    assert se.last_map.shape == (4, 32, 1, 1)
    y.sum().backward()  # keeping the map does not cut the gradient
    assert cbam.channel.mlp[0].weight.grad is not None


def test_get_attn_factories_take_channel_count():
    assert set(list_attn()) == {"none", "se", "cbam", "channel"}
    assert isinstance(get_attn("none")(64), torch.nn.Identity)
    se = get_attn("se", reduction=4, kernel_size=3, arrangement="parallel")(64)  # SE ignores the CBAM options
    assert isinstance(se, SE) and se.fc[0].out_features == 16
    cbam = get_attn("cbam", reduction=4, kernel_size=3, arrangement="spatial_first")(64)
    assert cbam.channel.mlp[0].out_features == 16 and cbam.spatial.conv.kernel_size == (3, 3)
    assert cbam.arrangement == "spatial_first"
    assert get_attn("channel")(64).spatial is None


def test_unknown_attention_lists_the_known():
    with pytest.raises(CbamlabError, match=r"unknown attention 'cbma' \(did you mean cbam\?\); known: cbam, channel, none, se"):
        get_attn("cbma")
    with pytest.raises(CbamlabError, match="unknown attention option"):
        get_attn("cbam", reductions=4)


@pytest.mark.parametrize("build, message", [
    (lambda: ChannelGate(8, reduction=16), r"reduction 16 leaves no hidden unit for 8 channels"),
    (lambda: SE(15, reduction=16), r"no hidden unit for 15 channels"),
    (lambda: ChannelGate(0), r"channel count"),
    (lambda: ChannelGate(32, reduction=0), r"reduction must be a positive integer"),
    (lambda: ChannelGate(32, pool_types=("mean",)), r"unknown pool type 'mean'"),
    (lambda: SpatialGate(4), r"kernel size must be a positive odd integer.*got 4"),
    (lambda: SpatialGate(0), r"kernel size"),
    (lambda: CBAM(32, arrangement="serial"), r"unknown CBAM arrangement 'serial'"),
    (lambda: get_attn("cbam", kernel_size=6), r"kernel size"),
])
def test_bad_settings_name_the_problem(build, message):
    with pytest.raises(CbamlabError, match=message):
        build()


def test_attn_options_one_vocabulary_and_checks():
    import dataclasses

    import numpy as np

    from cbamlab.models.options import ATTN_OPTIONS, AttnOptions, positive_int

    assert ATTN_OPTIONS == tuple(f.name for f in dataclasses.fields(AttnOptions))
    assert AttnOptions() == AttnOptions(reduction=16, kernel_size=7, arrangement="channel_first",
                                        spatial_bn_zero_init=True, pool_types=("avg", "max"), keep_map=False,
                                        attn_impl="auto")
    opts = AttnOptions(reduction=np.int64(8), kernel_size=np.int32(3), pool_types=["max"])
    assert (opts.reduction, opts.kernel_size, opts.pool_types) == (8, 3, ("max",))
    assert type(opts.reduction) is int and type(opts.kernel_size) is int
    assert positive_int(np.uint8(5), "n") == 5
    for bad in (True, 0, -1, 2.0, "3", None):
        with pytest.raises(CbamlabError, match="n must be a positive integer"):
            positive_int(bad, "n")
    for kw, message in [(dict(reduction=True), "reduction must be a positive integer"),
                        (dict(kernel_size=np.int64(4)), "kernel size must be a positive odd integer"),
                        (dict(attn_impl="slow"), r"unknown attention implementation 'slow'.*auto, native, reference"),
                        (dict(pool_types=()), "at least one pool type")]:
        with pytest.raises(CbamlabError, match=message):
            AttnOptions(**kw)
    with pytest.raises(CbamlabError, match="unknown attention option.*reductions; known: reduction, kernel_size"):
        AttnOptions.from_kwargs(reductions=4)


def test_get_attn_takes_an_options_object_and_overrides():
    import numpy as np

    from cbamlab.models.options import AttnOptions

    cbam = get_attn("cbam", AttnOptions(reduction=np.int64(4), attn_impl="reference"), kernel_size=3)(64)
    assert cbam.channel.mlp[0].out_features == 16 and cbam.spatial.conv.kernel_size == (3, 3)
    assert cbam.attn_impl == "reference"
    assert get_attn("cbam")(64).attn_impl == "auto"
    assert get_attn("channel", attn_impl="reference")(32).attn_impl == "reference"
    assert isinstance(get_attn("se", attn_impl="reference")(32), SE)  # SE has one implementation: ignored
