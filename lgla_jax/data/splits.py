"""What a data source hands the run: images (in memory, or image files) with their labels,
per split, and what is known of the long-tailed training set."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class FileImages:
  """Image paths; decoding happens in the input pipeline's workers."""

  def __init__(self, paths):
    self.paths = np.asarray(paths, dtype=object)

  def __len__(self):
    return len(self.paths)

  def __getitem__(self, idx):
    return self.paths[idx]


class ArrayData(NamedTuple):
  """Images (uint8 ``[N, H, W, 3]``, or ``FileImages``) and labels int64 ``[N]``."""

  images: np.ndarray
  labels: np.ndarray


class DataSplits(NamedTuple):
  """A run's data: the long-tailed training set, the test set and what is known of them."""
  train: ArrayData  # long-tailed training set (official subset rule)
  test: ArrayData  # balanced test set
  class_counts: np.ndarray  # training images per class, int64 [C]
  num_classes: int
  val: ArrayData | None = None  # the validation split, where the data set has one (split_files)
  class_ids: np.ndarray | None = None  # the data set's own label of each class (None: the same)
  class_names: tuple[str, ...] | None = None  # a name per class, index order (None: unknown)


def class_names(splits: DataSplits) -> tuple[str, ...]:
  """The name of each class: the data set's own where known, else its index as text."""
  if splits.class_names is not None:
    return tuple(splits.class_names)
  return tuple(str(c) for c in range(splits.num_classes))


def in_memory(splits: DataSplits) -> bool:
  """Whether the images are arrays (not files to decode)."""
  return all(isinstance(d.images, np.ndarray) for d in (splits.train, splits.test))
