"""The fast CBAM against the reference: outputs, every gradient, BN statistics, ties, layouts, autocast, fallbacks."""
import copy

import pytest
import torch
import torch.nn.functional as F

import cbamlab
from cbamlab.engine import fit, load_config
from cbamlab.models import count_macs
from cbamlab.models.attention import CBAM, ChannelGate, SpatialGate, set_attn_impl
from cbamlab.models.rowconv import row_conv

pytestmark = pytest.mark.usefixtures("one_thread")

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _pair(channels=16, **kw):
    """(fast, reference): the same CBAM with the same weights, BN gamma away from 0 so every path matters."""
    torch.manual_seed(0)
    fast = CBAM(channels, reduction=4, spatial_bn_zero_init=False, attn_impl="fast", **kw)
    with torch.no_grad():
        if fast.spatial is not None:
            fast.spatial.bn.weight.fill_(1.5)
            fast.spatial.bn.bias.fill_(-0.2)
    ref = copy.deepcopy(fast)
    ref.attn_impl = "reference"
    return fast, ref


def _run(module, x, grad):
    x = x.detach().clone().requires_grad_()
    out = module(x)
    out.backward(grad)
    grads = {"input": x.grad, **{n: p.grad for n, p in module.named_parameters()}}
    for p in module.parameters():
        p.grad = None
    return out.detach(), grads


def _error(got, want):
    """Largest absolute difference, relative to the largest magnitude of `want`."""
    return (got.double() - want.double()).abs().max().item() / max(want.abs().max().item(), 1e-12)


def _assert_close(got, want, rel, what):
    assert _error(got, want) <= rel, f"{what}: relative error {_error(got, want):.3g} > {rel:g}"


def _compare(fast, ref, x, rel):
    """fast and ref agree on the output and every gradient. In float64 directly; in float32 each is held
    against a float64 run of the reference: fast within `rel` of it, or no less accurate than the float32
    reference (a BN parameter's gradient is a sum with cancellation, where both are ~1e-5 off)."""
    grad = torch.randn_like(x)
    out_f, grads_f = _run(fast, x, grad)
    out_r, grads_r = _run(ref, x, grad)
    assert grads_f.keys() == grads_r.keys()
    if x.dtype == torch.float64:
        truth_out, truth = out_r, grads_r
    else:
        truth_out, truth = _run(copy.deepcopy(ref).double(), x.double(), grad.double())
    for name, got, want, ref_value in [("output", out_f, truth_out, out_r),
                                       *((n, grads_f[n], truth[n], grads_r[n]) for n in grads_r)]:
        assert got is not None, name
        err, ref_err = _error(got, want), _error(ref_value, want)
        assert err <= rel or err <= 3 * ref_err, f"{name}: relative error {err:.3g} (reference's {ref_err:.3g})"
    return out_f, out_r


@pytest.mark.parametrize("dtype, rel", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
@pytest.mark.parametrize("arrangement", ["channel_first", "spatial_first", "parallel"])
@pytest.mark.parametrize("pool_types", [("avg", "max"), ("avg",), ("max",)])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_fast_equals_reference(dtype, rel, arrangement, pool_types, layout):
    fast, ref = _pair(arrangement=arrangement, pool_types=pool_types)
    fast, ref = fast.to(dtype), ref.to(dtype)
    x = torch.randn(3, 16, 9, 7, dtype=dtype)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    out, _ = _compare(fast, ref, x, rel)
    if layout == "channels_last":
        assert out.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("kernel_size, size", [(3, (5, 6)), (7, (3, 2)), (1, (4, 4)), (5, (40, 36)), (7, (1, 1))])
@pytest.mark.parametrize("train", [True, False])
def test_kernel_sizes_map_sizes_and_modes(kernel_size, size, train):
    # (40, 36) is wider than ROWCONV_MAX_WIDTH: the channels_last conv2d path
    fast, ref = _pair(kernel_size=kernel_size)
    fast.train(train), ref.train(train)
    _compare(fast.double(), ref.double(), torch.randn(2, 16, *size, dtype=torch.float64), 1e-10)


@pytest.mark.parametrize("arrangement", ["channel_first", "spatial_first", "parallel"])
def test_without_spatial_gate(arrangement):
    fast, ref = _pair(spatial=False, arrangement=arrangement)
    _compare(fast.double(), ref.double(), torch.randn(2, 16, 5, 5, dtype=torch.float64), 1e-10)


@pytest.mark.parametrize("arrangement", ["channel_first", "spatial_first", "parallel"])
def test_ties_follow_the_same_rule(arrangement):
    # small integers: many ties in both the spatial max (over channels) and the channel max (over positions)
    fast, ref = _pair(arrangement=arrangement)
    torch.manual_seed(3)
    x = torch.randint(-1, 2, (2, 16, 6, 6)).double()
    _compare(fast.double(), ref.double(), x, 1e-10)


def test_tie_gradient_goes_to_the_first_maximum():
    x = torch.zeros(1, 3, 2, 2, requires_grad=True)
    with torch.no_grad():
        x[0, 1] = 1.0  # channel 1 is the max everywhere, its four positions tie, and channel 2 ties with it
        x[0, 2] = 1.0
    ChannelGate._pool(x, "max")[0, 1].backward()
    assert x.grad[0, 1].flatten().tolist() == [1.0, 0.0, 0.0, 0.0]  # the first position in row-major order
    x.grad = None
    SpatialGate._pool(x)[:, 0].sum().backward()
    assert x.grad[0, 1].flatten().tolist() == [1.0] * 4 and x.grad[0, 2].abs().sum() == 0  # the first channel


def test_bn_running_statistics_after_training_steps():
    fast, ref = _pair()
    opts = [torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9) for m in (fast, ref)]
    torch.manual_seed(1)
    for _ in range(4):
        x = torch.randn(4, 16, 8, 8)
        for m, opt in zip((fast, ref), opts):
            opt.zero_grad()
            m(x).square().mean().backward()
            opt.step()
    for name, buf in ref.named_buffers():
        _assert_close(dict(fast.named_buffers())[name].double(), buf.double(), 1e-5, name)
    assert int(fast.spatial.bn.num_batches_tracked) == 4
    for name, p in ref.named_parameters():
        _assert_close(dict(fast.named_parameters())[name], p, 1e-5, name)


def test_no_grad_and_eval_with_grad_paths():
    fast, ref = _pair()
    x = torch.randn(2, 16, 6, 6)
    with torch.no_grad():
        _assert_close(fast(x), ref(x), 1e-5, "no_grad train")  # BN in train mode updates its stats here too
    _assert_close(fast.spatial.bn.running_mean, ref.spatial.bn.running_mean, 1e-5, "running mean")
    fast.eval(), ref.eval()
    with torch.no_grad():
        _assert_close(fast(x), ref(x), 1e-5, "no_grad eval")
    _compare(fast, ref, x, 1e-5)  # eval mode with gradients (Grad-CAM)


def test_frozen_parameters_and_input_without_grad():
    fast, ref = _pair()
    for m in (fast, ref):
        m.channel.requires_grad_(False)
    x = torch.randn(2, 16, 6, 6)
    out_f = fast(x)
    out_f.sum().backward()
    out_r = ref(x)
    out_r.sum().backward()
    assert fast.channel.mlp[0].weight.grad is None
    _assert_close(fast.spatial.conv.weight.grad, ref.spatial.conv.weight.grad, 1e-5, "conv grad")


def test_non_contiguous_input():
    fast, ref = _pair()
    x = torch.randn(2, 16, 10, 12)[:, :, ::2, 1::2]
    _compare(fast, ref, x, 1e-5)


def test_keep_map_equal():
    fast, ref = _pair(keep_map=True)
    x = torch.randn(2, 16, 6, 5)
    fast(x), ref(x)
    for gate in ("channel", "spatial"):
        got, want = getattr(fast, gate).last_map, getattr(ref, gate).last_map
        assert got.shape == want.shape and not got.requires_grad
        _assert_close(got, want, 1e-5, gate)


@pytest.mark.parametrize("pool_types", [("avg", "lp"), ("lse",), ("avg", "max", "lp", "lse")])
def test_exotic_pools_fall_back_to_the_reference(pool_types):
    fast, ref = _pair(pool_types=pool_types)
    x = torch.randn(2, 16, 5, 5, requires_grad=True)
    out = fast(x)
    assert type(out.grad_fn).__name__ == "MulBackward0"  # plain ops, not the fused Function
    torch.testing.assert_close(out, ref(x), rtol=0, atol=0)
    fast_default, _ = _pair()
    assert type(fast_default(x).grad_fn).__name__ == "_CBAMFunctionBackward"


def test_bf16_autocast_runs_and_is_close():
    fast, ref = _pair()
    x = torch.randn(4, 16, 8, 8).contiguous(memory_format=torch.channels_last)
    grad = torch.randn_like(x)
    results = []
    for m in (fast, ref):
        xi = x.clone().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = m(xi.bfloat16())
        assert out.dtype == torch.bfloat16
        out.float().backward(grad)
        results.append((out.float(), xi.grad, m.spatial.conv.weight.grad, m.channel.mlp[0].weight.grad))
    for got, want, what in zip(results[0], results[1], ("output", "input", "conv", "mlp")):
        assert torch.isfinite(got).all(), what
        _assert_close(got, want, 0.05, what)


def test_models_have_the_same_state_dict_and_macs():
    fast = cbamlab.create_model("resnet20_cbam", num_classes=10)
    ref = cbamlab.create_model("resnet20_cbam", num_classes=10, attn_impl="reference")
    assert fast.layer1[0].attn.attn_impl == "fast" and ref.layer1[0].attn.attn_impl == "reference"
    assert list(fast.state_dict()) == list(ref.state_dict())
    ref.load_state_dict(fast.state_dict(), strict=True)
    assert count_macs(fast, (3, 32, 32)) == count_macs(ref, (3, 32, 32))
    assert set_attn_impl(fast, "reference") == 9 and fast.layer3[2].attn.attn_impl == "reference"


def test_whole_model_fast_equals_reference():
    torch.manual_seed(0)
    fast = cbamlab.create_model("resnet20_cbam", num_classes=10, in_chans=1, spatial_bn_zero_init=False).double()
    ref = copy.deepcopy(fast)
    set_attn_impl(ref, "reference")
    x = torch.randn(4, 1, 16, 16, dtype=torch.float64)
    out_f, grads_f = _run(fast, x, torch.ones(4, 10, dtype=torch.float64))
    out_r, grads_r = _run(ref, x, torch.ones(4, 10, dtype=torch.float64))
    _assert_close(out_f, out_r, 1e-10, "logits")
    for name in grads_r:
        _assert_close(grads_f[name], grads_r[name], 1e-9, name)


def test_traced_model_uses_plain_ops():
    model = cbamlab.create_model("resnet20_cbam", num_classes=10, in_chans=1).eval()
    x = torch.randn(2, 1, 12, 12)
    traced = torch.jit.trace(model, x)
    torch.testing.assert_close(traced(x), model(x))


@pytest.mark.parametrize("k, shape", [(7, (3, 2, 5, 6)), (3, (2, 2, 9, 4)), (5, (2, 3, 3, 11)), (7, (2, 2, 1, 1))])
def test_row_conv_is_conv2d(k, shape):
    torch.manual_seed(0)
    x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    w = torch.randn(1, shape[1], k, k, dtype=torch.float64, requires_grad=True)
    want = F.conv2d(x, w, padding=k // 2)
    got = row_conv(x.permute(0, 2, 1, 3), w).unsqueeze(1)
    torch.testing.assert_close(got, want)
    grad = torch.randn_like(want)
    torch.testing.assert_close(torch.autograd.grad(got, (x, w), grad), torch.autograd.grad(want, (x, w), grad))


@CUDA
@pytest.mark.parametrize("arrangement", ["channel_first", "spatial_first", "parallel"])
def test_cuda_fast_equals_reference(arrangement):
    fast, ref = _pair(arrangement=arrangement)
    x = torch.randn(4, 16, 12, 10, device="cuda").contiguous(memory_format=torch.channels_last)
    _compare(fast.cuda(), ref.cuda(), x, 1e-4)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        assert torch.isfinite(fast(x)).all()


@pytest.mark.slow
def test_training_with_either_implementation_reaches_the_same_accuracy(tmp_path):
    # resnet20_cbam, 2 epochs on digits from one seed, float32: the two implementations differ only in rounding,
    # and see the same batches from the same start, so the runs stay close (measured: 0.549 and 0.543, 2 images
    # apart). 359 test images: 0.03 is 11 images, about one binomial s.e. at 55 % (0.026) for unpaired runs.
    results = {}
    for impl in ("fast", "reference"):
        cfg = load_config(None, ["train.epochs=2", "train.batch_size=128", "model.name=resnet20_cbam",
                                 "train.threads=1", "train.progress=false", "train.amp=none",
                                 f"model.attn_impl={impl}"])
        results[impl] = fit(cfg, tmp_path / impl)["top1"]
    assert min(results.values()) > 0.3, results  # both learn (chance is 0.1)
    assert abs(results["fast"] - results["reference"]) <= 0.03, results
