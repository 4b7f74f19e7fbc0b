"""Image-file data sets (ImageNet-LT, iNaturalist 2018, Places-LT): the official split files.

A split file lists ``relative/path label`` per line; the images stay on disk as paths
(``splits.FileImages``) and are decoded in the input pipeline's workers. ``load`` reads a
data set's training, test and (if asked) validation files with the official class numbering.
"""

from __future__ import annotations

import os

import numpy as np

from lgla_jax import errors, long_tail
from lgla_jax.data.catalog import DATASETS
from lgla_jax.data.registry import register
from lgla_jax.data.splits import ArrayData, DataSplits, FileImages


_SPLIT_HINT = ("the split files (one 'relative/path label' per line) come with the official "
               "LGLA code (data_txt/) and the OLTR project (ImageNet_LT, Places_LT); pass "
               "their folder as --config.dataset.split_dir")


def read_split_file(split_path: str, root: str) -> ArrayData:
  """``relative/path label`` lines -> paths under ``root`` and int labels."""
  if not os.path.isfile(split_path):
    raise errors.NotFound(f"split file {split_path} does not exist: {_SPLIT_HINT}")
  if not root or not os.path.isdir(root):
    raise errors.NotFound(f"image root {root!r} does not exist: pass the folder the split "
                            f"file's paths are relative to as --config.dataset.data_dir")
  paths, labels, line_numbers = [], [], []
  with open(split_path) as f:
    for n, line in enumerate(f, 1):
      if not line.strip():
        continue
      parts = line.split()
      if len(parts) != 2 or not parts[1].lstrip("-").isdigit() or int(parts[1]) < 0:
        raise errors.DataError(f"{split_path}, line {n}: expected 'relative/path label', "
                                 f"got {line.strip()!r}")
      paths.append(os.path.join(root, parts[0]))
      labels.append(int(parts[1]))
      line_numbers.append(n)
  if not paths:
    raise errors.DataError(f"{split_path} lists no image")
  missing = [(n, p) for n, p in zip(line_numbers, paths) if not os.path.isfile(p)]
  if missing:
    n, p = missing[0]
    raise errors.NotFound(f"{p} (line {n} of {split_path}) does not exist ({len(missing)} of "
                            f"{len(paths)} listed images are missing): is "
                            f"--config.dataset.data_dir the image root the split file refers to?")
  return ArrayData(FileImages(paths), np.asarray(labels, np.int64))


def load(name: str, split_dir: str | None, root: str | None,
         validation: bool = False) -> DataSplits:
  """The split files of an ImageNet-size data set (and its validation split if asked),
  with the official class numbering."""
  info = DATASETS[name]
  (train_file, test_file), num_classes = info.split_files, info.num_classes
  if not split_dir:
    raise errors.NotFound(f"config.dataset.split_dir is not set: {_SPLIT_HINT}")
  files = {"train": train_file, "test": test_file}
  if validation:
    if info.val_file is None:
      raise errors.DataError(f"{name} has no validation split (its official evaluation file "
                               f"is the test set): set config.dataset.select_on='test'")
    files["val"] = info.val_file
  data = {split: read_split_file(os.path.join(split_dir, f), root) for split, f in files.items()}
  for split, split_file in files.items():
    bad = np.flatnonzero(data[split].labels >= num_classes)
    if bad.size:
      raise errors.DataError(f"{os.path.join(split_dir, split_file)}: "
                               f"{data[split].images[bad[0]]} has label "
                               f"{data[split].labels[bad[0]]}, but {name} has {num_classes} "
                               f"classes (0..{num_classes - 1}; {bad.size} such lines)")
  counts = np.bincount(data["train"].labels, minlength=num_classes).astype(np.int64)
  if (counts == 0).any():
    raise errors.DataError(f"{name}: classes {np.where(counts == 0)[0][:10].tolist()} have "
                             f"no training image in {train_file}")
  class_ids = None
  if info.by_frequency:
    class_map = long_tail.frequency_class_map(counts)
    data = {k: ArrayData(d.images, class_map[d.labels]) for k, d in data.items()}
    class_ids = np.argsort(class_map)
    counts = counts[class_ids]
  return DataSplits(data["train"], data["test"], counts, num_classes, data.get("val"),
                             class_ids)


@register("split_files", fields=("data_dir", "split_dir"), long_tail_subset=False,
          in_memory=False)
def split_files_source(d) -> DataSplits:
  """An ImageNet-size data set from its official split files (long-tailed already)."""
  return load(d.name, d.split_dir, d.data_dir, validation=d.select_on == "val")
