"""The CIFAR training augmentation as pure JAX functions on uint8 images (runs in the step).

The host path (``cifar_host``: numpy + PIL) is the reference; every op here reproduces PIL's
arithmetic (its integer greyscale, its truncating blends, its AFFINE nearest and bicubic
samplers, its histogram LUTs), and ``tests/augment/test_cifar_device.py`` measures the
difference on real images. Recipe order as the official loader: pad-crop, flip, rotation
(RIDE), AutoAugment (CIFAR-10 policy), Cutout.

Random numbers: one key per image (``recipes.image_keys``: seed, step and the position of
the image in the global batch), so an image is augmented the same whatever the number of
devices or processes.
The host path draws from numpy, so the two paths give different (equally distributed)
augmentations of the same batch.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from lgla_jax.augment import cifar_host

# --- geometry: PIL's Image.transform(AFFINE) ------------------------------------------

def _source_coords(matrix, h, w):
  """Where PIL samples output pixel (x, y): the matrix applied to the pixel centre."""
  a, b, c, d, e, f = matrix
  ys, xs = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32) + 0.5,
                        jnp.arange(w, dtype=jnp.float32) + 0.5, indexing="ij")
  return a * xs + b * ys + c, d * xs + e * ys + f


def affine_nearest(img_HxWxC, matrix, fill):
  """PIL AFFINE with NEAREST: source pixel ``floor`` of the mapped centre, ``fill`` outside."""
  h, w, _ = img_HxWxC.shape
  sx, sy = _source_coords(matrix, h, w)
  inside = (sx >= 0) & (sx < w) & (sy >= 0) & (sy < h)
  xi = jnp.clip(jnp.floor(sx).astype(jnp.int32), 0, w - 1)
  yi = jnp.clip(jnp.floor(sy).astype(jnp.int32), 0, h - 1)
  out = img_HxWxC[yi, xi]
  return jnp.where(inside[..., None], out, jnp.asarray(fill, jnp.uint8))


def _cubic(v1, v2, v3, v4, d):
  """PIL's BICUBIC macro (a = -1) in its Horner form: the value at offset d in [0, 1)
  between v2 and v3. Elementwise only: no dot whose summation order a compiler may change
  with the sharding (the images must not depend on the number of devices)."""
  p2 = v3 - v1
  p3 = 2 * (v1 - v2) + v3 - v4
  p4 = v2 - v1 - v3 + v4
  return v2 + d * (p2 + d * (p3 + d * p4))


def affine_bicubic(img_HxWxC, matrix, fill):
  """PIL AFFINE with BICUBIC: 4x4 neighbours clamped at the border, each row interpolated
  then the column of rows, truncated to uint8."""
  h, w, _ = img_HxWxC.shape
  sx, sy = _source_coords(matrix, h, w)
  inside = (sx >= 0) & (sx < w) & (sy >= 0) & (sy < h)
  fx, fy = sx - 0.5, sy - 0.5
  x0, y0 = jnp.floor(fx), jnp.floor(fy)
  dx, dy = (fx - x0)[..., None], (fy - y0)[..., None]
  xs = [jnp.clip(x0.astype(jnp.int32) + t, 0, w - 1) for t in range(-1, 3)]
  ys = [jnp.clip(y0.astype(jnp.int32) + t, 0, h - 1) for t in range(-1, 3)]
  x = img_HxWxC.astype(jnp.float32)
  rows = [_cubic(*(x[y, c] for c in xs), dx) for y in ys]
  v = _cubic(*rows, dy)
  v = jnp.floor(jnp.clip(v, 0, 255)).astype(jnp.uint8)
  return jnp.where(inside[..., None], v, jnp.asarray(fill, jnp.uint8))


def rotation_matrix(degrees, h, w):
  """The inverse matrix of PIL ``Image.rotate(degrees)`` about the image centre."""
  angle = -jnp.deg2rad(degrees)
  cos, sin = jnp.cos(angle), jnp.sin(angle)
  cx, cy = w / 2.0, h / 2.0
  return (cos, sin, cos * -cx + sin * -cy + cx, -sin, cos, -sin * -cx + cos * -cy + cy)


def rotate(img_HxWxC, degrees, fill):
  """PIL ``img.rotate(degrees, NEAREST, fillcolor=fill)`` (counter-clockwise)."""
  h, w, _ = img_HxWxC.shape
  return affine_nearest(img_HxWxC, rotation_matrix(degrees, h, w), fill)


# --- colour: PIL's ImageEnhance / ImageOps --------------------------------------------

def greyscale(img_HxWxC):
  """PIL's RGB -> L: ``(19595 R + 38470 G + 7471 B + 2^15) >> 16``, as int32 [H, W]."""
  x = img_HxWxC.astype(jnp.int32)
  return (x[..., 0] * 19595 + x[..., 1] * 38470 + x[..., 2] * 7471 + 0x8000) >> 16


def blend(degenerate, img, factor):
  """PIL ``Image.blend(degenerate, img, factor)``: float32, clipped, truncated."""
  d = degenerate.astype(jnp.float32)
  v = d + jnp.float32(factor) * (img.astype(jnp.float32) - d)
  return jnp.floor(jnp.clip(v, 0, 255)).astype(jnp.uint8)


def color(img, factor):
  """Blend with the greyscale image (``ImageEnhance.Color``)."""
  return blend(jnp.broadcast_to(greyscale(img)[..., None], img.shape), img, factor)


def contrast(img, factor):
  """Blend with the rounded mean of the greyscale image (``ImageEnhance.Contrast``)."""
  total = jnp.sum(greyscale(img))
  n = img.shape[0] * img.shape[1]
  mean = (2 * total + n) // (2 * n)
  return blend(jnp.full(img.shape, mean, jnp.int32), img, factor)


def brightness(img, factor):
  """Blend with black (``ImageEnhance.Brightness``)."""
  return blend(jnp.zeros_like(img), img, factor)


_SMOOTH = np.array([[1, 1, 1], [1, 5, 1], [1, 1, 1]], np.float32) / np.float32(13)


def sharpness(img, factor):
  """Blend with PIL's SMOOTH filter (3x3, weights /13, rounded; border pixels kept)."""
  x = img.astype(jnp.float32)
  h, w, _ = img.shape
  smooth = sum(_SMOOTH[i, j] * x[i:h - 2 + i, j:w - 2 + j] for i in range(3) for j in range(3))
  smooth = jnp.clip(jnp.floor(smooth + 0.5), 0, 255).astype(jnp.uint8)
  return blend(img.at[1:-1, 1:-1].set(smooth), img, factor)


def posterize(img, bits):
  """Keep the top ``bits`` bits of every value."""
  keep = jnp.left_shift(jnp.int32(0xFF), 8 - jnp.asarray(bits, jnp.int32)) & 0xFF
  return (img.astype(jnp.int32) & keep).astype(jnp.uint8)


def solarize(img, threshold):
  """Invert the values at or above ``threshold``."""
  return jnp.where(img.astype(jnp.float32) < threshold, img, 255 - img)


def invert(img):
  """``ImageOps.invert``."""
  return 255 - img


def _per_channel_lut(img, lut_fn):
  """Apply a LUT built per channel from that channel's 256-bin histogram."""
  x = img.astype(jnp.int32).reshape(-1, img.shape[-1])  # [pixels, C]
  hist = jax.vmap(lambda v: jnp.bincount(v, length=256), in_axes=1)(x)  # [C, 256]
  lut = jax.vmap(lut_fn)(hist)  # [C, 256]
  out = jnp.take_along_axis(lut.T, x, axis=0)  # lut[c, x[p, c]]
  return jnp.clip(out, 0, 255).astype(jnp.uint8).reshape(img.shape)


def autocontrast(img):
  """``ImageOps.autocontrast``: stretch each channel's [min, max] to [0, 255]."""

  def lut(hist):
    present = hist > 0
    lo = jnp.argmax(present)
    hi = 255 - jnp.argmax(present[::-1])
    i = jnp.arange(256)
    scale = 255.0 / jnp.maximum(hi - lo, 1).astype(jnp.float32)
    stretched = jnp.floor(i * scale - lo * scale).astype(jnp.int32)
    return jnp.where(hi > lo, jnp.clip(stretched, 0, 255), i)

  return _per_channel_lut(img, lut)


def equalize(img):
  """``ImageOps.equalize``: each channel through its cumulative-histogram LUT."""

  def lut(hist):
    last = 255 - jnp.argmax((hist > 0)[::-1])
    step = (jnp.sum(hist) - hist[last]) // 255
    i = jnp.arange(256)
    cum = jnp.cumsum(hist) - hist  # pixels below each value
    mapped = (step // 2 + cum) // jnp.maximum(step, 1)
    return jnp.where((jnp.sum(hist > 0) > 1) & (step > 0), mapped, i)

  return _per_channel_lut(img, lut)


# --- AutoAugment, CIFAR-10 policy ------------------------------------------------------

def _translate(img, dx, dy):
  return affine_nearest(img, (1.0, 0.0, dx, 0.0, 1.0, dy), cifar_host.AUTOAUGMENT_FILL)


# op name -> f(img, p) where p is the signed parameter ``_parameter`` computes.
OPS = {
    "shearX": lambda img, p: affine_bicubic(img, (1.0, p, 0.0, 0.0, 1.0, 0.0), cifar_host.AUTOAUGMENT_FILL),
    "shearY": lambda img, p: affine_bicubic(img, (1.0, 0.0, 0.0, p, 1.0, 0.0), cifar_host.AUTOAUGMENT_FILL),
    "translateX": lambda img, p: _translate(img, p * img.shape[1], 0.0),
    "translateY": lambda img, p: _translate(img, 0.0, p * img.shape[0]),
    "rotate": lambda img, p: rotate(img, p, cifar_host.AUTOAUGMENT_FILL),
    "color": color,
    "contrast": contrast,
    "sharpness": sharpness,
    "brightness": brightness,
    "posterize": posterize,
    "solarize": solarize,
    "autocontrast": lambda img, p: autocontrast(img),
    "equalize": lambda img, p: equalize(img),
    "invert": lambda img, p: invert(img),
}
OP_NAMES = tuple(OPS)


def _parameter(op: str, index: int, sign: int) -> float:
  """The number the host path hands PIL for (op, magnitude index, sign), in float64."""
  mag = cifar_host._magnitude(op, index)
  if op in ("color", "contrast", "sharpness", "brightness"):
    return 1 + mag * sign  # the enhancement factor
  if op in ("shearX", "shearY", "translateX", "translateY"):
    return mag * sign
  return mag  # rotate is counter-clockwise only; the rest take no sign


def _policy_tables():
  """[25, 2] op ids and probabilities, [25, 2, 2] parameters by sign (-1, +1)."""
  ops = np.array([[OP_NAMES.index(op) for _, op, _ in sub] for sub in cifar_host.CIFAR10_POLICY])
  probs = np.array([[p for p, _, _ in sub] for sub in cifar_host.CIFAR10_POLICY], np.float32)
  params = np.array([[[_parameter(op, idx, s) for s in (-1, 1)] for _, op, idx in sub]
                     for sub in cifar_host.CIFAR10_POLICY], np.float32)
  return ops, probs, params


def apply_op(img, op: str, parameter):
  """One AutoAugment operation with the parameter ``_parameter`` gives (tests use it)."""
  return OPS[op](img, parameter)


def sample_autoaugment(key):
  """(sub-policy, applied[2], sign index[2]) for one image, as the host path draws them:
  a uniform sub-policy, each step applied with its probability, signs +-1 at random."""
  k_choice, k_coin, k_sign = jax.random.split(key, 3)
  _, probs, _ = _policy_tables()
  choice = jax.random.randint(k_choice, (), 0, len(cifar_host.CIFAR10_POLICY))
  applied = jax.random.uniform(k_coin, (2,)) < jnp.asarray(probs)[choice]
  sign_index = jax.random.bernoulli(k_sign, 0.5, (2,)).astype(jnp.int32)
  return choice, applied, sign_index


def autoaugment_cifar10(img, key):
  """AutoAugment with the CIFAR-10 policy on one image: one random sub-policy."""
  ops, _, params = _policy_tables()
  choice, applied, sign_index = sample_autoaugment(key)
  branches = [lambda x, p, f=OPS[name]: f(x, p) for name in OP_NAMES]
  for k in range(2):
    p = jnp.asarray(params)[choice, k, sign_index[k]]
    out = jax.lax.switch(jnp.asarray(ops)[choice, k], branches, img, p)
    img = jnp.where(applied[k], out, img)
  return img


# --- the recipe --------------------------------------------------------------------------

def random_crop(img, key, padding: int):
  """Zero-pad by ``padding`` and take the window at a uniform offset (RandomCrop)."""
  h, w, c = img.shape
  dy, dx = jax.random.randint(key, (2,), 0, 2 * padding + 1)
  padded = jnp.pad(img, ((padding, padding), (padding, padding), (0, 0)))
  return jax.lax.dynamic_slice(padded, (dy, dx, 0), (h, w, c))


def random_flip(img, key):
  """Mirror left-right with probability 1/2."""
  return jnp.where(jax.random.bernoulli(key), img[:, ::-1], img)


def random_rotate(img, key, degrees: float):
  """torchvision ``RandomRotation(degrees)``: uniform angle, nearest, black corners."""
  return rotate(img, jax.random.uniform(key, (), minval=-degrees, maxval=degrees), 0)


def cutout(img, key, length: int):
  """One ``length``-pixel square of zeros centred uniformly, clipped at the border."""
  h, w, _ = img.shape
  cy = jax.random.randint(jax.random.fold_in(key, 0), (), 0, h)
  cx = jax.random.randint(jax.random.fold_in(key, 1), (), 0, w)
  rows = (jnp.arange(h) >= cy - length // 2) & (jnp.arange(h) < cy + length // 2)
  cols = (jnp.arange(w) >= cx - length // 2) & (jnp.arange(w) < cx + length // 2)
  return jnp.where((rows[:, None] & cols[None, :])[..., None], jnp.uint8(0), img)


def train_augment(images_BxHxWxC, keys_B, params):
  """The CIFAR recipe on a uint8 batch, one key per image (``recipes.image_keys``); ``params``: the
  recipe's ``config.augment`` fields (crop_padding, flip, rotate, autoaugment, cutout)."""
  p = params

  def one(img, key):
    k_crop, k_flip, k_rot, k_auto, k_cut = jax.random.split(key, 5)
    if p["crop_padding"]:
      img = random_crop(img, k_crop, p["crop_padding"])
    if p["flip"]:
      img = random_flip(img, k_flip)
    if p["rotate"]:
      img = random_rotate(img, k_rot, p["rotate"])
    if p["autoaugment"]:
      img = autoaugment_cifar10(img, k_auto)
    if p["cutout"]:
      img = cutout(img, k_cut, p["cutout"])
    return img

  return jax.vmap(one)(images_BxHxWxC, keys_B)
