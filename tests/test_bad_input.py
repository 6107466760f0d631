"""The bad-input corpus: every input a hostile-but-fair user tried that once ended in a traceback (or was silently
accepted) is answered by one `error:` line and exit status 2, or accepted where a user would expect it to work."""
import errno
import json
import os
import struct
import zlib
from pathlib import Path

import pytest
import torch
from PIL import Image

from cbamlab import _io
from cbamlab.cli import main
from cbamlab.config import load_config
from cbamlab.engine import fit
from cbamlab.errors import CbamlabError
from cbamlab.models import create_model
from cbamlab.models.profile import stage_table

TINY = ["model.name=resnet20", "train.epochs=1", "train.batch_size=256", "train.threads=1", "train.progress=false"]
SETS = [a for kv in TINY for a in ("--set", kv)]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bad") / "run"
    fit(load_config(None, TINY), out)
    return out


def call(argv) -> int:
    try:
        return main([str(a) for a in argv])
    except SystemExit as e:  # argparse's own usage errors
        return e.code


def one_error(capsys, argv, *words) -> str:
    """Run the command; it must exit 2 with exactly one `error:` line on stderr and no traceback."""
    assert call(argv) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in err, err
    for w in words:
        assert w in errors[0], errors[0]
    return errors[0]


def png_header(path: Path, width: int, height: int) -> Path:
    """A PNG file that claims `width` x `height` grey pixels (its header only: PIL's size check reads no more)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))
    return path


def latin1(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes("seed: 1\nmodel:\n  name: r\xe9snet20\n".encode("latin-1"))
    return path


class FullDisk:
    """A file whose writes fail with ENOSPC once `room` bytes are in it (a full disk, simulated)."""

    def __init__(self, f, room: int):
        self.f, self.room = f, room

    def write(self, data):
        if self.f.tell() >= self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return self.f.write(data)

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


# --------------------------------------------------------------------------------------- config values and files

@pytest.mark.parametrize("override, words", [
    ("seed=99999999999999999999", ["seed=", "0..2^63-1"]),
    ("seed=-1", ["seed=", "0..2^63-1"]),
    ("optim.lr=1e308", ["optim.lr=", "<= 10"]),
    ("optim.lr=inf", ["optim.lr=", "finite"]),
    ("optim.lr=nan", ["optim.lr=", "finite"]),
    ("optim.weight_decay=inf", ["optim.weight_decay=", "finite"]),
    ("optim.weight_decay=2", ["optim.weight_decay=", "<= 1"]),
    ("optim.eps=inf", ["optim.eps=", "finite"]),
    ("train.grad_clip=inf", ["train.grad_clip=", "finite"]),
    ("train.time_budget_min=0", ["train.time_budget_min", "minutes > 0"]),
    ("train.time_budget_min=inf", ["train.time_budget_min=", "finite"]),
    ("optim.betas=[0.9, .nan]", ["optim.betas=", "finite"]),
    ("model.attn_impl=fast", ["model.attn_impl", "'fast'", "auto, native, reference"]),
    ("model.attn_impl=3", ["model.attn_impl", "auto, native, reference"]),
])

def test_config_values_out_of_range(capsys, override, words):
    one_error(capsys, ["train", "--set", override, "--print-config"], *words)


def test_config_bounds_are_inclusive(capsys):
    top = ["seed=9223372036854775807", "optim.lr=10", "optim.weight_decay=1"]
    assert call(["train", *[a for kv in top for a in ("--set", kv)], "--print-config"]) == 0
    assert "seed: 9223372036854775807" in capsys.readouterr().out


def test_non_utf8_config_file(tmp_path, capsys):
    one_error(capsys, ["train", "-c", latin1(tmp_path / "c.yaml"), "--print-config"], "c.yaml", "not UTF-8",
              "0xe9")


@pytest.mark.parametrize("command", [["train", "--resume", "--out", "{run}", "-q"], ["report", "{run}"],
                                     ["eval", "--run", "{run}"]])
def test_non_utf8_config_inside_a_run_folder(tmp_path, capsys, command):
    run = tmp_path / "run"
    latin1(run / "config.yaml")
    (run / "metrics.csv").write_text("epoch\n1\n")
    before = {p: p.read_bytes() for p in run.iterdir()}
    one_error(capsys, [a.format(run=run) for a in command], "config.yaml", "not UTF-8")
    assert {p: p.read_bytes() for p in run.iterdir()} == before


# --------------------------------------------------------------------------------------- paths

@pytest.mark.parametrize("command", ["train", "compare"])
def test_out_under_a_regular_file(tmp_path, capsys, command):
    (tmp_path / "afile").write_text("mine")
    extra = ["--set", "compare.seeds=1", "--no-report"] if command == "compare" else SETS
    one_error(capsys, [command, "--out", tmp_path / "afile" / "run", *extra, "-q"], "afile", "not a folder")
    assert (tmp_path / "afile").read_text() == "mine"


def test_export_out_under_a_file_or_a_folder(run, tmp_path, capsys):
    (tmp_path / "afile").write_text("mine")
    one_error(capsys, ["export", "--run", run, "--format", "torchscript", "--out", tmp_path / "afile" / "m.pt"],
              "afile", "not a folder")
    one_error(capsys, ["export", "--run", run, "--format", "torchscript", "--out", tmp_path], "is a folder",
              "model.pt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


@pytest.mark.parametrize("atol", ["-1", "nan", "inf", "x"])
def test_export_atol_must_be_finite_and_not_negative(run, tmp_path, capsys, atol):
    one_error(capsys, ["export", "--run", run, "--format", "onnx", "--atol", atol, "--out", tmp_path / "m.onnx"],
              "--atol")
    assert not (tmp_path / "m.onnx").exists()


def refuse_writes_under(monkeypatch, root: Path, err: int) -> None:
    """Simulate a read-only (EROFS) or forbidden (EACCES) folder: creating a file or folder under `root` fails.
    The tests run as root, whom chmod does not stop, so os.open and os.mkdir are patched instead."""
    real_open, real_mkdir, root = os.open, os.mkdir, os.path.abspath(root)

    def under(path) -> bool:
        p = os.path.abspath(os.fspath(path))
        return p == root or p.startswith(root + os.sep)

    def fake_open(path, flags, mode=0o777, *, dir_fd=None):
        if flags & (os.O_CREAT | os.O_WRONLY | os.O_RDWR) and under(path):
            raise OSError(err, os.strerror(err), os.fspath(path))
        return real_open(path, flags, mode, dir_fd=dir_fd)

    def fake_mkdir(path, mode=0o777, *, dir_fd=None):
        if under(path):
            raise OSError(err, os.strerror(err), os.fspath(path))
        return real_mkdir(path, mode, dir_fd=dir_fd)

    monkeypatch.setattr(os, "open", fake_open)
    monkeypatch.setattr(os, "mkdir", fake_mkdir)


@pytest.mark.parametrize("err, words", [(errno.EROFS, "read-only file system"), (errno.EACCES, "permission denied")])
def test_train_into_a_read_only_folder(tmp_path, monkeypatch, capsys, err, words):
    """EROFS / EACCES simulated (see refuse_writes_under): tests run as root, so chmod would not stop them."""
    ro = tmp_path / "ro"
    ro.mkdir()
    refuse_writes_under(monkeypatch, ro, err)
    one_error(capsys, ["train", "--out", ro / "run", *SETS, "-q"], str(ro), words)
    assert list(ro.iterdir()) == []


def test_export_into_a_read_only_folder(run, tmp_path, monkeypatch, capsys):
    """EROFS simulated (see refuse_writes_under): tests run as root, so chmod would not stop them."""
    ro = tmp_path / "ro"
    ro.mkdir()
    refuse_writes_under(monkeypatch, ro, errno.EROFS)
    one_error(capsys, ["export", "--run", run, "--format", "torchscript", "--out", ro / "m.pt"],
              f"{ro / 'm.pt'}: read-only file system")
    assert list(ro.iterdir()) == []


def test_disk_full_during_a_checkpoint_write(tmp_path, monkeypatch, capsys):
    """The state file's write fails with ENOSPC half-way (a patched write): one error line naming the file, its
    temp file removed, no claim left, and nothing else in checkpoints/ (the weights are written after it)."""
    real_fdopen = os.fdopen

    def fdopen(fd, *args, **kw):
        f = real_fdopen(fd, *args, **kw)
        return FullDisk(f, room=1001) if ".last.state.pt." in os.readlink(f"/proc/self/fd/{fd}") else f

    monkeypatch.setattr(os, "fdopen", fdopen)
    out = tmp_path / "run"
    one_error(capsys, ["train", "--out", out, *SETS, "-q"], "no space left on the device",
              str(out / "checkpoints" / "last.state.pt"), "--resume")
    assert list((out / "checkpoints").iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no claim file beside it


def test_torch_save_reports_the_os_error_not_torchs_zip_writer(tmp_path, monkeypatch):
    """torch.save turns a failed write into RuntimeError("unexpected pos ..."); _io.torch_save gives the OSError."""
    real_fdopen = os.fdopen

    monkeypatch.setattr(os, "fdopen", lambda fd, *a, **kw: FullDisk(real_fdopen(fd, *a, **kw), room=0))
    with pytest.raises(OSError) as e:
        _io.torch_save(tmp_path / "s.pt", {"w": torch.zeros(1000)})
    assert e.value.errno == errno.ENOSPC and e.value.filename == str(tmp_path / "s.pt")
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------------------- images and models

def test_predict_takes_a_folder_of_images(run, tmp_path, capsys):
    folder = tmp_path / "imgs"
    (folder / "sub").mkdir(parents=True)
    for name in ("b.png", "a.jpg", "sub/c.png", ".hidden.png"):
        Image.new("L", (8, 8), 200).save(folder / name)
    (folder / "notes.txt").write_text("not an image")
    assert call(["predict", "--run", run, "-k", "2", folder]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split(": ")[0] for line in lines] == [str(folder / n) for n in ("a.jpg", "b.png", "sub/c.png")]
    empty = tmp_path / "empty"
    empty.mkdir()
    one_error(capsys, ["predict", "--run", run, empty], "empty", "no image files")


def test_predict_refuses_an_image_over_the_size_limit(run, tmp_path, capsys):
    big = png_header(tmp_path / "big.png", 20000, 20000)
    one_error(capsys, ["predict", "--run", run, big], "big.png", "400,000,000 pixels",
              f"{_io.MAX_IMAGE_PIXELS:,}")


def test_predict_logs_a_large_image_instead_of_pils_warning(run, tmp_path, capsys, monkeypatch):
    """An image over LARGE_IMAGE_PIXELS (lowered here to keep the file small) is read, with one log line."""
    Image.new("L", (30, 30), 100).save(tmp_path / "large.png")
    monkeypatch.setattr(_io, "LARGE_IMAGE_PIXELS", 500)
    assert call(["predict", "--run", run, tmp_path / "large.png"]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith(f"{tmp_path / 'large.png'}: ")
    assert "a large image (900 pixels, over 500)" in captured.err
    assert "DecompressionBombWarning" not in captured.err


def test_image_size_limits_are_pils_and_restored():
    before = Image.MAX_IMAGE_PIXELS
    assert _io.MAX_IMAGE_PIXELS == 2 * _io.LARGE_IMAGE_PIXELS == 178_956_970
    with _io.image_size_guard("x"):
        assert Image.MAX_IMAGE_PIXELS == _io.LARGE_IMAGE_PIXELS
    assert Image.MAX_IMAGE_PIXELS == before


def test_summary_of_a_huge_input_needs_no_memory(capsys):
    assert call(["summary", "resnet18", "--input-size", "3x100000x100000", "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["input_size"] == [3, 100000, 100000] and s["params"] == 11_689_512
    assert [st["output_shape"] for st in s["stages"]][-2:] == [[512, 3125, 3125], [1000]]


def test_an_allocation_that_fails_is_a_clear_error(monkeypatch, one_thread):
    model = create_model("resnet20", num_classes=10)

    def zeros(*size, **kw):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory: you "
                           "tried to allocate 120000000000 bytes. Error code 12 (Cannot allocate memory)")

    monkeypatch.setattr(torch, "zeros", zeros)
    with pytest.raises(CbamlabError, match=r"input size 3x100000x100000 needs more memory than is available "
                                           r"\(one tensor of 111.8 GiB\)"):
        stage_table(model, (3, 100000, 100000))
