"""Multi-process data-parallel training under `torchrun` (DDP: gloo on CPU, NCCL on GPU).

Every rank builds the same seeded loader and takes every world_size-th batch of it, so the ranks see
disjoint shards of each epoch and together see what one process would (minus a ragged tail). Rank 0
alone writes the run directory; the others wait for it where they need its files.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch


@dataclass
class Dist:
    rank: int
    world: int
    local_rank: int
    device: torch.device
    owned: bool  # this module started the process group (and ends it)

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_from_env() -> Dist | None:
    """A process group from torchrun's environment (WORLD_SIZE > 1), else None."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return None
    import torch.distributed as dist

    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    owned = not dist.is_initialized()
    if owned:
        dist.init_process_group("nccl" if cuda else "gloo")
    device = torch.device(f"cuda:{local}") if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    return Dist(rank, world, local, device, owned)


def broadcast(obj, d: Dist | None):
    """`obj` from rank 0 on every rank."""
    if d is None:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def close(d: Dist | None) -> None:
    if d is not None and d.owned:
        import torch.distributed as dist

        dist.destroy_process_group()


class ShardedLoader:
    """Batches rank, rank + world, ... of `loader`; every rank gets the same number of batches."""

    def __init__(self, loader, rank: int, world: int):
        self.loader, self.rank, self.world = loader, rank, world

    def __len__(self) -> int:
        return len(self.loader) // self.world

    @property
    def num_samples(self) -> int:
        return getattr(self.loader, "num_samples", 0) // self.world

    def set_epoch(self, epoch: int) -> None:
        self.loader.set_epoch(epoch)

    def __iter__(self):
        limit = len(self) * self.world
        for i, batch in enumerate(self.loader):
            if i >= limit:
                break
            if i % self.world == self.rank:
                yield batch
