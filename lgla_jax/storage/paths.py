"""One path type for every file lgla-jax reads or writes: ``etils.epath.Path``.

A local path behaves exactly as ``pathlib``; a bucket URL (``gs://bucket/folder``, and the
other schemes ``fsspec`` knows) is a path of the same type, read and written through
``gcsfs`` / ``fsspec``. Code takes ``path(x)`` of whatever it was given (a ``str``, a
``pathlib.Path`` or an ``epath.Path``) and uses its methods: ``/``, ``exists``, ``is_dir``,
``iterdir``, ``glob``, ``open``, ``read_bytes``, ``write_bytes``, ``mkdir``, ``unlink``.
"""

from __future__ import annotations

import os

from etils import epath

# With TensorFlow installed (the ``prepare`` extra), epath would send gs:// through
# tf.io.gfile; fsspec/gcsfs is the one path the tests exercise.
os.environ.setdefault("EPATH_USE_TF", "false")

REMOTE_SCHEMES = ("gs://", "s3://")


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
