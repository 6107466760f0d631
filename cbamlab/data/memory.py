"""The in-memory input pipeline: a whole uint8 split on the device, batches gathered, augmented and normalised
with tensor ops. No per-sample Python, no worker processes (after Keller Jordan's airbench)."""
from __future__ import annotations

import contextlib

import torch

from . import shard
from .augment import AugmentSpec, alternate_flips, augment_batch, flip_phase, normalize_batch
from .stats import epoch_seed
from .types import EpochLoader, TensorSplit


@contextlib.contextmanager
def single_thread():
    """Run the batch ops on one CPU thread, then give the training step all of them back.

    A batch is ~100 KB: splitting its ops across threads gains nothing, and on a busy machine waking a second
    thread costs more than the ops themselves (measured slower with 2 threads on 2 shared cores). Setting the
    thread count is cheap beside a batch.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class MemoryLoader(EpochLoader):
    """Yields (x, y): x float32 normalised (B, C, H, W) on `device`, y int64 (B,) on `device`.

    A training loader (`shuffle=True`) draws its order and augmentations from a CPU generator seeded with
    (seed, epoch) alone; `set_epoch` picks the epoch, so a resumed run and a paired variant see the same batches.
    A last batch of a single image is dropped when shuffling (BatchNorm cannot train on one sample).
    With `world` > 1 (DDP) this is rank `rank`'s share (`shard.Share`): `batch_size` is the global batch, and
    the augmentation draws come from a stream seeded by (seed, epoch, rank). Alternating flips
    (`augment.hflip="alternate"`) follow each image's index and the epoch, so they are the same for any `world`.
    """

    def __init__(self, split: TensorSplit, batch_size: int, *, mean, std, device="cpu",
                 augment: AugmentSpec | None = None, shuffle: bool = False, seed: int = 0,
                 rank: int = 0, world: int = 1):
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.device = torch.device(device)
        self.images = split.images.to(self.device)  # uint8 (N, C, H, W), moved once
        self.labels = split.labels.to(self.device)
        self.batch_size = int(batch_size)
        self.augment = augment if augment is not None and augment.active else None
        self.shuffle = shuffle
        self.seed = int(seed)
        self.epoch = 0
        self.mean = torch.as_tensor(mean, dtype=torch.float32, device=self.device)
        self.std = torch.as_tensor(std, dtype=torch.float32, device=self.device)
        n = self.num_samples
        self._phase = None  # alternating flips: each image's phase, set per epoch from `seed` (uint8 (N,))
        self._num_batches = (n + self.batch_size - 1) // self.batch_size
        if shuffle and self._num_batches > 1 and n % self.batch_size == 1:
            self._num_batches -= 1
        self.share = shard.Share(n, self.batch_size, self._num_batches, rank, world, train=shuffle)
        self._num_batches = self.share.num_batches

    @property
    def num_samples(self) -> int:
        return int(self.labels.shape[0])

    def _batch(self, idx: torch.Tensor, gen: torch.Generator):
        x = self.images.index_select(0, idx)  # uint8 (B, C, H, W)
        y = self.labels.index_select(0, idx)
        if self.augment is not None:
            flips = alternate_flips(self._phase, idx, self.epoch) if self._phase is not None else None
            return augment_batch(x, self.augment, gen, self.mean, self.std, flips), y
        return normalize_batch(x, self.mean, self.std), y

    def __iter__(self):
        gen = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
        n = self.num_samples
        if self.augment is not None and self.augment.alternate_hflip:
            self._phase = flip_phase(n, self.seed).to(self.device)
        if self.shuffle:
            order = torch.randperm(n, generator=gen).to(self.device)
        else:
            order = torch.arange(n, device=self.device)
        bs = self.share.batch_size
        if self.share.world > 1:  # DDP: this rank's share, its own augmentation stream
            order = order[self.share.positions.to(self.device)]
            gen.manual_seed(epoch_seed(self.seed, self.epoch, self.share.stream))
        for i in range(self._num_batches):
            idx = order[i * bs:(i + 1) * bs]
            with single_thread():
                x, y = self._batch(idx, gen)
            yield x, y
