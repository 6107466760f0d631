"""Weight EMA: the closed form after k steps, timm's warm-up, updated after every optimizer step, evaluated and
saved in place of the raw weights (eval --run equals summary.json), and a resumed run continues it exactly."""
import json
from pathlib import Path

import pytest
import torch
from torch import nn

import cbamlab.runs.state as run_state
from cbamlab import runs
from cbamlab.config import load_config
from cbamlab.engine import fit
from cbamlab.engine.ema import ModelEma, ema_decay
from cbamlab.engine.loop import train_one_epoch
from cbamlab.inference.predict import evaluate_config, load_run
from cbamlab.errors import ConfigError
from cbamlab.runs import read_metrics

pytestmark = pytest.mark.usefixtures("one_thread")
CPU = torch.device("cpu")


def test_decay_and_timm_warmup():
    assert ema_decay(1, 0.999, warmup=False) == 0.999
    assert ema_decay(7, 0.999, warmup=True) == pytest.approx(1 - 8 ** (-2 / 3)) == pytest.approx(0.75)
    assert ema_decay(26, 0.999, warmup=True) == pytest.approx(1 - 1 / 9)
    assert ema_decay(10 ** 6, 0.999, warmup=True) == 0.999  # capped at the decay
    assert ema_decay(1, 0.999, warmup=True) == pytest.approx(1 - 2 ** (-2 / 3))
    with pytest.raises(ConfigError, match="train.ema_decay"):
        load_config(None, ["train.ema=true", "train.ema_decay=1.0"])


def _toy():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))


@pytest.mark.parametrize("warmup", [False, True])
def test_k_updates_equal_the_closed_form(warmup):
    d, k = 0.8, 6
    model = _toy()
    ema = ModelEma(model, decay=d, warmup=warmup)
    start = [p.detach().double().clone() for p in model.parameters()]
    seen = []
    gen = torch.Generator().manual_seed(1)
    for step in range(1, k + 1):
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(torch.randn(p.shape, generator=gen))
            model[1].running_mean.copy_(torch.randn(4, generator=gen))
            model[1].num_batches_tracked.fill_(step)
        seen.append([p.detach().double().clone() for p in model.parameters()])
        ema.update(model, step)
    # ema_k = prod_j d_j * w_0 + sum_i (1 - d_i) prod_{j > i} d_j * w_i
    ds = [ema_decay(i, d, warmup) for i in range(1, k + 1)]
    if not warmup:
        assert ds == [d] * k  # then ema_k = d^k w_0 + sum_i (1 - d) d^(k - i) w_i
    for n, (e, w0) in enumerate(zip(ema.module.parameters(), start)):
        expected = torch.prod(torch.tensor(ds, dtype=torch.float64)) * w0
        for i in range(k):
            expected += (1 - ds[i]) * torch.prod(torch.tensor(ds[i + 1:], dtype=torch.float64)) * seen[i][n]
        assert torch.allclose(e.double(), expected, atol=1e-6), n
        assert not e.requires_grad
    assert torch.equal(ema.module[1].running_mean, model[1].running_mean)  # buffers are copied
    assert int(ema.module[1].num_batches_tracked) == k and not ema.module.training


def test_train_one_epoch_updates_after_every_optimizer_step():
    model = _toy()
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    ema = ModelEma(model, decay=0.95, warmup=True)
    start = [p.detach().double().clone() for p in model.parameters()]
    after_step = []
    opt.register_step_post_hook(lambda *a: after_step.append([p.detach().double().clone()
                                                              for p in model.parameters()]))
    gen = torch.Generator().manual_seed(0)
    data = [(torch.randn(8, 3, generator=gen), torch.randint(0, 2, (8,), generator=gen)) for _ in range(5)]
    _, step = train_one_epoch(model, data, opt, lr_at=lambda s: 0.5, step=10, device=CPU, ema=ema)
    assert step == 15 and len(after_step) == 5
    expected = start
    for i, ws in enumerate(after_step):  # optimizer steps 11..15
        dt = ema_decay(11 + i, 0.95, True)
        expected = [dt * e + (1 - dt) * w for e, w in zip(expected, ws)]
    for e, x in zip(ema.module.parameters(), expected):
        assert torch.allclose(e.double(), x, atol=1e-6)
    assert not all(torch.allclose(e.double(), w) for e, w in zip(ema.module.parameters(), after_step[-1]))


def test_wrapped_models_are_averaged_through_their_wrapper():
    model = _toy()
    compiled = torch.compile(model)  # not run: only its wrapper (`_orig_mod`) matters here
    ema = ModelEma(compiled, decay=0.5, warmup=False)
    assert type(ema.module) is nn.Sequential
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    before = [p.clone() for p in ema.module.parameters()]
    ema.update(compiled, 1)
    for e, b, p in zip(ema.module.parameters(), before, model.parameters()):
        assert torch.allclose(e, (b + p) / 2)

    class HasModule(nn.Module):  # a submodule named `module` is not a DDP wrapper
        def __init__(self):
            super().__init__()
            self.module, self.head = nn.Linear(2, 2), nn.Linear(2, 2)

    ema = ModelEma(HasModule())
    assert isinstance(ema.module, HasModule) and len(list(ema.module.parameters())) == 4


EMA_CFG = ["train.epochs=2", "train.batch_size=128", "model.name=resnet20", "train.threads=1", "data.val_fraction=0.1",
           "train.ema=true", "train.ema_decay=0.99", "schedule.name=multistep", "schedule.milestones=[1]"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("ema") / "r"
    fit(load_config(None, EMA_CFG), out)
    return out


def test_weights_files_hold_the_evaluated_average(reference):
    out = reference
    state = runs.load_state(out)
    assert set(state.ema) == set(state.model) and state.eval_weights is state.ema
    last, meta = runs.load_weights(out / "checkpoints" / "last.safetensors")
    assert meta["epoch"] == "2" and all(torch.equal(last[k], v) for k, v in state.ema.items())
    assert any(not torch.equal(state.ema[k], v) for k, v in state.model.items() if v.is_floating_point())
    summary = json.loads((out / "summary.json").read_text())
    rows = read_metrics(out)
    assert summary["top1"] == pytest.approx(rows[-1]["test_top1"], abs=1e-6)
    loaded = load_run(out, "last")  # what `cbamlab eval --run` loads
    r = evaluate_config(loaded.model, loaded.cfg)
    assert r["top1"] == summary["top1"] and r["loss"] == pytest.approx(summary["final"]["test_loss"], rel=1e-6)
    loaded.model.load_state_dict(state.model)  # the raw weights score otherwise: evaluation used the average
    raw = evaluate_config(loaded.model, loaded.cfg)
    assert raw["loss"] != pytest.approx(summary["final"]["test_loss"], rel=1e-4)


def _same_run(a: Path, b: Path) -> None:
    for name in ("last.safetensors", "best.safetensors"):
        wa, _ = runs.load_weights(a / "checkpoints" / name)
        wb, _ = runs.load_weights(b / "checkpoints" / name)
        assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa), name
    sa, sb = (runs.load_state(d) for d in (a, b))
    for part in ("model", "ema"):
        assert all(torch.equal(getattr(sa, part)[k], getattr(sb, part)[k]) for k in getattr(sa, part)), part
    ja, jb = (json.loads((d / "summary.json").read_text()) for d in (a, b))
    for k in ("top1", "top5", "final", "best", "confusion_matrix"):
        assert ja[k] == jb[k], k
    timing = ("images_per_s", "epoch_time_s")
    assert [{k: v for k, v in r.items() if k not in timing} for r in read_metrics(a)] == \
        [{k: v for k, v in r.items() if k not in timing} for r in read_metrics(b)]


@pytest.mark.slow
def test_stopped_then_crashed_between_writes_then_resumed_is_the_same_run(reference, tmp_path, monkeypatch):
    """Stopped after epoch 1, resumed, killed after epoch 2's state file but before its weights, resumed again
    (which only repairs the weights files from the state's average): the run equals the uninterrupted one."""
    class Stop(Exception):
        pass

    def stop(epoch, row):
        raise Stop

    out = tmp_path / "r"
    with pytest.raises(Stop):
        fit(load_config(None, EMA_CFG), out, on_epoch=stop)
    assert runs.load_state(out).epoch == 1
    real = run_state.save_weights

    def save_weights(path, *a, **kw):
        if runs.load_state(out).epoch == 2:
            raise KeyboardInterrupt
        return real(path, *a, **kw)

    monkeypatch.setattr(run_state, "save_weights", save_weights)
    with pytest.raises(KeyboardInterrupt):
        fit(load_config(out / "config.yaml"), out, resume=True)
    monkeypatch.setattr(run_state, "save_weights", real)
    assert runs.load_weights(out / "checkpoints" / "last.safetensors")[1]["epoch"] == "1"  # stale
    fit(load_config(out / "config.yaml"), out, resume=True)
    _same_run(reference, out)
