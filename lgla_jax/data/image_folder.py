"""Your own images in class folders (``config.dataset.source='image_folder'``):
``ROOT/train/<class>/*``, ``ROOT/test/<class>/*`` and optionally ``ROOT/val/<class>/*``.

The torchvision ``ImageFolder`` convention: classes are the training folder's sub-folders
sorted by name (index = position); files whose extension is one PIL reads (jpg, jpeg, png,
bmp, webp; any case) are images, sorted by name within a class; hidden files (``.name``) and
other files are skipped and counted in one printed summary line. The training set is used as
it is (it is the user's long-tailed data): ``imbalance_factor`` must stay 1.0, anything else
is refused rather than silently ignored. Images stay files (``splits.FileImages``) decoded in
the input pipeline's workers, as the ImageNet-size split files are.
"""

from __future__ import annotations

import numpy as np

from lgla_jax import errors
from lgla_jax.data.registry import register
from lgla_jax.data.splits import ArrayData, DataSplits, FileImages
from lgla_jax.storage.paths import path

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
SPLITS = ("train", "val", "test")


def _files(class_dir, skipped: dict) -> list:
  """The image files of one class folder, by name; others counted into ``skipped``."""
  found = []
  for f in sorted(class_dir.iterdir(), key=lambda p: p.name):
    if f.name.startswith("."):
      skipped["hidden"] = skipped.get("hidden", 0) + 1
    elif f.is_dir() or f.suffix.lower() not in IMAGE_EXTENSIONS:
      skipped["not an image"] = skipped.get("not an image", 0) + 1
    else:
      found.append(f)
  return found


def class_folders(split_dir) -> list[str]:
  """The class folder names of one split, sorted (hidden folders skipped)."""
  return sorted(p.name for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))


def read_split(split_dir, classes: list[str], skipped: dict) -> ArrayData:
  """The images of one split with the labels of ``classes`` (the training split's order)."""
  unknown = sorted(set(class_folders(split_dir)) - set(classes))
  if unknown:
    raise errors.DataError(f"{split_dir}: class folder(s) {unknown[:5]} are not in the "
                           f"training split ({len(unknown)} such): a class must have "
                           f"training images; add them to train/ or remove the folder")
  paths, labels = [], []
  for label, name in enumerate(classes):
    class_dir = split_dir / name
    if not class_dir.is_dir():  # a test split may show fewer classes than train has
      continue
    files = _files(class_dir, skipped)
    paths += [str(f) for f in files]
    labels += [label] * len(files)
  return ArrayData(FileImages(paths), np.asarray(labels, np.int64))


def scan(root) -> tuple[dict[str, ArrayData], list[str], dict]:
  """``ROOT/{train,val,test}/<class>/*`` -> split -> ``ArrayData``, class names, and the
  count of skipped files by reason."""
  root = path(root)
  if not (root / "train").is_dir():
    raise errors.NotFound(f"{root}/train does not exist: an image folder data set is "
                          f"ROOT/train/<class>/*.jpg and ROOT/test/<class>/*.jpg; pass ROOT "
                          f"as --config.dataset.data_dir")
  if not (root / "test").is_dir():
    raise errors.NotFound(f"{root}/test does not exist: the run evaluates on "
                          f"ROOT/test/<class>/* (same class folder names as train/)")
  classes = class_folders(root / "train")
  if len(classes) < 2:
    raise errors.DataError(f"{root}/train has {len(classes)} class folder(s) {classes}: a "
                           f"classifier needs at least two classes")
  skipped: dict = {}
  data = {s: read_split(root / s, classes, skipped) for s in SPLITS if (root / s).is_dir()}
  counts = np.bincount(data["train"].labels, minlength=len(classes))
  empty = [classes[c] for c in np.flatnonzero(counts == 0)]
  if empty:
    raise errors.DataError(f"{root}/train: class folder(s) {empty[:5]} hold no image "
                           f"(extensions read: {', '.join(IMAGE_EXTENSIONS)}); add images or "
                           f"remove the folder")
  return data, classes, skipped


def summary_line(root, data: dict, classes: list[str], skipped: dict) -> str:
  """One line: the splits' image counts, the classes, and what was skipped (and why)."""
  sizes = ", ".join(f"{s} {len(d.labels)}" for s, d in data.items())
  why = ", ".join(f"{n} {reason}" for reason, n in sorted(skipped.items())) or "none"
  return f"image_folder {root}: {len(classes)} classes; images: {sizes}; skipped files: {why}"


def load(d) -> DataSplits:
  """The splits of an image folder data set, its classes named by their folders."""
  if not d.data_dir:
    raise errors.ConfigError("config.dataset.data_dir is not set: pass the image folder ROOT "
                             "(holding train/ and test/)")
  if d.imbalance_factor != 1.0:
    raise errors.ConfigError(f"config.dataset.imbalance_factor={d.imbalance_factor}: an image "
                             f"folder is used as it is (your data is the long-tailed set); "
                             f"leave it at 1.0")
  data, classes, skipped = scan(d.data_dir)
  if d.select_on == "val" and "val" not in data:
    raise errors.DataError(f"config.dataset.select_on='val' but {d.data_dir}/val does not "
                           f"exist: add ROOT/val/<class>/* or select on 'test'")
  print(summary_line(d.data_dir, data, classes, skipped), flush=True)
  counts = np.bincount(data["train"].labels, minlength=len(classes)).astype(np.int64)
  return DataSplits(data["train"], data["test"], counts, len(classes), data.get("val"),
                    class_names=tuple(classes))


register("image_folder", fields=("data_dir",), long_tail_subset=False, in_memory=False)(load)
