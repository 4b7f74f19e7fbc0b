"""A run's data by name: ``load(config.dataset)`` reads the configured source and makes the
training set long-tailed by the official rule; ``problems`` checks the section's fields.

The sources register themselves (``data.registry``) in the modules imported here: the
original files of the in-memory data sets (``readers``), tensorflow-datasets
(``tfds_source``, also any tfds data set as ``name='tfds:NAME'``), split files (the official
ones of the ImageNet-size sets, or your own: ``split_files``) and image folders.
"""

from __future__ import annotations

import numpy as np

from lgla_jax import errors, long_tail
from lgla_jax.data import image_folder, readers, split_files, tfds_source  # noqa: F401 - they register sources
from lgla_jax.data.catalog import DATASETS
from lgla_jax.data.registry import SOURCES
from lgla_jax.data.splits import ArrayData, DataSplits



def load(dataset_config) -> DataSplits:
  """Read the configured data set and make its training set long-tailed (official rule)."""
  d = dataset_config
  source = SOURCES.get(d.source)
  if source is None:
    raise errors.ConfigError(f"config.dataset.source: unknown source {d.source!r}")
  if not source.long_tail_subset:  # already long-tailed: used as it is
    return source.read(d)
  read = source.read(d)
  if isinstance(read, DataSplits):  # not in the catalog (tfds:NAME): classes read from the data
    if d.imbalance_factor == 1.0 and not d.max_per_class:
      return read  # used as it is
    return long_tailed(read.train, read.test, d, read.num_classes, read.class_names)._replace(
        val=read.val)
  train, test = read
  names = source.class_names(d) if source.class_names is not None else None
  return long_tailed(train, test, d, class_names=names)


def long_tailed(train: ArrayData, test: ArrayData, d, num_classes: int | None = None,
                class_names=None) -> DataSplits:
  """The splits of an in-memory data set with its training set cut to the configured
  long-tailed counts (``long_tail.imbalanced_counts``, official subset rule); the classes
  are ``num_classes`` / ``class_names`` when given (data not in the catalog), else the
  catalog's (``class_names``: the data's own names of a catalog data set, if it has them)."""
  if num_classes is None:
    num_classes = DATASETS[d.name].num_classes
    class_names = class_names or DATASETS[d.name].class_names
  for split, data in (("training", train), ("test", test)):
    bad = np.flatnonzero((data.labels < 0) | (data.labels >= num_classes))
    if bad.size:
      raise errors.DataError(f"{d.name} ({d.source}): {split} image {bad[0]} has label "
                             f"{data.labels[bad[0]]}, outside the data set's {num_classes} "
                             f"classes ({bad.size} such labels): is the data the right data set?")
  per_class = np.bincount(train.labels, minlength=num_classes)
  max_per_class = d.max_per_class or int(per_class.max())
  counts = long_tail.imbalanced_counts(num_classes, max_per_class, d.imbalance_factor,
                                       kind=d.imbalance_kind)
  if any(c > n for c, n in zip(counts, per_class)):
    raise errors.DataError(f"config.dataset.max_per_class={max_per_class} with "
                           f"imbalance_factor={d.imbalance_factor} asks for more images than "
                           f"some class has ({per_class.tolist()[:20]}): the official subset "
                           f"rule needs a class i to hold max_per_class * factor^(i/(C-1)); "
                           f"lower max_per_class")
  idx = long_tail.long_tail_indices(train.labels, counts, seed=d.subset_seed)
  lt = ArrayData(train.images[idx], train.labels[idx])
  return DataSplits(lt, test, np.asarray(counts, np.int64), num_classes,
                    class_names=class_names)


def source_fields() -> dict[str, tuple[str, ...]]:
  """``config.dataset.source`` -> the ``config.dataset`` fields it reads besides those every
  source reads (name, mean, std, image_size, select_on, on_device)."""
  return {name: source.fields for name, source in SOURCES.items()}


def in_memory(dataset_config) -> bool:
  """Whether the configured source gives images as arrays (False: files to decode)."""
  if dataset_config.source == "image_folder" or split_files.is_own(dataset_config):
    return image_folder.in_memory(dataset_config)  # small images are decoded into memory
  source = SOURCES.get(dataset_config.source)
  return source is None or source.in_memory


# Sources of the user's own data: not in the catalog, counts and names come from the files.
# (split_files and tfds also read data of your own: a name the catalog does not know, or
# 'tfds:NAME'; see ``own_data``.)
OWN_DATA_SOURCES = ("image_folder",)


def own_data(d) -> bool:
  """Whether ``d`` (a ``config.dataset``) is data the catalog does not know: an image folder,
  split files of your own, or a tfds data set by name (``tfds:NAME``)."""
  return (d.source in OWN_DATA_SOURCES or split_files.is_own(d)
          or d.name.startswith(tfds_source.PREFIX))


def own_data_problems(d) -> list[tuple[str, str]]:
  """``(field, problem)`` pairs of a ``config.dataset`` section of the user's own data."""
  found = []
  if d.name.startswith(tfds_source.PREFIX):
    return tfds_problems(d)
  if d.imbalance_factor != 1.0:
    found.append(("dataset.imbalance_factor", f"{d.source} data is used as it is (already "
                  f"long-tailed): leave it at 1.0, got {d.imbalance_factor}"))
  if len(d.mean) != 3 or len(d.std) != 3 or min(d.std) <= 0:
    found.append(("dataset.mean/std", "need three values each, std positive"))
  if d.select_on not in ("test", "val"):
    found.append(("dataset.select_on", f"must be 'test' or 'val', got {d.select_on!r}"))
  if d.on_bad_image not in ("skip", "error"):
    found.append(("dataset.on_bad_image", f"must be 'skip' or 'error', got {d.on_bad_image!r}"))
  if d.on_device and not in_memory(d):
    found.append(("dataset.on_device", f"{d.source} images larger than "
                  f"{image_folder.IN_MEMORY_MAX_SIZE} px are files decoded on the host"))
  return found


def tfds_problems(d) -> list[tuple[str, str]]:
  """``(field, problem)`` pairs of a ``config.dataset`` section naming ``tfds:NAME``."""
  found = []
  if d.source != "tfds":
    found.append(("dataset.source", f"{d.name!r} is read by the tfds source: set "
                  f"--config.dataset.source=tfds, got {d.source!r}"))
  if len(d.name) == len(tfds_source.PREFIX):
    found.append(("dataset.name", "name the tfds data set after 'tfds:' (e.g. tfds:oxford_flowers102)"))
  found += _subset_problems(d, "1.0: as it is; 0.01 = IR100")
  try:
    tfds_source.parse_splits(d.splits)
  except errors.ConfigError as e:
    found.append(("dataset.splits", str(e).split(": ", 1)[-1]))
  return found


def _subset_problems(d, factor_hint: str) -> list[tuple[str, str]]:
  """The checks every source shares: the long-tail subset fields, mean/std and select_on."""
  found = []
  if not 0 < d.imbalance_factor <= 1:
    found.append(("dataset.imbalance_factor",
                  f"must be in (0, 1] ({factor_hint}), got {d.imbalance_factor}"))
  if d.imbalance_kind not in ("exp", "step"):
    found.append(("dataset.imbalance_kind", f"must be 'exp' or 'step', got {d.imbalance_kind!r}"))
  if len(d.mean) != 3 or len(d.std) != 3 or min(d.std) <= 0:
    found.append(("dataset.mean/std", "need three values each, std positive"))
  if d.select_on not in ("test", "val"):
    found.append(("dataset.select_on", f"must be 'test' or 'val', got {d.select_on!r}"))
  return found


def problems(d) -> list[tuple[str, str]]:
  """``(field, problem)`` pairs of a ``config.dataset`` section; empty when usable."""
  if own_data(d):  # the user's data: any name, read from the files
    return own_data_problems(d)
  if d.name not in DATASETS:
    return [("dataset.name", f"{d.name!r} is not one of {sorted(DATASETS)}")]
  found = []
  allowed = DATASETS[d.name].sources
  if d.source not in allowed:
    found.append(("dataset.source", f"{d.name} can be read from {allowed}, not {d.source!r}"))
  found += _subset_problems(d, "0.01 = IR100")
  if d.select_on == "val" and DATASETS[d.name].val_file is None:
    found.append(("dataset.select_on", f"{d.name} has no validation split (the official code "
                  f"selects on its test set): use 'test'"))
  if d.on_device and not in_memory(d):
    found.append(("dataset.on_device", "image files are decoded on the host; only in-memory "
                  "data sets (cifar, fashion_mnist, digits) can live on the devices"))
  return found
