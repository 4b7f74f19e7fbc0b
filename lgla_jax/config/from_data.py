"""Config fields left to the data: the recipe follows the images, the normalisation is the
data's own.

A config leaves a field to the data with its sentinel (``configs/image_folder.py`` does for
all five; ``base_config`` for none): ``dataset.image_size = 0``, ``augment.recipe =
'auto'``, ``model.name = 'auto'``, ``dataset.mean = ()``, ``dataset.std = ()``. A value the
user sets (in the config file or with ``--config.FIELD=``) is no sentinel and is kept.
``resolve`` fills the sentinels before the data is read (``train.run.setup``,
``data_summary``):

- the image size: the median larger side of a fixed sample of training images (headers
  only); up to ``SMALL_MAX`` (64) px the images are used at that size with the CIFAR recipe
  and the CIFAR ResNet family (``resnet_cifar``), decoded into memory; larger ones become
  ``LARGE_SIZE`` (224) px with the ImageNet-size recipe (``imagenet``) and ResNet-50
  (``resnet``). An explicit recipe decides the size class instead;
- mean and std: per channel over a fixed, seeded sample of up to 2,000 training images
  (``data.stats``) for data the catalog does not know; a known data set takes the
  catalog's (its official loader's).

The filled values are printed and recorded in the config every checkpoint and report saves:
evaluation (``take_saved``), export and predict use them from there, never recomputed.
Any source can be measured: it registers ``train_images`` (``data.registry``), or the
caller hands the training images to ``resolve``.
"""

from __future__ import annotations

import copy

from lgla_jax import errors
from lgla_jax.data import image_folder, sources, stats
from lgla_jax.data.catalog import DATASETS, IMAGENET_MEAN, IMAGENET_STD
from lgla_jax.data.registry import SOURCES

AUTO = "auto"  # augment.recipe / model.name: chosen from the image size
SIZE_AUTO = 0  # dataset.image_size: measured from the training images
STATS_AUTO = ()  # dataset.mean / dataset.std: computed from the training images
SMALL_MAX = image_folder.IN_MEMORY_MAX_SIZE  # larger side up to this: the CIFAR recipe
LARGE_SIZE = 224  # the network input of larger images (the ImageNet-size recipe)
# What each size class trains with: (augment.recipe, model.name).
SMALL_RECIPE, LARGE_RECIPE = ("cifar", "resnet_cifar"), ("imagenet", "resnet")
SIZE_FIELDS = ("dataset.image_size", "augment.recipe", "model.name")


def unresolved(c) -> list[str]:
  """The fields of ``c`` left to the data (their sentinels), dotted."""
  left = {"dataset.image_size": c.dataset.image_size == SIZE_AUTO,
          "augment.recipe": c.augment.recipe == AUTO, "model.name": c.model.name == AUTO,
          "dataset.mean": tuple(c.dataset.mean) == STATS_AUTO,
          "dataset.std": tuple(c.dataset.std) == STATS_AUTO}
  return [field for field, auto in left.items() if auto]


def known(d):
  """The catalog's entry of a data set it knows (``None``: the user's own data)."""
  if d.source in sources.OWN_DATA_SOURCES:
    return None
  return DATASETS.get(d.name)


def problems(c) -> list[tuple[str, str]]:
  """``(field, problem)`` pairs: the size class is measured only for data the catalog does
  not know (a known data set's recipe is its config's)."""
  if known(c.dataset) is None:
    return []
  return [(f, f"is left to the data ({'0' if f.endswith('size') else repr(AUTO)}), which "
           f"only data the catalog does not know can be; {c.dataset.name} has its recipe: "
           f"set the field") for f in unresolved(c) if f in SIZE_FIELDS]


def _size_class(c, measured: int | None) -> bool:
  """Whether the run is of small images (the CIFAR recipe): an explicit image size or
  recipe decides, else the measured size."""
  from_recipe = {SMALL_RECIPE[0]: True, LARGE_RECIPE[0]: False}.get(c.augment.recipe)
  if c.dataset.image_size != SIZE_AUTO:
    return c.dataset.image_size <= SMALL_MAX
  if c.augment.recipe != AUTO and from_recipe is not None:
    return from_recipe
  return measured is None or measured <= SMALL_MAX


def _fill_size_class(c, measured: int | None) -> None:
  small = _size_class(c, measured)
  if c.dataset.image_size == SIZE_AUTO:
    c.dataset.image_size = min(measured or 32, SMALL_MAX) if small else LARGE_SIZE
  recipe, model = SMALL_RECIPE if small else LARGE_RECIPE
  if c.augment.recipe == AUTO:
    c.augment.recipe = recipe
  if c.model.name == AUTO:
    c.model.name = model


def provisional(c):
  """A copy of ``c`` with its sentinels replaced by values consistent with the fields that
  are set (the small-image recipe where nothing says otherwise, ImageNet's mean/std): what
  ``validate`` checks the other fields with before the data is measured."""
  c = copy.deepcopy(c)
  _fill_size_class(c, None)
  if tuple(c.dataset.mean) == STATS_AUTO:
    c.dataset.mean = IMAGENET_MEAN
  if tuple(c.dataset.std) == STATS_AUTO:
    c.dataset.std = IMAGENET_STD
  return c


def _train_images(d):
  source = SOURCES.get(d.source)
  if source is None or source.train_images is None:
    raise errors.ConfigError(f"config.dataset: source {d.source!r} cannot measure its images; "
                             f"set dataset.image_size, augment.recipe, model.name, "
                             f"dataset.mean and dataset.std")
  return source.train_images(d)


def resolve(c, train_images=None, log=print):
  """A copy of ``c`` with every field left to the data filled (``c`` itself when none is):
  ``train_images`` (files or uint8 arrays) are measured, default the source's training
  images. What was filled, and from what, goes to ``log`` (one line each)."""
  left = unresolved(c)
  if not left:
    return c
  found = problems(c)
  if found:
    errors.fail(*found[0])
  c = copy.deepcopy(c)
  d, notes = c.dataset, []
  info = known(d)
  if info is None and train_images is None:
    train_images = _train_images(d)
  if any(f in SIZE_FIELDS for f in left):
    size = (stats.typical_size(train_images)
            if d.image_size == SIZE_AUTO and info is None else None)
    _fill_size_class(c, size["size"] if size else None)
    measured = (f" (median larger side {size['size']} px of {size['sampled']} sampled training "
                f"images, {size['min']}..{size['max']})" if size else "")
    notes.append(f"data-derived: image_size {d.image_size}{measured}, augment.recipe "
                 f"{c.augment.recipe!r}, model.name {c.model.name!r} ("
                 f"{'<=' if d.image_size <= SMALL_MAX else '>'} {SMALL_MAX} px: the "
                 f"{'CIFAR' if d.image_size <= SMALL_MAX else 'ImageNet-size'} recipe)")
  if "dataset.mean" in left or "dataset.std" in left:
    if info is not None:
      mean, std, origin = info.mean, info.std, f"the catalog's for {d.name}"
    else:
      m = stats.mean_std(train_images, d.image_size)
      mean, std = m["mean"], m["std"]
      skipped = f"; {m['unreadable']} unreadable left out" if m["unreadable"] else ""
      origin = (f"from {m['sampled']} training images (a fixed sample, seed "
                f"{stats.SAMPLE_SEED}{skipped})")
    if "dataset.mean" in left:
      d.mean = tuple(mean)
    if "dataset.std" in left:
      d.std = tuple(std)
    notes.append(f"data-derived: dataset.mean {tuple(d.mean)}, dataset.std {tuple(d.std)} "
                 f"{origin}; recorded in the run's config (evaluation, export and predict "
                 f"use these)")
  for line in notes:
    log(line)
  return c


def take_saved(c, saved: dict):
  """A copy of ``c`` with the fields it leaves to the data taken from ``saved`` (the config
  a checkpoint recorded, as JSON data): an evaluation normalises as training did."""
  left = unresolved(c)
  if not left:
    return c
  c = copy.deepcopy(c)
  for field in left:
    section, name = field.split(".")
    value = saved.get(section, {}).get(name)
    if value is None:
      raise errors.CheckpointError(f"the checkpoint's config has no {field}, which this config "
                                   f"leaves to the data: set config.{field} as training did")
    c[section][name] = tuple(value) if isinstance(value, list) else value
  return c
