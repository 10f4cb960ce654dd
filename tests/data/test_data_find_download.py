"""Finding data (explicit path, environment variable, standard places) and downloading it
from a loopback HTTP server with checksum verification."""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import threading
from pathlib import Path

import numpy as np
import pytest

from beyond_attention.data import DATA_ENV, DatasetError, find_dataset, load_dataset
from beyond_attention.data import downloads as download_mod
from beyond_attention.data import find as find_mod
from beyond_attention.data.downloads import DownloadSpec, RemoteFile


def idx_gz(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape)
    return gzip.compress(header + array.tobytes())


@pytest.fixture
def isolated(monkeypatch, tmp_path):
    """No environment variable, no repository data directory, no system datasets."""
    monkeypatch.delenv(DATA_ENV, raising=False)
    monkeypatch.setattr(find_mod, "repo_data_dir", lambda: tmp_path / "no-shared")
    roots = find_mod.standard_roots

    def no_system_roots():
        return [r for r in roots() if r != Path("/usr/share/datasets")]

    monkeypatch.setattr(find_mod, "standard_roots", no_system_roots)
    return tmp_path


@pytest.fixture
def served(tmp_path):
    """A small Fashion-MNIST-like file set served over HTTP on 127.0.0.1."""
    rng = np.random.default_rng(0)
    site = tmp_path / "site"
    site.mkdir()
    arrays = {
        "train-images-idx3-ubyte.gz": rng.integers(0, 256, (12, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte.gz": rng.integers(0, 10, 12, dtype=np.uint8),
        "t10k-images-idx3-ubyte.gz": rng.integers(0, 256, (5, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte.gz": rng.integers(0, 10, 5, dtype=np.uint8),
    }
    md5 = {}
    for name, arr in arrays.items():
        data = idx_gz(arr)
        (site / name).write_bytes(data)
        md5[name] = hashlib.md5(data).hexdigest()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/", md5, arrays
    server.shutdown()
    server.server_close()


def test_download_from_loopback_with_checksums(isolated, served, monkeypatch):
    url, md5, arrays = served
    spec = DownloadSpec((url,), tuple(RemoteFile(n, h) for n, h in md5.items()), ".")
    monkeypatch.setitem(download_mod.DOWNLOADS, "fashion-mnist", spec)
    cache = isolated / "cache"
    with pytest.raises(DatasetError, match="--download"):
        find_dataset(dataset="fashion-mnist", cache_dir=cache)
    src = find_dataset(dataset="fashion-mnist", download_ok=True, cache_dir=cache)
    assert src.kind == "idx" and src.name == "fashion-mnist"
    assert src.path == (cache / "datasets" / "fashion-mnist").resolve()
    train = src.load("train")
    assert np.array_equal(train.images[:, 0], arrays["train-images-idx3-ubyte.gz"])
    assert np.array_equal(train.labels, arrays["train-labels-idx1-ubyte.gz"])
    # found in the cache afterwards, with no download allowed
    again = find_dataset(dataset="fashion-mnist", cache_dir=cache)
    assert again.path == src.path


def test_download_checksum_mismatch_keeps_nothing(isolated, served, monkeypatch):
    url, md5, _ = served
    files = [RemoteFile(n, h) for n, h in md5.items()]
    files[0] = RemoteFile(files[0].name, "0" * 32)
    monkeypatch.setitem(download_mod.DOWNLOADS, "fashion-mnist",
                        DownloadSpec((url,), tuple(files), "."))
    cache = isolated / "cache"
    expected = f"checksum mismatch for {files[0].name}.*expected 0{{32}}"
    with pytest.raises(DatasetError, match=expected):
        find_dataset(dataset="fashion-mnist", download_ok=True, cache_dir=cache)
    target = cache / "datasets" / "fashion-mnist"
    assert list(target.iterdir()) == []  # neither the file nor a .part is left


def test_download_unreachable_mirror_names_file(isolated, monkeypatch):
    monkeypatch.setitem(download_mod.DOWNLOADS, "mnist", DownloadSpec(
        ("http://127.0.0.1:9/",), (RemoteFile("train-images-idx3-ubyte.gz", "0" * 32),), "."))
    with pytest.raises(DatasetError, match="could not download train-images-idx3-ubyte.gz"):
        download_mod.download("mnist", isolated / "cache", timeout=2, quiet=True)


def test_environment_variable_and_roots(isolated, monkeypatch):
    fm = isolated / "data" / "fashion-mnist"
    fm.mkdir(parents=True)
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"):
        arr = np.zeros((3, 28, 28) if "images" in name else (3,), np.uint8)
        (fm / name).write_bytes(idx_gz(arr))
    # the variable naming a directory of datasets
    monkeypatch.setenv(DATA_ENV, str(isolated / "data"))
    src = find_dataset()
    assert (src.kind, src.name, src.path) == ("idx", "fashion-mnist", fm)
    # the variable naming one dataset
    monkeypatch.setenv(DATA_ENV, str(fm))
    assert find_dataset().path == fm
    assert len(load_dataset(split="train")) == 3
    monkeypatch.setenv(DATA_ENV, str(isolated / "missing"))
    with pytest.raises(DatasetError, match=f"{DATA_ENV}=.*does not exist"):
        find_dataset()


def test_nothing_found_says_what_to_do(isolated):
    with pytest.raises(DatasetError) as e:
        find_dataset(cache_dir=isolated / "cache")
    msg = str(e.value)
    assert "--data PATH" in msg and DATA_ENV in msg and "--download" in msg


def test_explicit_path_errors(isolated):
    with pytest.raises(DatasetError, match="does not exist"):
        find_dataset(isolated / "nope")
    (isolated / "file.bin").write_bytes(b"x")
    with pytest.raises(DatasetError, match="not a dataset"):
        find_dataset(isolated / "file.bin")
    with pytest.raises(ValueError, match="dataset must be one of"):
        find_dataset(isolated, dataset="imagenet")


def test_default_dataset_is_found_in_the_repository_data(monkeypatch):
    """Without arguments the default dataset comes from shared/data beside the checkout
    (CIFAR-10 as a JPEG tar there), offline."""
    monkeypatch.delenv(DATA_ENV, raising=False)
    shared = find_mod.repo_data_dir()
    if not (shared / "cifar10-jpg.tar.gz").exists():
        pytest.skip("no shared data beside the checkout")
    src = find_dataset()
    assert (src.kind, src.name) == ("folder", "cifar10")
