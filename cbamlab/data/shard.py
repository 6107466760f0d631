"""Each process's share of an epoch under data-parallel training (one process per rank, `world` ranks).

`train.batch_size` is the global batch B: every rank takes B / world images of each global batch, so the
ranks together see exactly the batches one process with batch B sees (same (seed, epoch) permutation), and
each rank decodes and augments only its own share. The ragged tail is handled as `DistributedSampler` does
with drop_last=False: the epoch's index list is padded with its own first indices up to a multiple of
`world`, so the last global batch splits evenly and every rank runs the same number of steps (DDP needs
that). Evaluation is split without padding (contiguous, uneven by at most one image): its counts are summed
across ranks, which gives exactly the single-process numbers.
"""
from __future__ import annotations

import torch

RANK_STREAM = 1 << 16  # rank r's augmentation draws use epoch_seed(seed, epoch, RANK_STREAM + r)


def local_batch_size(batch_size: int, world: int) -> int:
    """The per-rank batch: `batch_size` is global and must divide by `world`."""
    if world < 1 or batch_size % world:
        raise ValueError(f"batch size {batch_size} does not divide among {world} processes")
    return batch_size // world


def train_positions(used: int, batch_size: int, rank: int, world: int) -> torch.Tensor:
    """Positions in an epoch's order (its first `used` entries) that `rank` takes, in batch order.

    Global batch k is order[k*B:(k+1)*B]; rank r takes its r-th contiguous slice of B/world. The last, shorter
    global batch is first padded with the order's first positions to a multiple of `world`.
    """
    pos = torch.arange(used)
    if world == 1:
        return pos
    pad = (-used) % world
    if pad:
        pos = torch.cat([pos, pos.repeat((pad + used - 1) // used)[:pad]])
    b = local_batch_size(batch_size, world)
    full = len(pos) // batch_size
    head = pos[:full * batch_size].view(full, world, b)[:, rank].reshape(-1)
    tail = pos[full * batch_size:]
    return torch.cat([head, tail.view(world, -1)[rank]]) if len(tail) else head


def eval_range(n: int, rank: int, world: int) -> tuple[int, int]:
    """[start, stop) of the `n` eval images that `rank` takes: contiguous, no padding, sizes differ by <= 1."""
    return rank * n // world, (rank + 1) * n // world


def num_batches(n: int, batch_size: int) -> int:
    return (n + batch_size - 1) // batch_size


class Share:
    """What one rank of `world` reads of an epoch of `n` images that one process reads as `num_batches` batches
    of `batch_size`: `positions` into the epoch's order (of which one process uses the first `used`), the
    per-rank `batch_size` and `num_batches`.

    With world == 1 it is the whole epoch, unchanged.
    """

    def __init__(self, n: int, batch_size: int, num_batches_: int, rank: int = 0, world: int = 1, *, train: bool):
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} is not in [0, {world})")
        self.rank, self.world = int(rank), int(world)
        self.stream = RANK_STREAM + self.rank  # `epoch_seed` stream of this rank's own random draws
        self.used = min(n, num_batches_ * batch_size) if train else n
        if train:
            self.batch_size = local_batch_size(batch_size, world)
            self.positions = train_positions(self.used, batch_size, rank, world)
            self.num_batches = num_batches_
        else:
            self.batch_size = max(batch_size // world, 1)
            self.positions = torch.arange(*eval_range(n, rank, world))
            self.num_batches = num_batches(len(self.positions), self.batch_size)
