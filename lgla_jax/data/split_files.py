"""Split files: ``relative/path label`` per line, the images staying on disk (or in a bucket).

Two uses of one format (``config.dataset.source='split_files'``):

* a data set the catalog knows (ImageNet-LT, iNaturalist 2018, Places-LT): its official split
  files (``DatasetInfo.split_files``) with the official class numbering (``load``);
* any other ``config.dataset.name``: your own data (``load_own``), ``train.txt`` and
  ``test.txt`` (and optionally ``val.txt``) in ``split_dir``, paths relative to ``data_dir``.
  The classes are the labels ``0..C-1`` the files use (C = the largest training label + 1;
  every class needs a training image), named by an optional ``classes.txt`` (one name a line,
  index order). As for image folders, ``image_size <= 64`` decodes the images once into
  memory (the CIFAR recipe), larger ones stay files decoded in the pipeline's workers.

Every file is reached through ``storage.paths.path`` (so ``gs://`` folders work).
"""

from __future__ import annotations

import numpy as np

from lgla_jax import errors, long_tail
from lgla_jax.data import image_folder
from lgla_jax.data.catalog import DATASETS
from lgla_jax.data.registry import register
from lgla_jax.data.splits import ArrayData, DataSplits, FileImages
from lgla_jax.storage.paths import is_remote, path


_SPLIT_HINT = ("the split files (one 'relative/path label' per line) come with the official "
               "LGLA code (data_txt/) and the OLTR project (ImageNet_LT, Places_LT); pass "
               "their folder as --config.dataset.split_dir")
# Your own split files: run split -> file name in split_dir (val optional).
OWN_FILES = {"train": "train.txt", "val": "val.txt", "test": "test.txt"}
CLASSES_FILE = "classes.txt"  # optional: one class name a line, in label order
# A bucket is checked on this many listed images per split (each check is one request).
REMOTE_CHECKS = 20


def _lines(file, what: str) -> list[str]:
  """The lines of a text file, read through epath; one clear error when it is not UTF-8."""
  try:
    return path(file).read_text(encoding="utf-8").splitlines()
  except UnicodeDecodeError as e:
    raise errors.DataError(f"{file}: not UTF-8 text ({e.reason} at byte {e.start}); "
                           f"write the {what} as UTF-8") from e


def read_split_file(split_path, root) -> ArrayData:
  """``relative/path label`` lines -> paths under ``root`` and int labels (>= 0); the path
  may hold spaces (the label is the last field)."""
  if not path(split_path).is_file():
    raise errors.NotFound(f"split file {split_path} does not exist: {_SPLIT_HINT}")
  if not root or not path(root).is_dir():
    raise errors.NotFound(f"image root {root!r} does not exist: pass the folder the split "
                          f"file's paths are relative to as --config.dataset.data_dir")
  root_path = path(root)
  paths, labels, line_numbers = [], [], []
  for n, line in enumerate(_lines(split_path, "split file"), 1):
    if not line.strip():
      continue
    parts = line.strip().rsplit(None, 1)
    if len(parts) != 2 or not parts[1].isdigit():
      raise errors.DataError(f"{split_path}, line {n}: expected 'relative/path label' with the "
                             f"label an integer >= 0, got {line.strip()!r}")
    paths.append(str(root_path / parts[0]))
    labels.append(int(parts[1]))
    line_numbers.append(n)
  if not paths:
    raise errors.DataError(f"{split_path} lists no image")
  # A bucket is checked on a sample: one request per image would take minutes on a large set.
  checked = range(min(REMOTE_CHECKS, len(paths))) if is_remote(root) else range(len(paths))
  missing = [i for i in checked if not path(paths[i]).is_file()]
  if missing:
    i = missing[0]
    raise errors.NotFound(f"{paths[i]} (line {line_numbers[i]} of {split_path}) does not exist "
                          f"({len(missing)} of {len(checked)} images checked are missing): is "
                          f"--config.dataset.data_dir the image root the split file refers to?")
  return ArrayData(FileImages(paths), np.asarray(labels, np.int64))


def load(name: str, split_dir, root, validation: bool = False) -> DataSplits:
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
  data = {split: read_split_file(path(split_dir) / f, root) for split, f in files.items()}
  for split, split_file in files.items():
    bad = np.flatnonzero(data[split].labels >= num_classes)
    if bad.size:
      raise errors.DataError(f"{path(split_dir) / split_file}: "
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


def own_class_names(split_dir, num_classes: int) -> tuple[str, ...] | None:
  """The names in ``split_dir/classes.txt`` (None when there is none); exactly
  ``num_classes`` non-empty lines, else one error."""
  file = path(split_dir) / CLASSES_FILE
  if not file.is_file():
    return None
  names = [line.strip() for line in _lines(file, "class names")]
  while names and not names[-1]:  # a trailing blank line is not a class
    names.pop()
  if len(names) != num_classes or not all(names):
    blank = [n for n, name in enumerate(names, 1) if not name]
    why = f"line {blank[0]} is blank" if blank else f"it has {len(names)} names"
    raise errors.DataError(f"{file}: {why}, but the split files' labels give {num_classes} "
                           f"classes (0..{num_classes - 1}): write one name a line, in label "
                           f"order, or remove the file")
  return tuple(names)


def _check_own_labels(data: dict, split_dir) -> int:
  """The number of classes (largest training label + 1), every class holding a training
  image and every val/test label one of them; else one error naming the file (and line)."""
  train_file = path(split_dir) / OWN_FILES["train"]
  counts = np.bincount(data["train"].labels)
  num_classes = len(counts)
  empty = np.flatnonzero(counts == 0)
  if empty.size:
    raise errors.DataError(f"{train_file}: no training image has label(s) {empty[:10].tolist()} "
                           f"({empty.size} such) although labels go up to {num_classes - 1}: "
                           f"the labels must be 0..C-1 with every class in the training file")
  if num_classes < 2:
    raise errors.DataError(f"{train_file}: every image has label 0: a classifier needs at "
                           f"least two classes")
  for split, d in data.items():
    bad = np.flatnonzero(d.labels >= num_classes)
    if bad.size:
      raise errors.DataError(f"{path(split_dir) / OWN_FILES[split]}: {d.images[bad[0]]} has "
                             f"label {d.labels[bad[0]]}, a class without training images "
                             f"({train_file.name} has labels 0..{num_classes - 1}; {bad.size} "
                             f"such lines): every class needs training images")
  return num_classes


def _require_dirs(d) -> None:
  """Refuse a config without the split-file folder or the image root."""
  if not d.split_dir:
    raise errors.ConfigError("config.dataset.split_dir is not set: pass the folder holding "
                             "train.txt and test.txt (and optionally val.txt, classes.txt)")
  if not d.data_dir:
    raise errors.ConfigError("config.dataset.data_dir is not set: pass the folder the split "
                             "files' image paths are relative to")


def own_train_files(d):
  """Your training images' files (not decoded): what ``config.from_data`` measures."""
  _require_dirs(d)
  return read_split_file(path(d.split_dir) / OWN_FILES["train"], d.data_dir).images


def load_own(d) -> DataSplits:
  """Your own split files (``OWN_FILES`` in ``d.split_dir``, images under ``d.data_dir``),
  the classes and their counts read from them; small images decoded into memory."""
  _require_dirs(d)
  if d.imbalance_factor != 1.0:
    raise errors.ConfigError(f"config.dataset.imbalance_factor={d.imbalance_factor}: your split "
                             f"files are used as they are (they are the long-tailed set); "
                             f"leave it at 1.0")
  split_dir = path(d.split_dir)
  wanted = [s for s in OWN_FILES if s != "val" or d.select_on == "val"]
  for split in wanted:
    if not (split_dir / OWN_FILES[split]).is_file():
      raise errors.NotFound(f"{split_dir / OWN_FILES[split]} does not exist: split_files of your "
                            f"own data are {split_dir}/train.txt and test.txt (val.txt with "
                            f"select_on='val'), one 'relative/path label' a line (the official "
                            f"files are read for a known name: {sorted(DATASETS)}; "
                            f"config.dataset.name is {d.name!r})")
  data = {s: read_split_file(split_dir / OWN_FILES[s], d.data_dir) for s in wanted}
  num_classes = _check_own_labels(data, split_dir)
  names = own_class_names(split_dir, num_classes)
  if image_folder.in_memory(d):
    bad_files: list = []
    data = image_folder.splits_to_memory(data, d, f"split files {split_dir}", bad_files)
    if bad_files:
      print(f"split_files: {len(bad_files)} unreadable image(s) skipped, first: {bad_files[0]} "
            f"(config.dataset.on_bad_image='error' refuses them)", flush=True)
  sizes = ", ".join(f"{s} {len(a.labels)}" for s, a in data.items())
  print(f"split_files {split_dir}: {num_classes} classes "
        f"({'named by ' + CLASSES_FILE if names else 'no ' + CLASSES_FILE + ': named by index'}); "
        f"images: {sizes}", flush=True)
  counts = np.bincount(data["train"].labels, minlength=num_classes).astype(np.int64)
  return DataSplits(data["train"], data["test"], counts, num_classes, data.get("val"),
                    class_names=names)


def is_own(d) -> bool:
  """Whether ``d`` (a ``config.dataset``) names split files of your own (not a known set)."""
  return d.source == "split_files" and d.name not in DATASETS


@register("split_files", fields=("data_dir", "split_dir", "on_bad_image"),
          long_tail_subset=False, in_memory=False, train_images=own_train_files)
def split_files_source(d) -> DataSplits:
  """A data set's split files: the official ones of a known ImageNet-size set (long-tailed
  already), else your own (``load_own``)."""
  if is_own(d):
    return load_own(d)
  return load(d.name, d.split_dir, d.data_dir, validation=d.select_on == "val")
