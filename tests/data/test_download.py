"""Downloads of the original CIFAR archive and Fashion-MNIST IDX files, against a local
HTTP server on 127.0.0.1 (no test touches any other address)."""

import gzip
import hashlib
import threading
import time

import numpy as np
import pytest

from lgla_jax.data import download
from lgla_jax.data import sources
from helpers import config_of, cifar10_archive


def test_wrong_digest_is_refused_and_removed(server, tmp_path):
  body = cifar10_archive(tmp_path)
  server("cifar10", 0, body, md5="0" * 32)
  with pytest.raises(download.DownloadError) as e:
    download.ensure("cifar10", str(tmp_path / "d"))
  message = str(e.value)
  assert "cifar-10-python.tar.gz" in message and "0" * 32 in message
  assert hashlib.md5(body).hexdigest() in message and "deleted" in message
  assert [p.name for p in (tmp_path / "d").iterdir()] == ["cifar-10-python.tar.gz.lock"]


def test_connection_closed_mid_file_leaves_no_file(server, tmp_path):
  server("cifar100", 0, b"x" * 300_000, mode="truncate")
  with pytest.raises(download.DownloadError, match="could not download"):
    download.ensure("cifar100", str(tmp_path / "d"))
  assert [p.name for p in (tmp_path / "d").iterdir()] == ["cifar-100-python.tar.gz.lock"]


def test_unreachable_or_silent_server_fails_fast_with_instructions(server, tmp_path, monkeypatch):
  remote = download.FILES["cifar100"][0]
  download.FILES["cifar100"][0] = download.Remote(remote.filename, "http://127.0.0.1:9/c.tgz", remote.md5)
  t0 = time.time()
  with pytest.raises(download.DownloadError) as e:
    download.ensure("cifar100", str(tmp_path / "d"))
  assert time.time() - t0 < 30
  message = str(e.value)
  assert "http://127.0.0.1:9/c.tgz" in message and str(tmp_path / "d" / remote.filename) in message
  assert "by hand" in message and "data_dir" in message
  monkeypatch.setattr(download, "TIMEOUT_S", 1.0)
  server("fashion_mnist", 0, b"x" * 1000, mode="hang")
  t0 = time.time()
  with pytest.raises(download.DownloadError, match="timed out"):
    download.ensure("fashion_mnist", str(tmp_path / "f"))
  assert time.time() - t0 < 4
  assert not list((tmp_path / "f").glob("*.gz"))


def test_concurrent_fetches_download_once(server, tmp_path):
  remote = server("cifar100", 0, b"y" * 2_000_000)
  paths = []
  threads = [threading.Thread(target=lambda: paths.append(download.fetch(remote, str(tmp_path), log=lambda s: None)))
             for _ in range(3)]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  assert len(server.handler.requests) == 1 and len(set(paths)) == 1 and len(paths) == 3


def _idx(array: np.ndarray) -> bytes:
  header = bytes([0, 0, 8, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
  return gzip.compress(header + array.astype(np.uint8).tobytes())


def test_fashion_mnist_idx_files_download_and_load(server, tmp_path):
  rng = np.random.default_rng(0)
  labels = np.repeat(np.arange(10), 7)
  arrays = {"train-images-idx3-ubyte.gz": rng.integers(0, 256, (70, 28, 28)),
            "train-labels-idx1-ubyte.gz": labels,
            "t10k-images-idx3-ubyte.gz": rng.integers(0, 256, (20, 28, 28)),
            "t10k-labels-idx1-ubyte.gz": np.arange(20) % 10}
  for i, remote in enumerate(list(download.FILES["fashion_mnist"])):
    server("fashion_mnist", i, _idx(arrays[remote.filename]))
  c = config_of("fmnist_lt_ir100", **{"dataset.data_dir": str(tmp_path / "fm"),
                                      "dataset.max_per_class": 7, "dataset.imbalance_factor": 0.5})
  splits = sources.load(c.dataset)
  assert splits.train.images.shape[1:] == (32, 32, 3) and len(splits.test.labels) == 20
  assert len(server.handler.requests) == 4
