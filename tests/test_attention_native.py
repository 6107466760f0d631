"""The native CBAM operator against the reference: outputs, every gradient, BN statistics, ties, layouts, autocast,
the operator registration (opcheck, gradcheck) and the fallbacks."""
import copy
import os
import shutil

import pytest
import torch

import cbamlab
from cbamlab.config import load_config
from cbamlab.engine import fit
from cbamlab.models import count_macs
from cbamlab.errors import CbamlabError
from cbamlab.models import native
from cbamlab.models.attention import CBAM, ChannelGate, SpatialGate, set_attn_impl

pytestmark = pytest.mark.usefixtures("one_thread")

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _pair(channels=16, reduction=4, **kw):
    """(native, reference): the same CBAM with the same weights, BN gamma away from 0 so every path matters."""
    torch.manual_seed(0)
    nat = CBAM(channels, reduction=reduction, spatial_bn_zero_init=False, attn_impl="native", **kw)
    with torch.no_grad():
        if nat.spatial is not None:
            nat.spatial.bn.weight.fill_(1.5)
            nat.spatial.bn.bias.fill_(-0.2)
    ref = copy.deepcopy(nat)
    ref.attn_impl = "reference"
    return nat, ref


def _run(module, x, grad):
    x = x.detach().clone().requires_grad_()
    out = module(x)
    out.backward(grad)
    grads = {"input": x.grad, **{n: p.grad for n, p in module.named_parameters()}}
    for p in module.parameters():
        p.grad = None
    return out.detach(), grads


def _error(got, want, floor=1e-12):
    """Largest absolute difference, relative to the largest magnitude of `want` (or `floor`, if larger)."""
    return (got.double() - want.double()).abs().max().item() / max(want.abs().max().item(), floor)


def _assert_close(got, want, rel, what):
    assert _error(got, want) <= rel, f"{what}: relative error {_error(got, want):.3g} > {rel:g}"


def _compare(nat, ref, x, rel):
    """native and reference agree on the output and every gradient. In float64 directly; in float32 each is held
    against a float64 run of the reference: native within `rel` of it, or no less accurate than the float32
    reference (a BN parameter's gradient is a sum with cancellation, where both are ~1e-5 off)."""
    grad = torch.randn_like(x)
    out_n, grads_n = _run(nat, x, grad)
    out_r, grads_r = _run(ref, x, grad)
    assert grads_n.keys() == grads_r.keys()
    if x.dtype == torch.float64:
        truth_out, truth = out_r, grads_r
    else:
        truth_out, truth = _run(copy.deepcopy(ref).double(), x.double(), grad.double())
    # A BN parameter's gradient is a sum with cancellation (gamma's: sum dy * xhat, e.g. 0.05 beside beta's 12.5):
    # its float32 rounding is measured against the size of the module's largest parameter gradient (1e-2 of it).
    floor = 1e-2 * max(truth[n].abs().max().item() for n in truth if n != "input")
    for name, got, want, ref_value in [("output", out_n, truth_out, out_r),
                                       *((n, grads_n[n], truth[n], grads_r[n]) for n in grads_r)]:
        assert got is not None, name
        f = floor if name.startswith("spatial.bn.") and x.dtype != torch.float64 else 1e-12
        err, ref_err = _error(got, want, f), _error(ref_value, want, f)
        assert err <= rel or err <= 3 * ref_err, f"{name}: relative error {err:.3g} (reference's {ref_err:.3g})"
    return out_n, out_r


@pytest.mark.parametrize("dtype, rel", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
@pytest.mark.parametrize("arrangement", ["channel_first", "spatial_first", "parallel"])
@pytest.mark.parametrize("pool_types", [("avg", "max"), ("avg",), ("max",)])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_native_equals_reference(dtype, rel, arrangement, pool_types, layout):
    nat, ref = _pair(arrangement=arrangement, pool_types=pool_types)
    nat, ref = nat.to(dtype), ref.to(dtype)
    x = torch.randn(3, 16, 9, 7, dtype=dtype)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    out, _ = _compare(nat, ref, x, rel)
    if layout == "channels_last":
        assert out.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("kernel_size, size", [(3, (5, 6)), (7, (3, 2)), (1, (4, 4)), (5, (40, 36)), (7, (1, 1)),
                                               (9, (11, 3)), (7, (56, 56))])
@pytest.mark.parametrize("arrangement", ["channel_first", "spatial_first", "parallel"])
@pytest.mark.parametrize("train", [True, False])
def test_kernel_sizes_map_sizes_and_modes(kernel_size, size, arrangement, train):
    # widths around the kernels' vector widths (8 floats / 4 doubles on AVX2, twice that on AVX-512) and past them
    nat, ref = _pair(kernel_size=kernel_size, arrangement=arrangement)
    nat.train(train), ref.train(train)
    _compare(nat.double(), ref.double(), torch.randn(2, 16, *size, dtype=torch.float64), 1e-10)


@pytest.mark.parametrize("channels", [1, 3, 16, 37, 64])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_channel_counts(channels, layout):
    # channel counts below, at and past a vector: channels_last maps reduce over C along their rows
    nat, ref = _pair(channels, reduction=1)
    x = torch.randn(3, channels, 7, 5, dtype=torch.float64)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    _compare(nat.double(), ref.double(), x, 1e-10)


@pytest.mark.parametrize("pool_types", [("avg", "max"), ("avg",), ("max",)])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("dtype, rel", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_without_spatial_gate(pool_types, layout, dtype, rel):
    nat, ref = _pair(spatial=False, pool_types=pool_types)
    x = torch.randn(2, 16, 5, 5, dtype=dtype)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    _compare(nat.to(dtype), ref.to(dtype), x, rel)


@pytest.mark.parametrize("arrangement", ["channel_first", "spatial_first", "parallel"])
def test_ties_follow_the_same_rule(arrangement):
    # small integers: many ties in both the spatial max (over channels) and the channel max (over positions)
    nat, ref = _pair(arrangement=arrangement)
    torch.manual_seed(3)
    x = torch.randint(-1, 2, (2, 16, 6, 6)).double()
    _compare(nat.double(), ref.double(), x, 1e-10)


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
    nat, ref = _pair()
    opts = [torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9) for m in (nat, ref)]
    torch.manual_seed(1)
    for _ in range(4):
        x = torch.randn(4, 16, 8, 8)
        for m, opt in zip((nat, ref), opts):
            opt.zero_grad()
            m(x).square().mean().backward()
            opt.step()
    for name, buf in ref.named_buffers():
        _assert_close(dict(nat.named_buffers())[name].double(), buf.double(), 1e-5, name)
    assert int(nat.spatial.bn.num_batches_tracked) == 4
    for name, p in ref.named_parameters():
        _assert_close(dict(nat.named_parameters())[name], p, 1e-5, name)


def test_no_grad_and_eval_with_grad_paths():
    nat, ref = _pair()
    x = torch.randn(2, 16, 6, 6)
    with torch.no_grad():
        _assert_close(nat(x), ref(x), 1e-5, "no_grad train")  # BN in train mode updates its stats here too
    _assert_close(nat.spatial.bn.running_mean, ref.spatial.bn.running_mean, 1e-5, "running mean")
    _assert_close(nat.spatial.bn.running_var, ref.spatial.bn.running_var, 1e-5, "running var")
    nat.eval(), ref.eval()
    with torch.no_grad():
        _assert_close(nat(x), ref(x), 1e-5, "no_grad eval")
    _compare(nat, ref, x, 1e-5)  # eval mode with gradients (Grad-CAM)


def test_frozen_parameters_and_input_without_grad():
    nat, ref = _pair()
    for m in (nat, ref):
        m.channel.requires_grad_(False)
    x = torch.randn(2, 16, 6, 6)
    out_n = nat(x)
    out_n.sum().backward()
    out_r = ref(x)
    out_r.sum().backward()
    assert nat.channel.mlp[0].weight.grad is None
    _assert_close(nat.spatial.conv.weight.grad, ref.spatial.conv.weight.grad, 1e-5, "conv grad")


def test_non_contiguous_input():
    nat, ref = _pair()
    x = torch.randn(2, 16, 10, 12)[:, :, ::2, 1::2]
    _compare(nat, ref, x, 1e-5)


def test_keep_map_equal():
    nat, ref = _pair(keep_map=True)
    x = torch.randn(2, 16, 6, 5)
    nat(x), ref(x)
    for gate in ("channel", "spatial"):
        got, want = getattr(nat, gate).last_map, getattr(ref, gate).last_map
        assert got.shape == want.shape and not got.requires_grad
        _assert_close(got, want, 1e-5, gate)


@pytest.mark.parametrize("pool_types", [("avg", "lp"), ("lse",), ("avg", "max", "lp", "lse")])
def test_exotic_pools_fall_back_to_the_reference(pool_types, caplog):
    nat, ref = _pair(pool_types=pool_types)
    nat.attn_impl = "auto"
    x = torch.randn(2, 16, 5, 5, requires_grad=True)
    with caplog.at_level("WARNING", logger="cbamlab.models.native"):
        out = nat(x)
        nat(x)
    assert type(out.grad_fn).__name__ == "MulBackward0"  # plain ops, not the native operator
    torch.testing.assert_close(out, ref(x), rtol=0, atol=0)
    lines = [r.getMessage() for r in caplog.records if "native CBAM not used" in r.getMessage()]
    assert len(lines) <= 1 and all("pools avg and/or max" in line for line in lines)  # once per reason and process
    assert nat.impl_for(x) == "reference"
    nat.attn_impl = "native"
    with pytest.raises(CbamlabError, match="attn_impl='native' cannot run this CBAM: its channel gate pools"):
        nat(x)
    native_default, _ = _pair()
    assert "CbamFunction" in native_default(x).grad_fn.name()


def _l2_error(got, want):
    return ((got.double() - want.double()).norm() / want.double().norm()).item()


@pytest.mark.parametrize("arrangement", ["channel_first", "spatial_first", "parallel"])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_bf16_autocast_is_within_its_rounding(arrangement, layout):
    # Under autocast the native operator reads and writes bfloat16 maps and computes in float32, so it is held
    # against float64 on the same rounded input. The max pools make a max-norm meaningless here: where rounding
    # makes two values tie, the arg-max (and with it a whole max-pool gradient) can move. The reference, which
    # rounds every intermediate to bfloat16, is further off (measured: 0.5-5 % against the native's 0.1-0.7 %).
    nat, ref = _pair(arrangement=arrangement)
    x = torch.randn(4, 16, 8, 8).bfloat16()
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    grad = torch.randn(x.shape)
    results = {}
    for name, m in (("native", nat), ("reference", ref)):
        xi = x.clone().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = m(xi)
        assert out.dtype == torch.bfloat16
        out.float().backward(grad)
        results[name] = (out, xi.grad, m.spatial.conv.weight.grad, m.channel.mlp[0].weight.grad)
    if layout == "channels_last":
        assert results["native"][0].is_contiguous(memory_format=torch.channels_last)
    truth_model = copy.deepcopy(ref).double()
    xi = x.double().requires_grad_()
    truth_model(xi).backward(grad.double())
    truth = (truth_model(x.double()), xi.grad, truth_model.spatial.conv.weight.grad,
             truth_model.channel.mlp[0].weight.grad)
    for what, got, want, reference in zip(("output", "input", "conv", "mlp"), results["native"], truth,
                                          results["reference"]):
        assert torch.isfinite(got).all(), what
        err = _l2_error(got, want)
        assert err <= 0.01 and err <= _l2_error(reference, want) + 1e-3, f"{what}: {err:.3g}"


def test_models_have_the_same_state_dict_and_macs():
    nat = cbamlab.create_model("resnet20_cbam", num_classes=10)
    ref = cbamlab.create_model("resnet20_cbam", num_classes=10, attn_impl="reference")
    assert nat.layer1[0].attn.attn_impl == "auto" and ref.layer1[0].attn.attn_impl == "reference"
    assert list(nat.state_dict()) == list(ref.state_dict())
    ref.load_state_dict(nat.state_dict(), strict=True)
    assert count_macs(nat, (3, 32, 32)) == count_macs(ref, (3, 32, 32))
    assert set_attn_impl(nat, "reference") == 9 and nat.layer3[2].attn.attn_impl == "reference"


@pytest.mark.skipif(shutil.which(os.environ.get("CXX", "c++")) is None, reason="no C++ compiler on this machine")
def test_the_native_operator_is_the_one_running():
    # where a compiler exists, "auto" must run the native operator: a silent fallback would pass every other test
    assert native.available(), native.unavailable_reason()
    model = cbamlab.create_model("resnet20_cbam", num_classes=10, in_chans=1)
    x = torch.randn(2, 1, 12, 12, requires_grad=True)
    assert {m.impl_for(x) for m in model.modules() if isinstance(m, CBAM)} == {"native"}
    out = model.layer1[0].attn(torch.randn(2, 16, 6, 6, requires_grad=True))
    assert "CbamFunction" in out.grad_fn.name()  # the native operator's autograd node


def test_whole_model_native_equals_reference():
    torch.manual_seed(0)
    nat = cbamlab.create_model("resnet20_cbam", num_classes=10, in_chans=1, spatial_bn_zero_init=False).double()
    ref = copy.deepcopy(nat)
    set_attn_impl(ref, "reference")
    x = torch.randn(4, 1, 16, 16, dtype=torch.float64)
    out_n, grads_n = _run(nat, x, torch.ones(4, 10, dtype=torch.float64))
    out_r, grads_r = _run(ref, x, torch.ones(4, 10, dtype=torch.float64))
    _assert_close(out_n, out_r, 1e-10, "logits")
    for name in grads_r:
        _assert_close(grads_n[name], grads_r[name], 1e-9, name)


def test_traced_model_uses_plain_ops():
    model = cbamlab.create_model("resnet20_cbam", num_classes=10, in_chans=1).eval()
    x = torch.randn(2, 1, 12, 12)
    traced = torch.jit.trace(model, x)
    assert "cbamlab::cbam_forward" not in str(traced.graph)
    torch.testing.assert_close(traced(x), model(x))


def _op_args(arrangement="channel_first", pools=("avg", "max"), train=True, dtype=torch.float64, layout=None,
             shape=(2, 8, 5, 4), k=3, momentum=0.1):
    torch.manual_seed(0)
    b, c, h, w = shape
    x = torch.randn(shape, dtype=dtype, requires_grad=True)
    if layout == "channels_last":
        x = x.detach().contiguous(memory_format=torch.channels_last).requires_grad_()
    param = lambda *s: torch.randn(*s, dtype=torch.float64 if dtype == torch.float64 else torch.float32,
                                   requires_grad=True)
    spatial = arrangement != "channel_only"
    conv_w, bn_w, bn_b = (param(1, 2, k, k), param(1), param(1)) if spatial else (None, None, None)
    stats = (torch.tensor([0.1], dtype=conv_w.dtype), torch.tensor([1.3], dtype=conv_w.dtype),
             torch.tensor(3)) if spatial else (None, None, None)
    return (x, param(c // 2, c), param(c // 2), param(c, c // 2), param(c), conv_w, bn_w, bn_b, *stats,
            arrangement, "avg" in pools, "max" in pools, train, momentum, 1e-5)


OP_CASES = [dict(), dict(arrangement="spatial_first", pools=("max",), momentum=-1.0),
            dict(arrangement="parallel", train=False),
            dict(arrangement="channel_only", pools=("avg",)), dict(layout="channels_last", k=7),
            dict(dtype=torch.float32, shape=(3, 16, 7, 7))]


@pytest.mark.parametrize("case", OP_CASES, ids=lambda c: "-".join(f"{v}" for v in c.values()) or "default")
def test_operator_registration_passes_opcheck(case):
    # schema, fake (meta) implementation, autograd registration, and tracing by AOTAutograd (dynamic shapes too)
    assert native.available(), native.unavailable_reason()
    torch.library.opcheck(torch.ops.cbamlab.cbam_forward.default, _op_args(**case))


@pytest.mark.parametrize("case", OP_CASES[:5], ids=lambda c: "-".join(f"{v}" for v in c.values()) or "default")
def test_operator_gradcheck_in_float64(case):
    args = _op_args(**case)
    tensors = [a for a in args[:8] if isinstance(a, torch.Tensor)]
    rest = args[8:]
    if case.get("train", True) and rest[0] is not None:  # the running statistics change with every call
        rest = (None, None, None, *rest[3:])

    def out(*ts):
        it = iter(ts)
        full = [next(it) if isinstance(a, torch.Tensor) else a for a in args[:8]]
        return torch.ops.cbamlab.cbam_forward(*full, *rest)[0]

    assert torch.autograd.gradcheck(out, tensors, eps=1e-6, atol=1e-7)


def test_compiled_model_sees_one_opaque_operator():
    model = cbamlab.create_model("resnet20_cbam", num_classes=10, in_chans=1, spatial_bn_zero_init=False)
    x = torch.randn(4, 1, 12, 12)
    exported = torch.export.export(model.eval(), (x,))
    graph = str(exported.graph)
    assert graph.count("cbamlab.cbam_forward") == 9 and "aten.sigmoid" not in graph
    torch.testing.assert_close(exported.module()(x), model(x))


@CUDA
@pytest.mark.parametrize("arrangement", ["channel_first", "spatial_first", "parallel"])
def test_cuda_runs_the_reference(arrangement):
    nat, ref = _pair(arrangement=arrangement)
    nat.attn_impl = "auto"
    x = torch.randn(4, 16, 12, 10, device="cuda").contiguous(memory_format=torch.channels_last)
    assert nat.cuda().impl_for(x) == "reference"
    _compare(nat, ref.cuda(), x, 1e-4)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        assert torch.isfinite(nat(x)).all()


@pytest.mark.slow
def test_training_with_either_implementation_reaches_the_same_accuracy(tmp_path):
    # resnet20_cbam, 2 epochs on digits from one seed, float32: the two implementations differ only in rounding,
    # and see the same batches from the same start, so the runs stay close (the eager fast path measured 0.549
    # and 0.543 against the reference, 2 images apart). 359 test images: 0.03 is 11 images, about one binomial
    # s.e. at 55 % (0.026) for unpaired runs.
    results = {}
    for impl in ("native", "reference"):
        cfg = load_config(None, ["train.epochs=2", "train.batch_size=128", "model.name=resnet20_cbam",
                                 "train.threads=1", "train.progress=false", "train.amp=none",
                                 f"model.attn_impl={impl}"])
        results[impl] = fit(cfg, tmp_path / impl)["top1"]
    assert min(results.values()) > 0.3, results  # both learn (chance is 0.1)
    assert abs(results["native"] - results["reference"]) <= 0.03, results


def test_torch_compile_runs_the_operator_and_matches_eager():
    nat, ref = _pair()
    compiled = torch.compile(nat, fullgraph=True)  # one opaque operator: no graph break
    x = torch.randn(4, 16, 8, 8)
    grad = torch.randn_like(x)
    out_c, grads_c = _run(compiled, x, grad)
    out_r, grads_r = _run(ref, x, grad)
    _assert_close(out_c, out_r, 1e-5, "output")
    for name in grads_r:
        _assert_close(grads_c[name.removeprefix("_orig_mod.")] if name in grads_c else grads_c[f"_orig_mod.{name}"],
                      grads_r[name], 1e-4, name)
    _assert_close(nat.spatial.bn.running_var, ref.spatial.bn.running_var, 1e-5, "running var")


def test_sync_batchnorm_in_training_runs_the_reference():
    # under torchrun with train.sync_bn the spatial gate's BN becomes a SyncBatchNorm, whose statistics are those
    # of every process's batch: the native operator (one process's statistics) must not run it in training
    nat, _ = _pair()
    nat.attn_impl = "auto"
    model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(torch.nn.Sequential(nat))[0]
    x = torch.randn(2, 16, 6, 6)
    assert type(model.spatial.bn) is torch.nn.SyncBatchNorm and model.impl_for(x) == "reference"
    assert model.eval().impl_for(x) == "native"  # its running statistics: the same function
