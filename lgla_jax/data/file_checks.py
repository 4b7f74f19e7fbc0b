"""Checks of a data set's image files before training: file names shown readably, broken
or truncated files found before an epoch meets them, the same file in two splits.

Any source of image files can call these (the image folders do); each reads little:
``check_images`` opens each file's header and its last bytes (not a full decode),
``cross_split_duplicates`` hashes only the files whose byte size occurs in two splits.
"""

from __future__ import annotations

import collections
import concurrent.futures
import hashlib
import os

from PIL import Image

from lgla_jax.storage import paths

READ_THREADS = 8  # file reads overlap (a bucket's latency, a disk's queue)
JPEG_EOI_WINDOW = 1024  # a JPEG's end-of-image marker must lie in its last bytes (some add padding)
JPEG_SUFFIXES = (".jpg", ".jpeg")


def readable(name) -> str:
  """A file name as printable text: bytes that are not UTF-8 (a Linux name holds any byte,
  Python keeps them as surrogates) are written as ``\\xNN`` escapes, so messages, reports
  and ``classes.txt`` never fail to encode them."""
  text = os.fsdecode(name) if isinstance(name, bytes) else str(name)
  try:
    text.encode("utf-8")
    return text
  except UnicodeEncodeError:
    return os.fsencode(text).decode("utf-8", "backslashreplace")


def _map(fn, items) -> list:
  with concurrent.futures.ThreadPoolExecutor(READ_THREADS) as pool:
    return list(pool.map(fn, items))


def image_problem(file) -> str | None:
  """Why ``file`` is not a usable image (``None``: it looks whole). Reads the header (PIL's
  ``verify``: a PNG's chunks and their checksums) and, for a JPEG, checks that its
  end-of-image marker is there: a file cut short is found here, not mid-epoch."""
  try:
    p = paths.path(file)
    with p.open("rb") as f:
      with Image.open(f) as img:
        img.verify()
      if p.suffix.lower() in JPEG_SUFFIXES:
        size = f.seek(0, os.SEEK_END)
        f.seek(max(0, size - JPEG_EOI_WINDOW))
        if b"\xff\xd9" not in f.read():
          return "truncated (no JPEG end-of-image marker)"
  except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
    return str(e).splitlines()[0][:200] if str(e) else type(e).__name__
  return None


def check_images(files) -> list[tuple[int, str]]:
  """``(index, problem)`` of each file of ``files`` that ``image_problem`` refuses."""
  problems = _map(image_problem, list(files))
  return [(i, why) for i, why in enumerate(problems) if why is not None]


def _digest(file) -> str:
  h = hashlib.blake2b(digest_size=16)
  with paths.path(file).open("rb") as f:
    while chunk := f.read(1 << 20):
      h.update(chunk)
  return h.hexdigest()


def cross_split_duplicates(files_by_split: dict) -> list[tuple[str, str, str, str]]:
  """``(split, file, other_split, other_file)`` for each file whose bytes equal those of a
  file of an earlier split (``files_by_split`` in order, e.g. train, val, test). Files are
  compared by size first; only sizes found in two splits are hashed."""
  sizes = {s: _map(lambda f: paths.path(f).stat().length, list(files))
           for s, files in files_by_split.items()}
  splits_of_size = collections.defaultdict(set)
  for s, values in sizes.items():
    for v in values:
      splits_of_size[v].add(s)
  shared = {v for v, where in splits_of_size.items() if len(where) > 1}
  first_of = {}  # digest -> (split, file) of its first holder
  found = []
  for s, files in files_by_split.items():
    candidates = [f for f, v in zip(files, sizes[s]) if v in shared]
    seen_here = {}
    for f, digest in zip(candidates, _map(_digest, candidates)):
      if digest in first_of and first_of[digest][0] != s:
        found.append((s, str(f), *first_of[digest]))
      seen_here.setdefault(digest, (s, str(f)))
    for digest, holder in seen_here.items():
      first_of.setdefault(digest, holder)
  return found
