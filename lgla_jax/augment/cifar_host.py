"""Training augmentation on uint8 NHWC batches, on the host, driven by a numpy Generator.

The CIFAR recipe of the official loader, in its order: pad-4 random crop, horizontal flip,
AutoAugment (CIFAR-10 policy), Cutout (one 16-pixel hole, zeros: the official Cutout acts
on the [0, 1] tensor before normalisation, so a hole is black). Normalisation happens on
the device.

Every op draws its random numbers for a whole *global* batch of ``total`` images and uses
those at ``positions`` (this process's share), so a global batch is augmented the same
whatever the number of processes that share it.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageEnhance, ImageOps


def _share(positions, n):
  positions = np.arange(n) if positions is None else np.asarray(positions)
  total = int(positions.max()) + 1 if positions.size else 0
  return positions, total


def random_crop(images: np.ndarray, rng: np.random.Generator, padding: int,
                fill: int = 0, positions=None, total=None) -> np.ndarray:
  """Zero-pad every side by ``padding`` and crop back to the input size at a random offset
  (torchvision ``RandomCrop(size, padding)``)."""
  if padding <= 0:
    return images
  n, h, w, _ = images.shape
  positions, least = _share(positions, n)
  total = total or least
  padded = np.pad(images, ((0, 0), (padding, padding), (padding, padding), (0, 0)),
                  constant_values=fill)
  dy = rng.integers(0, 2 * padding + 1, size=total)[positions]
  dx = rng.integers(0, 2 * padding + 1, size=total)[positions]
  rows = dy[:, None] + np.arange(h)[None, :]  # [n, h]
  cols = dx[:, None] + np.arange(w)[None, :]  # [n, w]
  return padded[np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]


def random_flip(images: np.ndarray, rng: np.random.Generator, positions=None,
                total=None) -> np.ndarray:
  """Mirror each image left-right with probability 1/2."""
  positions, least = _share(positions, images.shape[0])
  flip = (rng.random(total or least) < 0.5)[positions]
  out = images.copy()
  out[flip] = images[flip, :, ::-1]
  return out


def cutout(images: np.ndarray, rng: np.random.Generator, length: int, positions=None,
           total=None) -> np.ndarray:
  """One square hole per image, centred uniformly at random and clipped at the border
  (the official ``Cutout(n_holes=1, length)``)."""
  if length <= 0:
    return images
  n, h, w, _ = images.shape
  positions, least = _share(positions, n)
  total = total or least
  cy = rng.integers(0, h, size=total)[positions]
  cx = rng.integers(0, w, size=total)[positions]
  y1, y2 = np.clip(cy - length // 2, 0, h), np.clip(cy + length // 2, 0, h)
  x1, x2 = np.clip(cx - length // 2, 0, w), np.clip(cx + length // 2, 0, w)
  ys, xs = np.arange(h)[None, :], np.arange(w)[None, :]
  hole = (((ys >= y1[:, None]) & (ys < y2[:, None]))[:, :, None] &
          ((xs >= x1[:, None]) & (xs < x2[:, None]))[:, None, :])
  return np.where(hole[..., None], np.uint8(0), images)


# AutoAugment's CIFAR-10 policy (Cubuk et al., 2019): 25 sub-policies of two
# (probability, operation, magnitude index 0..9) steps; one sub-policy is drawn per image.
CIFAR10_POLICY = (
    ((0.1, "invert", 7), (0.2, "contrast", 6)),
    ((0.7, "rotate", 2), (0.3, "translateX", 9)),
    ((0.8, "sharpness", 1), (0.9, "sharpness", 3)),
    ((0.5, "shearY", 8), (0.7, "translateY", 9)),
    ((0.5, "autocontrast", 8), (0.9, "equalize", 2)),
    ((0.2, "shearY", 7), (0.3, "posterize", 7)),
    ((0.4, "color", 3), (0.6, "brightness", 7)),
    ((0.3, "sharpness", 9), (0.7, "brightness", 9)),
    ((0.6, "equalize", 5), (0.5, "equalize", 1)),
    ((0.6, "contrast", 7), (0.6, "sharpness", 5)),
    ((0.7, "color", 7), (0.5, "translateX", 8)),
    ((0.3, "equalize", 7), (0.4, "autocontrast", 8)),
    ((0.4, "translateY", 3), (0.2, "sharpness", 6)),
    ((0.9, "brightness", 6), (0.2, "color", 8)),
    ((0.5, "solarize", 2), (0.0, "invert", 3)),
    ((0.2, "equalize", 0), (0.6, "autocontrast", 0)),
    ((0.2, "equalize", 8), (0.6, "equalize", 4)),
    ((0.9, "color", 9), (0.6, "equalize", 6)),
    ((0.8, "autocontrast", 4), (0.2, "solarize", 8)),
    ((0.1, "brightness", 3), (0.7, "color", 0)),
    ((0.4, "solarize", 5), (0.9, "autocontrast", 3)),
    ((0.9, "translateY", 9), (0.7, "translateY", 9)),
    ((0.9, "autocontrast", 2), (0.8, "solarize", 3)),
    ((0.8, "equalize", 8), (0.1, "invert", 3)),
    ((0.7, "translateY", 9), (0.9, "autocontrast", 1)),
)

AUTOAUGMENT_FILL = (128, 128, 128)  # the grey the geometric ops leave behind


def _magnitude(op: str, index: int) -> float:
  """The value of magnitude index 0..9, on the ranges of the reference AutoAugment code."""
  t = index / 9.0
  if op in ("shearX", "shearY"):
    return 0.3 * t
  if op in ("translateX", "translateY"):
    return 150.0 / 331.0 * t  # a fraction of the image side
  if op == "rotate":
    return 30.0 * t
  if op in ("color", "contrast", "sharpness", "brightness"):
    return 0.9 * t
  if op == "posterize":
    return float(int(np.round(8 - 4 * t)))  # bits kept
  if op == "solarize":
    return 256.0 * (1 - t)  # threshold
  return 0.0


def _apply(img: Image.Image, op: str, mag: float, sign: int) -> Image.Image:
  fill = AUTOAUGMENT_FILL
  if op == "shearX":
    return img.transform(img.size, Image.AFFINE, (1, mag * sign, 0, 0, 1, 0), Image.BICUBIC, fillcolor=fill)
  if op == "shearY":
    return img.transform(img.size, Image.AFFINE, (1, 0, 0, mag * sign, 1, 0), Image.BICUBIC, fillcolor=fill)
  if op == "translateX":
    return img.transform(img.size, Image.AFFINE, (1, 0, mag * img.size[0] * sign, 0, 1, 0), fillcolor=fill)
  if op == "translateY":
    return img.transform(img.size, Image.AFFINE, (1, 0, 0, 0, 1, mag * img.size[1] * sign), fillcolor=fill)
  if op == "rotate":  # counter-clockwise only, as in the official code
    return img.rotate(mag, fillcolor=fill)
  if op == "color":
    return ImageEnhance.Color(img).enhance(1 + mag * sign)
  if op == "contrast":
    return ImageEnhance.Contrast(img).enhance(1 + mag * sign)
  if op == "sharpness":
    return ImageEnhance.Sharpness(img).enhance(1 + mag * sign)
  if op == "brightness":
    return ImageEnhance.Brightness(img).enhance(1 + mag * sign)
  if op == "posterize":
    return ImageOps.posterize(img, int(mag))
  if op == "solarize":
    return ImageOps.solarize(img, mag)
  if op == "autocontrast":
    return ImageOps.autocontrast(img)
  if op == "equalize":
    return ImageOps.equalize(img)
  if op == "invert":
    return ImageOps.invert(img)
  raise ValueError(f"unknown AutoAugment operation {op!r}")


def sample_autoaugment(rng: np.random.Generator, total: int):
  """Per image: a uniform sub-policy, two uniform coins (step k runs if coin < its
  probability) and two signs +-1 for the magnitudes."""
  choice = rng.integers(0, len(CIFAR10_POLICY), size=total)
  coins = rng.random((total, 2))
  signs = rng.choice(np.array([-1, 1]), size=(total, 2))
  return choice, coins, signs


def autoaugment_cifar10(images: np.ndarray, rng: np.random.Generator, positions=None,
                        total=None) -> np.ndarray:
  """AutoAugment with the CIFAR-10 policy, one random sub-policy per image."""
  n = images.shape[0]
  positions, least = _share(positions, n)
  choice, coins, signs = (a[positions] for a in sample_autoaugment(rng, total or least))
  out = images.copy()
  for i in range(n):
    img = None
    for k, (p, op, idx) in enumerate(CIFAR10_POLICY[choice[i]]):
      if coins[i, k] < p:
        img = img or Image.fromarray(images[i])
        img = _apply(img, op, _magnitude(op, idx), int(signs[i, k]))
    if img is not None:
      out[i] = np.asarray(img.convert("RGB"))
  return out


def random_rotate(images: np.ndarray, rng: np.random.Generator, degrees: float, positions=None,
                  total=None) -> np.ndarray:
  """Rotate each image by an angle uniform in [-degrees, degrees] about its centre, nearest
  neighbour, black corners (torchvision ``RandomRotation(degrees)``, as RIDE's loader)."""
  if degrees <= 0:
    return images
  positions, least = _share(positions, images.shape[0])
  angles = rng.uniform(-degrees, degrees, size=total or least)[positions]
  out = images.copy()
  for i, angle in enumerate(angles):
    out[i] = np.asarray(Image.fromarray(images[i]).rotate(float(angle), Image.NEAREST, fillcolor=0))
  return out


def train_augment(images: np.ndarray, rng: np.random.Generator, *, crop_padding: int,
                  flip: bool, autoaugment: bool, cutout_size: int, rotate: float = 0.0,
                  positions=None, total=None) -> np.ndarray:
  """The configured training augmentation of one uint8 batch, in the official order.

  ``positions``/``total``: this batch is the share at ``positions`` of a global batch of
  ``total`` images (default: the whole batch)."""
  share = dict(positions=positions, total=total)
  images = random_crop(images, rng, crop_padding, **share)
  if flip:
    images = random_flip(images, rng, **share)
  images = random_rotate(images, rng, rotate, **share)
  if autoaugment:
    images = autoaugment_cifar10(images, rng, **share)
  return cutout(images, rng, cutout_size, **share)
