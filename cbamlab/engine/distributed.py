"""Data-parallel training over several processes, GPUs and nodes under `torchrun` (DDP: gloo on CPU, NCCL on GPU).

- `train.batch_size` is the global batch: each of the `world` ranks reads, decodes and augments only its
  B / world images of every batch (`cbamlab.data.shard`), so together they train on what one process with
  batch B would, and a world that does not divide the batch is refused before anything starts.
- The ragged last batch of an epoch is padded with the epoch's first images, as `DistributedSampler` does
  (drop_last=False), so every rank runs the same number of steps. Evaluation is split without padding.
- Training and evaluation metrics are sums over ranks (`Meter.all_reduce`): loss, top-1/5 and the confusion
  matrix are the single-process numbers.
- `train.sync_bn`: BatchNorm statistics of the global batch (torch's SyncBatchNorm on GPU, `SyncBatchNormCPU`
  on CPU). Without it each rank normalises with its own B / world images, as plain DDP does, and so ends an
  epoch with its own BatchNorm running statistics; rank 0's are the ones saved, so every rank evaluates with
  rank 0's buffers (`broadcast_buffers`) and the recorded metrics are those of the saved weights.
- Rank 0 alone writes the run directory; it alone reads the state file on resume, and every rank receives that
  same state from it. A failure rank 0 meets there (a run directory in use, another config) is raised on
  every rank, so none waits for a partner that is gone.
- Under `torchrun --max-restarts N`, a restarted attempt (TORCHELASTIC_RESTART_COUNT > 0) resumes the run
  from its last checkpoint by itself, as if `--resume` had been given.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from ..errors import CbamlabError, ConfigError
from .syncbn import convert_sync_batchnorm_cpu

log = logging.getLogger(__name__)

TIMEOUT_ENV = "CBAMLAB_DIST_TIMEOUT"  # seconds to wait for every process at start-up
START_TIMEOUT_S = 300.0
COLLECTIVE_TIMEOUT = timedelta(minutes=30)  # torch's default; rank 0 may write a large checkpoint meanwhile


class DistributedError(CbamlabError):
    """The processes of a distributed run could not start together."""


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


def world_from_env() -> int:
    """WORLD_SIZE as torchrun sets it (1 outside torchrun)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise ConfigError(f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} is not a number of processes") from None


def check_batch(batch_size: int, world: int) -> None:
    if batch_size % world:
        raise ConfigError(f"train.batch_size={batch_size} does not divide among the {world} processes of this run "
                          f"(WORLD_SIZE={world}): the batch size is global, each process takes batch_size / "
                          f"{world}; use a multiple of {world}")


def init_from_env(batch_size: int | None = None, device: str = "auto") -> Dist | None:
    """A process group from torchrun's environment (WORLD_SIZE > 1), else None.

    `batch_size` (global) is checked against the world size first, before any waiting. Each process takes the
    GPU of its LOCAL_RANK (NCCL), or the CPU (gloo) when there is none or `device` (train.device) is "cpu".
    The other processes must join within CBAMLAB_DIST_TIMEOUT seconds (default 300), else a DistributedError
    names the address.
    """
    world = world_from_env()
    if world <= 1:
        return None
    if batch_size is not None:
        check_batch(batch_size, world)
    try:
        rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    except (KeyError, ValueError):
        raise ConfigError(f"WORLD_SIZE={world} but RANK is not set: start the processes with torchrun") from None
    cuda = device != "cpu" and torch.cuda.is_available()
    if cuda and local >= torch.cuda.device_count():
        n = torch.cuda.device_count()
        raise ConfigError(f"LOCAL_RANK={local} but this node has {n} CUDA device(s): start at most {n} processes "
                          f"per node (--nproc-per-node {n}), or set train.device=cpu")
    where = torch.device(f"cuda:{local}") if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(where)
    owned = not dist.is_initialized()
    if owned:
        _start(world, "nccl" if cuda else "gloo")
    return Dist(rank, world, local, where, owned)


def _start(world: int, backend: str) -> None:
    timeout = float(os.environ.get(TIMEOUT_ENV, START_TIMEOUT_S))
    where = f"{os.environ.get('MASTER_ADDR', '?')}:{os.environ.get('MASTER_PORT', '?')}"
    log.info("waiting for the %d processes at %s (up to %g s)", world, where, timeout)
    try:
        with _fd2_silenced():
            _init_group(world, backend, timedelta(seconds=timeout))
    except (RuntimeError, ValueError, TimeoutError) as e:  # DistStoreError, DistNetworkError, a bad address
        first = next((line for line in str(e).splitlines() if line.strip()), type(e).__name__).strip()
        raise DistributedError(f"the {world} processes did not meet at {where} within {timeout:g} s ({first}); "
                               f"start every node with the same rendezvous endpoint, or raise {TIMEOUT_ENV}") from None
    setter = getattr(dist, "set_timeout", None)  # torch >= 2.6; older ones keep the start-up timeout
    if setter is not None:
        try:
            setter(COLLECTIVE_TIMEOUT)
        except (RuntimeError, ValueError):
            log.debug("the %s backend keeps its start-up timeout for collectives", backend)


def _init_group(world: int, backend: str, timeout: timedelta) -> None:
    if "TORCHELASTIC_RESTART_COUNT" not in os.environ:
        dist.init_process_group(backend, timeout=timeout)
        return
    # Under torchrun the agent's store outlives a restarted attempt, and the addresses the previous attempt's
    # processes published there would be read again (pytorch/pytorch#135712): each attempt gets its own keys.
    store, rank, _ = next(dist.rendezvous("env://", timeout=timeout))
    store = dist.PrefixStore(f"cbamlab/attempt_{restart_count()}", store)
    dist.init_process_group(backend, store=store, rank=rank, world_size=world, timeout=timeout)


@contextlib.contextmanager
def _fd2_silenced():
    """c10d logs every connection retry with a C++ stack trace straight to file descriptor 2: hidden while the
    processes meet (a failure becomes one error line), kept in the debug log."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            for line in tmp.read().decode(errors="replace").splitlines():
                if line.startswith(("[E", "[W")):
                    log.debug("c10d: %s", line)


def from_main(fn, d: Dist | None):
    """`fn()` run on rank 0 and its result handed to every rank; a CbamlabError it raises is raised on every rank."""
    if d is None:
        return fn()
    box = [None]
    if d.main:
        try:
            box = [("ok", fn())]
        except CbamlabError as e:
            box = [("error", e)]
    dist.broadcast_object_list(box, src=0)
    kind, value = box[0]
    if kind == "error":
        raise value
    return value


def broadcast(obj, d: Dist | None):
    """`obj` from rank 0 on every rank."""
    return from_main(lambda: obj, d)


def close(d: Dist | None) -> None:
    if d is not None and d.owned and dist.is_initialized():
        dist.destroy_process_group()


def broadcast_buffers(model: nn.Module, d: Dist | None) -> None:
    """Rank 0's buffers (BatchNorm running statistics) in `model` on every rank, in place: what the checkpoint
    rank 0 writes holds, so evaluating each rank's share with them gives the saved model's metrics."""
    if d is None:
        return
    for b in model.buffers():
        dist.broadcast(b, src=0)


def sync_batchnorm(model: nn.Module, d: Dist | None) -> nn.Module:
    """`train.sync_bn`: BatchNorm layers that normalise with the statistics of the global batch."""
    if d is None:
        log.info("train.sync_bn: a single process, plain BatchNorm")
        return model
    if d.device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return convert_sync_batchnorm_cpu(model)


def wrap(model: nn.Module, d: Dist) -> nn.Module:
    """DistributedDataParallel around `model` (its gradients averaged over ranks at every step)."""
    ids = [d.local_rank] if d.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def restart_count() -> int:
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0)


def resume_after_restart(out: Path, config_name: str) -> bool:
    """True in an attempt torchrun restarted (--max-restarts) when `out` holds a run: it is resumed."""
    if restart_count() == 0 or not (Path(out) / config_name).is_file():
        return False
    log.info("torchrun restart %d: resuming %s from its last checkpoint", restart_count(), out)
    return True
