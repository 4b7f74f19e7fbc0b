"""The ImageNet-size recipes in the step (augment.imagenet_device) against the PIL host path.

Every RandAugment op over a grid of levels, both signs and both resamplers; ColorJitter's
enhancements, the Places greyscale and Gaussian blur: identical for the exact ops, mean
absolute difference <= 1 grey level for the colour ops, <= 3 on interior pixels for the
geometric ones with the same fill. The random draws are compared in distribution with the
host's (chi-square / Kolmogorov-Smirnov over 100k draws).
"""

import functools

import jax
import numpy as np
import pytest
from PIL import Image, ImageFilter
from scipy import stats

from lgla_jax.augment import cifar_device
from lgla_jax.augment import imagenet_device as dev
from lgla_jax.augment import imagenet_host
from lgla_jax.data import readers
from helpers import assert_same_on_one_and_eight_devices

EXACT = ("Invert", "Posterize", "Solarize", "SolarizeAdd")
COLOUR = ("AutoContrast", "Equalize", "Color", "Contrast", "Brightness", "Sharpness")
LEVELS = (0.0, 1.3, 2.5, 4.0, 5.0, 6.1, 7.5, 9.2, 10.0)
DRAWS = 100_000


class FixedCoins:
  """Stands in for the host's numpy Generator where an op draws its sign and resampler:
  ``random()`` returns the given values in turn."""

  def __init__(self, *values):
    self.values = list(values)

  def random(self):
    return self.values.pop(0)


@pytest.fixture(scope="module")
def images():
  """8 Fashion-MNIST images as RGB and 8 smooth colour images of a non-square size."""
  rng = np.random.default_rng(0)
  small = rng.integers(0, 256, (8, 7, 9, 3), dtype=np.uint8)
  colour = np.stack([np.asarray(Image.fromarray(s).resize((40, 36), Image.BILINEAR)) for s in small])
  if readers.has_fashion_mnist(readers.FASHION_MNIST_DEBIAN_DIR):
    grey = readers.load_fashion_mnist(None)[0].images[:8]
    grey = np.stack([np.asarray(Image.fromarray(g).resize((40, 36), Image.BILINEAR)) for g in grey])
    return np.concatenate([grey, colour])
  return colour


@functools.lru_cache(maxsize=None)
def _device_op():
  return jax.jit(jax.vmap(dev.apply_rand_op, in_axes=(0, None, None, None, None)))


def _both(images, op, level, sign, bicubic):
  device = np.asarray(_device_op()(images, dev.RAND_OPS.index(op), np.float32(level),
                                   np.float32(sign), bicubic)).astype(int)
  # The host draws the sign first (< 0.5: negative), then the resampler (< 0.5: bilinear).
  coins = (0.25 if sign < 0 else 0.75, 0.75 if bicubic else 0.25)
  host = np.stack([np.asarray(imagenet_host._rand_op(
      Image.fromarray(x), op, level, FixedCoins(*coins), imagenet_host.RANDAUGMENT_FILL))
      for x in images]).astype(int)
  return device, host


GRID = [(level, sign) for level in LEVELS for sign in (-1, 1)]


@pytest.mark.parametrize("op", EXACT)
def test_exact_rand_ops_equal_pil(images, op):
  for level, sign in GRID:
    device, host = _both(images, op, level, sign, False)
    np.testing.assert_array_equal(device, host, err_msg=f"{op} level {level} sign {sign}")


@pytest.mark.parametrize("op", COLOUR)
def test_colour_rand_ops_within_one_grey_level_of_pil(images, op):
  for level, sign in GRID:
    device, host = _both(images, op, level, sign, False)
    assert np.abs(device - host).mean() <= 1.0, (op, level, sign)


@pytest.mark.parametrize("op", dev.GEOMETRIC)
def test_geometric_rand_ops_within_three_grey_levels_with_the_same_fill(images, op):
  fill = np.array(imagenet_host.RANDAUGMENT_FILL)
  for bicubic in (False, True):
    for level, sign in GRID:
      device, host = _both(images, op, level, sign, bicubic)
      interior = np.abs(device - host)[:, 2:-2, 2:-2]
      assert interior.mean() <= 3.0, (op, level, sign, bicubic, interior.mean())
      filled_d, filled_h = (device == fill).all(-1), (host == fill).all(-1)
      assert (filled_d != filled_h).mean() <= 0.02, (op, level, sign, bicubic)


def test_bilinear_sampler_is_pil_to_one_grey_level_everywhere(images):
  """Stricter than the geometric bound: border pixels included, off by at most 1."""
  for matrix in [(1, 0.21, 0, 0, 1, 0), (1, 0, 7.3, 0, 1, -2.6), (0.9, -0.3, 4, 0.3, 0.9, -5)]:
    device = np.asarray(jax.vmap(lambda x: dev.affine_bilinear(x, matrix, (1, 2, 3)))(images))
    host = np.stack([np.asarray(Image.fromarray(x).transform(
        (x.shape[1], x.shape[0]), Image.AFFINE, matrix, resample=Image.BILINEAR,
        fillcolor=(1, 2, 3))) for x in images])
    assert np.abs(device.astype(int) - host).max() <= 1, matrix


def test_color_jitter_equals_pil_for_its_draws(images):
  keys = jax.random.split(jax.random.key(2), 6)
  for key in keys:
    order, factors = (np.asarray(v) for v in dev.sample_color_jitter(key))
    device = np.asarray(jax.vmap(dev.color_jitter, in_axes=(0, None))(images, key)).astype(int)

    class Draws:  # the host's permutation, then one uniform factor per enhancement in order
      def permutation(self, n):
        self.queue = [float(factors[k]) for k in order]
        return order

      def uniform(self, lo, hi):
        return self.queue.pop(0)

    host = np.stack([np.asarray(imagenet_host.color_jitter(Image.fromarray(x), Draws()))
                     for x in images]).astype(int)
    assert np.abs(device - host).mean() <= 1.0, (order, factors)


@pytest.mark.parametrize("radius", [0.1, 0.35, 0.8, 1.0, 1.37, 1.7, 2.0])
def test_gaussian_blur_is_pils_box_cascade_exactly(images, radius):
  device = np.asarray(jax.vmap(dev.gaussian_blur, in_axes=(0, None))(images, np.float32(radius)))
  host = np.stack([np.asarray(Image.fromarray(x).filter(ImageFilter.GaussianBlur(radius)))
                   for x in images])
  np.testing.assert_array_equal(device, host)


def test_places_greyscale_is_pils(images):
  device = np.asarray(jax.vmap(cifar_device.greyscale)(images))
  host = np.stack([np.asarray(Image.fromarray(x).convert("L")) for x in images])
  np.testing.assert_array_equal(device, host)


def _same_distribution(host_values, device_values):
  cats = np.union1d(host_values, device_values)
  table = np.stack([[np.sum(host_values == c) for c in cats],
                    [np.sum(device_values == c) for c in cats]])
  return stats.chi2_contingency(table)[1]


def test_randaugment_draws_equal_the_host_path_in_distribution(monkeypatch):
  """Which op, whether it runs and its level, as the host's ``rand_augment`` draws them
  (its op call is recorded instead of run)."""
  seen = []
  monkeypatch.setattr(imagenet_host, "_rand_op",
                      lambda img, name, level, rng, fill: seen.append((name, level)) or img)
  rng, n = np.random.default_rng(0), DRAWS // 2
  host_ops, host_levels = [], []
  for _ in range(n):
    seen.clear()
    imagenet_host.rand_augment(None, rng)
    # The host records only applied ops; code a skipped slot as op -1.
    host_ops.append(sorted(imagenet_host.RAND_OPS.index(name) for name, _ in seen) + [-1] * (2 - len(seen)))
    host_levels += [level for _, level in seen]
  ops, applied, levels, signs, bicubic = jax.vmap(dev.sample_randaugment)(jax.random.split(jax.random.key(1), n))
  ops, applied, levels = np.asarray(ops), np.asarray(applied), np.asarray(levels)
  device_ops = np.sort(np.where(applied, ops, -1), axis=1)
  device_ops = np.sort(np.where(device_ops == -1, 99, device_ops), axis=1)  # -1 last, as the host's
  device_ops = np.where(device_ops == 99, -1, device_ops)
  code = lambda pairs: (np.asarray(pairs)[:, 0] + 1) * 16 + np.asarray(pairs)[:, 1] + 1
  assert _same_distribution(code(host_ops), code(device_ops)) > 1e-3
  bins = lambda v: np.digitize(v, np.linspace(8, 10, 9))
  assert _same_distribution(bins(np.asarray(host_levels)), bins(levels[applied])) > 1e-3
  assert _same_distribution(bins(np.asarray(host_levels)), bins(levels[applied] - 0.05)) < 1e-6
  assert abs(np.mean(np.asarray(signs) < 0) - 0.5) < 0.01 and abs(np.mean(bicubic) - 0.5) < 0.01


def test_color_jitter_draws_equal_the_host_path_in_distribution():
  rng = np.random.default_rng(0)
  host_order = np.array([rng.permutation(3) for _ in range(DRAWS // 4)])
  order, factors = jax.vmap(dev.sample_color_jitter)(jax.random.split(jax.random.key(0), DRAWS // 4))
  code = lambda o: np.asarray(o) @ np.array([9, 3, 1])
  assert _same_distribution(code(host_order), code(order)) > 1e-3
  assert stats.ks_2samp(np.asarray(factors).ravel(), rng.uniform(0.6, 1.4, DRAWS)).pvalue > 1e-3


def test_places_coins_and_radius_follow_the_recipe():
  coins = jax.vmap(dev.sample_places)(jax.random.split(jax.random.key(0), DRAWS))
  grey, blur, radius = (np.asarray(v) for v in coins)
  assert stats.binomtest(int(grey.sum()), DRAWS, 0.2).pvalue > 1e-3
  assert stats.binomtest(int(blur.sum()), DRAWS, 0.5).pvalue > 1e-3
  assert stats.ks_2samp(radius, np.random.default_rng(0).uniform(0.1, 2.0, DRAWS)).pvalue > 1e-3


@pytest.mark.parametrize("recipe", imagenet_host.RECIPES)
def test_recipes_do_not_depend_on_the_device_count(images, recipe):
  from lgla_jax import config as config_lib
  a = config_lib.base_config().augment
  a.recipe = recipe  # (the train_augment of the step: dispatches to this module)
  assert_same_on_one_and_eight_devices(images[-8:], a)  # colour images


def test_host_crop_stage_is_the_recipes_first_step():
  """With the rest on the device, the host hands over exactly the recipe's crop."""
  img = Image.fromarray(np.random.RandomState(1).randint(0, 256, (90, 60, 3), dtype=np.uint8))
  for recipe in imagenet_host.RECIPES:
    crop = imagenet_host.train_image(img, np.random.default_rng(3), recipe, 32, crop_only=True)
    expected = imagenet_host.random_resized_crop(img, np.random.default_rng(3), 32)
    np.testing.assert_array_equal(crop, np.asarray(expected))
