"""`make_loaders`: the in-memory pipeline for tensor splits, the file pipeline for imagefolder."""
from __future__ import annotations

from typing import NamedTuple

from .augment import AugmentSpec
from .memory import MemoryLoader
from .types import DataBundle, TensorSplit


class Loaders(NamedTuple):
    train: object
    val: object | None
    test: object | None


def make_loaders(bundle: DataBundle, batch_size: int, *, augment: AugmentSpec | None, device="cpu", seed: int = 0,
                 eval_batch_size: int | None = None, workers: int = 2) -> Loaders:
    """Train loader (shuffled, augmented, `set_epoch`) and eval loaders (fixed order, no augmentation).

    `workers` only matters for imagefolder; in-memory sets never use worker processes.
    """
    eval_bs = eval_batch_size or batch_size
    info = bundle.info
    if isinstance(bundle.train, TensorSplit):
        def make(split, bs, aug, shuffle):
            if split is None:
                return None
            return MemoryLoader(split, bs, mean=info.mean, std=info.std, device=device, augment=aug,
                                shuffle=shuffle, seed=seed)
    else:
        from .folder import FolderLoader

        def make(split, bs, aug, shuffle):
            if split is None:
                return None
            return FolderLoader(split, bs, image_size=info.image_size, mean=info.mean, std=info.std, device=device,
                                augment=aug, shuffle=shuffle, seed=seed, workers=workers)
    return Loaders(train=make(bundle.train, batch_size, augment, True),
                   val=make(bundle.val, eval_bs, None, False),
                   test=make(bundle.test, eval_bs, None, False))
