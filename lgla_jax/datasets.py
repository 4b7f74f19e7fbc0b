"""Data sources: images as uint8 NHWC arrays plus int labels."""

from __future__ import annotations

import gzip
import importlib.util
import os
import pickle
import tarfile
from typing import NamedTuple

import numpy as np

from lgla_jax import download, long_tail

# Where the Debian package `dataset-fashion-mnist` installs the original IDX files.
FASHION_MNIST_DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_FILES = tuple(r.filename for r in download.FILES["fashion_mnist"])
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.int16, 0x0C: np.int32,
               0x0D: np.float32, 0x0E: np.float64}


class DataError(ValueError):
  """Data that exists but cannot be used (corrupt, truncated, inconsistent with the config)."""


def read_idx(path: str) -> np.ndarray:
  """Read an IDX file (optionally gzipped), the format of MNIST and Fashion-MNIST."""
  if not os.path.exists(path):
    raise FileNotFoundError(f"IDX file {path} does not exist")
  opener = gzip.open if path.endswith(".gz") else open
  try:
    with opener(path, "rb") as f:
      raw = f.read()
  except (OSError, EOFError) as e:
    raise DataError(f"cannot read IDX file {path} ({e}); the file is corrupt or truncated") from e
  if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
    raise DataError(f"{path} is not an IDX file (bad magic number)")
  ndim = raw[3]
  dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
  dtype = np.dtype(_IDX_DTYPES[raw[2]]).newbyteorder(">")
  offset = 4 + 4 * ndim
  expected = int(np.prod(dims)) * dtype.itemsize
  if len(raw) - offset != expected:
    raise DataError(f"{path}: header says {dims} ({expected} bytes) but the file holds "
                     f"{len(raw) - offset} bytes; the file is corrupt or truncated")
  return np.frombuffer(raw, dtype=dtype, offset=offset).reshape(dims).astype(dtype.newbyteorder("="))


def has_fashion_mnist(folder: str) -> bool:
  """Whether ``folder`` holds the four IDX files."""
  return all(os.path.exists(os.path.join(folder, f)) for f in FASHION_MNIST_FILES)


def fashion_mnist_dir(data_dir: str | None = None) -> str:
  """The folder holding Fashion-MNIST's four IDX files, or a clear error saying how to get them."""
  candidates = [data_dir] if data_dir else [FASHION_MNIST_DEBIAN_DIR]
  for d in candidates:
    if d and has_fashion_mnist(os.path.expanduser(d)):
      return os.path.expanduser(d)
  hint = ("install the Debian package `dataset-fashion-mnist` (apt-get install "
          "dataset-fashion-mnist), let lgla-jax download the four *-ubyte.gz files published "
          "by the dataset's authors (--config.dataset.download=True), or put them into a "
          "folder and pass it as data_dir")
  raise FileNotFoundError(f"no Fashion-MNIST IDX files in {candidates[0]}: {hint}")


class ArrayData(NamedTuple):
  """Images uint8 ``[N, H, W, 3]`` and labels int64 ``[N]``."""

  images: np.ndarray
  labels: np.ndarray


class DatasetInfo(NamedTuple):
  """What is known of a data set before reading it."""

  num_classes: int
  sources: tuple[str, ...]  # where config.dataset.source may read it from
  split_files: tuple[str, str] | None = None  # split_files: (train, test) file names
  val_file: str | None = None  # split_files: the validation split the official trainer selects on
  by_frequency: bool = False  # classes renumbered by training images, most first (official Places-LT)
  train_per_class: int | None = None  # the balanced training set's images per class (in memory)


DATASETS = {  # config.dataset.name -> DatasetInfo: the one table of data sets
    "cifar10": DatasetInfo(10, ("tfds", "cifar_archive"), train_per_class=5000),
    "cifar100": DatasetInfo(100, ("tfds", "cifar_archive"), train_per_class=500),
    "fashion_mnist": DatasetInfo(10, ("idx", "tfds"), train_per_class=6000),
    "digits": DatasetInfo(10, ("sklearn",), train_per_class=143),  # (its largest class)
    "imagenet_lt": DatasetInfo(1000, ("split_files",),
                               ("ImageNet_LT_train.txt", "ImageNet_LT_test.txt"),
                               "ImageNet_LT_val.txt"),
    # iNaturalist 2018 has no separate validation split: its val file is the test set.
    "inaturalist2018": DatasetInfo(8142, ("split_files",),
                                   ("iNaturalist18_train.txt", "iNaturalist18_val.txt")),
    "places_lt": DatasetInfo(365, ("split_files",), ("Places_LT_train.txt", "Places_LT_test.txt"),
                             "Places_LT_val.txt", by_frequency=True),
}
SOURCES = tuple(sorted({s for info in DATASETS.values() for s in info.sources}))

# config.dataset.source -> the config.dataset fields it reads besides those every source
# reads (name, mean, std, image_size, select_on, on_device). The split files are
# long-tailed already: the long-tail subset fields are not theirs.
_SUBSET_FIELDS = ("imbalance_factor", "imbalance_kind", "max_per_class", "subset_seed")
SOURCE_FIELDS = {"split_files": ("data_dir", "split_dir"),
                 "sklearn": _SUBSET_FIELDS,
                 **{source: ("data_dir", "download") + _SUBSET_FIELDS
                    for source in ("cifar_archive", "idx", "tfds")}}


class DataSplits(NamedTuple):
  """A run's data: the long-tailed training set, the test set and what is known of them."""
  train: ArrayData  # long-tailed training set (official subset rule)
  test: ArrayData  # balanced test set
  class_counts: np.ndarray  # training images per class, int64 [C]
  num_classes: int
  val: ArrayData | None = None  # the validation split, where the data set has one (split_files)
  class_ids: np.ndarray | None = None  # the data set's own label of each class (None: the same)


def fashion_mnist_to_rgb32(images: np.ndarray) -> np.ndarray:
  """28x28 grey -> 32x32x3: zero-padded by 2 (a black border), the channel repeated."""
  padded = np.pad(images, ((0, 0), (2, 2), (2, 2)))
  return np.repeat(padded[..., None], 3, axis=-1)


def load_fashion_mnist(data_dir: str | None) -> tuple[ArrayData, ArrayData]:
  """Fashion-MNIST's train and test sets from its IDX files, as 32x32 RGB (``fashion_mnist_to_rgb32``)."""
  root = fashion_mnist_dir(data_dir)
  read = lambda name: read_idx(os.path.join(root, name))
  train = ArrayData(fashion_mnist_to_rgb32(read("train-images-idx3-ubyte.gz")),
                    read("train-labels-idx1-ubyte.gz").astype(np.int64))
  test = ArrayData(fashion_mnist_to_rgb32(read("t10k-images-idx3-ubyte.gz")),
                   read("t10k-labels-idx1-ubyte.gz").astype(np.int64))
  return train, test


DIGITS_TEST_PER_CLASS = 40


def load_digits() -> tuple[ArrayData, ArrayData]:
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
          f"prepared tfds data (see the README)")


def has_cifar_archive(name: str, data_dir: str) -> bool:
  """Whether ``data_dir`` holds the extracted CIFAR folder (or its files) or the archive."""
  folder, archive, train_files, test_files, _ = CIFAR_ARCHIVES[name]
  data_dir = os.path.expanduser(data_dir)
  return os.path.exists(os.path.join(data_dir, archive)) or any(
      all(os.path.exists(os.path.join(root, f)) for f in train_files + test_files)
      for root in (os.path.join(data_dir, folder), data_dir))


def _decode_cifar_batch(raw: bytes, where: str, label_key: bytes) -> ArrayData:
  try:
    batch = pickle.loads(raw, encoding="bytes")
    data = np.asarray(batch[b"data"], dtype=np.uint8)
    labels = np.asarray(batch[label_key], dtype=np.int64)
  except Exception as e:  # noqa: BLE001 - any decoding failure means a corrupt file
    raise DataError(f"{where} is not a readable CIFAR batch ({type(e).__name__}: {e}); "
                     f"the file is corrupt: download the archive again") from e
  if data.ndim != 2 or data.shape[1] != 3072 or len(labels) != len(data):
    raise DataError(f"{where}: unexpected CIFAR batch shape {data.shape}; the file is corrupt")
  return ArrayData(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy(), labels)


def load_cifar_archive(name: str, data_dir: str | None) -> tuple[ArrayData, ArrayData]:
  """The original CIFAR python version: the extracted folder or the .tar.gz in ``data_dir``."""
  folder, archive, train_files, test_files, label_key = CIFAR_ARCHIVES[name]
  data_dir = os.path.expanduser(data_dir)
  candidates = [os.path.join(data_dir, folder), data_dir]
  for root in candidates:
    if all(os.path.exists(os.path.join(root, f)) for f in train_files + test_files):
      def read(f, root=root):
        path = os.path.join(root, f)
        with open(path, "rb") as fh:
          return _decode_cifar_batch(fh.read(), path, label_key)
      break
  else:
    tar_path = os.path.join(data_dir, archive)
    if not os.path.exists(tar_path):
      raise FileNotFoundError(f"no CIFAR data found: {_cifar_hint(name, data_dir)}")
    try:
      tar = tarfile.open(tar_path, "r:gz")
      members = {m.name: m for m in tar.getmembers()}
    except (tarfile.TarError, OSError, EOFError) as e:
      raise DataError(f"{tar_path} is not a readable .tar.gz ({e}); download it again") from e

    def read(f, tar=tar, members=members):
      key = f"{folder}/{f}"
      if key not in members:
        raise DataError(f"{tar_path} has no {key}; is it the {name} python archive?")
      return _decode_cifar_batch(tar.extractfile(members[key]).read(), f"{tar_path}:{key}", label_key)

  parts = [read(f) for f in train_files]
  train = ArrayData(np.concatenate([p.images for p in parts]), np.concatenate([p.labels for p in parts]))
  tests = [read(f) for f in test_files]
  test = ArrayData(np.concatenate([p.images for p in tests]), np.concatenate([p.labels for p in tests]))
  return train, test


def _can_prepare_tfds() -> bool:
  return importlib.util.find_spec("tensorflow") is not None


def _tfds_split(name: str, split: str, data_dir, download: bool) -> ArrayData:
  import tensorflow_datasets as tfds  # imported lazily: heavy, and only this source needs it
  how = ("Prepare it once with network access and TensorFlow (pip install "
         "'lgla-jax[prepare]', then run with --config.dataset.download=True), point "
         "--config.dataset.data_dir at data prepared in the array_record format, or use "
         "--config.dataset.source=cifar_archive with the original archive")
  # array_record: random access for grain without TensorFlow.
  builder_kwargs = {"file_format": "array_record"}
  if download and not _can_prepare_tfds():
    builder = tfds.builder(name, data_dir=data_dir, **builder_kwargs)
    if not builder.is_prepared():  # preparing needs TensorFlow: say so now, not after retries
      raise FileNotFoundError(f"no prepared tfds data for {name} in {builder.data_dir}, and "
                              f"preparing it needs TensorFlow, which is not installed. {how}")
  if not download:
    builder = tfds.builder(name, data_dir=data_dir, **builder_kwargs)
    if not builder.is_prepared():
      raise FileNotFoundError(f"no prepared tfds data for {name} in {builder.data_dir}. {how}")
  try:
    source = tfds.data_source(name, split=split, data_dir=data_dir, download=download,
                              builder_kwargs=builder_kwargs)
  except Exception as e:  # noqa: BLE001 - tfds raises many types for missing data
    where = data_dir or "~/tensorflow_datasets"
    raise FileNotFoundError(
        f"tfds could not open {name}/{split} in {where} ({type(e).__name__}: "
        f"{str(e).splitlines()[0][:200]}). {how}") from e
  n = len(source)
  images = np.empty((n,) + tuple(np.shape(source[0]["image"])), np.uint8)
  labels = np.empty((n,), np.int64)
  ids = []
  for i in range(n):
    record = source[i]
    images[i] = record["image"]
    labels[i] = int(np.asarray(record["label"]))
    if "id" in record:
      ids.append(record["id"])
  if ids:
    order = archive_order(ids, f"{name}/{split}")
    images, labels = images[order], labels[order]
  if images.ndim == 3 or images.shape[-1] == 1:  # grey (fashion_mnist): to 32x32 RGB
    images = fashion_mnist_to_rgb32(images.reshape(images.shape[:3]))
  return ArrayData(images, labels)


def archive_order(ids, what: str) -> np.ndarray:
  """The permutation that puts tfds records back in the original archive's order.

  tfds CIFAR stores its examples in its own (shuffled) order but names each
  ``train_<index>``, the index in the archive. The official long-tailed subset takes the
  first images of a seeded shuffle *in archive order*, so without this the tfds source
  would pick other images than ``cifar_archive`` at the same counts.
  """
  index = []
  for raw in ids:
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    tail = text.rsplit("_", 1)[-1]
    if not tail.isdigit():
      raise DataError(f"{what}: record id {text!r} does not end in the archive index "
                      f"(expected like 'train_00042'); use --config.dataset.source=cifar_archive")
    index.append(int(tail))
  index = np.asarray(index)
  if not np.array_equal(np.sort(index), np.arange(len(index))):
    raise DataError(f"{what}: the record ids are not the indices 0..{len(index) - 1} of one "
                    f"archive (missing or repeated ids); use --config.dataset.source=cifar_archive")
  return np.argsort(index, kind="stable")


def load_tfds(name: str, data_dir, download: bool) -> tuple[ArrayData, ArrayData]:
  """A data set's train and test splits from tfds (array_record files, read without TensorFlow)."""
  return (_tfds_split(name, "train", data_dir, download),
          _tfds_split(name, "test", data_dir, download))


def load(dataset_config) -> DataSplits:
  """Read the configured data set and make its training set long-tailed (official rule)."""
  d = dataset_config
  if d.source == "split_files":  # already long-tailed: used as they are
    from lgla_jax import split_files  # it reads this module's table
    return split_files.load(d.name, d.split_dir, d.data_dir, validation=d.select_on == "val")
  if d.source == "idx":
    data_dir = d.data_dir
    if d.download and not has_fashion_mnist(data_dir or FASHION_MNIST_DEBIAN_DIR):
      data_dir = download.ensure(d.name, data_dir)
    train, test = load_fashion_mnist(data_dir)
  elif d.source == "sklearn":
    train, test = load_digits()
  elif d.source == "cifar_archive":
    data_dir = d.data_dir or download.DEFAULT_DIR
    if d.download and not has_cifar_archive(d.name, data_dir):
      download.ensure(d.name, data_dir)
    train, test = load_cifar_archive(d.name, data_dir)
  elif d.source == "tfds":
    train, test = load_tfds(d.name, d.data_dir, d.download)
  else:
    raise ValueError(f"config.dataset.source: unknown source {d.source!r}")
  num_classes = DATASETS[d.name].num_classes
  for split, data in (("training", train), ("test", test)):
    bad = np.flatnonzero((data.labels < 0) | (data.labels >= num_classes))
    if bad.size:
      raise DataError(f"{d.name} ({d.source}): {split} image {bad[0]} has label "
                      f"{data.labels[bad[0]]}, outside the data set's {num_classes} classes "
                      f"({bad.size} such labels): is the data the right data set?")
  per_class = np.bincount(train.labels, minlength=num_classes)
  max_per_class = d.max_per_class or int(per_class.max())
  counts = long_tail.imbalanced_counts(num_classes, max_per_class, d.imbalance_factor,
                                       kind=d.imbalance_kind)
  if any(c > n for c, n in zip(counts, per_class)):
    raise DataError(f"config.dataset.max_per_class={max_per_class} asks for more images than "
                     f"some class has ({per_class.tolist()})")
  idx = long_tail.long_tail_indices(train.labels, counts, seed=d.subset_seed)
  lt = ArrayData(train.images[idx], train.labels[idx])
  return DataSplits(lt, test, np.asarray(counts, np.int64), num_classes)
