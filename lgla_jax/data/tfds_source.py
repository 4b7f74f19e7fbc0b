"""Data sets prepared by tensorflow-datasets, read from their ArrayRecord files through
``tfds.data_source`` (random access, no TensorFlow needed to read).

Two uses (``config.dataset.source='tfds'``): a data set the catalog knows (``cifar10``,
``cifar100``, ``fashion_mnist``: ``load_tfds``, in the original archive's order), and any
tfds data set by name, ``config.dataset.name='tfds:NAME'`` (``load_named``): its image and
label features found from the builder's info (or named by ``image_key`` / ``label_key``), its
classes and their names from the label's ``ClassLabel``, images converted to 8-bit RGB and
resized to ``image_size`` in memory. ``data_dir`` goes through ``storage.paths.path`` (a
``gs://`` folder of prepared data works).
"""

from __future__ import annotations

import importlib.util

import numpy as np

from PIL import Image

from lgla_jax import errors
from lgla_jax.data import image_folder, memory
from lgla_jax.data.readers import fashion_mnist_to_rgb32
from lgla_jax.data.registry import register
from lgla_jax.data.splits import ArrayData, DataSplits
from lgla_jax.storage.paths import is_remote, path

PREFIX = "tfds:"  # config.dataset.name = "tfds:NAME": any tfds data set by name
RUN_SPLITS = ("train", "test", "val")
VAL_NAMES = ("validation", "val")  # a tfds split taken as the run's val split by default
# Where prepared tfds data in a bucket is copied before reading: tfds reads array_record files
# with a C++ reader that cannot open a gs:// object through our path layer.
LOCAL_COPIES = "~/.cache/lgla_jax/tfds"


def _can_prepare_tfds() -> bool:
  return importlib.util.find_spec("tensorflow") is not None


def _data_dir(data_dir):
  """``config.dataset.data_dir`` as tfds takes it (None: tfds's default folder)."""
  return path(data_dir) if data_dir else None


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
  data_dir = local_copy(data_dir, name)
  return (_tfds_split(name, "train", data_dir, download),
          _tfds_split(name, "test", data_dir, download))


def parse_splits(text: str | None, available=None) -> dict[str, str]:
  """``config.dataset.splits`` (``'train=SPLIT,test=SPLIT[,val=SPLIT]'``, tfds split names,
  slices such as ``train[:80%]`` allowed) -> run split -> tfds split. None/empty: ``train``,
  ``test`` and, where ``available`` holds one, ``validation`` (or ``val``)."""
  if not text:
    found = {"train": "train", "test": "test"}
    val = [v for v in VAL_NAMES if available is not None and v in available]
    return dict(found, val=val[0]) if val else found
  found = {}
  for part in text.split(","):
    key, eq, value = (t.strip() for t in part.partition("="))
    if not eq or key not in RUN_SPLITS or not value or key in found:
      raise errors.ConfigError(f"config.dataset.splits={text!r}: expected "
                               f"'train=SPLIT,test=SPLIT[,val=SPLIT]' (tfds split names, e.g. "
                               f"'train=train[:80%],test=train[80%:]'), got {part.strip()!r}")
    found[key] = value
  if "train" not in found or "test" not in found:
    raise errors.ConfigError(f"config.dataset.splits={text!r}: name both train= and test=")
  return found


def _describe(features) -> str:
  return ", ".join(f"{k}: {type(v).__name__}{tuple(getattr(v, 'shape', ()))}"
                   for k, v in features.items())


def _is_image(feature, tfds) -> bool:
  """An image feature, or a uint8 tensor shaped like one ([H, W] or [H, W, 1|3|4])."""
  if isinstance(feature, tfds.features.Image):
    return True
  shape = tuple(getattr(feature, "shape", ()))
  return (isinstance(feature, tfds.features.Tensor) and feature.np_dtype == np.uint8
          and (len(shape) == 2 or (len(shape) == 3 and shape[-1] in (1, 3, 4))))


def _is_label(feature, tfds) -> bool:
  """A ``ClassLabel``, or a scalar integer tensor."""
  if isinstance(feature, tfds.features.ClassLabel):
    return True
  return (isinstance(feature, tfds.features.Tensor) and tuple(feature.shape) == ()
          and np.issubdtype(feature.np_dtype, np.integer))


def feature_keys(features, image_key: str | None, label_key: str | None, name: str,
                 tfds) -> tuple[str, str]:
  """The image and label feature names of a builder: those given, else the one image and the
  one label feature; a missing, wrong or ambiguous one is an error listing the features."""
  chosen = []
  for what, given, fits, field in (("image", image_key, _is_image, "image_key"),
                                   ("label", label_key, _is_label, "label_key")):
    if given:
      if given not in features or not fits(features[given], tfds):
        raise errors.ConfigError(f"config.dataset.{field}={given!r}: {name} has no {what} "
                                 f"feature of that name; its features: {_describe(features)}")
      chosen.append(given)
      continue
    found = [k for k, v in features.items() if fits(v, tfds)]
    if len(found) != 1:
      how = f"{len(found)} {what} features ({', '.join(found)})" if found else f"no {what} feature"
      raise errors.DataError(f"{name}: {how}, need exactly one: set "
                             f"--config.dataset.{field} to one of its features: "
                             f"{_describe(features)}")
    chosen.append(found[0])
  return chosen[0], chosen[1]


def rgb8(image) -> np.ndarray:
  """A tfds image (uint8/uint16, grey, RGB or RGBA) as uint8 ``[H, W, 3]``, its own size."""
  arr = np.asarray(image)
  if arr.ndim == 3 and arr.shape[-1] == 1:
    arr = arr[..., 0]
  if arr.ndim == 3 and arr.shape[-1] == 3 and arr.dtype == np.uint8:
    return arr
  return np.asarray(image_folder.to_rgb8(Image.fromarray(arr)))


def to_rgb(image, size: int) -> np.ndarray:
  """A tfds image (uint8/uint16, grey, RGB or RGBA) as uint8 ``[size, size, 3]`` (bilinear)."""
  arr = rgb8(image)
  if arr.shape[:2] == (size, size):
    return arr  # already the network's input: not resampled
  return np.asarray(Image.fromarray(arr).resize((size, size), Image.BILINEAR))


def _read_named_split(builder, split: str, keys: tuple[str, str], size: int) -> ArrayData:
  """Every record of one tfds split: images resized to ``size``, labels int64."""
  image_key, label_key = keys
  try:
    source = builder.as_data_source(split=split)
  except Exception as e:  # noqa: BLE001 - tfds raises many types for a bad split
    raise errors.DataError(f"{builder.name}: cannot read split {split!r} ({type(e).__name__}: "
                           f"{str(e).splitlines()[0][:200]}); its splits: "
                           f"{sorted(builder.info.splits.keys())}") from e
  n = len(source)
  images = np.empty((n, size, size, 3), np.uint8)
  labels = np.empty((n,), np.int64)
  for i in range(n):
    record = source[i]
    images[i] = to_rgb(record[image_key], size)
    labels[i] = int(np.asarray(record[label_key]))
  return ArrayData(images, labels)


def _num_examples(builder, split: str) -> int:
  """The number of records of ``split`` (slices and sums too) from the builder's info;
  0 when the info cannot tell (the read then names the problem)."""
  try:
    return int(builder.info.splits[split].num_examples)
  except Exception:  # noqa: BLE001 - tfds raises many types for a bad split name
    return 0


def _named_builder(name: str, data_dir, download: bool):
  """The prepared builder of tfds data set ``name`` (prepared now when ``download`` and
  TensorFlow allow it); one clear error otherwise."""
  import tensorflow_datasets as tfds  # imported lazily: heavy, and only this source needs it
  where = data_dir or "~/tensorflow_datasets"
  how = (f"prepare it in the array_record format where data_dir points (with network access "
         f"and TensorFlow: pip install 'lgla-jax[prepare]' and --config.dataset.download=True, "
         f"or `tfds build {name} --file_format=array_record --data_dir=DIR`) and pass that "
         f"folder as --config.dataset.data_dir")
  try:
    builder = tfds.builder(name, data_dir=data_dir, file_format="array_record")
  except Exception as e:  # noqa: BLE001 - DatasetNotFoundError and others
    raise errors.NotFound(f"tfds data set {name!r} is neither a tfds data set nor prepared in "
                          f"{where} ({type(e).__name__}: {str(e).splitlines()[0][:160]}); "
                          f"{how}") from e
  if not builder.is_prepared():
    if not download:
      raise errors.NotFound(f"no prepared tfds data for {name} in {builder.data_dir}: {how}")
    if not _can_prepare_tfds():  # preparing needs TensorFlow: say so now, not after retries
      raise errors.NotFound(f"no prepared tfds data for {name} in {builder.data_dir}, and "
                            f"preparing it needs TensorFlow, which is not installed: {how}")
    builder.download_and_prepare()
  return builder, tfds


def local_copy(data_dir, name: str):
  """The folder to read ``name`` from: ``data_dir`` itself when local, else a local copy of
  the newest prepared version of ``data_dir/name`` (made once, reused when complete)."""
  if not data_dir or not is_remote(data_dir):
    return _data_dir(data_dir)
  folder = path(data_dir) / name
  versions = [v for v in (folder.iterdir() if folder.is_dir() else ())
              if v.name.replace(".", "").isdigit() and (v / "dataset_info.json").exists()]
  if not versions:
    raise errors.NotFound(f"no prepared tfds data for {name} in {data_dir}: expected "
                          f"{data_dir}/{name}/VERSION/dataset_info.json and its array_record files")
  newest = max(versions, key=lambda v: tuple(int(x) for x in v.name.split(".")))
  root = path(LOCAL_COPIES) / str(data_dir).replace("://", "/")
  target = root / name / newest.name
  if not (target / ".complete").exists():
    print(f"tfds {name}: copying {newest} to {target} (read locally)", flush=True)
    target.mkdir(parents=True, exist_ok=True)
    for f in newest.iterdir():
      if not f.is_dir():
        with f.open("rb") as src, (target / f.name).open("wb") as dst:
          while chunk := src.read(1 << 24):  # shards can be large: in 16 MiB pieces
            dst.write(chunk)
    (target / ".complete").write_text("")
  return root


def load_named(d) -> DataSplits:
  """``config.dataset.name='tfds:NAME'``: any prepared tfds data set, its splits as read
  (``parse_splits``), classes and names from its label feature."""
  name = d.name[len(PREFIX):]
  builder, tfds = _named_builder(name, local_copy(d.data_dir, name), d.download)
  features = builder.info.features
  keys = feature_keys(features, d.image_key, d.label_key, name, tfds)
  available = set(builder.info.splits.keys())
  chosen = parse_splits(d.splits, available)
  if d.select_on == "val" and "val" not in chosen:
    raise errors.DataError(f"config.dataset.select_on='val' but {name} has no validation split "
                           f"(its splits: {sorted(available)}): name one with "
                           f"--config.dataset.splits='train=...,test=...,val=...' or select on 'test'")
  if d.select_on != "val":
    chosen.pop("val", None)  # read only what the run uses
  memory.check_fits(f"tfds {name} ({', '.join(chosen.values())})",
                    sum(_num_examples(builder, split) for split in chosen.values()), d.image_size)
  data = {run: _read_named_split(builder, split, keys, d.image_size)
          for run, split in chosen.items()}
  label = features[keys[1]]
  names = tuple(label.names) if isinstance(label, tfds.features.ClassLabel) else None
  num_classes = len(names) if names else int(data["train"].labels.max()) + 1
  counts = np.bincount(data["train"].labels, minlength=num_classes).astype(np.int64)
  for run, a in data.items():
    bad = np.flatnonzero((a.labels < 0) | (a.labels >= num_classes))
    if bad.size:
      raise errors.DataError(f"{name}/{chosen[run]}: record {bad[0]} has label "
                             f"{a.labels[bad[0]]}, outside the {num_classes} classes")
  empty = np.flatnonzero(counts == 0)
  if empty.size:
    shown = [names[c] if names else int(c) for c in empty[:5]]
    raise errors.DataError(f"{name}/{chosen['train']}: class(es) {shown} ({empty.size} such) "
                           f"have no training image: every class needs training images "
                           f"(choose another train split with --config.dataset.splits)")
  sizes = ", ".join(f"{run} {len(a.labels)} ({chosen[run]})" for run, a in data.items())
  print(f"tfds {name}: {num_classes} classes, features image={keys[0]!r} label={keys[1]!r}; "
        f"images ({d.image_size}x{d.image_size}): {sizes}", flush=True)
  return DataSplits(data["train"], data["test"], counts, num_classes, data.get("val"),
                    class_names=names)


class RecordImages:
  """The images of one tfds split, decoded one record at a time when indexed (at their own
  size): what ``config.from_data`` samples for the mean and std, without decoding the rest."""

  def __init__(self, source, image_key: str):
    self.source, self.image_key = source, image_key

  def __len__(self) -> int:
    return len(self.source)

  def __getitem__(self, i: int) -> np.ndarray:
    return rgb8(self.source[int(i)][self.image_key])


def train_images(d) -> RecordImages:
  """The training split's images of ``tfds:NAME``, undecoded until indexed."""
  if not d.name.startswith(PREFIX):
    raise errors.ConfigError(f"config.dataset.name={d.name!r}: the data set's mean and std "
                             f"come from the catalog; set dataset.mean and dataset.std")
  name = d.name[len(PREFIX):]
  builder, tfds = _named_builder(name, local_copy(d.data_dir, name), d.download)
  image_key, _ = feature_keys(builder.info.features, d.image_key, d.label_key, name, tfds)
  split = parse_splits(d.splits, set(builder.info.splits.keys()))["train"]
  return RecordImages(builder.as_data_source(split=split), image_key)


@register("tfds", fields=("data_dir", "download", "image_key", "label_key", "splits"),
          train_images=train_images)
def tfds_source(d) -> tuple[ArrayData, ArrayData] | DataSplits:
  """The data set of ``d.name`` from tfds's prepared ArrayRecord files: a known one's
  balanced ``(train, test)``, or for ``tfds:NAME`` the whole ``DataSplits`` as read
  (``data.sources.load`` makes either long-tailed by the official rule when asked)."""
  if d.name.startswith(PREFIX):
    return load_named(d)
  return load_tfds(d.name, d.data_dir, d.download)
