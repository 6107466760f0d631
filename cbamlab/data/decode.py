"""Image files to uint8 tensors: one file (`read_image`), or a whole split decoded once, in parallel (`decode_split`).

JPEG files go through `torchvision.io.decode_jpeg` (libjpeg-turbo, straight into a tensor), every other format
through PIL. On JPEG both give the same pixels (tests/test_data_decode.py holds them equal, grey and CMYK files
included), so the decoder is a speed choice only; benchmarks/bench_folder.py measures both.
"""
from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from io import BytesIO
from typing import Callable

import numpy as np
import torch
from PIL import Image
from torchvision.io import ImageReadMode, decode_jpeg

from .._io import MAX_IMAGE_PIXELS
from .memory import single_thread
from .types import TensorSplit

log = logging.getLogger(__name__)

DECODERS = ("torchvision", "pil")  # torchvision: decode_jpeg for JPEG files, PIL for the rest
DEFAULT_DECODER = "torchvision"
_JPEG_MAGIC = b"\xff\xd8\xff"
_CHUNK = 4096  # files handed to the thread pool at a time (never a million pending futures)


def _read_bytes(path) -> bytearray:
    with open(path, "rb") as f:
        buf = bytearray(os.fstat(f.fileno()).st_size)  # writable, so torch.frombuffer shares it without a copy
        f.readinto(buf)
    return buf


_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # start-of-frame markers (not DHT, JPG, DAC)
_STANDALONE = frozenset([0x01, *range(0xD0, 0xD9)])  # TEM, RSTn, SOI: no length field


def jpeg_size(data) -> tuple[int, int] | None:
    """(width, height) from a JPEG's start-of-frame header, read without decoding; None where the header does not
    say (a truncated or odd file: the decoder then reports it)."""
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in _STANDALONE:
            i += 2
            continue
        if marker in _SOF:
            if i + 9 > n:
                return None
            height, width = (data[i + 5] << 8) | data[i + 6], (data[i + 7] << 8) | data[i + 8]
            return (width, height) if width and height else None
        i += 2 + ((data[i + 2] << 8) | data[i + 3])
    return None


def _check_jpeg_size(data) -> None:
    """PIL refuses an image over its pixel limit before decoding it; decode_jpeg has no limit, so the same guard
    (and PIL's error, with its wording) is applied here from the header."""
    size = jpeg_size(data)
    if size is not None and size[0] * size[1] > MAX_IMAGE_PIXELS:
        raise Image.DecompressionBombError(f"Image size ({size[0] * size[1]} pixels) exceeds limit of "
                                           f"{MAX_IMAGE_PIXELS} pixels, could be decompression bomb DOS attack.")


def read_image(path, decoder: str = DEFAULT_DECODER) -> torch.Tensor:
    """The RGB pixels of an image file: uint8 (3, H, W). Grey, palette, CMYK and alpha images are converted. An
    image of more than MAX_IMAGE_PIXELS pixels raises PIL's DecompressionBombError, whichever decoder reads it."""
    if decoder not in DECODERS:
        raise ValueError(f"unknown decoder {decoder!r}; known: {', '.join(DECODERS)}")
    data = _read_bytes(path)
    if decoder == "torchvision" and data[:3] == _JPEG_MAGIC:
        _check_jpeg_size(data)
        return decode_jpeg(torch.frombuffer(data, dtype=torch.uint8), mode=ImageReadMode.RGB)
    with Image.open(BytesIO(data)) as im:
        rgb = np.asarray(im.convert("RGB"))  # (H, W, 3)
    return torch.from_numpy(rgb.copy()).permute(2, 0, 1).contiguous()


def reason(error: BaseException) -> str:
    """One short line saying why a file could not be read."""
    lines = str(error).strip().splitlines()
    text = lines[-1].strip() if lines else ""
    return f"{type(error).__name__}: {text[:160]}" if text else type(error).__name__


def decode_split(samples: list[tuple[str, int]], transform: Callable[[torch.Tensor], torch.Tensor],
                 out_size: tuple[int, int], *, workers: int = 2, decoder: str = DEFAULT_DECODER
                 ) -> tuple[TensorSplit, list[tuple[str, str]]]:
    """Every file of `samples` read, passed through `transform` (uint8 (3, H, W) -> uint8 (3, *out_size)) and stored
    in one uint8 (N, 3, h, w) tensor; returns it with the (path, reason) of each file that could not be read
    (left out). `workers` threads decode at once (0: this thread): the decoders and torch ops release the GIL,
    and each thread runs its torch ops on one core."""
    n = len(samples)
    images = torch.empty((n, 3, *out_size), dtype=torch.uint8)
    ok = torch.ones(n, dtype=torch.bool)
    bad: list[tuple[str, str]] = []

    def one(i: int):
        try:
            img = read_image(samples[i][0], decoder)
        except Exception as e:  # PIL and libjpeg raise many types for a corrupt or unreadable file
            return i, reason(e)
        images[i] = transform(img)
        return i, None

    with single_thread(), ThreadPoolExecutor(max(1, workers)) as pool:
        run = pool.map if workers > 0 else map
        for start in range(0, n, _CHUNK):
            for i, why in run(one, range(start, min(n, start + _CHUNK))):
                if why is not None:
                    ok[i] = False
                    bad.append((samples[i][0], why))
    labels = torch.tensor([label for _, label in samples], dtype=torch.int64)
    if bad:
        keep = ok.nonzero().squeeze(1)
        images, labels = images.index_select(0, keep), labels.index_select(0, keep)
    return TensorSplit(images, labels), bad
