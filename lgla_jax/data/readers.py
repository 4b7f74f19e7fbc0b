"""In-memory data sets read from their original files: Fashion-MNIST's IDX files, the
CIFAR python archives and scikit-learn's digits, each registered as a source by name."""

from __future__ import annotations

import gzip
import io
import math
import tarfile
import zlib

import numpy as np

from lgla_jax import errors
from lgla_jax.data import download
from lgla_jax.data.registry import register
from lgla_jax.data.splits import ArrayData
from lgla_jax.interop import safe_pickle
from lgla_jax.storage.paths import is_remote, open_binary, path as as_path

# Where the Debian package `dataset-fashion-mnist` installs the original IDX files.
FASHION_MNIST_DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_FILES = tuple(r.filename for r in download.FILES["fashion_mnist"])
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.int16, 0x0C: np.int32,
               0x0D: np.float32, 0x0E: np.float64}
MAX_FILE_BYTES = 512 << 20  # one CIFAR batch or IDX file (the largest, CIFAR-100 train: 155 MB)
CIFAR_MAX_OPS = 2_000_000  # pickle opcodes of one CIFAR batch (CIFAR-100 train: ~0.3 million)


def read_idx(path) -> np.ndarray:
  """Read an IDX file (optionally gzipped; a local path or a bucket URL), the format of MNIST
  and Fashion-MNIST: the header first, then exactly the bytes it states (at most
  ``MAX_FILE_BYTES``: a gzip bomb is not inflated past that)."""
  p = as_path(path)
  if not p.exists():
    raise errors.NotFound(f"IDX file {path} does not exist")
  try:
    # (a bucket object through an 8 MB buffer: gzip's small reads straight from gcsfs take
    # ten times as long)
    with open_binary(p, 8 << 20) as raw_file, (
        gzip.GzipFile(fileobj=raw_file, mode="rb") if p.name.endswith(".gz") else raw_file) as f:
      head = f.read(4)
      if len(head) < 4 or head[0] != 0 or head[1] != 0 or head[2] not in _IDX_DTYPES:
        raise errors.DataError(f"{path} is not an IDX file (bad magic number)")
      shape = f.read(4 * head[3])
      dims = [int.from_bytes(shape[4 * i: 4 * i + 4], "big") for i in range(head[3])]
      dtype = np.dtype(_IDX_DTYPES[head[2]]).newbyteorder(">")
      expected = math.prod(dims) * dtype.itemsize
      if len(shape) != 4 * head[3] or expected > MAX_FILE_BYTES:
        raise errors.DataError(f"{path}: header says {dims} ({expected} bytes), more than an "
                               f"IDX file of this project holds or than the file has; the file "
                               f"is corrupt")
      raw = f.read(expected + 1)
  except (OSError, EOFError, zlib.error) as e:
    raise errors.DataError(f"cannot read IDX file {path} ({e}); the file is corrupt or "
                           f"truncated") from e
  if len(raw) != expected:
    held = f"{len(raw)}" if len(raw) <= expected else "more than that"
    raise errors.DataError(f"{path}: header says {dims} ({expected} bytes) but the file holds "
                           f"{held} bytes; the file is corrupt or truncated")
  return np.frombuffer(raw, dtype=dtype).reshape(dims).astype(dtype.newbyteorder("="))


def has_fashion_mnist(folder) -> bool:
  """Whether ``folder`` (a local path or a bucket URL) holds the four IDX files."""
  return all((as_path(folder) / f).exists() for f in FASHION_MNIST_FILES)


def fashion_mnist_dir(data_dir: str | None = None) -> str:
  """The folder holding Fashion-MNIST's four IDX files, or a clear error saying how to get them."""
  candidates = [data_dir] if data_dir else [FASHION_MNIST_DEBIAN_DIR]
  for d in candidates:
    if d and has_fashion_mnist(d):
      return str(as_path(d))
  hint = ("install the Debian package `dataset-fashion-mnist` (apt-get install "
          "dataset-fashion-mnist), let lgla-jax download the four *-ubyte.gz files published "
          "by the dataset's authors (--config.dataset.download=True), or put them into a "
          "folder and pass it as data_dir")
  raise errors.NotFound(f"no Fashion-MNIST IDX files in {candidates[0]}: {hint}")


def fashion_mnist_to_rgb32(images: np.ndarray) -> np.ndarray:
  """28x28 grey -> 32x32x3: zero-padded by 2 (a black border), the channel repeated."""
  padded = np.pad(images, ((0, 0), (2, 2), (2, 2)))
  return np.repeat(padded[..., None], 3, axis=-1)


def load_fashion_mnist(data_dir: str | None) -> tuple[ArrayData, ArrayData]:
  """Fashion-MNIST's train and test sets from its IDX files, as 32x32 RGB (``fashion_mnist_to_rgb32``)."""
  root = fashion_mnist_dir(data_dir)
  read = lambda name: read_idx(as_path(root) / name)
  train = ArrayData(fashion_mnist_to_rgb32(read("train-images-idx3-ubyte.gz")),
                    read("train-labels-idx1-ubyte.gz").astype(np.int64))
  test = ArrayData(fashion_mnist_to_rgb32(read("t10k-images-idx3-ubyte.gz")),
                   read("t10k-labels-idx1-ubyte.gz").astype(np.int64))
  return train, test


@register("idx", fields=("data_dir", "download"))
def idx_source(d) -> tuple[ArrayData, ArrayData]:
  """Fashion-MNIST from its IDX files (downloaded first where missing and allowed)."""
  data_dir = d.data_dir
  if d.download and not has_fashion_mnist(data_dir or FASHION_MNIST_DEBIAN_DIR):
    data_dir = download.ensure(d.name, data_dir)
  return load_fashion_mnist(data_dir)


DIGITS_TEST_PER_CLASS = 40


@register("sklearn")
def load_digits(d=None) -> tuple[ArrayData, ArrayData]:
  """scikit-learn's bundled 8x8 digits, upsampled to 16x16 RGB; 40 test images per class."""
  try:
    from sklearn.datasets import load_digits as sk_load_digits
  except ImportError as e:
    raise ImportError("the digits demo needs scikit-learn: pip install scikit-learn") from e
  bunch = sk_load_digits()
  images = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)
  images = np.repeat(np.repeat(images, 2, axis=1), 2, axis=2)
  images = np.repeat(images[..., None], 3, axis=-1)
  labels = bunch.target.astype(np.int64)
  rng = np.random.RandomState(0)
  test_idx = np.concatenate([rng.permutation(np.where(labels == c)[0])[:DIGITS_TEST_PER_CLASS]
                             for c in range(10)])
  train_mask = np.ones(len(labels), bool)
  train_mask[test_idx] = False
  return (ArrayData(images[train_mask], labels[train_mask]),
          ArrayData(images[np.sort(test_idx)], labels[np.sort(test_idx)]))


CIFAR_ARCHIVES = {
    "cifar10": ("cifar-10-batches-py", "cifar-10-python.tar.gz",
                [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], b"labels"),
    "cifar100": ("cifar-100-python", "cifar-100-python.tar.gz", ["train"], ["test"],
                 b"fine_labels"),
}


def _cifar_hint(name: str, data_dir) -> str:
  folder, archive = CIFAR_ARCHIVES[name][:2]
  return (f"looked in data_dir={data_dir!r} for {folder}/ or {archive}. Let lgla-jax "
          f"download the archive (--config.dataset.download=True), put the original CIFAR "
          f"python archive there (the file torchvision downloads) and pass "
          f"--config.dataset.data_dir=DIR, or use --config.dataset.source=tfds with "
          f"prepared tfds data (see docs/data.md)")


def has_cifar_archive(name: str, data_dir) -> bool:
  """Whether ``data_dir`` (a local path or a bucket URL) holds the extracted CIFAR folder
  (or its files) or the archive."""
  folder, archive, train_files, test_files, _ = CIFAR_ARCHIVES[name]
  data_dir = as_path(data_dir)
  return (data_dir / archive).exists() or any(
      all((root / f).exists() for f in train_files + test_files)
      for root in (data_dir / folder, data_dir))


def _decode_cifar_batch(raw: bytes, where: str, label_key: bytes) -> ArrayData:
  try:  # (a pickle: read with the restricted unpickler, which runs nothing of the file)
    batch = safe_pickle.restricted_load(io.BytesIO(raw), safe_pickle.NUMPY, max_bytes=len(raw),
                             max_ops=CIFAR_MAX_OPS, encoding="bytes")
    data = np.asarray(batch[b"data"], dtype=np.uint8)
    labels = np.asarray(batch[label_key], dtype=np.int64)
  except Exception as e:  # noqa: BLE001 - any decoding failure means a corrupt file
    raise errors.DataError(f"{where} is not a readable CIFAR batch ({type(e).__name__}: "
                           f"{str(e).splitlines()[0][:200] if str(e) else ''}); the file is "
                           f"corrupt: download the archive again") from None
  if data.ndim != 2 or data.shape[1] != 3072 or len(labels) != len(data):
    raise errors.DataError(f"{where}: unexpected CIFAR batch shape {data.shape}; the file is corrupt")
  return ArrayData(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy(), labels)


def _bounded(size: int, where: str) -> None:
  if size > MAX_FILE_BYTES:
    raise errors.DataError(f"{where} states {size:,} bytes, more than any CIFAR batch "
                           f"({MAX_FILE_BYTES:,}); the file is corrupt: download the archive again")


def _archive_file(tar_path):
  """``tar_path`` open for reading: a local file, or a bucket object read whole into memory
  (one request; tar seeks back to each member, and a gzip stream restarts from its first
  byte on every backward seek)."""
  if not is_remote(tar_path):
    return tar_path.open("rb")
  _bounded(tar_path.stat().length, str(tar_path))
  return io.BytesIO(tar_path.read_bytes())


def load_cifar_archive(name: str, data_dir) -> tuple[ArrayData, ArrayData]:
  """The original CIFAR python version: the extracted folder or the .tar.gz in ``data_dir``
  (a local path or a bucket URL)."""
  folder, archive, train_files, test_files, label_key = CIFAR_ARCHIVES[name]
  data_dir, archive_file = str(as_path(data_dir)), None
  for root in (as_path(data_dir) / folder, as_path(data_dir)):
    if all((root / f).exists() for f in train_files + test_files):
      def read(f, root=root):
        path = root / f
        _bounded(path.stat().length, str(path))
        return _decode_cifar_batch(path.read_bytes(), str(path), label_key)
      break
  else:
    tar_path = as_path(data_dir) / archive
    if not tar_path.exists():
      raise errors.NotFound(f"no CIFAR data found: {_cifar_hint(name, data_dir)}")
    try:
      archive_file = _archive_file(tar_path)
      tar = tarfile.open(fileobj=archive_file, mode="r:gz")
      members = {m.name: m for m in tar.getmembers()}
    except (tarfile.TarError, OSError, EOFError) as e:
      raise errors.DataError(f"{tar_path} is not a readable .tar.gz ({e}); download it again") from e

    def read(f, tar=tar, members=members):
      key = f"{folder}/{f}"
      if key not in members:
        raise errors.DataError(f"{tar_path} has no {key}; is it the {name} python archive?")
      _bounded(members[key].size, f"{tar_path}:{key}")  # (tar reads at most the stated size)
      try:
        raw = tar.extractfile(members[key]).read()
      except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
        raise errors.DataError(f"{tar_path}:{key} cannot be read ({e}); download it again") from None
      return _decode_cifar_batch(raw, f"{tar_path}:{key}", label_key)

  parts = [read(f) for f in train_files]
  train = ArrayData(np.concatenate([p.images for p in parts]), np.concatenate([p.labels for p in parts]))
  tests = [read(f) for f in test_files]
  test = ArrayData(np.concatenate([p.images for p in tests]), np.concatenate([p.labels for p in tests]))
  if archive_file is not None:
    archive_file.close()
  return train, test


# The class names in each archive's metadata pickle: (file, key) in label order.
CIFAR_META = {"cifar10": ("batches.meta", "label_names"), "cifar100": ("meta", "fine_label_names")}


def cifar_class_names(d) -> tuple[str, ...] | None:
  """The class names of the archive's own metadata pickle (CIFAR-100's ``meta``:
  ``fine_label_names``; CIFAR-10's ``batches.meta``), read with the restricted unpickler;
  None when the archive holds no such file (the catalog's names are used then). A metadata
  file that is there but is not a list of the data set's class names is a ``DataError``."""
  folder, archive = CIFAR_ARCHIVES[d.name][:2]
  meta_file, key = CIFAR_META[d.name]
  root = as_path(d.data_dir or download.DEFAULT_DIR).expanduser()
  raw, where = None, None
  for candidate in (root / folder / meta_file, root / meta_file):
    if candidate.is_file():
      raw, where = candidate.read_bytes()[:MAX_FILE_BYTES + 1], str(candidate)
      break
  else:
    if (root / archive).is_file():
      where = f"{root / archive}:{folder}/{meta_file}"
      try:
        with tarfile.open(fileobj=(root / archive).open("rb"), mode="r:gz") as tar:
          member = next((m for m in tar if m.name == f"{folder}/{meta_file}"), None)
          raw = None if member is None else tar.extractfile(member).read(MAX_FILE_BYTES + 1)
      except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
        raise errors.DataError(f"{root / archive} cannot be read ({e}); download it again") from None
  if raw is None:
    return None
  try:  # (a pickle: nothing of the file runs; only lists, dicts and strings are built)
    meta = safe_pickle.restricted_load(io.BytesIO(raw), {}, max_bytes=len(raw), encoding="bytes")
    names = meta.get(key.encode(), meta.get(key))
    names = tuple(n.decode("utf-8") if isinstance(n, bytes) else n for n in names)
  except Exception as e:  # noqa: BLE001 - any decoding failure means a corrupt file
    raise errors.DataError(f"{where} is not a readable CIFAR metadata file ({type(e).__name__}: "
                           f"{str(e).splitlines()[0][:200] if str(e) else ''}); download the "
                           f"archive again") from None
  expected = 100 if d.name == "cifar100" else 10
  if len(names) != expected or not all(isinstance(n, str) and n.strip() and "\n" not in n
                                       for n in names):
    raise errors.DataError(f"{where}: {key} should be {expected} class names, got "
                           f"{len(names)}; is it the {d.name} python archive?")
  return names


@register("cifar_archive", fields=("data_dir", "download"), class_names=cifar_class_names)
def cifar_archive_source(d) -> tuple[ArrayData, ArrayData]:
  """CIFAR-10/100 from the original python archive (downloaded first where missing and allowed)."""
  data_dir = d.data_dir or download.DEFAULT_DIR
  if d.download and not has_cifar_archive(d.name, data_dir):
    download.ensure(d.name, data_dir)
  return load_cifar_archive(d.name, data_dir)
