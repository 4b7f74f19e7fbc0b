"""One path type for every file lgla-jax reads or writes: ``etils.epath.Path``.

A local path behaves exactly as ``pathlib``; a bucket URL (``gs://bucket/folder``, and the
other schemes ``fsspec`` knows) is a path of the same type, read and written through
``gcsfs`` / ``fsspec``. Code takes ``path(x)`` of whatever it was given (a ``str``, a
``pathlib.Path`` or an ``epath.Path``) and uses its methods: ``/``, ``exists``, ``is_dir``,
``iterdir``, ``glob``, ``open``, ``read_bytes``, ``write_bytes``, ``mkdir``, ``unlink``.
"""

from __future__ import annotations

import io
import logging
import os

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
  object write is atomic on GCS)."""
  p = path(p)
  raw = data.encode() if isinstance(data, str) else data
  if is_remote(p):
    p.write_bytes(raw)
    return
  tmp = p.parent / f"{p.name}.tmp.{os.getpid()}"
  tmp.write_bytes(raw)
  tmp.replace(p)


def create_if_absent(p, data: str) -> bool | None:
  """Create the object ``p`` holding ``data`` only if it does not exist, atomically; True if
  this call created it, False if it existed. On ``gs://`` this is a generation precondition
  (``if_generation_match=0``); None for a store without an atomic create (``s3://``)."""
  text = str(p)
  if not text.startswith("gs://"):
    return None
  from google.api_core import exceptions as gexc  # noqa: PLC0415 - gs:// only
  from google.cloud import storage  # noqa: PLC0415 - gs:// only
  bucket, _, name = text[len("gs://"):].partition("/")
  client = _gcs_client(storage)
  try:
    client.bucket(bucket).blob(name).upload_from_string(data, if_generation_match=0)
  except gexc.PreconditionFailed:
    return False
  return True


def _gcs_client(storage):
  # STORAGE_EMULATOR_HOST (a test server) needs no credentials; a real bucket uses the
  # application default credentials as gcsfs does.
  if os.environ.get("STORAGE_EMULATOR_HOST"):
    from google.auth.credentials import AnonymousCredentials  # noqa: PLC0415
    return storage.Client(project="lgla-jax", credentials=AnonymousCredentials())
  return storage.Client()


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
