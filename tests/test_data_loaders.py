"""The in-memory loaders: batches, normalisation, (seed, epoch) reproducibility, eval without augmentation."""
import pytest
import torch

from cbamlab.data import AugmentSpec, DataBundle, MemoryLoader, load_dataset, make_loaders, make_synthetic
from cbamlab.data.stats import channel_stats
from cbamlab.data.types import DatasetInfo

SPEC = AugmentSpec(crop_padding=2, hflip=True, rotation=10, erasing=0.5)


def bundle(n_train=300, n_val=None, n_test=70):
    train, test = make_synthetic(n_train, n_test, num_classes=5, in_chans=2, image_size=(9, 7), seed=3)
    mean, std = channel_stats(train.images)
    info = DatasetInfo("synthetic", 5, 2, (9, 7), [str(i) for i in range(5)], mean, std, "test")
    return DataBundle(info, train, test.subset(range(20)) if n_val else None, test)


def batches(loader, epoch=None):
    if epoch is not None:
        loader.set_epoch(epoch)
    return [(x.clone(), y.clone()) for x, y in loader]


def test_shapes_dtypes_lengths():
    b = bundle()
    L = make_loaders(b, 64, augment=SPEC, device="cpu", seed=0, eval_batch_size=32)
    assert L.val is None and L.test is not None
    out = batches(L.train)
    assert len(out) == len(L.train) == 5 and L.train.num_samples == 300
    assert sum(len(y) for _, y in out) == 300
    x, y = out[0]
    assert x.shape == (64, 2, 9, 7) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert len(L.test) == 3 and L.test.num_samples == 70
    assert sorted(torch.cat([y for _, y in out]).tolist()) == sorted(b.train.labels.tolist())  # a permutation


def test_eval_loader_fixed_order_no_augmentation_exact_normalisation():
    b = bundle()
    L = make_loaders(b, 64, augment=SPEC, device="cpu", seed=0)
    first, second = batches(L.test), batches(L.test, epoch=5)
    x = torch.cat([x for x, _ in first])
    assert torch.equal(x, torch.cat([x for x, _ in second]))
    assert torch.equal(torch.cat([y for _, y in first]), b.test.labels)
    mean = torch.tensor(b.info.mean).view(1, -1, 1, 1)
    std = torch.tensor(b.info.std).view(1, -1, 1, 1)
    assert torch.allclose(x, (b.test.images.float() / 255 - mean) / std, atol=1e-5)


def test_same_seed_and_epoch_same_batches_resume_and_pairing():
    b = bundle()
    a = make_loaders(b, 64, augment=SPEC, device="cpu", seed=7).train
    run1 = [batches(a, e) for e in range(3)]
    b2 = make_loaders(b, 64, augment=SPEC, device="cpu", seed=7).train  # a "resumed" run, started at epoch 2
    b2.load_state_dict({"seed": 7, "epoch": 2})
    for (x1, y1), (x2, y2) in zip(run1[2], batches(b2)):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert not torch.equal(run1[0][0][1], run1[1][0][1])  # another epoch: another order
    other = make_loaders(b, 64, augment=SPEC, device="cpu", seed=8).train
    assert not torch.equal(batches(other, 0)[0][1], run1[0][0][1])


def test_training_batches_are_augmented():
    b = bundle()
    plain = make_loaders(b, 300, augment=None, device="cpu", seed=0).train
    aug = make_loaders(b, 300, augment=SPEC, device="cpu", seed=0).train
    (xp, yp), = batches(plain, 0)
    (xa, ya), = batches(aug, 0)
    assert torch.equal(yp, ya)  # same order: augmentation draws come after the permutation
    changed = (xp != xa).flatten(1).any(1).float().mean()
    assert changed > 0.9


def test_a_last_batch_of_one_is_dropped_only_in_training():
    b = bundle(n_train=129, n_test=129)
    L = make_loaders(b, 64, augment=None, device="cpu", seed=0)
    assert len(L.train) == 2 and sum(len(y) for _, y in L.train) == 128
    assert len(L.test) == 3 and sum(len(y) for _, y in L.test) == 129


def test_digits_loaders_end_to_end_and_device_placement():
    b = load_dataset("digits", val_fraction=0.1, seed=0)
    L = make_loaders(b, 128, augment=AugmentSpec(translate=1), device=torch.device("cpu"), seed=0)
    x, y = next(iter(L.train))
    assert x.device.type == "cpu" and x.shape == (128, 1, 8, 8) and 0 <= int(y.min()) <= int(y.max()) <= 9
    assert L.val.num_samples == len(b.val) and L.test.num_samples == 359
    assert isinstance(L.train, MemoryLoader)


def test_batches_are_built_on_one_thread_and_threads_are_restored():
    b = bundle()
    loader = make_loaders(b, 64, augment=SPEC, device="cpu", seed=0).train
    before = torch.get_num_threads()
    seen = []
    original = loader._batch

    def spy(idx, gen):
        seen.append(torch.get_num_threads())
        return original(idx, gen)

    loader._batch = spy
    for _ in loader:
        assert torch.get_num_threads() == before
    assert seen == [1] * len(loader)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_batches_equal_cpu_batches():
    b = bundle()
    spec = AugmentSpec(crop_padding=2, hflip=True, vflip=True, translate=1, erasing=0.5)  # exact ops only
    cpu = batches(make_loaders(b, 64, augment=spec, device="cpu", seed=4).train, 1)
    gpu = batches(make_loaders(b, 64, augment=spec, device="cuda", seed=4).train, 1)
    for (xc, yc), (xg, yg) in zip(cpu, gpu):
        assert xg.device.type == "cuda" and torch.equal(yc, yg.cpu())
        assert torch.allclose(xc, xg.cpu(), atol=1e-5)
