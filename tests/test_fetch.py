"""Downloading data sets (fetch_fashion_mnist, fetch_mnist) against a local HTTP server.

Each test serves small IDX files made here from 127.0.0.1 and points the fetcher at them
(``datasets._Remote`` specs); a guard fails any test that would open another URL, so none
reaches the internet.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import http.server
import os
import threading
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED_FASHION_MNIST
from numpy.testing import assert_array_equal

from fastsoftmax import datasets
from fastsoftmax.datasets import (
    DATA_ENV_VAR,
    DownloadError,
    RemoteFile,
    fetch_fashion_mnist,
    fetch_mnist,
    find_fashion_mnist,
    get_data_home,
    load_fashion_mnist,
)

NAMES = tuple(stem + ".gz" for stem in datasets.FASHION_MNIST_FILES)


def idx_gz(array: np.ndarray) -> bytes:
    """A gzipped IDX file of uint8 ``array`` (type code 0x08)."""
    header = bytes([0, 0, 0x08, array.ndim]) + np.array(array.shape, ">u4").tobytes()
    return gzip.compress(header + array.tobytes(), mtime=0)


def toy_arrays() -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(0)
    return (
        rng.integers(0, 256, (5, 4, 4), dtype=np.uint8),
        rng.integers(0, 10, 5, dtype=np.uint8),
        rng.integers(0, 256, (3, 4, 4), dtype=np.uint8),
        rng.integers(0, 10, 3, dtype=np.uint8),
    )


TOY = dict(zip(NAMES, map(idx_gz, toy_arrays()), strict=True))


class Server:
    """An HTTP server on 127.0.0.1 serving ``files`` (name -> bytes) and counting requests.

    A name in ``truncate`` is sent cut in half after announcing its full length; a name not in
    ``files`` gets a 404.
    """

    def __init__(self, files: dict[str, bytes]):
        self.files = dict(files)
        self.truncate: set[str] = set()
        self.requests: list[str] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                name = self.path.lstrip("/")
                server.requests.append(name)
                body = server.files.get(name)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[: len(body) // 2] if name in server.truncate else body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.running = True

    def stop(self) -> None:
        if self.running:
            self.running = False
            self.httpd.shutdown()
            self.httpd.server_close()
            self.thread.join()


@pytest.fixture(autouse=True)
def local_network_only(monkeypatch):
    """Fail any URL other than the test server's; record the timeout each call passes."""
    real_urlopen = urllib.request.urlopen
    timeouts = []

    def urlopen(url, *args, timeout=None, **kwargs):
        assert str(url).startswith("http://127.0.0.1:"), f"a test tried to open {url}"
        timeouts.append(timeout)
        return real_urlopen(url, *args, timeout=timeout, **kwargs)

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    return timeouts


@pytest.fixture(autouse=True)
def no_data_env(monkeypatch, tmp_path):
    """No $FASTSOFTMAX_DATA, and a home folder of our own (for ~/fastsoftmax_data)."""
    monkeypatch.delenv(DATA_ENV_VAR, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


@pytest.fixture
def server():
    server = Server(TOY)
    yield server
    server.stop()


def spec_for(server: Server, folder: str = "toy", **sha256: str) -> datasets._Remote:
    """A spec of the four toy files at ``server``, with the official checksums of TOY (or
    ``sha256[name with - for _ and no .gz]`` where given)."""
    files = []
    for name in NAMES:
        key = name.removesuffix(".gz").replace("-", "_")
        digest = sha256.get(key, hashlib.sha256(TOY[name]).hexdigest())
        files.append(RemoteFile(name, digest, len(TOY[name])))
    return datasets._Remote(folder, server.url, tuple(files), "Toy", "fetch_toy")


@pytest.fixture
def parsed(monkeypatch) -> list[str]:
    """The sources ``datasets._parse_idx`` is called on, in order."""
    calls = []
    real = datasets._parse_idx

    def spy(data, source):
        calls.append(str(source))
        return real(data, source)

    monkeypatch.setattr(datasets, "_parse_idx", spy)
    return calls


def assert_toy(result, dtype=np.float32) -> None:
    X_train, y_train, X_test, y_test = result
    images_train, labels_train, images_test, labels_test = toy_arrays()
    assert X_train.shape == (5, 16) and X_test.shape == (3, 16)
    assert X_train.dtype == dtype and X_test.dtype == dtype
    np.testing.assert_allclose(X_train, images_train.reshape(5, 16) / 255, rtol=1e-6)
    np.testing.assert_allclose(X_test, images_test.reshape(3, 16) / 255, rtol=1e-6)
    assert_array_equal(y_train, labels_train)
    assert_array_equal(y_test, labels_test)


def listing(folder: Path) -> list[str]:
    """Every entry of ``folder``, hidden ones (temporary downloads) included."""
    return sorted(os.listdir(folder))


# -- downloads ---------------------------------------------------------------------------------


def test_first_download_writes_exactly_the_four_files_and_parses(
    server, tmp_path, capsys, local_network_only
):
    assert_toy(datasets._fetch(spec_for(server), tmp_path, True, np.float32))
    assert listing(tmp_path / "toy") == sorted(NAMES)
    for name in NAMES:
        assert (tmp_path / "toy" / name).read_bytes() == TOY[name]
    assert sorted(server.requests) == sorted(NAMES)
    # One line on stderr per download, naming the URL; nothing on stdout.
    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 4
    assert all(server.url in line for line in err.splitlines())
    # Every request had a finite timeout.
    assert local_network_only == [datasets.DOWNLOAD_TIMEOUT] * 4
    assert 0 < datasets.DOWNLOAD_TIMEOUT < float("inf")


def test_second_call_reads_the_cache_without_the_network(server, tmp_path, capsys):
    spec = spec_for(server)
    datasets._fetch(spec, tmp_path, True, np.float32)
    capsys.readouterr()
    server.stop()  # any download now fails
    assert_toy(datasets._fetch(spec, tmp_path, True, np.float64), np.float64)
    assert_toy(datasets._fetch(spec, tmp_path, False, np.float32))
    assert len(server.requests) == 4
    assert capsys.readouterr() == ("", "")  # quiet when cached


def test_only_the_missing_files_are_downloaded(server, tmp_path):
    spec = spec_for(server)
    datasets._fetch(spec, tmp_path, True, np.float32)
    (tmp_path / "toy" / NAMES[2]).unlink()
    server.requests.clear()
    assert_toy(datasets._fetch(spec, tmp_path, True, np.float32))
    assert server.requests == [NAMES[2]]


def test_a_wrong_checksum_is_refused_before_parsing_and_removed(server, tmp_path, parsed):
    # The server's train labels differ from the official ones by one byte (same length).
    damaged = bytearray(TOY[NAMES[1]])
    damaged[-9] ^= 0xFF
    server.files[NAMES[1]] = bytes(damaged)
    with pytest.raises(DownloadError, match="SHA-256") as error:
        datasets._fetch(spec_for(server), tmp_path, True, np.float32)
    assert NAMES[1] in str(error.value) and server.url + NAMES[1] in str(error.value)
    assert parsed == []
    # The file before it was good and stays; the bad one never got its name; no temporary left.
    assert listing(tmp_path / "toy") == [NAMES[0]]
    # Once the server is fixed, the next call downloads what is missing.
    server.files[NAMES[1]] = TOY[NAMES[1]]
    server.requests.clear()
    assert_toy(datasets._fetch(spec_for(server), tmp_path, True, np.float32))
    assert server.requests == list(NAMES[1:])


def test_a_truncated_download_leaves_no_file(server, tmp_path, parsed):
    server.truncate.add(NAMES[0])
    with pytest.raises(DownloadError, match="truncated") as error:
        datasets._fetch(spec_for(server), tmp_path, True, np.float32)
    assert server.url + NAMES[0] in str(error.value)
    assert listing(tmp_path / "toy") == [] and parsed == []


def test_a_size_other_than_the_expected_one_is_refused(server, tmp_path):
    server.files[NAMES[3]] = TOY[NAMES[3]] + b"\0"
    with pytest.raises(DownloadError, match=f"{NAMES[3]} from .* holds"):
        datasets._fetch(spec_for(server), tmp_path, True, np.float32)
    assert NAMES[3] not in listing(tmp_path / "toy")


def test_http_404_names_the_file_and_url(server, tmp_path, parsed):
    del server.files[NAMES[2]]
    with pytest.raises(DownloadError, match="404") as error:
        datasets._fetch(spec_for(server), tmp_path, True, np.float32)
    assert server.url + NAMES[2] in str(error.value)
    assert listing(tmp_path / "toy") == sorted(NAMES[:2]) and parsed == []


def test_an_unreachable_server_is_a_download_error(server, tmp_path):
    spec = spec_for(server)
    server.stop()
    with pytest.raises(DownloadError, match=f"could not download {NAMES[0]} from {spec.base_url}"):
        datasets._fetch(spec, tmp_path, True, np.float32)
    assert listing(tmp_path / "toy") == []


def test_a_damaged_cached_file_is_removed_and_downloaded_again(server, tmp_path, parsed):
    spec = spec_for(server)
    datasets._fetch(spec, tmp_path, True, np.float32)
    cached = tmp_path / "toy" / NAMES[2]
    cached.write_bytes(TOY[NAMES[2]][:-10])  # e.g. a copy cut short
    parsed.clear()
    with pytest.raises(DownloadError, match=r"damaged.*removed it") as error:
        datasets._fetch(spec, tmp_path, True, np.float32)
    assert str(cached) in str(error.value) and parsed == []
    assert not cached.exists()
    server.requests.clear()
    assert_toy(datasets._fetch(spec, tmp_path, True, np.float32))
    assert server.requests == [NAMES[2]]


def test_without_download_a_missing_file_says_how_to_get_it(server, tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        datasets._fetch(spec_for(server), tmp_path, False, np.float32)
    message = str(error.value)
    assert "fastsoftmax.datasets.fetch_toy()" in message
    assert str(tmp_path / "toy") in message and NAMES[0] in message
    assert server.requests == []


# -- where the files go ------------------------------------------------------------------------


def test_get_data_home_prefers_the_argument_then_the_environment(tmp_path, monkeypatch):
    home = get_data_home()
    assert home == tmp_path / "home" / "fastsoftmax_data" and home.is_dir()
    monkeypatch.setenv(DATA_ENV_VAR, str(tmp_path / "from-env"))
    assert get_data_home() == tmp_path / "from-env" and (tmp_path / "from-env").is_dir()
    assert get_data_home(tmp_path / "given") == tmp_path / "given"
    assert get_data_home("~/x") == tmp_path / "home" / "x"


def test_the_environment_variable_is_honoured(server, tmp_path, monkeypatch):
    monkeypatch.setenv(DATA_ENV_VAR, str(tmp_path / "env"))
    assert_toy(datasets._fetch(spec_for(server), None, True, np.float32))
    assert listing(tmp_path / "env" / "toy") == sorted(NAMES)
    assert not (tmp_path / "home").exists()


def test_the_data_home_argument_is_honoured(server, tmp_path, monkeypatch):
    monkeypatch.setenv(DATA_ENV_VAR, str(tmp_path / "env"))
    assert_toy(datasets._fetch(spec_for(server), tmp_path / "given", True, np.float32))
    assert listing(tmp_path / "given" / "toy") == sorted(NAMES)
    assert not (tmp_path / "env").exists()


def test_the_default_is_fastsoftmax_data_in_the_home_folder(server, tmp_path):
    assert_toy(datasets._fetch(spec_for(server), None, True, np.float32))
    assert listing(tmp_path / "home" / "fastsoftmax_data" / "toy") == sorted(NAMES)


# -- the public functions ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fetch", "attribute", "folder"),
    [(fetch_fashion_mnist, "_FASHION_MNIST", "fashion-mnist"), (fetch_mnist, "_MNIST", "mnist")],
)
def test_public_fetchers_download_into_their_folder(
    server, tmp_path, monkeypatch, fetch, attribute, folder
):
    official = getattr(datasets, attribute)
    monkeypatch.setattr(datasets, attribute, dataclasses.replace(spec_for(server), folder=folder))
    with pytest.raises(FileNotFoundError, match=r"call fastsoftmax\.datasets\.fetch_toy\(\)"):
        fetch(tmp_path, download_if_missing=False)
    assert_toy(fetch(tmp_path))
    assert_toy(fetch(data_home=tmp_path, dtype=np.float64), np.float64)
    assert listing(tmp_path / folder) == sorted(NAMES)
    assert len(server.requests) == 4
    assert official.folder == folder


def test_load_fashion_mnist_finds_fetched_files_and_never_downloads(server, tmp_path, monkeypatch):
    monkeypatch.setattr(
        datasets, "_FASHION_MNIST", dataclasses.replace(spec_for(server), folder="fashion-mnist")
    )
    with pytest.raises(FileNotFoundError, match=r"fetch_fashion_mnist\(\)"):
        load_fashion_mnist()
    assert server.requests == []
    fetch_fashion_mnist()  # into ~/fastsoftmax_data
    assert find_fashion_mnist() == tmp_path / "home" / "fastsoftmax_data" / "fashion-mnist"
    assert_toy(load_fashion_mnist())
    assert len(server.requests) == 4


@pytest.mark.parametrize("spec", [datasets._FASHION_MNIST, datasets._MNIST], ids=lambda s: s.title)
def test_official_specs_are_complete(spec):
    assert [file.name for file in spec.files] == list(NAMES)
    assert all(len(file.sha256) == 64 and int(file.sha256, 16) >= 0 for file in spec.files)
    assert all(file.size and file.size > 0 for file in spec.files)
    assert spec.base_url.endswith("/") and spec.base_url.startswith(("http://", "https://"))
    assert spec.fetcher in datasets.__dict__


@pytest.mark.skipif(
    find_fashion_mnist(SHARED_FASHION_MNIST) is None, reason="no developers' Fashion-MNIST copy"
)
def test_the_official_checksums_match_the_real_files(tmp_path):
    # A data home whose fashion-mnist folder links to the developers' copy: fetching checks
    # every file against the official SHA-256 and must not download anything.
    (tmp_path / "fashion-mnist").mkdir()
    for name in NAMES:
        (tmp_path / "fashion-mnist" / name).symlink_to(SHARED_FASHION_MNIST / name)
    X_train, y_train, X_test, y_test = fetch_fashion_mnist(tmp_path, download_if_missing=False)
    assert_array_equal(np.bincount(y_train), np.full(10, 6000))
    assert X_train.shape == (60000, 784) and X_test.shape == (10000, 784)
    assert_array_equal(np.bincount(y_test), np.full(10, 1000))
