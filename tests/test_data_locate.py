"""locate.py: an explicit data.root is the only place looked at; without one, $CBAMLAB_DATA, the system folder and
the cache in that order; downloads go through torchvision; the "how to get it" text lives once; one reader
signature for every dataset."""
import inspect
from pathlib import Path

import pytest

from cbamlab.data import DATASETS, get_spec, load_dataset, locate
from cbamlab.data.locate import SOURCES, cache_dir, places
from cbamlab.data.registry import reader
from cbamlab.errors import DataError
from test_data_cifar import write_cifar10
from test_data_idx import write_mnist


@pytest.fixture(autouse=True)
def _places(monkeypatch, tmp_path):
    monkeypatch.delenv("CBAMLAB_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


@pytest.fixture
def system_copy(tmp_path, monkeypatch):
    """A Fashion-MNIST 'system package' folder holding a valid copy (as Debian's dataset-fashion-mnist does)."""
    folder = tmp_path / "usr-share" / "fashion-mnist"
    write_mnist(folder, n_train=30, n_test=10)
    monkeypatch.setitem(SOURCES, "fashion_mnist", SOURCES["fashion_mnist"].__class__(
        **{**SOURCES["fashion_mnist"].__dict__, "system": str(folder)}))
    return folder


def test_a_mistyped_root_is_an_error_not_another_copy(tmp_path, monkeypatch, system_copy):
    write_mnist(tmp_path / "env" / "fashion_mnist", n_train=20)
    write_mnist(cache_dir("fashion_mnist"), n_train=40)
    monkeypatch.setenv("CBAMLAB_DATA", str(tmp_path / "env"))
    typo = tmp_path / "dtaa"
    with pytest.raises(DataError) as e:
        load_dataset("fashion_mnist", typo)
    msg = str(e.value)
    assert msg.startswith(f"fashion_mnist not found in data.root={typo}: expected train-images-idx3-ubyte[.gz], "
                          "train-labels-idx1-ubyte[.gz], t10k-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz] in "
                          f"{typo} or {typo}/FashionMNIST/raw or {typo / 'fashion_mnist'}")
    assert "to get it: apt install dataset-fashion-mnist" in msg and "\n" not in msg
    for elsewhere in (tmp_path / "env", system_copy, cache_dir("fashion_mnist")):
        assert str(elsewhere) not in msg
    assert locate("fashion_mnist", typo) == (None, [str(p) for p in places("fashion_mnist", typo)])
    # without a root: $CBAMLAB_DATA first, then the system folder, then the cache
    assert len(load_dataset("fashion_mnist", include_test=False).train) == 20
    monkeypatch.delenv("CBAMLAB_DATA")
    b = load_dataset("fashion_mnist", include_test=False)
    assert len(b.train) == 30 and b.info.source == str(system_copy)
    system_copy.rename(tmp_path / "uninstalled")
    b = load_dataset("fashion_mnist", include_test=False)
    assert len(b.train) == 40 and b.info.source == str(cache_dir("fashion_mnist"))


def test_a_root_with_the_files_in_a_known_layout_is_used(tmp_path):
    write_mnist(tmp_path / "r" / "mnist" / "MNIST" / "raw", n_train=10, n_test=4)
    assert load_dataset("mnist", tmp_path / "r").info.source == str(tmp_path / "r" / "mnist" / "MNIST" / "raw")


def test_cifar_root_error_lists_its_files(tmp_path, monkeypatch):
    write_cifar10(tmp_path / "env" / "cifar10")
    monkeypatch.setenv("CBAMLAB_DATA", str(tmp_path / "env"))
    assert len(load_dataset("cifar10", include_test=False).train) == 12
    with pytest.raises(DataError, match=r"cifar10 not found in data.root=.*: expected data_batch_1 \.\.\. "
                                        r"data_batch_5, test_batch, batches.meta in .*unpack cifar-10-python"):
        load_dataset("cifar10", tmp_path / "elsewhere")


def test_without_a_root_the_error_lists_the_places_and_what_is_unset(tmp_path):
    with pytest.raises(DataError) as e:
        load_dataset("mnist")
    msg = str(e.value)
    assert msg.startswith("mnist not found; looked in data.root (not set), $CBAMLAB_DATA (not set), "
                          f"{cache_dir('mnist')}, {cache_dir('mnist') / 'MNIST' / 'raw'}; to get it: put the four")


def test_download_without_a_root_goes_to_the_cache(tmp_path, monkeypatch):
    import torchvision.datasets as tvd

    calls = []

    class FakeFashion:  # stands in for the network: leaves what torchvision's download leaves
        def __init__(self, root, train, download):
            calls.append((root, train, download))
            write_mnist(Path(root) / "FashionMNIST" / "raw", n_train=8, n_test=4)

    monkeypatch.setattr(tvd, "FashionMNIST", FakeFashion)
    monkeypatch.setitem(SOURCES, "fashion_mnist", SOURCES["fashion_mnist"].__class__(
        **{**SOURCES["fashion_mnist"].__dict__, "system": str(tmp_path / "not-installed")}))
    b = load_dataset("fashion_mnist", download=True)
    assert calls == [(str(cache_dir("fashion_mnist")), True, True), (str(cache_dir("fashion_mnist")), False, True)]
    assert b.info.source == str(cache_dir("fashion_mnist") / "FashionMNIST" / "raw") and len(b.test) == 4


def test_failed_download_is_one_line(tmp_path, monkeypatch):
    import torchvision.datasets as tvd

    class Offline:
        def __init__(self, root, train, download):
            raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nTried https://...")

    monkeypatch.setattr(tvd, "MNIST", Offline)
    with pytest.raises(DataError, match=r"^could not download mnist to .*/r: Error downloading [^\n]*$"):
        load_dataset("mnist", tmp_path / "r", download=True)


def test_imagefolder_needs_a_root():
    with pytest.raises(DataError, match="imagefolder needs data.root: set data.root to a folder with train/"):
        load_dataset("imagefolder")
    assert locate("imagefolder") == (None, ["data.root (not set)"])


def test_how_to_get_lives_once():
    assert set(SOURCES) == set(DATASETS)
    for name, spec in DATASETS.items():
        assert spec.how_to_get == SOURCES[name].how_to_get
        mod = reader(spec)
        assert not hasattr(mod, "HOW_TO_GET") and not hasattr(mod, "locate")  # readers only read
    assert get_spec("fashion_mnist").how_to_get.startswith("apt install dataset-fashion-mnist")


def test_one_reader_signature():
    for spec in DATASETS.values():
        mod = reader(spec)
        params = list(inspect.signature(mod.read).parameters.values())
        assert len([p for p in params if p.kind is p.POSITIONAL_OR_KEYWORD]) == 2 and params[1].name == "name"
        assert [p.name for p in params if p.kind is p.KEYWORD_ONLY][0] == "include_test", spec.name
        if SOURCES[spec.name].kind == "files":
            assert mod.expected_files(spec.name) and not mod.present(Path("/nonexistent"), spec.name)
