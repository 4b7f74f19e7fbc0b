"""Data sets prepared by tensorflow-datasets, read from their ArrayRecord files through
``tfds.data_source`` (random access, no TensorFlow needed to read)."""

from __future__ import annotations

import importlib.util

import numpy as np

from lgla_jax import errors
from lgla_jax.data.readers import fashion_mnist_to_rgb32
from lgla_jax.data.registry import register
from lgla_jax.data.splits import ArrayData


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
      raise errors.NotFound(f"no prepared tfds data for {name} in {builder.data_dir}, and "
                            f"preparing it needs TensorFlow, which is not installed. {how}")
  if not download:
    builder = tfds.builder(name, data_dir=data_dir, **builder_kwargs)
    if not builder.is_prepared():
      raise errors.NotFound(f"no prepared tfds data for {name} in {builder.data_dir}. {how}")
  try:
    source = tfds.data_source(name, split=split, data_dir=data_dir, download=download,
                              builder_kwargs=builder_kwargs)
  except Exception as e:  # noqa: BLE001 - tfds raises many types for missing data
    where = data_dir or "~/tensorflow_datasets"
    raise errors.NotFound(
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
      raise errors.DataError(f"{what}: record id {text!r} does not end in the archive index "
                             f"(expected like 'train_00042'); use --config.dataset.source=cifar_archive")
    index.append(int(tail))
  index = np.asarray(index)
  if not np.array_equal(np.sort(index), np.arange(len(index))):
    raise errors.DataError(f"{what}: the record ids are not the indices 0..{len(index) - 1} of one "
                           f"archive (missing or repeated ids); use --config.dataset.source=cifar_archive")
  return np.argsort(index, kind="stable")


def load_tfds(name: str, data_dir, download: bool) -> tuple[ArrayData, ArrayData]:
  """A data set's train and test splits from tfds (array_record files, read without TensorFlow)."""
  return (_tfds_split(name, "train", data_dir, download),
          _tfds_split(name, "test", data_dir, download))


@register("tfds", fields=("data_dir", "download"))
def tfds_source(d) -> tuple[ArrayData, ArrayData]:
  """The data set of ``d.name`` from tfds's prepared ArrayRecord files."""
  return load_tfds(d.name, d.data_dir, d.download)
