"""Fetch the original CIFAR and Fashion-MNIST files on first use, as torchvision does.

``FILES`` is the one table of what can be downloaded: the file name, the URL its authors
publish it at and its MD5 (tests point it at a local server). ``ensure(name, data_dir)``
makes sure every file of a data set is in ``data_dir``: a missing one is streamed to a
temporary name, checked against its MD5 and only then renamed into place, so an
interrupted or corrupt download never leaves a file that looks complete. One process per
file downloads (a lock next to it); the others wait and reuse its file. A ``data_dir`` in a
bucket (``gs://...``) gets the file too: it is downloaded and checked in a local temporary
folder, then uploaded in one object write (a reader sees the whole file or none); there is
no lock across hosts, so each host that misses it fetches it and writes the same bytes. Offline or
unreachable, it fails within ``TIMEOUT_S`` seconds (no retry loops) with a message that
says where to put the file by hand; a server that sends too slowly (``MIN_RATE`` over
``RATE_WINDOW_S``) or for too long (``DEADLINE_S``) is left with a message naming the URL
and the rate seen. The partial file is removed on every exit path, SIGTERM and SIGINT
included.
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import glob
import hashlib
import http.client
import os
import signal
import socket
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from typing import NamedTuple

from lgla_jax.errors import DownloadError  # noqa: F401 - raised here, named by callers
from lgla_jax.storage import paths
from lgla_jax.storage.paths import path as as_path


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
DEFAULT_DIR = "~/.cache/lgla_jax"  # where downloads go without a data_dir
TIMEOUT_S = 10.0  # connect and per-read timeout: an unreachable host fails in seconds
# A transfer slower than MIN_RATE bytes/s over the last RATE_WINDOW_S seconds, or longer
# than DEADLINE_S in all, is abandoned (a mirror that trickles bytes would otherwise hold a
# run forever: each read gets data before TIMEOUT_S). The environment variables of the same
# names (LGLA_DOWNLOAD_MIN_RATE, LGLA_DOWNLOAD_RATE_WINDOW_S, LGLA_DOWNLOAD_DEADLINE_S)
# override them.
MIN_RATE = 10_000.0  # bytes/s: CIFAR-100's 169 MB then take at most 4.7 hours
RATE_WINDOW_S = 60.0
DEADLINE_S = 6 * 3600.0


def _manual(remote: Remote, path: str) -> str:
  return (f"download {url_of(remote)} by hand (MD5 {remote.md5}) and put it at {path}, or point "
          f"--config.dataset.data_dir at a folder that holds {remote.filename}")


def url_of(remote: Remote) -> str:
  """The URL to fetch: ``LGLA_DATA_MIRROR/<filename>`` when that variable is set (a local
  mirror for clusters without internet), else the authors' URL."""
  mirror = os.environ.get("LGLA_DATA_MIRROR")
  return f"{mirror.rstrip('/')}/{remote.filename}" if mirror else remote.url


def pace() -> tuple[float, float, float]:
  """``(min_rate, window_s, deadline_s)``: the module's values or their environment
  variables (``LGLA_DOWNLOAD_MIN_RATE``, ``..._RATE_WINDOW_S``, ``..._DEADLINE_S``)."""
  out = []
  for name, default in (("MIN_RATE", MIN_RATE), ("RATE_WINDOW_S", RATE_WINDOW_S),
                        ("DEADLINE_S", DEADLINE_S)):
    value = os.environ.get(f"LGLA_DOWNLOAD_{name}")
    try:
      out.append(float(value) if value else float(default))
    except ValueError:
      raise DownloadError(f"LGLA_DOWNLOAD_{name}={value!r} is not a number") from None
  return tuple(out)


class _Watchdog:
  """Watches one transfer from a thread: when it is slower than the minimum rate over the
  window, or past the deadline, it records why and shuts the connection's socket, so the
  read blocked in it returns at once (headers that trickle in are caught too)."""

  def __init__(self):
    self.min_rate, self.window_s, self.deadline_s = pace()
    self.received, self.reason, self._connections = 0, None, []
    self._done = threading.Event()
    self._thread = threading.Thread(target=self._watch, daemon=True)

  def connection(self, cls):
    """A connection factory for urllib: ``cls``'s connections, watched."""
    def make(*args, **kwargs):
      connection = cls(*args, **kwargs)
      self._connections.append(connection)
      return connection
    return make

  def _watch(self):
    t0 = time.monotonic()
    marks = collections.deque([(t0, 0)])
    while not self._done.wait(min(0.25, self.window_s / 4)):
      now, got = time.monotonic(), self.received
      marks.append((now, got))
      while len(marks) > 1 and marks[1][0] <= now - self.window_s:
        marks.popleft()
      since, before = marks[0]
      rate = (got - before) / max(now - since, 1e-9)
      if now - t0 > self.deadline_s:
        self.reason = (f"it took more than {self.deadline_s:.0f} s (LGLA_DOWNLOAD_DEADLINE_S) at "
                       f"{got / (now - t0):,.0f} bytes/s")
      elif now - since >= self.window_s and rate < self.min_rate:
        self.reason = (f"{got - before:,} bytes came in the last {now - since:.0f} s ("
                       f"{rate:,.1f} bytes/s, below the minimum of {self.min_rate:,.0f}: "
                       f"LGLA_DOWNLOAD_MIN_RATE, LGLA_DOWNLOAD_RATE_WINDOW_S)")
      if self.reason:
        for connection in self._connections:
          if connection.sock is not None:
            try:
              connection.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
              pass
        return

  def __enter__(self):
    self._thread.start()
    return self

  def __exit__(self, *exc):
    self._done.set()
    self._thread.join()


def _open(url: str, watchdog: _Watchdog):
  """``urlopen(url)`` whose connections the watchdog can cut."""
  class Http(urllib.request.HTTPHandler):
    def http_open(self, req):
      return self.do_open(watchdog.connection(http.client.HTTPConnection), req)

  class Https(urllib.request.HTTPSHandler):
    def https_open(self, req):
      return self.do_open(watchdog.connection(http.client.HTTPSConnection), req,
                          context=self._context)

  return urllib.request.build_opener(Http, Https).open(url, timeout=TIMEOUT_S)


@contextlib.contextmanager
def _removed_on_signals(tmp: str):
  """SIGTERM, SIGINT or SIGHUP that would end the process first removes ``tmp`` (a
  ``finally`` does not run when a signal kills the process). Main thread only: signals are
  delivered there; elsewhere the next download of the file removes what a dead process
  left (``_remove_stale``)."""
  if threading.current_thread() is not threading.main_thread():
    yield
    return
  ends = (signal.SIG_DFL, signal.default_int_handler)  # handlers that end the process
  previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}

  def handler(signum, frame):
    old = previous[signum]
    if old in ends and as_path(tmp).exists():
      as_path(tmp).unlink()
    if old == signal.SIG_DFL:  # end as the signal would have, now that the file is gone
      signal.signal(signum, signal.SIG_DFL)
      os.kill(os.getpid(), signum)
    elif callable(old):
      old(signum, frame)

  for s, old in previous.items():
    if old is not None and old != signal.SIG_IGN:
      signal.signal(s, handler)
  try:
    yield
  finally:
    for s, old in previous.items():
      if old is not None and old != signal.SIG_IGN:
        signal.signal(s, old)


def _stream(remote: Remote, path: str, log, target: str | None = None) -> None:
  """Download ``remote`` to the local file ``path`` (``target``: where it is going in the
  end, for the messages; default ``path``)."""
  url, local, path = url_of(remote), path, target or path
  tmp = f"{local}.part.{socket.gethostname()}.{os.getpid()}"
  digest, size, t0, last = hashlib.md5(), 0, time.time(), 0.0
  try:
    with _removed_on_signals(tmp), _Watchdog() as watchdog:
      try:
        with _open(url, watchdog) as response, as_path(tmp).open("wb") as out:
          total = int(response.headers.get("Content-Length") or 0)
          # read1: what has arrived (up to 1 MB), so a trickle cannot hold one read for long
          while (chunk := response.read1(1 << 20)) and not watchdog.reason:
            out.write(chunk)
            digest.update(chunk)
            size += len(chunk)
            watchdog.received = size
            now = time.time()
            if now - last >= 1.0:
              of = f" of {total / 1e6:.1f}" if total else ""
              log(f"downloading {remote.filename}: {size / 1e6:.1f}{of} MB, "
                  f"{size / max(now - t0, 1e-9) / 1e6:.1f} MB/s\n")
              last = now
          if watchdog.reason:
            raise ConnectionError("too slow")
          if total and size != total:
            raise ConnectionError(f"the connection closed after {size} of {total} bytes")
      except (OSError, ValueError, http.client.HTTPException) as e:
        if watchdog.reason:
          raise DownloadError(f"abandoned the download of {url} to {path}: {watchdog.reason}; "
                              f"{_manual(remote, path)}") from None
        reason = getattr(e, "reason", None) or e
        raise DownloadError(f"could not download {url} to {path} ({reason}); "
                            f"{_manual(remote, path)}") from None
    if digest.hexdigest() != remote.md5:
      raise DownloadError(
          f"{remote.filename} from {url} has MD5 {digest.hexdigest()}, expected {remote.md5}: "
          f"the download was deleted. Try again, or {_manual(remote, path)}")
    as_path(tmp).replace(local)  # atomic: the name appears only for a complete, checked file
    if local == path:
      log(f"downloaded {remote.filename} ({size / 1e6:.1f} MB, MD5 checked) to {path}\n")
  finally:
    if as_path(tmp).exists():
      as_path(tmp).unlink()


def _remove_stale(path: str) -> None:
  """Remove the partial files of ``path`` that dead processes of this host left (killed
  with SIGKILL, or by a signal on a thread other than the main one)."""
  host, name = socket.gethostname(), as_path(path).name
  for part in as_path(path).parent.glob(glob.escape(name) + ".part.*"):
    owner, _, pid = part.name[len(name) + len(".part."):].rpartition(".")
    if owner != host or not pid.isdigit():
      continue
    try:
      os.kill(int(pid), 0)
    except ProcessLookupError:
      part.unlink()
    except OSError:  # alive, another user's
      pass


def fetch(remote: Remote, data_dir: str, log=None) -> str:
  """The path of ``remote`` in ``data_dir``, downloaded first if it is not there yet."""
  log = log or (lambda text: (sys.stderr.write(text), sys.stderr.flush()))
  data_dir = as_path(data_dir)
  path = data_dir / remote.filename
  if path.exists():
    return str(path)
  if paths.is_remote(data_dir):
    return _fetch_into_bucket(remote, str(path), log)
  try:
    data_dir.mkdir(parents=True, exist_ok=True)
    lock = as_path(f"{path}.lock").open("w")
  except OSError as e:
    raise DownloadError(f"cannot write to {data_dir} ({e.strerror}): {_manual(remote, path)}") from None
  with lock:
    fcntl.flock(lock, fcntl.LOCK_EX)  # another process downloading it: wait for its file
    if not path.exists():
      _remove_stale(str(path))
      _stream(remote, str(path), log)
  return str(path)


def _fetch_into_bucket(remote: Remote, url: str, log) -> str:
  """Download ``remote`` into a local temporary folder (outside the current directory),
  check it, then upload it to the bucket object ``url`` in one write."""
  with tempfile.TemporaryDirectory(prefix="lgla-download-") as tmp:
    local = str(as_path(tmp) / remote.filename)
    _stream(remote, local, log, target=url)
    try:
      data = as_path(local).read_bytes()
      paths.write_atomic(url, data)
    except Exception as e:  # noqa: BLE001 - gcsfs/aiohttp raise many types: one line
      reason = str(e).splitlines()[0][:200] if str(e) else ""
      raise DownloadError(f"downloaded {remote.filename} but could not upload it to {url} "
                          f"({type(e).__name__}: {reason}); check the bucket, or "
                          f"{_manual(remote, url)}") from None
  log(f"downloaded {remote.filename} ({len(data) / 1e6:.1f} MB, MD5 checked) to {url}\n")
  return url


def ensure(name: str, data_dir: str | None, log=None) -> str:
  """Make sure every file of data set ``name`` is in ``data_dir`` (default ``DEFAULT_DIR``);
  returns the folder."""
  folder = str(as_path(data_dir or DEFAULT_DIR))
  for remote in FILES[name]:
    fetch(remote, folder, log)
  return folder
