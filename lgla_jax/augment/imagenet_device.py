"""The ImageNet-size training recipes in the jitted step, after the host's decode and crop.

The host decodes each file and takes its RandomResizedCrop (``imagenet_host``, a
``crop_only`` stage: decoding needs the file and the crop needs the original size); the
step does the rest of the recipe on the uint8 batch, in the host recipe's order:

* ``imagenet``: horizontal flip, ColorJitter(0.4, 0.4, 0.4), RandAugment (2 ops,
  magnitude 10, std 0.5, probability 0.5, the ImageNet-mean fill);
* ``places``: ColorJitter, greyscale with p 0.2, Gaussian blur (radius 0.1-2) with p 0.5,
  horizontal flip.

Each op reproduces PIL's arithmetic (``cifar_device`` has the shared ones; here the
AFFINE bilinear sampler, ``SolarizeAdd`` and PIL's Gaussian blur, which is three box-blur
passes per axis in 8.24 fixed point), and ``tests/augment/test_imagenet_device.py``
compares them with the host path, the reference. Keys as ``recipes.image_keys``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from lgla_jax.augment import cifar_device, imagenet_host

# --- PIL's AFFINE bilinear sampler and Gaussian blur -------------------------------------


def affine_bilinear(img_HxWxC, matrix, fill):
  """PIL AFFINE with BILINEAR: 2x2 neighbours clamped at the border, truncated to uint8."""
  h, w, _ = img_HxWxC.shape
  sx, sy = cifar_device._source_coords(matrix, h, w)
  inside = (sx >= 0) & (sx < w) & (sy >= 0) & (sy < h)
  fx, fy = sx - 0.5, sy - 0.5
  x0, y0 = jnp.floor(fx), jnp.floor(fy)
  dx, dy = (fx - x0)[..., None], (fy - y0)[..., None]
  xa = jnp.clip(x0.astype(jnp.int32), 0, w - 1)
  xb = jnp.clip(x0.astype(jnp.int32) + 1, 0, w - 1)
  ya = jnp.clip(y0.astype(jnp.int32), 0, h - 1)
  yb = jnp.clip(y0.astype(jnp.int32) + 1, 0, h - 1)
  x = img_HxWxC.astype(jnp.float32)
  top = x[ya, xa] + (x[ya, xb] - x[ya, xa]) * dx
  bottom = x[yb, xa] + (x[yb, xb] - x[yb, xa]) * dx
  v = jnp.floor(jnp.clip(top + (bottom - top) * dy, 0, 255)).astype(jnp.uint8)
  return jnp.where(inside[..., None], v, jnp.asarray(fill, jnp.uint8))


def affine(img, matrix, fill, bicubic):
  """PIL AFFINE with BICUBIC where ``bicubic`` (traced) is True, else BILINEAR."""
  return jnp.where(bicubic, cifar_device.affine_bicubic(img, matrix, fill),
                   affine_bilinear(img, matrix, fill))


def _box_radius(radius, xp=jnp):
  """PIL's ``_gaussian_blur_radius`` for 3 passes: the fractional box radius."""
  sigma2 = radius * radius / 3.0
  length = xp.sqrt(12.0 * sigma2 + 1.0)
  whole = xp.floor((length - 1.0) / 2.0)
  frac = (2 * whole + 1) * (whole * (whole + 1) - 3 * sigma2)
  return whole + frac / (6 * (sigma2 - (whole + 1) * (whole + 1)))


MAX_BLUR_RADIUS = 2.0  # the places recipe's largest radius
_REACH = int(_box_radius(np.float32(MAX_BLUR_RADIUS), np)) + 1  # farthest tap of a pass (2)


def _box_pass(x, axis, whole, ww, fw):
  """One PIL box-blur pass along ``axis`` (uint32 values): ``whole``-radius window times
  ``ww`` plus the two next pixels times ``fw``, edges repeated, rounded from 8.24."""
  n = x.shape[axis]
  acc = jnp.zeros(x.shape, jnp.uint32)
  for offset in range(-_REACH, _REACH + 1):
    idx = jnp.clip(jnp.arange(n) + offset, 0, n - 1)
    tap = jnp.take(x, idx, axis=axis)
    weight = jnp.where(abs(offset) <= whole, ww, jnp.where(abs(offset) == whole + 1, fw, 0))
    acc = acc + tap * weight.astype(jnp.uint32)
  return (acc + jnp.uint32(1 << 23)) >> 24


def gaussian_blur(img_HxWxC, radius):
  """PIL ``ImageFilter.GaussianBlur(radius)`` for radius <= ``MAX_BLUR_RADIUS``."""
  box = _box_radius(jnp.asarray(radius, jnp.float32))
  whole = box.astype(jnp.int32)
  ww = jnp.floor(jnp.float32(1 << 24) / (box * 2 + 1)).astype(jnp.uint32)
  fw = (jnp.uint32(1 << 24) - (2 * whole + 1).astype(jnp.uint32) * ww) // 2
  x = img_HxWxC.astype(jnp.uint32)
  for axis in (1, 0):  # PIL blurs the rows three times, then the columns three times
    for _ in range(3):
      x = _box_pass(x, axis, whole, ww, fw)
  return jnp.where(box != 0, x.astype(jnp.uint8), img_HxWxC)


def solarize_add(img, add, threshold=128):
  """Add ``add`` (clipped at 255) to the values below ``threshold``."""
  x = img.astype(jnp.int32)
  return jnp.where(x < threshold, jnp.minimum(x + add, 255), x).astype(jnp.uint8)


# --- RandAugment (the host's ``imagenet_host.rand_augment``) ----------------------------

RAND_OPS = imagenet_host.RAND_OPS
GEOMETRIC = ("Rotate", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel")
_ENHANCE = {"Color": cifar_device.color, "Contrast": cifar_device.contrast,
            "Brightness": cifar_device.brightness, "Sharpness": cifar_device.sharpness}

# Colour op name -> f(img, t) with t = level / 10 in [0, 1], as ``imagenet_host._rand_op``.
COLOUR_OPS = {
    "AutoContrast": lambda img, t: cifar_device.autocontrast(img),
    "Equalize": lambda img, t: cifar_device.equalize(img),
    "Invert": lambda img, t: cifar_device.invert(img),
    "Posterize": lambda img, t: cifar_device.posterize(img, jnp.floor(4 * t).astype(jnp.int32)),
    "Solarize": lambda img, t: cifar_device.solarize(img, jnp.floor(256 * t)),
    "SolarizeAdd": lambda img, t: solarize_add(img, jnp.floor(110 * t).astype(jnp.int32)),
    **{name: (lambda img, t, f=f: f(img, 1.8 * t + 0.1)) for name, f in _ENHANCE.items()},
}
assert set(COLOUR_OPS) | set(GEOMETRIC) == set(RAND_OPS)


def geometric_matrix(op_index, t, sign, h, w):
  """The AFFINE matrix of geometric op ``RAND_OPS[op_index]`` (identity for the others)."""
  candidates = {
      "Rotate": cifar_device.rotation_matrix(sign * 30.0 * t, h, w),
      "ShearX": (1.0, sign * 0.3 * t, 0.0, 0.0, 1.0, 0.0),
      "ShearY": (1.0, 0.0, 0.0, sign * 0.3 * t, 1.0, 0.0),
      "TranslateXRel": (1.0, 0.0, sign * 0.45 * t * w, 0.0, 1.0, 0.0),
      "TranslateYRel": (1.0, 0.0, 0.0, 0.0, 1.0, sign * 0.45 * t * h),
  }
  identity = jnp.asarray((1.0, 0.0, 0.0, 0.0, 1.0, 0.0), jnp.float32)
  table = jnp.stack([jnp.stack([jnp.asarray(v, jnp.float32) for v in candidates[name]])
                     if name in candidates else identity for name in RAND_OPS])
  return tuple(table[op_index])


def apply_rand_op(img, op_index, level, sign, bicubic, fill=imagenet_host.RANDAUGMENT_FILL):
  """RandAugment op ``RAND_OPS[op_index]`` at ``level`` in [0, 10]: the signed ops use
  ``sign`` (+-1), the geometric ones sample BICUBIC where ``bicubic`` else BILINEAR.
  The five geometric ops share one sampler (only their matrices differ)."""
  h, w, _ = img.shape
  t = jnp.asarray(level, jnp.float32) / 10.0
  geometric = affine(img, geometric_matrix(op_index, t, sign, h, w), fill, bicubic)
  colour_names = [n for n in RAND_OPS if n in COLOUR_OPS]
  colour_index = jnp.asarray([colour_names.index(n) if n in COLOUR_OPS else 0 for n in RAND_OPS])
  colour = jax.lax.switch(colour_index[op_index], [COLOUR_OPS[n] for n in colour_names], img, t)
  is_geometric = jnp.asarray([n in GEOMETRIC for n in RAND_OPS])[op_index]
  return jnp.where(is_geometric, geometric, colour)


def sample_randaugment(key, num_ops=2, magnitude=10.0, magnitude_std=0.5, prob=0.5):
  """Per op slot: op index, applied, level (N(magnitude, std) clipped to [0, 10]), sign
  (+-1) and the bicubic coin, as the host draws them (uniform ops, with replacement)."""
  k_op, k_coin, k_level, k_sign, k_cubic = jax.random.split(key, 5)
  ops = jax.random.randint(k_op, (num_ops,), 0, len(RAND_OPS))
  applied = jax.random.uniform(k_coin, (num_ops,)) < prob
  levels = jnp.clip(magnitude + magnitude_std * jax.random.normal(k_level, (num_ops,)), 0, 10)
  signs = jnp.where(jax.random.bernoulli(k_sign, 0.5, (num_ops,)), -1.0, 1.0)
  bicubic = jax.random.bernoulli(k_cubic, 0.5, (num_ops,))
  return ops, applied, levels, signs, bicubic


def rand_augment(img, key):
  """RandAugment "rand-n2-m10-mstd0.5" on one image."""
  ops, applied, levels, signs, bicubic = sample_randaugment(key)
  for k in range(ops.shape[0]):
    out = apply_rand_op(img, ops[k], levels[k], signs[k], bicubic[k])
    img = jnp.where(applied[k], out, img)
  return img


# --- ColorJitter and the recipes ---------------------------------------------------------

_JITTER = (cifar_device.brightness, cifar_device.contrast, cifar_device.color)


def sample_color_jitter(key, strength=0.4):
  """The order of (brightness, contrast, saturation) and their factors in [1-s, 1+s]."""
  k_order, k_factor = jax.random.split(key)
  order = jax.random.permutation(k_order, len(_JITTER))
  factors = jax.random.uniform(k_factor, (len(_JITTER),), minval=max(0.0, 1 - strength),
                               maxval=1 + strength)
  return order, factors


def color_jitter(img, key):
  """torchvision ``ColorJitter(0.4, 0.4, 0.4)``: the three enhancements in random order."""
  order, factors = sample_color_jitter(key)
  for k in range(len(_JITTER)):
    img = jax.lax.switch(order[k], list(_JITTER), img, factors[order[k]])
  return img


def _imagenet(img, key):
  k_flip, k_jitter, k_rand = jax.random.split(key, 3)
  img = cifar_device.random_flip(img, k_flip)
  return rand_augment(color_jitter(img, k_jitter), k_rand)


def sample_places(key):
  """The Places coins: greyscale (p 0.2), blur (p 0.5) and its radius in [0.1, 2]."""
  k_grey, k_blur, k_radius = jax.random.split(key, 3)
  return (jax.random.uniform(k_grey) < 0.2, jax.random.uniform(k_blur) < 0.5,
          jax.random.uniform(k_radius, (), minval=0.1, maxval=MAX_BLUR_RADIUS))


def _places(img, key):
  k_jitter, k_coins, k_flip = jax.random.split(key, 3)
  grey, blur, radius = sample_places(k_coins)
  img = color_jitter(img, k_jitter)
  img = jnp.where(grey, jnp.broadcast_to(cifar_device.greyscale(img)[..., None],
                                         img.shape).astype(jnp.uint8), img)
  img = jnp.where(blur, gaussian_blur(img, radius), img)
  return cifar_device.random_flip(img, k_flip)


RECIPES = {"imagenet": _imagenet, "places": _places}  # keys: imagenet_host.RECIPES
assert tuple(RECIPES) == imagenet_host.RECIPES


def train_augment(images_BxHxWxC, keys_B, recipe: str):
  """The part of ``recipe`` after the host's crop, on a uint8 batch, one key per image."""
  return jax.vmap(RECIPES[recipe])(images_BxHxWxC, keys_B)
