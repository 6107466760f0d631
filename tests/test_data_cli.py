"""`cbamlab datasets`: the listing, one dataset read in full, and errors as one line with exit status 2."""
import json
import subprocess
import sys

from cbamlab.cli import main


def test_listing_shows_every_dataset_and_where_it_is(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("CBAMLAB_DATA", raising=False)
    assert main(["datasets", "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for name in ("digits", "mnist", "fashion_mnist", "cifar10", "cifar100", "imagefolder", "synthetic"):
        assert f"\n{name} " in out
    assert "not found; put the four IDX files" in out and "1x28x28" in out and "3x32x32" in out
    assert main(["datasets", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["digits"]["found"].startswith("scikit-learn") and rows["cifar100"]["classes"] == 100


def test_one_dataset_is_read(capsys):
    assert main(["datasets", "digits", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert (d["train"], d["test"], d["classes"], d["shape"]) == (1438, 359, 10, "1x8x8")
    assert 0.2 < d["mean"][0] < 0.4


def test_errors_are_one_line_exit_2(capsys, tmp_path):
    assert main(["datasets", "digitz"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown dataset 'digitz' (did you mean digits?)") and err.count("\n") == 1
    (tmp_path / "train-images-idx3-ubyte").write_bytes(b"\x08\x08\x08\x08")
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x00")
    assert main(["datasets", "mnist", "--root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "error: " in err and "bad magic number 08080808" in err and err.count("\n") == 1


def test_subprocess_missing_imagefolder(tmp_path):
    r = subprocess.run([sys.executable, "-m", "cbamlab", "datasets", "imagefolder", "--root", str(tmp_path)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.strip() == f"error: no such folder: {tmp_path / 'train'}"


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_refused_pickle_from_the_cli(capsys, tmp_path):
    import pickle

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    (folder / "data_batch_1").write_bytes(b"")
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": _Evil(tmp_path / "ran")}))
    assert main(["datasets", "cifar10", "--root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "refused to import" in err and err.count("\n") == 1
    assert not (tmp_path / "ran").exists()
