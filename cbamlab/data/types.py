"""The data containers shared by every dataset reader and both input pipelines."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class DatasetInfo:
    """What a model and a report need to know about a dataset. `mean`/`std` are per channel, in [0, 1] units."""

    name: str
    num_classes: int
    in_chans: int
    image_size: tuple[int, int]
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    source: str


@dataclass
class TensorSplit:
    """A whole split in memory: `images` uint8 (N, C, H, W), `labels` int64 (N,)."""

    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self):
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise TypeError(f"images must be uint8 (N, C, H, W), got {self.images.dtype} {tuple(self.images.shape)}")
        self.labels = self.labels.to(torch.int64)
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError(f"{self.images.shape[0]} images but labels of shape {tuple(self.labels.shape)}")

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, index) -> "TensorSplit":
        index = torch.as_tensor(index, dtype=torch.int64)
        return TensorSplit(self.images[index].contiguous(), self.labels[index].clone())


@dataclass
class FileSplit:
    """A split of image files read on the fly (imagefolder): `samples` is a list of (path, label)."""

    samples: list[tuple[str, int]]
    labels: torch.Tensor = field(init=False)

    def __post_init__(self):
        self.labels = torch.tensor([label for _, label in self.samples], dtype=torch.int64)

    def __len__(self) -> int:
        return len(self.samples)

    def subset(self, index) -> "FileSplit":
        return FileSplit([self.samples[int(i)] for i in index])


@dataclass
class DataBundle:
    """A dataset ready for `make_loaders`: `val` is None without a validation split, `test` None when not loaded."""

    info: DatasetInfo
    train: TensorSplit | FileSplit
    val: TensorSplit | FileSplit | None = None
    test: TensorSplit | FileSplit | None = None


class EpochLoader:
    """What the loaders share: an epoch's batches depend on (seed, epoch) alone, so that pair is all their state.

    Subclasses set `seed`, `epoch` and `_num_batches`.
    """

    seed: int = 0
    epoch: int = 0
    _num_batches: int = 0

    def __len__(self) -> int:
        return self._num_batches

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def state_dict(self) -> dict:
        """All the state behind the next epoch's batches: restoring it reproduces them exactly."""
        return {"seed": self.seed, "epoch": self.epoch}

    def load_state_dict(self, state: dict) -> None:
        self.seed, self.epoch = int(state["seed"]), int(state["epoch"])
