"""Atomic writes: the file gets the mode a plain write would give it (umask, or the replaced file's), not 0600."""
import os
import stat

import pytest

from cbamlab import _io


@pytest.fixture
def umask():
    old = os.umask(0o022)
    try:
        yield os.umask
    finally:
        os.umask(old)


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.skipif(os.name != "posix", reason="permission bits are POSIX")
@pytest.mark.parametrize("mask,want", [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600), (0o002, 0o664)])
def test_new_files_get_the_umask_mode(tmp_path, umask, mask, want):
    umask(mask)
    writes = {"a.json": lambda p: _io.write_json(p, {"top1": 0.9}), "b.txt": lambda p: _io.write_text(p, "x"),
              "c.bin": lambda p: _io.write_bytes(p, b"\x00"), "d.pt": lambda p: _io.torch_save(p, {})}
    for name, write in writes.items():
        write(tmp_path / name)
        assert mode(tmp_path / name) == want, name
    open(tmp_path / "plain.txt", "w").close()  # what the atomic write imitates
    assert mode(tmp_path / "plain.txt") == want
    assert _io.file_mode(tmp_path / "new.json") == want
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


@pytest.mark.skipif(os.name != "posix", reason="permission bits are POSIX")
def test_replacing_a_file_keeps_its_mode(tmp_path, umask):
    umask(0o022)
    path = tmp_path / "summary.json"
    _io.write_json(path, {"status": "running"})
    os.chmod(path, 0o640)
    _io.write_json(path, {"status": "complete"})
    assert mode(path) == 0o640 and '"complete"' in path.read_text()
