"""Fetch the original CIFAR and Fashion-MNIST files on first use, as torchvision does.

``FILES`` is the one table of what can be downloaded: the file name, the URL its authors
publish it at and its MD5 (tests point it at a local server). ``ensure(name, data_dir)``
makes sure every file of a data set is in ``data_dir``: a missing one is streamed to a
temporary name, checked against its MD5 and only then renamed into place, so an
interrupted or corrupt download never leaves a file that looks complete. One process per
file downloads (a lock next to it); the others wait and reuse its file. Offline or
unreachable, it fails within ``TIMEOUT_S`` seconds (no retry loops) with a message that
says where to put the file by hand.
"""

from __future__ import annotations

import fcntl
import hashlib
import http.client
import os
import socket
import sys
import time
import urllib.error
import urllib.request
from typing import NamedTuple

from lgla_jax.errors import DownloadError  # noqa: F401 - raised here, named by callers


class Remote(NamedTuple):
  """One published file of a data set: its name, address and MD5 digest."""
  filename: str
  url: str
  md5: str


_FASHION = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
FILES: dict[str, tuple[Remote, ...]] = {  # data set -> the files of its source
    "cifar10": (Remote("cifar-10-python.tar.gz", "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                       "c58f30108f718f92721af3b95e74349a"),),
    "cifar100": (Remote("cifar-100-python.tar.gz", "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
                        "eb9058c3a382ffc7106e4002c42a8d85"),),
    "fashion_mnist": tuple(Remote(f, _FASHION + f, md5) for f, md5 in (
        ("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
        ("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe"),
        ("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79"),
        ("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310"))),
}
DEFAULT_DIR = os.path.join("~", ".cache", "lgla_jax")  # where downloads go without a data_dir
TIMEOUT_S = 10.0  # connect and per-read timeout: an unreachable host fails in seconds


def _manual(remote: Remote, path: str) -> str:
  return (f"download {url_of(remote)} by hand (MD5 {remote.md5}) and put it at {path}, or point "
          f"--config.dataset.data_dir at a folder that holds {remote.filename}")


def url_of(remote: Remote) -> str:
  """The URL to fetch: ``LGLA_DATA_MIRROR/<filename>`` when that variable is set (a local
  mirror for clusters without internet), else the authors' URL."""
  mirror = os.environ.get("LGLA_DATA_MIRROR")
  return f"{mirror.rstrip('/')}/{remote.filename}" if mirror else remote.url


def _stream(remote: Remote, path: str, log) -> None:
  url = url_of(remote)
  tmp = f"{path}.part.{socket.gethostname()}.{os.getpid()}"
  digest, size, t0, last = hashlib.md5(), 0, time.time(), 0.0
  try:
    try:
      with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response, open(tmp, "wb") as out:
        total = int(response.headers.get("Content-Length") or 0)
        while chunk := response.read(1 << 20):
          out.write(chunk)
          digest.update(chunk)
          size += len(chunk)
          now = time.time()
          if now - last >= 1.0:
            of = f" of {total / 1e6:.1f}" if total else ""
            log(f"downloading {remote.filename}: {size / 1e6:.1f}{of} MB, "
                f"{size / max(now - t0, 1e-9) / 1e6:.1f} MB/s\n")
            last = now
        if total and size != total:
          raise ConnectionError(f"the connection closed after {size} of {total} bytes")
    except (OSError, ValueError, http.client.HTTPException) as e:
      reason = getattr(e, "reason", None) or e
      raise DownloadError(f"could not download {url} to {path} ({reason}); "
                          f"{_manual(remote, path)}") from None
    if digest.hexdigest() != remote.md5:
      raise DownloadError(
          f"{remote.filename} from {url} has MD5 {digest.hexdigest()}, expected {remote.md5}: "
          f"the download was deleted. Try again, or {_manual(remote, path)}")
    os.replace(tmp, path)  # atomic: the name appears only for a complete, checked file
    log(f"downloaded {remote.filename} ({size / 1e6:.1f} MB, MD5 checked) to {path}\n")
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def fetch(remote: Remote, data_dir: str, log=None) -> str:
  """The path of ``remote`` in ``data_dir``, downloaded first if it is not there yet."""
  log = log or (lambda text: (sys.stderr.write(text), sys.stderr.flush()))
  data_dir = os.path.expanduser(data_dir)
  path = os.path.join(data_dir, remote.filename)
  if os.path.exists(path):
    return path
  try:
    os.makedirs(data_dir, exist_ok=True)
    lock = open(path + ".lock", "w")
  except OSError as e:
    raise DownloadError(f"cannot write to {data_dir} ({e.strerror}): {_manual(remote, path)}") from None
  with lock:
    fcntl.flock(lock, fcntl.LOCK_EX)  # another process downloading it: wait for its file
    if not os.path.exists(path):
      _stream(remote, path, log)
  return path


def ensure(name: str, data_dir: str | None, log=None) -> str:
  """Make sure every file of data set ``name`` is in ``data_dir`` (default ``DEFAULT_DIR``);
  returns the folder."""
  folder = os.path.expanduser(data_dir or DEFAULT_DIR)
  for remote in FILES[name]:
    fetch(remote, folder, log)
  return folder
