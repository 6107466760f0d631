"""How one image becomes a model input at evaluation and prediction time: a small description, recorded in the run
directory (summary.json "preprocess"), and the functions that apply it with the evaluation pipeline's own code.

Image folders: the shorter side resized to min(h, w) / 0.875 (bilinear, antialiased), then the central (h, w) crop
(`folder.eval_preprocess`). In-memory datasets (digits, MNIST, CIFAR): the whole image resized to (h, w), as
`load_dataset` resizes them (`stats.resize_images`; nothing changes at the files' own size). Then each channel is
normalised with the training set's mean and std (`augment.normalize_batch`). `cbamlab predict` therefore gives an
image file exactly the input `cbamlab eval` gives the same image.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from .._io import too_large
from ..errors import CbamlabError, DataError
from .augment import normalize_batch
from .decode import DEFAULT_DECODER
from .decode import read_image as read_rgb
from .folder import eval_preprocess, eval_resize
from .registry import get_spec
from .stats import resize_images
from .types import DatasetInfo


@dataclass(frozen=True)
class Preprocess:
    """channels: 1 (grey) or 3 (RGB); size: the model's (h, w); resize_shorter: None to resize the whole image to
    `size`, else the shorter side's length before the central `size` crop; mean, std: per channel, in [0, 1]."""

    channels: int
    size: tuple[int, int]
    resize_shorter: int | None
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def to_dict(self) -> dict:
        d = asdict(self)
        return {**d, "size": list(self.size), "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, d: dict) -> "Preprocess":
        try:
            p = cls(channels=int(d["channels"]), size=(int(d["size"][0]), int(d["size"][1])),
                    resize_shorter=None if d["resize_shorter"] is None else int(d["resize_shorter"]),
                    mean=tuple(float(v) for v in d["mean"]), std=tuple(float(v) for v in d["std"]))
        except (KeyError, TypeError, ValueError, IndexError) as e:
            raise CbamlabError(f"unreadable preprocess record {d!r} ({type(e).__name__}: {e})") from None
        if p.channels not in (1, 3) or len(p.mean) != p.channels or len(p.std) != p.channels:
            raise CbamlabError(f"preprocess record: channels {p.channels} with mean {p.mean} and std {p.std}")
        return p


def for_dataset(info: DatasetInfo) -> Preprocess:
    """The evaluation preprocessing of dataset `info` (as `load_dataset` described it)."""
    size = tuple(int(v) for v in info.image_size)
    crop = not get_spec(info.name).in_memory
    return Preprocess(channels=int(info.in_chans), size=size, resize_shorter=eval_resize(size) if crop else None,
                      mean=tuple(info.mean), std=tuple(info.std))


def to_model_size(img: torch.Tensor, p: Preprocess) -> torch.Tensor:
    """uint8 (C, H, W) -> uint8 (C, h, w), as the evaluation pipeline does it."""
    if p.resize_shorter is not None:
        return eval_preprocess(img, p.size, p.resize_shorter)
    return resize_images(img.unsqueeze(0), p.size)[0]


def to_input(img: torch.Tensor, p: Preprocess) -> torch.Tensor:
    """uint8 (C, H, W) -> the model's float32 input (1, C, h, w)."""
    x = to_model_size(img, p).unsqueeze(0)
    return normalize_batch(x, torch.tensor(p.mean, dtype=torch.float32), torch.tensor(p.std, dtype=torch.float32))


def read_file(path, p: Preprocess, decoder: str = DEFAULT_DECODER) -> torch.Tensor:
    """An image file (PNG, JPEG, anything PIL reads) as uint8 (C, H, W) in the record's channels: RGB files through
    the image folders' own decoder, grey through PIL's "L" conversion."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"no such image file: {path}")
    try:
        if p.channels == 3:
            return read_rgb(path, decoder)
        with Image.open(path) as im:
            grey = np.asarray(im.convert("L"))  # (H, W)
        return torch.from_numpy(grey.copy()).unsqueeze(0)
    except Image.DecompressionBombError as e:
        raise too_large(path, e) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, RuntimeError) as e:  # RuntimeError: libjpeg
        raise DataError(f"{path}: not a readable PNG or JPEG image ({type(e).__name__})") from None
