"""Per-image recipes of the ImageNet-size benchmarks (PIL on the host, numpy Generator).

* ``imagenet`` (ImageNet-LT, iNaturalist 2018): RandomResizedCrop(224, scale 0.08-1),
  horizontal flip, ColorJitter(0.4, 0.4, 0.4), RandAugment (2 ops, magnitude 10, magnitude
  std 0.5; the op set of the reference "rand-n2-m10-mstd0.5" transform).
* ``places`` (Places-LT): RandomResizedCrop(224), ColorJitter(0.4, 0.4, 0.4), grayscale
  with p 0.2, Gaussian blur (sigma 0.1-2) with p 0.5, horizontal flip.
* evaluation: resize the shorter side to 256, centre crop 224.

Each function takes a PIL image and a ``numpy.random.Generator`` and returns a PIL image;
``train_image`` / ``eval_image`` return uint8 arrays.
"""

from __future__ import annotations

import math
import os

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter, ImageOps

from lgla_jax import errors
from lgla_jax.storage import paths

RECIPES = ("imagenet", "places")

# The grey RandAugment's geometric ops leave behind: the ImageNet mean in 0..255, which the
# official loaders use on every data set, iNaturalist included (whose own mean differs).
RANDAUGMENT_FILL = (124, 116, 104)


def random_resized_crop(img, rng, size=224, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
  """torchvision ``RandomResizedCrop``: 10 tries at a random area and aspect ratio, then a
  centre crop at the clamped ratio; resized (bilinear) to ``size`` x ``size``."""
  width, height = img.size
  area = width * height
  log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
  for _ in range(10):
    target = area * rng.uniform(*scale)
    aspect = math.exp(rng.uniform(*log_ratio))
    w = int(round(math.sqrt(target * aspect)))
    h = int(round(math.sqrt(target / aspect)))
    if 0 < w <= width and 0 < h <= height:
      top = int(rng.integers(0, height - h + 1))
      left = int(rng.integers(0, width - w + 1))
      return img.resize((size, size), Image.BILINEAR, box=(left, top, left + w, top + h))
  in_ratio = width / height
  if in_ratio < ratio[0]:
    w, h = width, int(round(width / ratio[0]))
  elif in_ratio > ratio[1]:
    h, w = height, int(round(height * ratio[1]))
  else:
    w, h = width, height
  top, left = (height - h) // 2, (width - w) // 2
  return img.resize((size, size), Image.BILINEAR, box=(left, top, left + w, top + h))


def color_jitter(img, rng, brightness=0.4, contrast=0.4, saturation=0.4):
  """torchvision ``ColorJitter`` (hue 0): the three factors in [1-x, 1+x], in random order."""
  ops = [(ImageEnhance.Brightness, brightness), (ImageEnhance.Contrast, contrast),
         (ImageEnhance.Color, saturation)]
  for k in rng.permutation(len(ops)):
    enhancer, strength = ops[k]
    img = enhancer(img).enhance(rng.uniform(max(0.0, 1 - strength), 1 + strength))
  return img


def _solarize_add(img, add, threshold=128):
  lut = [min(255, i + add) if i < threshold else i for i in range(256)]
  return img.point(lut * len(img.getbands()))


def _affine(img, matrix, rng, fill):
  resample = Image.BILINEAR if rng.random() < 0.5 else Image.BICUBIC
  return img.transform(img.size, Image.AFFINE, matrix, resample=resample, fillcolor=fill)


def _rand_op(img, name, level, rng, fill):
  """One RandAugment op at ``level`` in [0, 10] (signed ops get a random sign)."""
  sign = -1.0 if rng.random() < 0.5 else 1.0
  t = level / 10.0
  if name == "AutoContrast":
    return ImageOps.autocontrast(img)
  if name == "Equalize":
    return ImageOps.equalize(img)
  if name == "Invert":
    return ImageOps.invert(img)
  if name == "Rotate":
    resample = Image.BILINEAR if rng.random() < 0.5 else Image.BICUBIC
    return img.rotate(sign * 30.0 * t, resample=resample, fillcolor=fill)
  if name == "Posterize":
    bits = int(4 * t)  # 0 below level 2.5: black, as Pillow < 10 made it (it now refuses 0)
    return ImageOps.posterize(img, bits) if bits >= 1 else Image.new(img.mode, img.size)
  if name == "Solarize":
    return ImageOps.solarize(img, int(256 * t))
  if name == "SolarizeAdd":
    return _solarize_add(img, int(110 * t))
  if name in ("Color", "Contrast", "Brightness", "Sharpness"):
    return getattr(ImageEnhance, name)(img).enhance(1.8 * t + 0.1)
  if name == "ShearX":
    return _affine(img, (1, sign * 0.3 * t, 0, 0, 1, 0), rng, fill)
  if name == "ShearY":
    return _affine(img, (1, 0, 0, sign * 0.3 * t, 1, 0), rng, fill)
  if name == "TranslateXRel":
    return _affine(img, (1, 0, sign * 0.45 * t * img.size[0], 0, 1, 0), rng, fill)
  if name == "TranslateYRel":
    return _affine(img, (1, 0, 0, 0, 1, sign * 0.45 * t * img.size[1]), rng, fill)
  raise ValueError(f"unknown RandAugment op {name!r}")


RAND_OPS = ("AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize",
            "SolarizeAdd", "Color", "Contrast", "Brightness", "Sharpness", "ShearX", "ShearY",
            "TranslateXRel", "TranslateYRel")


def rand_augment(img, rng, num_ops=2, magnitude=10.0, magnitude_std=0.5, prob=0.5,
                 fill=RANDAUGMENT_FILL):
  """RandAugment: ``num_ops`` ops drawn uniformly (with replacement), each applied with
  probability ``prob`` at a magnitude ~ N(magnitude, magnitude_std) clipped to [0, 10]."""
  for k in rng.integers(0, len(RAND_OPS), size=num_ops):
    if rng.random() < prob:
      level = float(np.clip(rng.normal(magnitude, magnitude_std) if magnitude_std > 0 else magnitude, 0, 10))
      img = _rand_op(img, RAND_OPS[k], level, rng, fill)
  return img


def _flip(img, rng):
  return img.transpose(Image.FLIP_LEFT_RIGHT) if rng.random() < 0.5 else img


def train_image(img, rng, recipe: str, size: int = 224, crop_only: bool = False) -> np.ndarray:
  """The training augmentation of one image (``recipe`` 'imagenet' or 'places').
  ``crop_only``: stop after the RandomResizedCrop, the first step of both recipes (the
  step does the rest: ``imagenet_device``)."""
  if recipe not in RECIPES:
    raise ValueError(f"unknown recipe {recipe!r}; one of {RECIPES}")
  img = random_resized_crop(img.convert("RGB"), rng, size)
  if crop_only:
    return np.asarray(img, dtype=np.uint8)
  if recipe == "imagenet":
    img = _flip(img, rng)
    img = color_jitter(img, rng)
    img = rand_augment(img, rng)
  else:  # places
    img = color_jitter(img, rng)
    if rng.random() < 0.2:
      img = img.convert("L").convert("RGB")
    if rng.random() < 0.5:
      img = img.filter(ImageFilter.GaussianBlur(radius=rng.uniform(0.1, 2.0)))
    img = _flip(img, rng)
  return np.asarray(img, dtype=np.uint8)


def eval_image(img, size: int = 224, resize: int = 256) -> np.ndarray:
  """Resize the shorter side to ``resize`` (bilinear), then centre-crop ``size``."""
  img = img.convert("RGB")
  width, height = img.size
  if width < height:  # torchvision Resize(int): the shorter side becomes ``resize``
    new = (resize, int(resize * height / width))
  else:
    new = (int(resize * width / height), resize)
  img = img.resize(new, Image.BILINEAR)
  left, top = int(round((new[0] - size) / 2.0)), int(round((new[1] - size) / 2.0))
  return np.asarray(img.crop((left, top, left + size, top + size)), dtype=np.uint8)


def open_image(path):
  """Decode an image file (or wrap an in-memory uint8 array, as the benchmark uses)."""
  if isinstance(path, np.ndarray):
    return Image.fromarray(path)
  try:
    with paths.path(path).open("rb") as f, Image.open(f) as img:  # a bucket object too
      img.load()
      return img
  except (OSError, ValueError) as e:
    name = os.fsencode(str(path)).decode("utf-8", "backslashreplace")  # (a non-UTF-8 name)
    raise errors.DataError(f"cannot decode image {name}: {e}; replace the file or remove it "
                           f"(from its class folder, or its line from the split file)") from None
