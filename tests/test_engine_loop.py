"""train_one_epoch / evaluate on a toy problem: learning, lr per step, and the effect of each option: clipping
bounds the step, bf16 autocast runs inside forward, channels_last reaches the model."""
import pytest
import torch
from torch import nn

from cbamlab.engine.loop import DivergedError, evaluate, train_one_epoch

CPU = torch.device("cpu")


class _Batches(list):
    pass


pytestmark = pytest.mark.usefixtures("one_thread")


def _data(n_batches=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    batches = _Batches()
    for _ in range(n_batches):
        y = torch.randint(0, 3, (16,), generator=g)
        x = torch.randn(16, 2, 4, 4, generator=g) * 0.3 + y.view(-1, 1, 1, 1).float()  # (B, C, H, W)
        batches.append((x, y))
    return batches


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(4, 3))


@pytest.mark.parametrize("opts", [{}, {"amp": "bf16"}, {"channels_last": True}, {"grad_clip": 0.5},
                                  {"label_smoothing": 0.1}])
def test_training_learns_and_sets_the_lr_every_step(opts):
    net, data = _net(), _data()
    opt = torch.optim.SGD(net.parameters(), lr=0.0)
    seen = []

    def lr_at(step):
        seen.append(step)
        return 0.2

    before = evaluate(net, data, device=CPU)
    step = 5
    for _ in range(6):
        stats, step = train_one_epoch(net, data, opt, lr_at=lr_at, step=step, device=CPU, **opts)
    after = evaluate(net, data, device=CPU, num_classes=3)
    assert step == 5 + 6 * len(data) and seen[-1] == step - 1
    assert stats["n"] == 16 * len(data) and stats["lr"] == 0.2 and stats["images_per_s"] > 0
    assert after["loss"] < before["loss"] and after["top1"] > 0.9
    assert sum(map(sum, after["confusion_matrix"])) == 16 * len(data)


def _flat(net):
    return torch.cat([p.detach().flatten().clone() for p in net.parameters()])


def _one_step(net, batch, lr, **opts):
    opt = torch.optim.SGD(net.parameters(), lr=0.0)  # plain SGD: the step is exactly -lr * gradient
    before = _flat(net)
    train_one_epoch(net, [batch], opt, lr_at=lambda s: lr, step=0, device=CPU, **opts)
    return float((_flat(net) - before).norm())


def test_grad_clip_bounds_the_step_by_lr_times_clip():
    def linear():
        torch.manual_seed(0)
        return nn.Sequential(nn.Flatten(), nn.Linear(32, 3))

    x, y = _data(1)[0]
    batch = (x * 1e3, y)  # a gradient norm in the thousands
    net = linear()
    nn.functional.cross_entropy(net(batch[0]), batch[1]).backward()
    grad_norm = float(torch.cat([p.grad.flatten() for p in net.parameters()]).norm())
    lr, clip = 0.1, 0.5
    assert grad_norm > 100 * clip
    assert _one_step(linear(), batch, lr) == pytest.approx(lr * grad_norm, rel=1e-4)  # unclipped
    assert _one_step(linear(), batch, lr, grad_clip=clip) == pytest.approx(lr * clip, rel=1e-4)


class _Seen:
    """Records what the first conv receives and returns during each forward."""

    def __init__(self, net):
        self.inputs, self.outputs = [], []
        net[0].register_forward_hook(self.hook)

    def hook(self, module, args, out):
        self.inputs.append(args[0])
        self.outputs.append(out)


@pytest.mark.parametrize("amp,dtype", [("bf16", torch.bfloat16), ("none", torch.float32)])
def test_bf16_autocast_is_active_inside_forward(amp, dtype):
    net, data = _net(), _data(2)
    seen = _Seen(net)
    train_one_epoch(net, data, torch.optim.SGD(net.parameters(), lr=0.0), lr_at=lambda s: 0.1, step=0, device=CPU,
                    amp=amp)
    evaluate(net, data, device=CPU, amp=amp)
    assert len(seen.outputs) == 4 and all(out.dtype == dtype for out in seen.outputs)


@pytest.mark.parametrize("channels_last", [True, False])
def test_channels_last_reaches_the_model(channels_last):
    net, data = _net(), _data(2)
    seen = _Seen(net)
    train_one_epoch(net, data, torch.optim.SGD(net.parameters(), lr=0.0), lr_at=lambda s: 0.1, step=0, device=CPU,
                    channels_last=channels_last)
    evaluate(net, data, device=CPU, channels_last=channels_last)
    assert len(seen.inputs) == 4
    for t in seen.inputs + seen.outputs:  # (B, C, H, W) with C > 1: the two layouts differ
        assert t.is_contiguous(memory_format=torch.channels_last) is channels_last
        assert t.is_contiguous() is not channels_last


def test_evaluate_matches_a_direct_computation():
    net, data = _net(), _data(3)
    r = evaluate(net, data, device=CPU)
    x = torch.cat([b[0] for b in data])
    y = torch.cat([b[1] for b in data])
    net.eval()
    with torch.no_grad():
        logits = net(x)
    assert r["top1"] == pytest.approx((logits.argmax(1) == y).float().mean().item())
    assert r["loss"] == pytest.approx(nn.functional.cross_entropy(logits, y).item(), rel=1e-5)
    assert r["top5"] == 1.0  # 3 classes: always within the top 5


def test_nan_loss_raises_before_the_step():
    net, data = _net(), _data(2)
    data[1] = (data[1][0] * float("nan"), data[1][1])
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    with pytest.raises(DivergedError, match="nan at step 1"):
        train_one_epoch(net, data, opt, lr_at=lambda s: 0.1, step=0, device=CPU)
    assert all(torch.isfinite(p).all() for p in net.parameters())
