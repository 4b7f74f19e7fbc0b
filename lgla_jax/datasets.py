"""Data sources: images as uint8 NHWC arrays plus int labels."""

from __future__ import annotations

import gzip
import os

import numpy as np

# Where the Debian package `dataset-fashion-mnist` installs the original IDX files.
FASHION_MNIST_DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.int16, 0x0C: np.int32,
               0x0D: np.float32, 0x0E: np.float64}


def read_idx(path: str) -> np.ndarray:
  """Read an IDX file (optionally gzipped), the format of MNIST and Fashion-MNIST."""
  if not os.path.exists(path):
    raise FileNotFoundError(f"IDX file {path} does not exist")
  opener = gzip.open if path.endswith(".gz") else open
  try:
    with opener(path, "rb") as f:
      raw = f.read()
  except (OSError, EOFError) as e:
    raise ValueError(f"cannot read IDX file {path} ({e}); the file is corrupt or truncated") from e
  if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
    raise ValueError(f"{path} is not an IDX file (bad magic number)")
  ndim = raw[3]
  dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
  dtype = np.dtype(_IDX_DTYPES[raw[2]]).newbyteorder(">")
  offset = 4 + 4 * ndim
  expected = int(np.prod(dims)) * dtype.itemsize
  if len(raw) - offset != expected:
    raise ValueError(f"{path}: header says {dims} ({expected} bytes) but the file holds "
                     f"{len(raw) - offset} bytes; the file is corrupt or truncated")
  return np.frombuffer(raw, dtype=dtype, offset=offset).reshape(dims).astype(dtype.newbyteorder("="))


def fashion_mnist_dir(data_dir: str | None = None) -> str:
  """The folder holding Fashion-MNIST's four IDX files, or a clear error saying how to get them."""
  candidates = [data_dir] if data_dir else [FASHION_MNIST_DEBIAN_DIR]
  for d in candidates:
    if d and os.path.exists(os.path.join(d, "train-labels-idx1-ubyte.gz")):
      return d
  hint = ("install the Debian package `dataset-fashion-mnist` (apt-get install "
          "dataset-fashion-mnist), or download the four *-ubyte.gz files published by the "
          "dataset's authors into a folder and pass it as data_dir")
  raise FileNotFoundError(f"no Fashion-MNIST IDX files in {candidates[0]}: {hint}")
