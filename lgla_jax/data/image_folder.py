"""Your own images in class folders (``config.dataset.source='image_folder'``):
``ROOT/train/<class>/*``, ``ROOT/test/<class>/*`` and optionally ``ROOT/val/<class>/*``.

The torchvision ``ImageFolder`` convention: classes are the training folder's sub-folders
sorted by name (index = position); files whose extension is one PIL reads (jpg, jpeg, png,
bmp, webp; any case) are images, sorted by name within a class; hidden files (``.name``) and
other files are skipped and counted in one printed summary line. The training set is used as
it is (it is the user's long-tailed data): ``imbalance_factor`` must stay 1.0, anything else
is refused rather than silently ignored. Small images (``image_size`` <= 64) are decoded
once into memory (uint8, resized to ``image_size``) so that the CIFAR recipe and on-device
data work; larger ones stay files (``splits.FileImages``) decoded in the input pipeline's
workers, as the ImageNet-size split files are. Grayscale, RGBA, CMYK and 16-bit images are
converted to 8-bit RGB; unreadable files are skipped and counted (``on_bad_image='skip'``) or
refused (``'error'``), named either way.
"""

from __future__ import annotations

import collections
import io

import numpy as np

from PIL import Image

from lgla_jax import errors
from lgla_jax.data import file_checks, memory
from lgla_jax.data.file_checks import readable
from lgla_jax.data.registry import register
from lgla_jax.data.splits import ArrayData, DataSplits, FileImages
from lgla_jax.storage.paths import path

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
SPLITS = ("train", "val", "test")
IN_MEMORY_MAX_SIZE = 64  # image_size up to this: decoded once into memory (the CIFAR recipe)


def in_memory(d) -> bool:
  """Whether this config's images are decoded into memory (small) rather than kept as files."""
  return d.image_size <= IN_MEMORY_MAX_SIZE


def to_rgb8(img: Image.Image) -> Image.Image:
  """Any PIL image as 8-bit RGB: 16-bit and 32-bit grey scaled down (not clipped), palette,
  grey, RGBA (alpha dropped) and CMYK converted."""
  if img.mode in ("I;16", "I;16B", "I;16L", "I"):
    arr = np.asarray(img, np.float64)
    top = 65535.0 if arr.max() > 255 else 255.0
    img = Image.fromarray(np.clip(arr * (255.0 / top), 0, 255).astype(np.uint8))
  return img.convert("RGB")


def decode(files, size: int, on_bad_image: str,
           digests: list | None = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
  """Files -> uint8 ``[N, size, size, 3]``, the indices kept, and the files that failed;
  ``digests`` collects ``(file, content hash)`` of every file read (the duplicate check)."""
  images, kept, bad = [], [], []
  for i, f in enumerate(files):
    try:
      raw = path(f).read_bytes()
      if digests is not None:
        digests.append((f, file_checks.digest(raw)))
      with Image.open(io.BytesIO(raw)) as img:
        img.load()
        images.append(np.asarray(to_rgb8(img).resize((size, size), Image.BILINEAR)))
      kept.append(i)
    except (OSError, ValueError, Image.DecompressionBombError) as e:
      if on_bad_image == "error":
        raise errors.DataError(f"{readable(f)}: not a readable image ({e}); remove or replace "
                               f"it, or set config.dataset.on_bad_image='skip'") from None
      bad.append(readable(f))
  arr = np.stack(images) if images else np.zeros((0, size, size, 3), np.uint8)
  return arr, np.asarray(kept, np.int64), bad


def to_memory(data: ArrayData, size: int, on_bad_image: str, bad_files: list,
              digests: list | None = None) -> ArrayData:
  """A split's files decoded into memory; unreadable ones dropped into ``bad_files``
  (``digests``: as ``decode``'s)."""
  images, kept, bad = decode(data.images.paths, size, on_bad_image, digests)
  bad_files += bad
  return ArrayData(images, data.labels[kept])


def splits_to_memory(data: dict, d, what: str, bad_files: list,
                     digests: dict | None = None) -> dict:
  """Every split's files decoded into memory (``to_memory``), after checking that they fit
  (``memory.check_fits``: refused before any decoding). ``what`` names the data set."""
  memory.check_fits(what, sum(len(a.labels) for a in data.values()), d.image_size)
  return {s: to_memory(a, d.image_size, d.on_bad_image, bad_files,
                       None if digests is None else digests.setdefault(s, []))
          for s, a in data.items()}


def check_files(data: ArrayData, on_bad_image: str, bad_files: list) -> ArrayData:
  """A split of files left to the input pipeline, without the files ``file_checks``
  finds broken or truncated (into ``bad_files``; ``on_bad_image='error'``: refused, named):
  an epoch never meets a file that cannot be decoded."""
  problems = file_checks.check_images(data.images.paths)
  if problems and on_bad_image == "error":
    i, why = problems[0]
    raise errors.DataError(f"{readable(data.images.paths[i])}: not a readable image ({why}); "
                           f"remove or replace it, or set config.dataset.on_bad_image='skip' "
                           f"({len(problems)} such file(s) in this split)")
  bad_files += [readable(data.images.paths[i]) for i, _ in problems]
  keep = np.setdiff1d(np.arange(len(data.labels)), [i for i, _ in problems])
  return ArrayData(FileImages(data.images.paths[keep]), data.labels[keep])


def warn_duplicates(data: dict, digests: dict | None = None) -> list:
  """Print one warning line for files whose bytes are those of a file of another split (a
  test image seen in training is not an unseen image); the pairs found. ``digests``: split
  -> ``(file, hash)`` of files already read (else the files are compared here)."""
  if digests is not None:
    pairs = file_checks.duplicates_of(digests)
  else:
    pairs = file_checks.cross_split_duplicates({s: list(a.images.paths) for s, a in data.items()})
  if pairs:
    shown = ", ".join(f"{readable(f)} = {readable(g)}" for _, f, _, g in pairs[:3])
    counts = collections.Counter(s for s, *_ in pairs)
    print(f"image_folder: warning: {', '.join(f'{n} {s}' for s, n in counts.items())} image(s) "
          f"have the same bytes as an image of another split ({shown}"
          f"{', ...' if len(pairs) > 3 else ''}): they are not unseen images; remove them "
          f"from one of the splits", flush=True)
  return pairs


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
    raise errors.DataError(f"{split_dir}: class folder(s) {[readable(u) for u in unknown[:5]]} are not in the "
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
    raise errors.DataError(f"{root}/train has {len(classes)} class folder(s) {[readable(c) for c in classes]}: a "
                           f"classifier needs at least two classes")
  skipped: dict = {}
  data = {s: read_split(root / s, classes, skipped) for s in SPLITS if (root / s).is_dir()}
  counts = np.bincount(data["train"].labels, minlength=len(classes))
  empty = [classes[c] for c in np.flatnonzero(counts == 0)]
  if empty:
    raise errors.DataError(f"{root}/train: class folder(s) {[readable(e) for e in empty[:5]]} hold no image "
                           f"(extensions read: {', '.join(IMAGE_EXTENSIONS)}); add images or "
                           f"remove the folder")
  return data, classes, skipped


def summary_line(root, data: dict, classes: list[str], skipped: dict) -> str:
  """One line: the splits' image counts, the classes, and what was skipped (and why)."""
  sizes = ", ".join(f"{s} {len(d.labels)}" for s, d in data.items())
  why = ", ".join(f"{n} {reason}" for reason, n in sorted(skipped.items())) or "none"
  return (f"image_folder {readable(root)}: {len(classes)} classes; images: {sizes}; skipped "
          f"files: {why}")


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
  bad_files: list = []
  if in_memory(d):  # every file read once: decoded, and hashed for the duplicate check
    digests: dict = {}
    data = splits_to_memory(data, d, f"image folder {d.data_dir}", bad_files, digests)
    warn_duplicates(data, digests)
  else:  # decoded later, in the input pipeline: broken files found now
    warn_duplicates(data)
    data = {s: check_files(a, d.on_bad_image, bad_files) for s, a in data.items()}
  if bad_files:
    skipped["unreadable"] = len(bad_files)
    print(f"image_folder: {len(bad_files)} unreadable or truncated image(s) skipped: "
          f"{', '.join(bad_files[:3])}{', ...' if len(bad_files) > 3 else ''} "
          f"(config.dataset.on_bad_image='error' refuses them)", flush=True)
  counts = np.bincount(data["train"].labels, minlength=len(classes)).astype(np.int64)
  empty = [readable(classes[c]) for c in np.flatnonzero(counts == 0)]
  if empty:
    raise errors.DataError(f"{d.data_dir}/train: class folder(s) {empty[:5]} hold no readable "
                           f"image; replace the unreadable ones or remove the folder")
  print(summary_line(d.data_dir, data, classes, skipped), flush=True)
  return DataSplits(data["train"], data["test"], counts, len(classes), data.get("val"),
                    class_names=tuple(readable(c) for c in classes))


def train_files(d) -> FileImages:
  """The training images' files (not decoded): what ``config.from_data`` measures."""
  if not d.data_dir:
    raise errors.ConfigError("config.dataset.data_dir is not set: pass the image folder ROOT "
                             "(holding train/ and test/)")
  return scan(d.data_dir)[0]["train"].images


register("image_folder", fields=("data_dir", "on_bad_image", "imbalance_factor"),
         long_tail_subset=False,
         in_memory=False, train_images=train_files)(load)
