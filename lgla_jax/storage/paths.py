"""One path type for every file lgla-jax reads or writes: ``etils.epath.Path``.

A local path behaves exactly as ``pathlib``; a bucket URL (``gs://bucket/folder``, and the
other schemes ``fsspec`` knows) is a path of the same type, read and written through
``gcsfs`` / ``fsspec``. Code takes ``path(x)`` of whatever it was given (a ``str``, a
``pathlib.Path`` or an ``epath.Path``) and uses its methods: ``/``, ``exists``, ``is_dir``,
``iterdir``, ``glob``, ``open``, ``read_bytes``, ``write_bytes``, ``mkdir``, ``unlink``.
"""

from __future__ import annotations

import io
import contextlib
import logging
import os
import sys
import threading
import time

from etils import epath

# With TensorFlow installed (the ``prepare`` extra), epath would send gs:// through
# tf.io.gfile; fsspec/gcsfs is the one path the tests exercise.
os.environ.setdefault("EPATH_USE_TF", "false")

REMOTE_SCHEMES = ("gs://", "s3://")
# gcsfs warns on every bucket it cannot classify without credentials (a test server, a
# bucket reached anonymously): noise, not a failure.
logging.getLogger("gcsfs.extended_gcsfs").setLevel(logging.ERROR)
# gcsfs logs every exhausted retry with a traceback; the run ends with its own one line.
logging.getLogger("gcsfs").setLevel(logging.CRITICAL)


def path(p) -> epath.Path:
  """``p`` (str, ``os.PathLike`` or ``epath.Path``) as an ``epath.Path``; ``~`` expanded
  for local paths."""
  if isinstance(p, epath.Path):
    return p
  text = os.fspath(p)
  return epath.Path(text if is_remote(text) else os.path.expanduser(text))


def is_remote(p) -> bool:
  """Whether ``p`` names a bucket object or folder (``gs://``, ``s3://``), not a local path."""
  return str(p).startswith(REMOTE_SCHEMES)


def display(p) -> str:
  """``p`` for messages: the URL of a bucket path, the absolute path of a local one."""
  return str(p) if is_remote(p) else os.path.abspath(os.path.expanduser(str(p)))


def write_atomic(p, data: bytes | str) -> None:
  """Write ``data`` to ``p`` so that a reader sees the old or the new content, never a part:
  a local file through a temporary file and a rename; a bucket object in one upload (an
  object write is atomic on GCS), retried and bounded by ``deadline_s()``."""
  p = path(p)
  raw = data.encode() if isinstance(data, str) else data
  if is_remote(p):  # (retried until the deadline; a call stuck past it ends the run)
    with bounded(p, f"writing {p.name}"):
      retrying(lambda: p.write_bytes(raw))
    return
  tmp = p.parent / f"{p.name}.tmp.{os.getpid()}"
  tmp.write_bytes(raw)
  tmp.replace(p)


def create_if_absent(p, data: str) -> bool | None:
  """Create the object ``p`` holding ``data`` only if it does not exist, atomically; True if
  this call created it, False if it existed. On ``gs://`` this is a generation precondition
  (``if_generation_match=0``); None for a store without an atomic create (``s3://``)."""
  if not str(p).startswith("gs://"):
    return None
  return write_object(p, data, if_generation=0) is not None


def forget_listings() -> None:
  """Drop gcsfs's cached bucket listings (another process may have written since)."""
  from etils.epath import backend  # noqa: PLC0415 - only where a bucket is used
  try:
    backend.fsspec_backend.fs("gs://any").invalidate_cache()  # the instance epath uses
  except ImportError:
    pass


# Where a failed call to a bucket comes from: the HTTP clients and GCS libraries under epath.
_STORE_MODULES = ("aiohttp", "google.", "gcsfs", "requests", "urllib3", "fsspec")


def store_failure(e: BaseException) -> BaseException | None:
  """The exception in ``e``'s chain that says the store (bucket, server, credentials) failed:
  a connection error or an error raised by the GCS client libraries; None otherwise."""
  seen = set()
  while e is not None and id(e) not in seen:
    seen.add(id(e))
    if isinstance(e, ConnectionError) or type(e).__module__.startswith(_STORE_MODULES):
      return e
    e = e.__cause__ or e.__context__
  return None


def open_binary(p, buffer_bytes: int = 1 << 20):
  """``p`` open for binary reading with the whole ``io.BufferedReader`` interface (``seek``,
  ``tell``, ``readinto``, ``readline(limit)``, ``peek``) on a bucket object as on a local
  file: gcsfs's file object lacks some of it (``readline`` takes no limit), so a bucket
  object is wrapped, read in ``buffer_bytes`` requests."""
  p = path(p)
  if not is_remote(p):
    return p.open("rb")
  return io.BufferedReader(p.open("rb"), buffer_size=buffer_bytes)


def stored_md5(p) -> str | None:
  """The MD5 a ``gs://`` object's metadata holds (base64, as GCS gives it), ``None`` for a
  local file, another store or an object without one (composite uploads). Served from
  gcsfs's cached listing of the object's folder when that was listed: no request per file."""
  if not str(p).startswith("gs://"):
    return None
  from etils.epath import backend  # noqa: PLC0415 - only where a bucket is used
  return backend.fsspec_backend.fs(str(p)).info(str(p)).get("md5Hash")


# ---- bucket deadline, retries and generation preconditions (issue 33) -------------------
# Every bucket operation of a run is bounded: ours retry transient failures (connection
# refused or reset, HTTP 408/429/5xx) with backoff until ``deadline_s()``; the libraries'
# own retries (gcsfs: 6 tries, about 20 s per call; tensorstore: bounded by
# ``train.checkpoint``) run inside ``bounded``, a watchdog that ends the process with one
# line when an operation has not finished within the deadline.

DEADLINE_ENV = "LGLA_BUCKET_DEADLINE_S"
DEFAULT_DEADLINE_S = 120.0
TRANSIENT_HTTP = (408, 429, 500, 502, 503, 504)


def deadline_s(environ=os.environ) -> float:
  """How long a bucket operation may take, retries included (``LGLA_BUCKET_DEADLINE_S``,
  default 120 s); ValueError for a value that is not a number > 0."""
  raw = environ.get(DEADLINE_ENV, "") or str(DEFAULT_DEADLINE_S)
  try:
    value = float(raw)
  except ValueError:
    value = -1.0
  if not value > 0:
    raise ValueError(f"{DEADLINE_ENV}={raw!r}: give a number of seconds > 0")
  return value


def is_transient(e: BaseException) -> bool:
  """Whether ``e`` (or an error in its chain) is worth retrying: the connection failed or
  timed out, or the server answered 408, 429 or 5xx."""
  seen = set()
  while e is not None and id(e) not in seen:
    seen.add(id(e))
    if isinstance(e, (ConnectionError, TimeoutError)):
      return True
    name = type(e).__name__
    if name in ("ClientConnectorError", "ServerDisconnectedError", "ClientOSError",
                "ServerTimeoutError", "ConnectTimeout", "ReadTimeout", "ProxyError"):
      return True
    code = getattr(e, "code", None) or getattr(e, "status", None)
    if isinstance(code, int) and code in TRANSIENT_HTTP:
      return True
    e = e.__cause__ or e.__context__
  return False


def retrying(fn, deadline: float | None = None):
  """``fn()``, called again after a transient failure (``is_transient``) with exponential
  backoff (0.5 s doubling to 16 s) until ``deadline`` seconds (default ``deadline_s()``)
  have passed; then, or on any other error, the error is raised."""
  deadline = deadline_s() if deadline is None else deadline
  end, wait = time.monotonic() + deadline, 0.5
  while True:
    try:
      return fn()
    except Exception as e:  # noqa: BLE001 - sorted by is_transient
      left = end - time.monotonic()
      if not is_transient(e) or left <= 0:
        raise
      time.sleep(min(wait, left))
      wait = min(2 * wait, 16.0)


def bucket_failure_message(url: str, reason: str, last_complete: str | None) -> str:
  """The one line for a bucket that failed: the URL, why, the last complete checkpoint and
  what to do (the same command resumes)."""
  last = (f"the last complete checkpoint is {last_complete}" if last_complete
          else "no checkpoint of this run was confirmed complete")
  return (f"the bucket {url} failed ({reason}); {last}. Check the bucket, the network and "
          f"the credentials, then rerun the same command: it resumes from there")


def _exit_on_deadline(url: str, what: str, waited_s: float) -> None:
  line = bucket_failure_message(url, f"{what}: no answer within {waited_s:.0f} s, "
                                f"{DEADLINE_ENV}={deadline_s():g}", None)
  sys.stdout.flush()
  sys.stderr.write(f"error: {line}\n")
  sys.stderr.flush()
  os._exit(1)  # the stuck call holds the main thread; no interpreter shutdown


class _Watchdog:
  """Bucket operations in flight (``bounded``) and one daemon thread that calls the handler
  for the first one older than the deadline."""

  def __init__(self):
    self.lock, self.ops, self.count = threading.Lock(), {}, 0
    self.handler, self.thread = _exit_on_deadline, None

  def enter(self, url: str, what: str, deadline: float) -> int:
    with self.lock:
      self.count += 1
      self.ops[self.count] = (time.monotonic() + deadline, url, what, deadline)
      if self.thread is None:
        self.thread = threading.Thread(target=self._watch, name="lgla-bucket-deadline", daemon=True)
        self.thread.start()
      return self.count

  def leave(self, key: int) -> None:
    with self.lock:
      self.ops.pop(key, None)

  def _watch(self):
    while True:
      time.sleep(0.25)
      with self.lock:
        late = [op for op in self.ops.values() if op[0] < time.monotonic()]
        if late:  # (a handler that returns, as in tests: the next operation starts a watcher)
          self.ops, self.thread = {}, None
      if late:
        _, url, what, deadline = min(late)
        self.handler(url, what, deadline)
        return


_WATCHDOG = _Watchdog()


def on_deadline(handler) -> None:
  """``handler(url, what, waited_s)`` is called (from a watchdog thread) when a ``bounded``
  bucket operation passes its deadline; it must end the process (default: the one line
  without a checkpoint, exit status 1)."""
  _WATCHDOG.handler = handler


@contextlib.contextmanager
def bounded(url, what: str, deadline: float | None = None):
  """Run the block as one bucket operation on ``url`` (``what``: for the message) that must
  finish within ``deadline`` (default ``deadline_s()``) or the process ends
  (``on_deadline``); nothing for a local path."""
  if not is_remote(url):
    yield
    return
  key = _WATCHDOG.enter(str(url), what, deadline_s() if deadline is None else deadline)
  try:
    yield
  finally:
    _WATCHDOG.leave(key)


_CLIENTS = {}


def _gcs_client(storage):
  # STORAGE_EMULATOR_HOST (a test server) needs no credentials; a real bucket uses the
  # application default credentials as gcsfs does.
  if os.environ.get("STORAGE_EMULATOR_HOST"):
    from google.auth.credentials import AnonymousCredentials  # noqa: PLC0415
    return storage.Client(project="lgla-jax", credentials=AnonymousCredentials())
  return storage.Client()


def _blob(p):
  """The google-cloud-storage blob of ``gs://bucket/name`` (one client per server)."""
  from google.cloud import storage  # noqa: PLC0415 - gs:// only
  bucket, _, name = str(p)[len("gs://"):].partition("/")
  key = os.environ.get("STORAGE_EMULATOR_HOST", "")
  if key not in _CLIENTS:
    _CLIENTS[key] = _gcs_client(storage)
  return _CLIENTS[key].bucket(bucket).blob(name)


def _call_options(deadline: float | None, quick: bool) -> dict:
  """The client's retry bounded by the deadline (or none: ``quick``, one try of 5 s)."""
  from google.cloud.storage import retry as gretry  # noqa: PLC0415 - gs:// only
  if quick:
    return {"retry": None, "timeout": 5}
  deadline = deadline_s() if deadline is None else deadline
  return {"retry": gretry.DEFAULT_RETRY.with_timeout(deadline), "timeout": min(60.0, deadline)}


def write_object(p, data: str, if_generation: int, deadline: float | None = None) -> int | None:
  """Write ``data`` to the ``gs://`` object ``p`` only if its generation is
  ``if_generation`` (0: the object does not exist); the new generation, or None when the
  precondition failed (another writer came first)."""
  from google.api_core import exceptions as gexc  # noqa: PLC0415 - gs:// only
  blob = _blob(p)
  try:
    blob.upload_from_string(data, if_generation_match=if_generation,
                            **_call_options(deadline, False))
  except gexc.PreconditionFailed:
    return None
  return int(blob.generation)


def read_object(p, deadline: float | None = None) -> tuple[str, int] | None:
  """``(text, generation)`` of the ``gs://`` object ``p``; None when it does not exist."""
  from google.api_core import exceptions as gexc  # noqa: PLC0415 - gs:// only
  blob = _blob(p)
  try:
    text = blob.download_as_text(**_call_options(deadline, False))
  except gexc.NotFound:
    return None
  return text, int(blob.generation)


def delete_object(p, if_generation: int, quick: bool = False) -> bool:
  """Delete the ``gs://`` object ``p`` if its generation is still ``if_generation``; whether
  it was deleted (``quick``: one try, for a run already failing)."""
  from google.api_core import exceptions as gexc  # noqa: PLC0415 - gs:// only
  try:
    _blob(p).delete(if_generation_match=if_generation, **_call_options(None, quick))
  except (gexc.PreconditionFailed, gexc.NotFound):
    return False
  return True
