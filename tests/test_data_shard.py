"""Each DDP rank's share of an epoch: together the ranks read what one process reads, batch for batch."""
import pytest
import torch

from cbamlab.data.memory import MemoryLoader
from cbamlab.data.shard import Share, local_batch_size
from cbamlab.data.types import TensorSplit


def _split(n):
    images = torch.arange(n, dtype=torch.int64).view(n, 1, 1, 1).expand(n, 1, 2, 2).to(torch.uint8)
    return TensorSplit(images.contiguous(), torch.arange(n))


def _labels(loader):
    return [y.tolist() for _, y in loader]


@pytest.mark.parametrize("n,batch,world", [(24, 8, 2), (23, 8, 2), (21, 6, 3), (25, 8, 4), (3, 4, 4)])
def test_ranks_together_read_the_single_process_batches(n, batch, world):
    one = MemoryLoader(_split(n), batch, mean=(0.0,), std=(1.0,), shuffle=True, seed=3)
    ranks = [MemoryLoader(_split(n), batch, mean=(0.0,), std=(1.0,), shuffle=True, seed=3, rank=r, world=world)
             for r in range(world)]
    for loader in [one, *ranks]:
        loader.set_epoch(5)
    single = _labels(one)
    shares = [_labels(r) for r in ranks]
    assert all(len(s) == len(single) == len(r) for s, r in zip(shares, ranks))  # equal step counts (DDP)
    for k, batch_k in enumerate(single):
        joined = [i for s in shares for i in s[k]]
        assert len({len(s[k]) for s in shares}) == 1  # the last batch too splits evenly
        if k < len(single) - 1 or len(batch_k) % world == 0:
            assert joined == batch_k
        else:  # the ragged tail: padded with the epoch's first images, as DistributedSampler does
            pad = len(joined) - len(batch_k)
            assert 0 < pad < world and joined[:len(batch_k)] == batch_k
            assert joined[len(batch_k):] == [i for b in single for i in b][:pad]


@pytest.mark.parametrize("n,world", [(10, 3), (7, 2), (2, 4)])
def test_eval_shares_cover_every_image_once(n, world):
    ranks = [MemoryLoader(_split(n), 4, mean=(0.0,), std=(1.0,), rank=r, world=world) for r in range(world)]
    got = [i for r in ranks for b in _labels(r) for i in b]
    assert got == list(range(n))
    assert [len(r) for r in ranks] == [len(_labels(r)) for r in ranks]


def test_a_world_that_does_not_divide_the_batch_is_refused():
    assert local_batch_size(12, 3) == 4
    with pytest.raises(ValueError, match="does not divide among 5"):
        Share(100, 12, 9, 0, 5, train=True)
    with pytest.raises(ValueError, match="rank 2"):
        Share(100, 12, 9, 2, 2, train=True)


def test_one_process_share_is_the_whole_epoch():
    s = Share(23, 8, 3, train=True)
    assert s.positions.tolist() == list(range(23)) and s.batch_size == 8 and s.num_batches == 3


def test_folder_ranks_decode_only_their_share_with_the_single_process_crops(tmp_path):
    from PIL import Image

    from cbamlab.data.augment import AugmentSpec
    from cbamlab.data.folder import FolderLoader
    from cbamlab.data.types import FileSplit

    samples = []
    for i in range(10):
        path = tmp_path / f"{i}.png"
        Image.fromarray((torch.rand(12, 12, 3) * 255).to(torch.uint8).numpy()).save(path)
        samples.append((str(path), i))
    spec = AugmentSpec(resized_crop=True, crop_scale=(0.3, 1.0))  # drawn per image, from the image's own seed
    kw = dict(image_size=(8, 8), mean=(0.5,) * 3, std=(0.25,) * 3, augment=spec, shuffle=True, seed=1, workers=0)
    one = FolderLoader(FileSplit(samples), 4, **kw)
    ranks = [FolderLoader(FileSplit(samples), 4, rank=r, world=2, **kw) for r in range(2)]
    for loader in [one, *ranks]:
        loader.set_epoch(2)
    single = list(one)
    shares = [list(r) for r in ranks]
    assert [len(s) for s in shares] == [len(single)] * 2 == [3, 3]
    for k, (x, y) in enumerate(single):  # 10 images in batches of 4: 4, 4, 2; each rank 2, 2, 1
        assert torch.equal(torch.cat([shares[0][k][1], shares[1][k][1]]), y)
        assert torch.equal(torch.cat([shares[0][k][0], shares[1][k][0]]), x)
