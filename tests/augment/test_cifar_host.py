import numpy as np
import pytest

from lgla_jax.augment import cifar_host


def _batch(n=8, seed=0):
  return np.random.RandomState(seed).randint(0, 256, (n, 32, 32, 3)).astype(np.uint8)


def test_random_crop_shifts_with_zero_padding():
  images = _batch()
  out = cifar_host.random_crop(images, np.random.default_rng(0), padding=4)
  assert out.shape == images.shape and out.dtype == np.uint8
  padded = np.pad(images, ((0, 0), (4, 4), (4, 4), (0, 0)))
  for i in range(len(images)):  # every output is some 32x32 window of the padded image
    hits = [(dy, dx) for dy in range(9) for dx in range(9)
            if np.array_equal(padded[i, dy:dy + 32, dx:dx + 32], out[i])]
    assert hits
  offsets = set()
  for seed in range(20):
    o = cifar_host.random_crop(images[:1], np.random.default_rng(seed), padding=4)
    offsets.add(o.tobytes())
  assert len(offsets) > 5


def test_flip_mirrors_half():
  images = _batch(n=200)
  out = cifar_host.random_flip(images, np.random.default_rng(1))
  flipped = np.array([np.array_equal(o, i[:, ::-1]) for o, i in zip(out, images)])
  same = np.array([np.array_equal(o, i) for o, i in zip(out, images)])
  assert (flipped ^ same).all() and 70 < flipped.sum() < 130


def test_cutout_zeroes_one_clipped_square():
  images = np.full((50, 32, 32, 3), 200, np.uint8)
  out = cifar_host.cutout(images, np.random.default_rng(2), 16)
  zeros = (out == 0).all(-1)
  for z in zeros:
    rows, cols = np.where(z.any(1))[0], np.where(z.any(0))[0]
    assert 1 <= len(rows) <= 16 and 1 <= len(cols) <= 16
    assert z.sum() == len(rows) * len(cols)  # a rectangle
  assert (zeros.sum((1, 2)) == 256).any()  # unclipped holes are 16x16
  assert (out[~np.broadcast_to(zeros[..., None], out.shape)] == 200).all()


def test_autoaugment_ops_on_known_images():
  img = np.zeros((1, 32, 32, 3), np.uint8)
  img[:, :, :16] = 255
  pil = cifar_host.Image.fromarray(img[0])
  inv = np.asarray(cifar_host._apply(pil, "invert", 0, 1))
  np.testing.assert_array_equal(inv, 255 - img[0])
  assert cifar_host._magnitude("posterize", 9) == 4 and cifar_host._magnitude("posterize", 0) == 8
  assert cifar_host._magnitude("solarize", 0) == 256
  shifted = np.asarray(cifar_host._apply(pil, "translateX", cifar_host._magnitude("translateX", 9), 1))
  assert (shifted == 128).any()  # grey fill where the image moved away
  sol = np.asarray(cifar_host._apply(pil, "solarize", 128, 1))
  np.testing.assert_array_equal(sol, np.where(img[0] >= 128, 255 - img[0], img[0]))
  assert (sol == 0).all()  # the white half inverts to black, the black half stays


@pytest.mark.parametrize("autoaugment", [False, True])
def test_train_augment_shapes_and_determinism(autoaugment):
  images = _batch(16)
  kw = dict(crop_padding=4, flip=True, autoaugment=autoaugment, cutout_size=16)
  a = cifar_host.train_augment(images, np.random.default_rng(7), **kw)
  b = cifar_host.train_augment(images, np.random.default_rng(7), **kw)
  c = cifar_host.train_augment(images, np.random.default_rng(8), **kw)
  assert a.shape == images.shape and a.dtype == np.uint8
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)
  assert len(cifar_host.CIFAR10_POLICY) == 25


def test_random_rotation_is_torchvision_random_rotation():
  """RIDE's RandomRotation(15): an angle uniform in [-15, 15], nearest neighbour about the
  centre, black corners; 0 degrees is the identity and draws nothing."""
  images = _batch(n=64)
  rng = np.random.default_rng(3)
  assert cifar_host.random_rotate(images, rng, 0.0) is images
  assert rng.random() == np.random.default_rng(3).random()  # no draw was made
  out = cifar_host.random_rotate(images, np.random.default_rng(4), 15.0)
  angles = np.random.default_rng(4).uniform(-15, 15, 64)
  assert np.abs(angles).max() > 10
  from PIL import Image
  for i in (0, 7, 63):
    ref = np.asarray(Image.fromarray(images[i]).rotate(angles[i], Image.NEAREST, fillcolor=0))
    np.testing.assert_array_equal(out[i], ref)
  assert (out[:, 0, 0] == 0).all(-1).mean() > 0.7  # the corners rotate out, filled black
  # a process's share is rotated as in the whole global batch
  share = cifar_host.random_rotate(images[8:16], np.random.default_rng(4), 15.0,
                                positions=np.arange(8, 16), total=64)
  np.testing.assert_array_equal(share, out[8:16])
