"""Data in a bucket (``dataset.data_dir=gs://...``, a fake-gcs-server on loopback): the
CIFAR archive, its extracted folder and IDX files read from the bucket equal the local
read; a missing file is fetched into the bucket (downloaded to a local temporary folder,
then uploaded whole) or, where it cannot be, named in one error."""

import gzip
import os

import numpy as np
import pytest

from helpers import cifar10_archive, make_cifar10_folder, make_cifar100_tarball, upload
from lgla_jax import errors
from lgla_jax.data import download, readers
from lgla_jax.storage import paths


def _same(a, b):
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x.images, y.images)
    np.testing.assert_array_equal(x.labels, y.labels)


def test_cifar_archives_and_folders_read_from_a_bucket_equal_the_local_read(gcs, tmp_path):
  (tmp_path / "c100").mkdir()
  make_cifar100_tarball(tmp_path / "c100")
  make_cifar10_folder(tmp_path / "c10", per_class=3)
  upload(tmp_path / "c100", f"{gcs}/c100")
  upload(tmp_path / "c10", f"{gcs}/c10")
  (tmp_path / "c10tar").mkdir()
  (tmp_path / "c10tar" / "cifar-10-python.tar.gz").write_bytes(cifar10_archive(tmp_path))
  upload(tmp_path / "c10tar", f"{gcs}/c10tar")
  for name, folder in (("cifar100", "c100"), ("cifar10", "c10"), ("cifar10", "c10tar")):
    assert readers.has_cifar_archive(name, f"{gcs}/{folder}")
    _same(readers.load_cifar_archive(name, f"{gcs}/{folder}"),
          readers.load_cifar_archive(name, str(tmp_path / folder)))
  with pytest.raises(errors.NotFound, match=f"data_dir='{gcs}/none'"):
    readers.load_cifar_archive("cifar100", f"{gcs}/none")


def _idx(array: np.ndarray) -> bytes:
  header = bytes([0, 0, 8, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
  return header + array.astype(np.uint8).tobytes()


def _fashion_files(folder):
  rng = np.random.default_rng(0)
  folder.mkdir()
  arrays = {"train-images-idx3-ubyte.gz": rng.integers(0, 256, (30, 28, 28)),
            "train-labels-idx1-ubyte.gz": np.arange(30) % 10,
            "t10k-images-idx3-ubyte.gz": rng.integers(0, 256, (20, 28, 28)),
            "t10k-labels-idx1-ubyte.gz": np.arange(20) % 10}
  for name, array in arrays.items():
    (folder / name).write_bytes(gzip.compress(_idx(array)))
  return {name: gzip.compress(_idx(a)) for name, a in arrays.items()}


def test_idx_files_read_from_a_bucket_equal_the_local_read(gcs, tmp_path):
  _fashion_files(tmp_path / "fm")
  upload(tmp_path / "fm", f"{gcs}/fm")
  (tmp_path / "raw").mkdir()  # an uncompressed IDX file too
  (tmp_path / "raw" / "x.idx").write_bytes(_idx(np.arange(12).reshape(3, 4)))
  upload(tmp_path / "raw", f"{gcs}/raw")
  assert readers.has_fashion_mnist(f"{gcs}/fm")
  assert readers.fashion_mnist_dir(f"{gcs}/fm") == f"{gcs}/fm"
  _same(readers.load_fashion_mnist(f"{gcs}/fm"), readers.load_fashion_mnist(str(tmp_path / "fm")))
  np.testing.assert_array_equal(readers.read_idx(f"{gcs}/raw/x.idx"), np.arange(12).reshape(3, 4))
  paths.path(f"{gcs}/cut/t.gz").write_bytes(gzip.compress(_idx(np.zeros((4, 5))))[:-12])
  with pytest.raises(errors.DataError, match=f"{gcs}/cut/t.gz"):
    readers.read_idx(f"{gcs}/cut/t.gz")


def test_a_missing_file_is_downloaded_into_the_bucket_once(gcs, server, tmp_path, monkeypatch):
  bodies = _fashion_files(tmp_path / "fm")
  for i, remote in enumerate(list(download.FILES["fashion_mnist"])):
    server("fashion_mnist", i, bodies[remote.filename])
  monkeypatch.chdir(tmp_path / "fm")  # nothing may land under the current directory
  before = sorted(os.listdir("."))
  logged = []
  assert download.ensure("fashion_mnist", f"{gcs}/dl", log=logged.append) == f"{gcs}/dl"
  assert len(server.handler.requests) == 4 and sorted(os.listdir(".")) == before
  for name, body in bodies.items():
    assert paths.path(f"{gcs}/dl/{name}").read_bytes() == body
  assert sorted(p.name for p in paths.path(f"{gcs}/dl").iterdir()) == sorted(bodies)  # no lock, no part
  assert any(f"to {gcs}/dl/" in line for line in logged)
  download.ensure("fashion_mnist", f"{gcs}/dl", log=logged.append)
  assert len(server.handler.requests) == 4  # there now: not fetched again
  _same(readers.load_fashion_mnist(f"{gcs}/dl"), readers.load_fashion_mnist(str(tmp_path / "fm")))


def test_a_file_that_cannot_be_fetched_into_the_bucket_is_named(gcs, server):
  remote = download.FILES["cifar10"][0]
  download.FILES["cifar10"][0] = download.Remote(remote.filename, "http://127.0.0.1:9/c.tgz", remote.md5)
  with pytest.raises(download.DownloadError) as e:
    download.ensure("cifar10", f"{gcs}/c10")
  message = str(e.value)
  assert "http://127.0.0.1:9/c.tgz" in message and f"{gcs}/c10/{remote.filename}" in message
  assert "by hand" in message and "\n" not in message
  assert not paths.path(f"{gcs}/c10").exists()
  body = b"z" * 1000  # a wrong digest: checked before anything reaches the bucket
  server("cifar10", 0, body, md5="0" * 32)
  with pytest.raises(download.DownloadError, match="deleted"):
    download.ensure("cifar10", f"{gcs}/c10")
  assert not paths.path(f"{gcs}/c10/{remote.filename}").exists()
