"""`make_loaders`: the in-memory pipeline for tensor splits and for image folders that fit a memory budget, the
streaming file pipeline for larger folders."""
from __future__ import annotations

import logging
from functools import partial
from typing import NamedTuple

from ..errors import DataError
from .augment import AugmentSpec
from .decode import DEFAULT_DECODER, decode_split
from .folder import FolderLoader, eval_preprocess
from .memory import MemoryLoader
from .types import DataBundle, FileSplit, TensorSplit

log = logging.getLogger(__name__)

MEMORY_BUDGET_GB = 4.0  # the default of data.memory_budget_gb


class Loaders(NamedTuple):
    train: object
    val: object | None
    test: object | None

    def skipped_files(self) -> list[str]:
        """Unreadable image files met so far (while decoding into memory or streaming), each once."""
        seen: dict[str, None] = {}
        for loader in self:
            seen.update(dict.fromkeys(getattr(loader, "skipped", ())))
        return list(seen)


def decoded_bytes(bundle: DataBundle) -> int:
    """Bytes the bundle's images take decoded at the training size, uint8, all splits."""
    h, w = bundle.info.image_size
    n = sum(len(s) for s in (bundle.train, bundle.val, bundle.test) if s is not None)
    return n * bundle.info.in_chans * h * w


def _to_memory(split: FileSplit, name: str, image_size, workers: int, decoder: str) -> tuple[TensorSplit, list]:
    tensors, bad = decode_split(split.samples, partial(eval_preprocess, image_size=image_size), image_size,
                                workers=workers, decoder=decoder)
    if bad:
        log.warning("skipped %d unreadable image file(s) in %s: %s", len(bad), name,
                    ", ".join(f"{p} ({why})" for p, why in bad))
    if len(tensors) == 0:
        raise DataError(f"no readable image in the {name} split ({len(split)} files)")
    return tensors, [p for p, _ in bad]


def make_loaders(bundle: DataBundle, batch_size: int, *, augment: AugmentSpec | None, device="cpu", seed: int = 0,
                 eval_batch_size: int | None = None, workers: int = 2, memory_budget_gb: float = MEMORY_BUDGET_GB,
                 decoder: str = DEFAULT_DECODER, rank: int = 0, world: int = 1) -> Loaders:
    """Train loader (shuffled, augmented, `set_epoch`) and eval loaders (fixed order, no augmentation).

    An image folder whose decoded images (all splits, at the training size) fit in `memory_budget_gb` is decoded
    once by `workers` threads and then uses the in-memory pipeline, like a tensor dataset; a larger one streams
    from its files with `workers` persistent DataLoader worker processes per loader. The choice is logged.
    With `world` > 1 (DDP) each loader yields rank `rank`'s share (`shard.Share`; the batch sizes are global).
    """
    eval_bs = eval_batch_size or batch_size
    info = bundle.info
    splits = {"train": bundle.train, "val": bundle.val, "test": bundle.test}
    skipped: dict[str, list[str]] = {}
    stream = False
    if isinstance(bundle.train, FileSplit):
        size, budget = decoded_bytes(bundle), float(memory_budget_gb) * 1e9
        what = (f"{info.name}: {sum(len(s) for s in splits.values() if s is not None):,} images decoded at "
                f"{info.image_size[0]}x{info.image_size[1]} take {size / 1e9:.3g} GB")
        stream = size > budget
        if stream:
            log.info("%s, over data.memory_budget_gb=%g: streaming them from the files with %d persistent "
                     "DataLoader worker(s) per loader", what, memory_budget_gb, workers)
        else:
            log.info("%s, within data.memory_budget_gb=%g: decoding them once into memory (%d thread(s)), then "
                     "the in-memory pipeline", what, memory_budget_gb, max(1, workers))
            for name, split in splits.items():
                if split is not None:
                    splits[name], skipped[name] = _to_memory(split, name, info.image_size, workers, decoder)

    def make(name, bs, aug, shuffle):
        split = splits[name]
        if split is None:
            return None
        if stream:
            return FolderLoader(split, bs, image_size=info.image_size, mean=info.mean, std=info.std, device=device,
                                augment=aug, shuffle=shuffle, seed=seed, workers=workers, decoder=decoder,
                                rank=rank, world=world)
        loader = MemoryLoader(split, bs, mean=info.mean, std=info.std, device=device, augment=aug, shuffle=shuffle,
                              seed=seed, rank=rank, world=world)
        loader.skipped = skipped.get(name, [])
        return loader

    return Loaders(train=make("train", batch_size, augment, True), val=make("val", eval_bs, None, False),
                   test=make("test", eval_bs, None, False))
