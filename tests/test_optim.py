"""Optimizers from the config: SGD momentum/Nesterov, Adam, AdamW; no weight decay on BN and biases when asked."""
import pytest
import torch
from torch import nn

from cbamlab.config import OptimConfig
from cbamlab.engine.optim import build_optimizer, set_lr
from cbamlab.errors import CbamlabError


def _net():
    return nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 6 * 6, 2))


def test_sgd_settings_and_groups():
    net = _net()
    opt = build_optimizer(net, OptimConfig(name="sgd", lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4))
    assert isinstance(opt, torch.optim.SGD) and len(opt.param_groups) == 1
    g = opt.param_groups[0]
    assert (g["lr"], g["momentum"], g["nesterov"], g["weight_decay"]) == (0.1, 0.9, True, 5e-4)


def test_no_decay_on_bn_and_bias():
    net = _net()
    opt = build_optimizer(net, OptimConfig(name="sgd", weight_decay=1e-4, no_decay_bn_bias=True))
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 1e-4 and no_decay["weight_decay"] == 0.0
    assert {id(p) for p in decay["params"]} == {id(net[0].weight), id(net[3].weight)}
    assert {id(p) for p in no_decay["params"]} == {id(net[1].weight), id(net[1].bias), id(net[3].bias)}
    # a zero gradient with decay off leaves the BN weight alone, decay on shrinks the conv weight
    for p in net.parameters():
        p.grad = torch.zeros_like(p)
    bn, conv = net[1].weight.detach().clone(), net[0].weight.detach().clone()
    opt.step()
    assert torch.equal(net[1].weight, bn) and not torch.equal(net[0].weight, conv)


@pytest.mark.parametrize("name, cls", [("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW)])
def test_adam_family(name, cls):
    opt = build_optimizer(_net(), OptimConfig(name=name, lr=1e-3, betas=[0.8, 0.99], weight_decay=0.01))
    assert type(opt) is cls
    assert opt.param_groups[0]["betas"] == (0.8, 0.99) and opt.param_groups[0]["weight_decay"] == 0.01


def test_unknown_optimizer_and_set_lr():
    with pytest.raises(CbamlabError, match="did you mean adamw"):
        build_optimizer(_net(), OptimConfig(name="adamww"))
    opt = build_optimizer(_net(), OptimConfig(name="sgd", no_decay_bn_bias=True))
    set_lr(opt, 0.123)
    assert [g["lr"] for g in opt.param_groups] == [0.123, 0.123]
