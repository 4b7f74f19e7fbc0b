"""What a sample of a training set measures: the typical image size and the per-channel
mean and standard deviation, for data the catalog does not know (``config.from_data``).

The sample is fixed: ``sample_indices`` draws it with its own seed (not the run's), so that
every run on the same data normalises the same way. Images are image files (paths; only the
header is read for the size) or uint8 arrays (``[N, H, W, 3]``, or a sequence of ``[H, W, 3]``
arrays of different sizes, as a TFDS data set gives them).
"""

from __future__ import annotations

import concurrent.futures
import os

import numpy as np
from PIL import Image

from lgla_jax import errors
from lgla_jax.data.image_folder import to_rgb8
from lgla_jax.data.splits import FileImages
from lgla_jax.storage.paths import path

SAMPLE_SEED = 0  # the sample's own seed: the same normalisation for every run of the data
SIZE_SAMPLE = 200  # images whose size is read (the header only)
STATS_SAMPLE = 2000  # images decoded for the mean and std
READ_THREADS = 8  # file reads overlap (a bucket's latency); PIL decodes without the GIL


def sample_indices(n: int, k: int, seed: int = SAMPLE_SEED) -> np.ndarray:
  """``min(n, k)`` distinct indices of ``range(n)``, sorted, the same for the same arguments."""
  if n <= k:
    return np.arange(n)
  return np.sort(np.random.RandomState(seed).choice(n, k, replace=False))


def _items(images) -> tuple:
  """``(count, item(i))`` of any of the image kinds this module reads."""
  if isinstance(images, FileImages):
    return len(images), lambda i: images.paths[i]
  return len(images), lambda i: images[i]


def _is_file(item) -> bool:
  return isinstance(item, (str, bytes, os.PathLike))


def _size(item) -> int:
  """The larger side of one image (a file: from its header only)."""
  if _is_file(item):
    with path(item).open("rb") as f, Image.open(f) as img:
      return max(img.size)
  return max(np.shape(item)[:2])


def _moments(item, size: int) -> np.ndarray:
  """One image's per-channel sums ``[2, 3]`` of its pixels and of their squares (RGB in
  [0, 1], resized to ``size`` as the run does)."""
  if _is_file(item):
    with path(item).open("rb") as f, Image.open(f) as img:
      img.draft("RGB", (size, size))  # (a JPEG decodes at a reduced scale: much faster)
      img.load()
      img = to_rgb8(img)
  else:
    arr = np.asarray(item, np.uint8)
    img = Image.fromarray(arr.squeeze(-1) if arr.ndim == 3 and arr.shape[-1] == 1 else arr)
    img = img.convert("RGB")
  if img.size != (size, size):
    img = img.resize((size, size), Image.BILINEAR)
  px = np.asarray(img, np.float64).reshape(-1, 3) / 255.0
  return np.stack([px.sum(0), (px * px).sum(0)])


def _map(fn, items) -> list:
  """``fn`` over ``items`` in threads; an item that fails gives its exception instead."""
  def safe(item):
    try:
      return fn(item)
    except (OSError, ValueError, Image.DecompressionBombError) as e:
      return e
  with concurrent.futures.ThreadPoolExecutor(READ_THREADS) as pool:
    return list(pool.map(safe, items))


def _readable(results: list, what: str, total: int) -> list:
  good = [r for r in results if not isinstance(r, Exception)]
  if not good:
    first = next((r for r in results if isinstance(r, Exception)), None)
    raise errors.DataError(f"none of the {total} sampled training images could be read for "
                           f"{what} (first error: {first}); check the data")
  return good


def typical_size(images, k: int = SIZE_SAMPLE, seed: int = SAMPLE_SEED) -> dict:
  """The median larger side of ``k`` sampled images, with the sample's range and count
  (``{"size", "min", "max", "sampled", "unreadable"}``)."""
  n, item = _items(images)
  idx = sample_indices(n, k, seed)
  results = _map(_size, [item(i) for i in idx])
  sizes = np.asarray(_readable(results, "their size", len(idx)))
  return {"size": int(np.median(sizes)), "min": int(sizes.min()), "max": int(sizes.max()),
          "sampled": int(len(sizes)), "unreadable": len(idx) - len(sizes)}


def mean_std(images, size: int, k: int = STATS_SAMPLE, seed: int = SAMPLE_SEED) -> dict:
  """Per-channel mean and standard deviation (pixels in [0, 1], over every pixel of ``k``
  sampled images resized to ``size``), rounded to 4 decimals: ``{"mean", "std", "sampled",
  "unreadable"}``. Unreadable images are left out of the sample (and counted)."""
  n, item = _items(images)
  idx = sample_indices(n, k, seed)
  results = _map(lambda it: _moments(it, size), [item(i) for i in idx])
  sums = np.sum(_readable(results, "the mean and std", len(idx)), axis=0)
  count = size * size * sum(not isinstance(r, Exception) for r in results)
  mean = sums[0] / count
  std = np.sqrt(np.maximum(sums[1] / count - mean * mean, 0.0))
  if min(std) <= 0:
    raise errors.DataError(f"the sampled training images have no variation in a colour "
                           f"channel (std {std.round(4).tolist()}): set config.dataset.mean "
                           f"and config.dataset.std yourself")
  rounded = lambda v: tuple(round(float(x), 4) for x in v)
  return {"mean": rounded(mean), "std": rounded(std), "sampled": int(sum(
      not isinstance(r, Exception) for r in results)),
          "unreadable": int(sum(isinstance(r, Exception) for r in results))}
