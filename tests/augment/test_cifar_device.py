"""Device augmentation (augment.cifar_device) against the PIL / numpy host path, the reference.

Each op is compared with PIL on real images (Fashion-MNIST) and generated colour images,
for every magnitude index of the AutoAugment policy and both signs: identical for the
exact ops, mean absolute difference <= 1 grey level for the colour ops and <= 3 on
interior pixels for the geometric ones. The random draws are compared in distribution
(chi-square, 100k draws) with the host path's.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image
from scipy import stats

from lgla_jax.augment import cifar_device
from lgla_jax.augment import cifar_host
from lgla_jax.augment import recipes
from lgla_jax.data import readers
from helpers import assert_same_on_one_and_eight_devices

EXACT = ("posterize", "solarize", "invert")
COLOUR = ("color", "contrast", "sharpness", "brightness", "autocontrast", "equalize")
GEOMETRIC = ("shearX", "shearY", "translateX", "translateY", "rotate")
DRAWS = 100_000


@pytest.fixture(scope="module")
def images():
  """24 Fashion-MNIST images (as the protocol feeds them) and 24 smooth colour images."""
  rng = np.random.default_rng(0)
  if readers.has_fashion_mnist(readers.FASHION_MNIST_DEBIAN_DIR):
    grey = readers.load_fashion_mnist(None)[0].images[:24]
  else:  # generated stand-ins: blobs on black, as Fashion-MNIST looks
    yy, xx = np.mgrid[:32, :32]
    blobs = [(255 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s))).astype(np.uint8)
             for cy, cx, s in rng.uniform([8, 8, 3], [24, 24, 9], (24, 3))]
    grey = np.repeat(np.stack(blobs)[..., None], 3, -1)
  small = rng.integers(0, 256, (24, 6, 6, 3), dtype=np.uint8)
  colour = np.stack([np.asarray(Image.fromarray(s).resize((32, 32), Image.BILINEAR)) for s in small])
  return np.concatenate([grey, colour])


@functools.lru_cache(maxsize=None)
def _device_op(op):
  return jax.jit(jax.vmap(lambda x, p: cifar_device.apply_op(x, op, p), in_axes=(0, None)))


def _both(images, op, index, sign):
  p = np.float32(cifar_device._parameter(op, index, sign))
  device = np.asarray(_device_op(op)(images, p)).astype(int)
  mag = cifar_host._magnitude(op, index)
  host = np.stack([np.asarray(cifar_host._apply(Image.fromarray(x), op, mag, sign).convert("RGB"))
                   for x in images]).astype(int)
  return device, host


GRID = [(index, sign) for index in range(10) for sign in (-1, 1)]  # every magnitude, both signs


@pytest.mark.parametrize("op", EXACT)
def test_exact_ops_equal_pil(images, op):
  for index, sign in GRID:
    device, host = _both(images, op, index, sign)
    np.testing.assert_array_equal(device, host, err_msg=f"{op} index {index} sign {sign}")


@pytest.mark.parametrize("op", COLOUR)
def test_colour_ops_within_one_grey_level_of_pil(images, op):
  for index, sign in GRID:
    device, host = _both(images, op, index, sign)
    assert np.abs(device - host).mean() <= 1.0, (op, index, sign)


@pytest.mark.parametrize("op", GEOMETRIC)
def test_geometric_ops_within_three_grey_levels_of_pil_with_the_same_fill(images, op):
  fill = np.array(cifar_host.AUTOAUGMENT_FILL)
  for index, sign in GRID:
    device, host = _both(images, op, index, sign)
    interior = np.abs(device - host)[:, 2:-2, 2:-2]
    assert interior.mean() <= 3.0, (op, index, sign, interior.mean())
    filled_d, filled_h = (device == fill).all(-1), (host == fill).all(-1)
    assert (filled_d != filled_h).mean() <= 0.02, (op, index, sign)  # same grey, same place


def test_random_rotation_matches_torchvision_semantics(images):
  """RIDE's RandomRotation: PIL rotate, nearest, black corners, for a grid of angles."""
  rotate = jax.jit(jax.vmap(lambda x, a: cifar_device.rotate(x, a, 0), in_axes=(0, None)))
  for angle in np.linspace(-15, 15, 13):
    device = np.asarray(rotate(images, np.float32(angle))).astype(int)
    host = np.stack([np.asarray(Image.fromarray(x).rotate(float(angle), Image.NEAREST, fillcolor=0))
                     for x in images]).astype(int)
    assert np.abs(device - host)[:, 2:-2, 2:-2].mean() <= 3.0, angle


class _Replay:
  """A stand-in for the host ops' numpy Generator that hands them given draws, in order
  (each checked against the range the op asks for): the host op, the reference, then
  runs on the device op's own draws."""

  def __init__(self, *draws):
    self.draws = list(draws)

  def integers(self, low, high, size):
    low_, high_, values = self.draws.pop(0)
    assert (low, high, size) == (low_, high_, len(values))
    return np.asarray(values)

  def random(self, size):
    values = self.draws.pop(0)
    assert size == len(values)
    return np.asarray(values)


def test_crop_flip_cutout_equal_the_host_ops_for_their_draws(images):
  keys = recipes.image_keys(3, 7, jnp.arange(len(images)))
  n, h = len(images), images.shape[1]
  crop = jax.vmap(lambda x, k: cifar_device.random_crop(x, k, 4))(images, keys)
  flip = jax.vmap(cifar_device.random_flip)(images, keys)
  cut = jax.vmap(lambda x, k: cifar_device.cutout(x, k, 16))(images, keys)
  # The device ops' draws, per image, from their keys
  dy, dx = np.asarray(jax.vmap(lambda k: jax.random.randint(k, (2,), 0, 9))(keys)).T
  mirror = np.asarray(jax.vmap(jax.random.bernoulli)(keys))
  cy, cx = (np.asarray(jax.vmap(lambda k: jax.random.randint(jax.random.fold_in(k, i), (), 0, h))(keys))
            for i in (0, 1))
  assert 0 < mirror.mean() < 1 and len(set(dy)) > 3 and len(set(cy)) > 3  # varied draws
  np.testing.assert_array_equal(crop, cifar_host.random_crop(images, _Replay((0, 9, dy), (0, 9, dx)), 4))
  np.testing.assert_array_equal(flip, cifar_host.random_flip(images, _Replay(np.where(mirror, 0.25, 0.75))))
  np.testing.assert_array_equal(cut, cifar_host.cutout(images, _Replay((0, h, cy), (0, h, cx)), 16))
  assert n == len(dy) == len(cy)


def _same_distribution(host_values, device_values):
  """Chi-square test of homogeneity over the categories either sample shows."""
  cats = np.union1d(host_values, device_values)
  table = np.stack([[np.sum(host_values == c) for c in cats],
                    [np.sum(device_values == c) for c in cats]])
  return stats.chi2_contingency(table)[1]


def test_autoaugment_draws_equal_the_host_path_in_distribution():
  keys = jax.random.split(jax.random.key(0), DRAWS)
  choice, applied, sign_index = jax.vmap(cifar_device.sample_autoaugment)(keys)
  host_choice, coins, host_signs = cifar_host.sample_autoaugment(np.random.default_rng(0), DRAWS)
  probs = np.array([[p for p, _, _ in sub] for sub in cifar_host.CIFAR10_POLICY])
  host_applied = coins < probs[host_choice]
  # The whole outcome: sub-policy, which steps run, and their signs.
  code = lambda c, a, s: ((c * 2 + a[:, 0]) * 2 + a[:, 1]) * 4 + s[:, 0] * 2 + s[:, 1]
  device_code = code(np.asarray(choice), np.asarray(applied).astype(int), np.asarray(sign_index))
  host_code = code(host_choice, host_applied.astype(int), (host_signs > 0).astype(int))
  assert _same_distribution(host_code, device_code) > 1e-3
  # And a test that can fail: a biased sub-policy draw is rejected.
  assert _same_distribution(host_code, np.where(device_code < 32, device_code + 32, device_code)) < 1e-6


def test_crop_flip_cutout_rotation_draws_equal_the_host_path_in_distribution():
  n, rng = 20_000, np.random.default_rng(1)
  keys = recipes.image_keys(0, 0, jnp.arange(n))
  image = np.zeros((32, 32, 3), np.uint8)
  image[0, 0] = 255  # the marker pixel's position reveals the crop offset and the flip
  marked = np.broadcast_to(image, (n, 32, 32, 3))

  def marker_position(batch):
    flat = np.asarray(batch)[..., 0].reshape(len(batch), -1).argmax(1)
    return np.where(np.asarray(batch)[..., 0].max((1, 2)) > 0, flat, -1)

  crops = jax.jit(jax.vmap(lambda x, k: cifar_device.random_crop(x, k, 4)))(marked, keys)
  assert _same_distribution(marker_position(cifar_host.random_crop(marked, rng, 4)),
                            marker_position(crops)) > 1e-3
  flips = jax.jit(jax.vmap(cifar_device.random_flip))(marked, keys)
  assert _same_distribution(marker_position(cifar_host.random_flip(marked, rng)),
                            marker_position(flips)) > 1e-3
  white = np.full((n, 32, 32, 3), 255, np.uint8)
  holes = lambda b: (np.asarray(b)[..., 0] == 0).sum((1, 2))  # hole area: position near borders
  cut = jax.jit(jax.vmap(lambda x, k: cifar_device.cutout(x, k, 16)))(white, keys)
  assert _same_distribution(holes(cifar_host.cutout(white, rng, 16)), holes(cut)) > 1e-3
  angles = np.asarray(jax.vmap(lambda k: jax.random.uniform(k, (), minval=-15, maxval=15))(keys))
  assert stats.ks_2samp(angles, rng.uniform(-15, 15, n)).pvalue > 1e-3


def test_augmentation_does_not_depend_on_the_device_count(images):
  """Keys come from (seed, step, global position): 8 devices augment as 1 does."""
  from lgla_jax import config as config_lib
  assert_same_on_one_and_eight_devices(images, config_lib.base_config().augment)  # crop, flip, AA, Cutout


