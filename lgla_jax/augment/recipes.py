"""Training augmentation recipes by name: ``config.augment.recipe`` selects one of ``RECIPES``.

A recipe is what the data path, the config checks, the training step and the benchmark ask
about augmentation; none of them names a recipe. Each has

* ``fields``: the ``config.augment`` fields it reads (an override of another is refused);
* ``on_files``: whether it starts from image files decoded one by one on the host (the
  ImageNet-size recipes, whose first op needs the original image) or from in-memory uint8
  batches (the CIFAR recipe, which can run wholly on the devices);
* ``host``: the reference implementation (PIL and numpy, in the input pipeline's workers):
  ``host(images, rng, params, positions=, total=, image_size=, crop_only=)`` returns this
  process's uint8 batch; random numbers are drawn for the whole global batch of ``total``
  and used at ``positions``, so the batch does not depend on the number of processes;
  ``crop_only`` (file recipes) stops after the crop and leaves the rest to ``device``;
* ``device``: the same arithmetic as pure JAX in the jitted step,
  ``device(images_BxHxWxC, keys_B, params)`` (after the host's crop for file recipes).

``params`` is the ``config.augment`` section (or a dict of its fields).
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import numpy as np

from lgla_jax.augment import cifar_device, cifar_host, imagenet_device, imagenet_host


_STREAM = 0xA06  # separates augmentation keys from other uses of the seed


def image_keys(seed, step, positions_B):
  """One key per image from (seed, step, global position); all three may be traced."""
  base = jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), _STREAM), step)
  return jax.vmap(lambda p: jax.random.fold_in(base, p))(positions_B)


@dataclasses.dataclass(frozen=True)
class Recipe:
  """One training augmentation: its fields, its input, and its host and device programs."""

  fields: tuple[str, ...]
  on_files: bool
  host: Callable
  device: Callable


RECIPES: dict[str, Recipe] = {}


def register(name: str, *, fields=(), on_files: bool, host: Callable, device: Callable):
  """Make a recipe selectable as ``config.augment.recipe = name``."""
  RECIPES[name] = Recipe(tuple(fields), on_files, host, device)


def device_augment(images_BxHxWxC, keys_B, augment_config):
  """The configured recipe's device program on a uint8 batch, one key per image."""
  return RECIPES[augment_config.recipe].device(images_BxHxWxC, keys_B, augment_config)


def params(augment_config) -> dict:
  """The fields of the configured recipe, as a plain (picklable) dict."""
  return {f: augment_config[f] for f in RECIPES[augment_config.recipe].fields}


def problems(augment_config) -> list[tuple[str, str]]:
  """``(field, problem)`` pairs of a ``config.augment`` section; empty when usable."""
  a = augment_config
  if a.recipe not in RECIPES:
    return [("augment.recipe", f"{a.recipe!r} is not one of {tuple(RECIPES)}")]
  found = []
  if "rotate" in RECIPES[a.recipe].fields and not 0 <= a.rotate < 180:
    found.append(("augment.rotate", f"must be in [0, 180) degrees, got {a.rotate}"))
  return found


def _cifar_host(images, rng, p, *, positions, total, image_size, crop_only):
  return cifar_host.train_augment(images, rng, crop_padding=p["crop_padding"], flip=p["flip"],
                                  autoaugment=p["autoaugment"], cutout_size=p["cutout"],
                                  rotate=p["rotate"], positions=positions, total=total)


def _file_host(recipe: str):
  """The host program of a per-image file recipe: one seed per image of the global batch."""

  def host(paths, rng, p, *, positions, total, image_size, crop_only):
    seeds = rng.integers(0, 2**63 - 1, size=total)[positions]
    return np.stack([imagenet_host.train_image(imagenet_host.open_image(path),
                                               np.random.default_rng(s), recipe, image_size,
                                               crop_only)
                     for path, s in zip(paths, seeds)])

  return host


def _file_device(recipe: str):
  return lambda images_BxHxWxC, keys_B, p: imagenet_device.train_augment(images_BxHxWxC,
                                                                          keys_B, recipe)


register("cifar", fields=("crop_padding", "flip", "rotate", "autoaugment", "cutout"),
         on_files=False, host=_cifar_host, device=cifar_device.train_augment)
for _name in imagenet_host.RECIPES:  # fixed recipes, as the official loaders
  register(_name, on_files=True, host=_file_host(_name), device=_file_device(_name))
