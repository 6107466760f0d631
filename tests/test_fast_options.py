"""The fast-training options after airbench (Keller Jordan's CIFAR-10 speed records): alternating flips
(data.augment_overrides.hflip: alternate), mirror + translate test-time augmentation (eval.tta: hflip_translate)
and an lr multiplier for the BatchNorm parameters (optim.bn_lr_scale); each off by default, the defaults
unchanged bit for bit."""
import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from cbamlab import runs
from cbamlab.config import OptimConfig, load_config
from cbamlab.data import AugmentSpec, MemoryLoader, augment_batch, load_dataset, make_loaders, resolve_augment
from cbamlab.data.augment import alternate_flips, flip_phase, normalize_batch
from cbamlab.data.folder import FolderLoader, eval_preprocess
from cbamlab.data.decode import read_image
from cbamlab.data.types import TensorSplit
from cbamlab.engine import fit
from cbamlab.engine.loop import TTA_VIEWS, evaluate, mirror_translate, train_one_epoch
from cbamlab.engine.optim import batchnorm_params, build_optimizer, set_lr
from cbamlab.errors import ConfigError
from cbamlab.models import create_model

pytestmark = pytest.mark.usefixtures("one_thread")
CPU = torch.device("cpu")
MEAN, STD = (0.5, 0.25), (0.2, 0.3)
ALT = AugmentSpec(hflip="alternate")


def split(n=50, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 2, 5, 6), generator=g, dtype=torch.uint8)  # left-right asymmetric
    return TensorSplit(images, torch.randint(0, 3, (n,), generator=g))


def views_by_bytes(images):
    """{bytes of a normalised image: (index, mirrored)} for every image and its mirror image."""
    mean, std = torch.tensor(MEAN[:images.shape[1]]), torch.tensor(STD[:images.shape[1]])
    plain, mirrored = normalize_batch(images, mean, std), normalize_batch(images.flip(3), mean, std)
    out = {plain[i].numpy().tobytes(): (i, False) for i in range(len(images))}
    out.update({mirrored[i].numpy().tobytes(): (i, True) for i in range(len(images))})
    assert len(out) == 2 * len(images)
    return out


def seen(loader, epoch, lookup):
    """{index: mirrored} of one epoch, each image identified by its pixels."""
    loader.set_epoch(epoch)
    out = {}
    for x, _ in loader:
        for row in x:
            i, mirrored = lookup[row.numpy().tobytes()]
            assert i not in out
            out[i] = mirrored
    return out


def memory_loader(s, spec=ALT, seed=3, **kw):
    return MemoryLoader(s, 8, mean=MEAN, std=STD, augment=spec, shuffle=True, seed=seed, **kw)


# alternating flips ---------------------------------------------------------------------------------------------

def test_phase_is_the_seeds_and_flips_alternate_with_the_epoch():
    a, b, c = flip_phase(1000, 7), flip_phase(1000, 7), flip_phase(1000, 8)
    assert a.dtype == torch.uint8 and set(a.tolist()) == {0, 1} and torch.equal(a, b) and not torch.equal(a, c)
    assert 400 < int(a.sum()) < 600
    idx = torch.tensor([5, 0, 999, 5])
    for epoch in range(1, 6):
        flips = alternate_flips(a, idx, epoch)
        assert flips.tolist() == [bool((int(a[i]) + epoch) % 2) for i in idx]
        assert torch.equal(flips, ~alternate_flips(a, idx, epoch + 1))


def test_over_two_epochs_each_image_is_seen_once_each_way_the_same_for_every_variant_and_on_resume():
    s = split()
    lookup = views_by_bytes(s.images)
    loader = memory_loader(s)
    phase = flip_phase(len(s), 3)
    e1, e2, e3 = (seen(loader, e, lookup) for e in (1, 2, 3))
    assert sorted(e1) == sorted(e2) == list(range(len(s)))  # batch 8 of 50: no batch of one to drop
    assert all(e1[i] != e2[i] for i in e1) and e1 == e3
    assert e1 == {i: bool((int(phase[i]) + 1) % 2) for i in range(len(s))}
    assert 10 < sum(e1.values()) < 40  # about half of them mirrored in each epoch, not all at once (airbench)
    # a paired variant (another loader, same seed) and a resumed run (a fresh loader at epoch 2): the same batches
    for epoch in (1, 2):
        loader.set_epoch(epoch)
        fresh = memory_loader(s)
        fresh.set_epoch(epoch)
        for (xa, ya), (xb, yb) in zip(loader, fresh):
            assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert seen(memory_loader(s, seed=4), 1, lookup) != e1  # another seed, other phases


def test_alternate_with_other_augmentations_and_across_data_parallel_ranks():
    s = split()
    lookup = views_by_bytes(s.images)
    one = seen(memory_loader(s), 1, lookup)
    ranks = [seen(memory_loader(s, rank=r, world=2), 1, lookup) for r in range(2)]
    assert {**ranks[0], **ranks[1]} == one  # the flips follow the image, not the rank's random stream
    spec = AugmentSpec(crop_padding=1, hflip="alternate", erasing=0.5)
    for (xa, ya), (xb, yb) in zip(memory_loader(s, spec), memory_loader(s, spec)):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_random_hflip_is_unchanged_bit_for_bit():
    """hflip true: a flip drawn with p 1/2 per image from the generator after the shift draws, as before."""
    x = split(64).images
    mean, std = torch.tensor(MEAN), torch.tensor(STD)
    out = augment_batch(x, AugmentSpec(hflip=True), torch.Generator().manual_seed(5), mean, std)
    flip = torch.rand(64, generator=torch.Generator().manual_seed(5)) < 0.5
    want = normalize_batch(torch.where(flip[:, None, None, None], x.flip(3), x), mean, std)
    assert torch.equal(out, want) and 0 < int(flip.sum()) < 64
    assert torch.equal(augment_batch(x, AugmentSpec(), torch.Generator(), mean, std), normalize_batch(x, mean, std))
    with pytest.raises(ValueError, match="flip mask"):
        augment_batch(x, ALT, torch.Generator(), mean, std)


def test_resolve_and_config_accept_alternate_and_refuse_other_values():
    assert resolve_augment("fashion", "fashion_mnist", hflip="alternate") == AugmentSpec(translate=2,
                                                                                         hflip="alternate")
    for bad in ("sometimes", 1, "true"):
        with pytest.raises(ConfigError, match="'hflip' must be true, false or alternate"):
            resolve_augment("none", "digits", hflip=bad)
    cfg = load_config(None, ["data.augment_overrides.hflip=alternate"])
    assert cfg.data.augment_overrides == {"hflip": "alternate"}


def make_folder(root, n=5, size=(9, 11)):
    rng = np.random.default_rng(1)
    for c in ("a", "b"):
        (root / "train" / c).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(root / "train" / c / f"{i}.png")
    (root / "train" / "a" / "9_broken.png").write_text("not an image")
    return root


def test_streamed_folder_flips_follow_each_files_index(tmp_path):
    """The streaming pipeline knows each readable file's index (an unreadable one is left out of its batch)."""
    b = load_dataset("imagefolder", make_folder(tmp_path), image_size=8, include_test=False)
    L = make_loaders(b, 4, augment=ALT, seed=2, workers=0, memory_budget_gb=0)
    assert isinstance(L.train, FolderLoader)
    readable = [i for i, (path, _) in enumerate(b.train.samples) if not path.endswith("broken.png")]
    images = torch.stack([eval_preprocess(read_image(b.train.samples[i][0]), (8, 8)) for i in readable])
    info_mean, info_std = torch.tensor(b.info.mean), torch.tensor(b.info.std)
    plain, mirrored = normalize_batch(images, info_mean, info_std), normalize_batch(images.flip(3), info_mean, info_std)
    lookup = {plain[k].numpy().tobytes(): (i, False) for k, i in enumerate(readable)}
    lookup.update({mirrored[k].numpy().tobytes(): (i, True) for k, i in enumerate(readable)})
    phase = flip_phase(len(b.train), 2)
    for epoch in (1, 2):
        got = {}
        L.train.set_epoch(epoch)
        for x, _ in L.train:
            got.update(lookup[row.numpy().tobytes()] for row in x)
        assert got == {i: bool((int(phase[i]) + epoch) % 2) for i in readable}


# mirror + translate TTA ------------------------------------------------------------------------------------------

def test_hflip_translate_views_are_airbenchs():
    x = torch.arange(2 * 1 * 4 * 5, dtype=torch.float32).view(2, 1, 4, 5)
    views = mirror_translate(x)
    assert [w for _, w in views] == [2.0, 2.0, 1.0, 1.0, 1.0, 1.0]  # 1/4, 1/4, then 1/8 each
    (v0, _), (v1, _), (down, _), (down_m, _), (up, _), (up_m, _) = views
    assert torch.equal(v0, x) and torch.equal(v1, x.flip(3))
    assert all(v.shape == x.shape for v, _ in views)
    assert torch.equal(down[..., 1:, 1:], x[..., :-1, :-1])  # content moved one pixel down and right
    assert torch.equal(down[..., 0, 1:], x[..., 1, :-1]) and torch.equal(down[..., 1:, 0], x[..., :-1, 1])  # reflect
    assert torch.equal(up[..., :-1, :-1], x[..., 1:, 1:])  # one pixel up and left
    assert torch.equal(up[..., -1, :-1], x[..., -2, 1:]) and torch.equal(up[..., :-1, -1], x[..., 1:, -2])
    assert torch.equal(down_m, down.flip(3)) and torch.equal(up_m, up.flip(3))
    assert list(TTA_VIEWS) == ["none", "hflip", "hflip_translate"]


def test_hflip_translate_prediction_is_the_weighted_mean_of_the_softmaxes():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))  # sensitive to position and to mirroring
    g = torch.Generator().manual_seed(1)
    data = [(torch.randn(8, 1, 4, 4, generator=g), torch.randint(0, 3, (8,), generator=g)) for _ in range(3)]
    r = evaluate(model, data, device=CPU, num_classes=3, tta="hflip_translate")
    x, y = torch.cat([d[0] for d in data]), torch.cat([d[1] for d in data])
    xp = nn.functional.pad(x, (1, 1, 1, 1), mode="reflect")
    down, up = xp[..., :4, :4], xp[..., 2:, 2:]
    with torch.no_grad():
        p = sum(w * model(v).softmax(1) for v, w in ((x, 1 / 4), (x.flip(3), 1 / 4), (down, 1 / 8),
                                                     (down.flip(3), 1 / 8), (up, 1 / 8), (up.flip(3), 1 / 8)))
        plain = model(x).softmax(1)
    assert r["loss"] == pytest.approx(float(-p[torch.arange(len(y)), y].log().mean()), rel=1e-6)
    assert r["top1"] == pytest.approx(float((p.argmax(1) == y).float().mean()))
    q = float(-plain[torch.arange(len(y)), y].log().mean())
    assert evaluate(model, data, device=CPU, tta="none")["loss"] == pytest.approx(q, rel=1e-6)
    assert r["loss"] != pytest.approx(q, rel=1e-3)  # the six views really changed the prediction
    assert load_config(None, ["eval.tta=hflip_translate"]).eval.tta == "hflip_translate"


# the BatchNorm lr multiplier -----------------------------------------------------------------------------------

def _cbam():
    torch.manual_seed(0)
    return create_model("resnet20_cbam", num_classes=3, in_chans=1)


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw"])
def test_bn_groups_get_scale_times_the_schedules_lr_after_every_step(name):
    model = _cbam()
    spatial_bn = [m.bn for m in model.modules() if type(m).__name__ == "SpatialGate"]
    assert spatial_bn and all(isinstance(m, nn.BatchNorm2d) and m.num_features == 1 for m in spatial_bn)
    opt = build_optimizer(model, OptimConfig(name=name, lr=0.01, weight_decay=1e-4, bn_lr_scale=8.0))
    other, bn = opt.param_groups
    bn_ids = {id(p) for p in batchnorm_params(model)}
    assert {id(p) for p in bn["params"]} == bn_ids  # every BatchNorm weight and bias, the spatial gates' too
    assert {id(p) for m in spatial_bn for p in m.parameters()} <= bn_ids
    assert not bn_ids & {id(p) for p in other["params"]}
    assert len(other["params"]) + len(bn["params"]) == len(list(model.parameters()))
    assert (other["lr_scale"], bn["lr_scale"]) == (1.0, 8.0)
    assert other["weight_decay"] == 1e-4 and bn["weight_decay"] == pytest.approx(1e-4 / 8)  # decay step unchanged
    assert (other["lr"], bn["lr"]) == (0.01, pytest.approx(0.08))
    g = torch.Generator().manual_seed(0)
    data = [(torch.randn(4, 1, 8, 8, generator=g), torch.randint(0, 3, (4,), generator=g)) for _ in range(3)]
    schedule = [0.05, 0.02, 0.01]
    _, step = train_one_epoch(model, data, opt, lr_at=lambda s: schedule[s], step=0, device=CPU)
    assert step == 3 and other["lr"] == 0.01 and bn["lr"] == pytest.approx(8 * 0.01)
    # the scale lives in the optimizer's state: a resumed optimizer scales the same
    again = build_optimizer(_cbam(), OptimConfig(name=name, lr=0.01, weight_decay=1e-4, bn_lr_scale=8.0))
    again.load_state_dict(opt.state_dict())
    set_lr(again, 0.3)
    assert [g["lr"] for g in again.param_groups] == [0.3, pytest.approx(2.4)]


def test_bn_scale_with_no_decay_on_bn_and_bias():
    model = _cbam()
    opt = build_optimizer(model, OptimConfig(weight_decay=1e-4, no_decay_bn_bias=True, bn_lr_scale=4.0))
    decay, no_decay, bn = opt.param_groups
    assert (decay["weight_decay"], no_decay["weight_decay"], bn["weight_decay"]) == (1e-4, 0.0, 0.0)
    assert all(p.ndim > 1 for p in decay["params"]) and all(p.ndim <= 1 for p in no_decay["params"])
    assert [g["lr_scale"] for g in opt.param_groups] == [1.0, 1.0, 4.0]


def test_default_scale_changes_nothing_bit_for_bit():
    """bn_lr_scale 1: the groups and the training of before (one plain SGD group, the lr set every step)."""
    cfg = OptimConfig(lr=0.05, momentum=0.9, weight_decay=5e-4)
    assert cfg.bn_lr_scale == 1.0
    a, b = _cbam(), _cbam()
    opt_a = build_optimizer(a, cfg)
    assert len(opt_a.param_groups) == 1 and "lr_scale" not in opt_a.param_groups[0]
    opt_b = torch.optim.SGD([{"params": list(b.parameters()), "weight_decay": 5e-4}], lr=0.05, momentum=0.9)
    g = torch.Generator().manual_seed(0)
    data = [(torch.randn(4, 1, 8, 8, generator=g), torch.randint(0, 3, (4,), generator=g)) for _ in range(3)]
    for model, opt in ((a, opt_a), (b, opt_b)):
        train_one_epoch(model, data, opt, lr_at=lambda s: 0.05 / (1 + s), step=0, device=CPU)
    for (k, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(pa, pb), k


def test_bn_lr_scale_is_checked():
    for bad in (0, -1.0, 1e4):
        with pytest.raises(ConfigError, match=f"optim.bn_lr_scale={bad!r}"):
            OptimConfig(bn_lr_scale=bad)
    assert load_config(None, ["optim.bn_lr_scale=64"]).optim.bn_lr_scale == 64.0


# all three in one run -------------------------------------------------------------------------------------------

FAST = ["train.epochs=2", "train.batch_size=256", "model.name=resnet20_cbam", "train.threads=1",
        "data.augment_overrides.hflip=alternate", "eval.tta=hflip_translate", "optim.bn_lr_scale=8"]


@pytest.mark.slow
def test_a_run_with_the_three_options_stops_resumes_and_ends_as_the_uninterrupted_one(tmp_path):
    class Stop(Exception):
        pass

    def stop(epoch, row):
        raise Stop

    whole = fit(load_config(None, FAST), tmp_path / "whole")
    with pytest.raises(Stop):
        fit(load_config(None, FAST), tmp_path / "cut", on_epoch=stop)
    groups = runs.load_state(tmp_path / "cut").optimizer["param_groups"]
    assert [g["lr_scale"] for g in groups] == [1.0, 8.0]
    cut = fit(load_config(tmp_path / "cut" / "config.yaml"), tmp_path / "cut", resume=True)
    assert cut["top1"] == whole["top1"] and cut["final"] == whole["final"]
    wa = runs.load_weights(tmp_path / "whole" / "checkpoints" / "last.safetensors")[0]
    wb = runs.load_weights(tmp_path / "cut" / "checkpoints" / "last.safetensors")[0]
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
