"""Decoding image files: torchvision's decode_jpeg gives PIL's pixels, every mode becomes RGB, a whole split decodes
the same in parallel as serially, RandomResizedCrop boxes stay inside the image."""
import io

import numpy as np
import pytest
import torch
from PIL import Image

from cbamlab.data.augment import resized_crop_box
from cbamlab.data.decode import _JPEG_MAGIC, DECODERS, _check_jpeg_size, decode_split, jpeg_size, read_image
from cbamlab.data.preprocess import Preprocess, read_file
from cbamlab.errors import DataError


def textured(h=37, w=53, seed=0):
    rng = np.random.default_rng(seed)
    return (np.cumsum(rng.integers(0, 256, (h, w, 3)), axis=1) % 256).astype(np.uint8)  # edges and gradients


def pil_pixels(path):
    with Image.open(path) as im:
        return torch.from_numpy(np.asarray(im.convert("RGB")).copy()).permute(2, 0, 1)


@pytest.mark.parametrize("mode,options", [
    ("RGB", {}), ("RGB", {"quality": 95}), ("RGB", {"subsampling": 0}), ("RGB", {"progressive": True}),
    ("L", {}), ("CMYK", {}),
])
def test_jpeg_decoders_give_the_same_pixels(tmp_path, mode, options):
    path = tmp_path / "x.jpg"
    Image.fromarray(textured()).convert(mode).save(path, "JPEG", **options)
    assert path.read_bytes()[:3] == _JPEG_MAGIC
    fast, pil = read_image(path, "torchvision"), read_image(path, "pil")
    assert fast.shape == pil.shape == (3, 37, 53) and fast.dtype == torch.uint8
    assert int((fast.int() - pil.int()).abs().max()) == 0  # max abs difference: none
    assert torch.equal(pil, pil_pixels(path))


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "P", "I;16"])
def test_other_formats_go_through_pil_and_become_rgb(tmp_path, mode):
    img = Image.fromarray(textured(9, 7))
    img = img.convert(mode) if mode != "I;16" else img.convert("L").convert("I;16")
    path = tmp_path / "x.png"
    img.save(path)
    for decoder in ("torchvision", "pil"):
        x = read_image(path, decoder)
        assert x.shape == (3, 9, 7) and x.dtype == torch.uint8
        assert torch.equal(x, pil_pixels(path))


def test_decode_split_parallel_equals_serial_and_reports_bad_files(tmp_path):
    samples = []
    for i in range(9):
        path = tmp_path / f"{i}.{'jpg' if i % 2 else 'png'}"
        Image.fromarray(textured(10 + i, 12, seed=i)).save(path)
        samples.append((str(path), i % 3))
    (tmp_path / "4.png").write_bytes(b"\x89PNG broken")
    (tmp_path / "7.jpg").write_bytes(_JPEG_MAGIC + b" truncated")

    def transform(x):
        return x[:, :8, :8]

    serial, bad0 = decode_split(samples, transform, (8, 8), workers=0)
    parallel, bad2 = decode_split(samples, transform, (8, 8), workers=2)
    assert [p for p, _ in bad0] == [p for p, _ in bad2] == [samples[4][0], samples[7][0]]
    assert all(why for _, why in bad0)
    assert torch.equal(serial.images, parallel.images) and torch.equal(serial.labels, parallel.labels)
    keep = [i for i in range(9) if i not in (4, 7)]
    assert serial.labels.tolist() == [samples[i][1] for i in keep]
    for row, i in enumerate(keep):
        assert torch.equal(serial.images[row], pil_pixels(samples[i][0])[:, :8, :8])


def test_resized_crop_box_inside_the_image_reproducible_and_spread():
    gen = torch.Generator().manual_seed(0)
    boxes = [resized_crop_box(60, 90, (0.08, 1.0), gen) for _ in range(300)]
    for top, left, h, w in boxes:
        assert 0 <= top and top + h <= 60 and 0 <= left and left + w <= 90 and h > 0 and w > 0
    areas = np.array([h * w / (60 * 90) for _, _, h, w in boxes])
    assert areas.min() < 0.15 and areas.max() > 0.75  # the 8-100 % range is used (a 4:3 box covers <= 89 %)
    again = torch.Generator().manual_seed(0)
    assert [resized_crop_box(60, 90, (0.08, 1.0), again) for _ in range(300)] == boxes
    # a scale no box can reach within the aspect ratios: torchvision's fallback, the central crop
    assert resized_crop_box(10, 100, (1.0, 1.0), gen) == (0, 43, 10, 13)



def _jpeg_bytes(mode="RGB", **options) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(textured(21, 34)).convert(mode).save(buf, "JPEG", **options)
    return buf.getvalue()


@pytest.mark.parametrize("mode,options", [("RGB", {}), ("RGB", {"progressive": True}), ("L", {}), ("CMYK", {}),
                                          ("RGB", {"exif": Image.Exif()}), ("RGB", {"comment": b"x" * 300})])
def test_jpeg_size_reads_the_header_as_pil_does(mode, options):
    data = _jpeg_bytes(mode, **options)
    with Image.open(io.BytesIO(data)) as im:
        assert jpeg_size(data) == im.size == (34, 21)


def test_jpeg_size_of_a_truncated_or_foreign_file_is_unknown():
    data = _jpeg_bytes()
    assert jpeg_size(data[:20]) is None and jpeg_size(b"\xff\xd8\xff") is None and jpeg_size(b"GIF89a....") is None


def _claiming(width, height) -> bytearray:
    """A real small JPEG whose frame header claims another size (a decompression bomb's header, without its data)."""
    data = bytearray(_jpeg_bytes())
    i = 2
    while data[i + 1] not in (0xC0, 0xC2):
        i += 2 + ((data[i + 2] << 8) | data[i + 3])
    data[i + 5:i + 9] = bytes([height >> 8, height & 255, width >> 8, width & 255])
    return data


def test_an_oversized_jpeg_is_refused_before_decoding_by_every_path(tmp_path):
    bomb = tmp_path / "bomb.jpg"
    bomb.write_bytes(_claiming(20_000, 20_000))  # 400 M pixels: over MAX_IMAGE_PIXELS (179 M)
    ok = tmp_path / "ok.jpg"
    ok.write_bytes(_jpeg_bytes())
    for decoder in DECODERS:  # decode_jpeg has no limit of its own; PIL has: both refuse it alike
        with pytest.raises(Image.DecompressionBombError, match="400000000 pixels"):
            read_image(bomb, decoder)
    split, bad = decode_split([(str(ok), 0), (str(bomb), 1)], lambda img: img[:, :8, :8], (8, 8), workers=0)
    assert split.labels.tolist() == [0] and bad == [(str(bomb), bad[0][1])]
    assert bad[0][1].startswith("DecompressionBombError")
    with pytest.raises(DataError, match=r"bomb.jpg: 400,000,000 pixels, over the image size limit of 178,956,970"):
        read_file(bomb, Preprocess(3, (8, 8), None, (0.5,) * 3, (0.5,) * 3))
    under = _claiming(16_000, 10_000)  # 160 M pixels: under the limit, so the header check lets it through
    assert jpeg_size(under) == (16_000, 10_000)
    _check_jpeg_size(under)
