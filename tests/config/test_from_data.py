"""Fields left to the data (``config.from_data``): the image size measured, the recipe and
network that follow it, mean/std from a fixed sample, explicit fields kept, saved values
taken back, and the known data sets' catalog values."""

import numpy as np
import pytest
from PIL import Image

from lgla_jax import config as config_lib
from lgla_jax import errors
from lgla_jax.config import from_data, overrides
from lgla_jax.config.validate import validate
from lgla_jax.data import catalog, stats
from helpers import ROOT


def _folder(root, side, seed=0, per_class=(5, 3)):
  """Random RGB PNGs of ``side`` px in two classes; all training pixels, [N, side, side, 3]."""
  rng = np.random.RandomState(seed)
  train = []
  for split in ("train", "test"):
    for cls, n in zip(("a", "b"), per_class):
      (root / split / cls).mkdir(parents=True)
      for i in range(n):
        img = rng.randint(0, 256, (side, side, 3), dtype=np.uint8)
        img[..., 0] //= 2  # channels differ, so a swapped channel would show
        Image.fromarray(img).save(root / split / cls / f"{i}.png")
        if split == "train":
          train.append(img)
  return np.stack(train)


def _config(root, *overrides_):
  return overrides.load(f"{ROOT}/configs/image_folder.py:quick",
                        {"dataset.data_dir": str(root), **dict(overrides_)})


def test_small_images_get_the_cifar_recipe_and_their_own_mean_std(tmp_path, capsys):
  pixels = _folder(tmp_path, 12)
  c = _config(tmp_path)
  assert from_data.unresolved(c) == ["dataset.image_size", "augment.recipe", "model.name",
                                     "dataset.mean", "dataset.std"]
  r = from_data.resolve(c)
  assert (r.dataset.image_size, r.augment.recipe, r.model.name) == (12, "cifar", "resnet_cifar")
  flat = pixels.reshape(-1, 3) / 255.0  # every training image is in the sample (8 < 2000)
  np.testing.assert_allclose(r.dataset.mean, flat.mean(0), atol=6e-5)
  np.testing.assert_allclose(r.dataset.std, flat.std(0), atol=6e-5)
  assert r.dataset.mean[0] < r.dataset.mean[1]  # channel order kept
  assert c.dataset.image_size == 0 and from_data.unresolved(r) == []  # a copy, filled
  out = capsys.readouterr().out
  assert "image_size 12 (median larger side 12 px of 8 sampled training images" in out
  assert f"dataset.mean {tuple(r.dataset.mean)}" in out and "from 8 training images" in out
  validate(r)


def test_larger_images_get_the_imagenet_recipe_and_resnet50(tmp_path):
  _folder(tmp_path, 80)
  r = from_data.resolve(_config(tmp_path), log=lambda line: None)
  assert (r.dataset.image_size, r.augment.recipe, r.model.name, r.model.arch) == (
      224, "imagenet", "resnet", "resnet50")
  assert len(r.dataset.mean) == 3 and 0.2 < r.dataset.mean[0] < 0.3 < r.dataset.mean[1]


def test_fields_the_user_set_are_kept(tmp_path):
  _folder(tmp_path, 80)
  r = from_data.resolve(_config(tmp_path, ("dataset.image_size", 48),
                                ("dataset.mean", (0.5, 0.5, 0.5))), log=lambda line: None)
  assert (r.dataset.image_size, r.augment.recipe, r.model.name) == (48, "cifar", "resnet_cifar")
  assert r.dataset.mean == (0.5, 0.5, 0.5) and r.dataset.std != ()
  # an explicit recipe decides the size class of images measured small
  _folder(tmp_path / "small", 12)
  r = from_data.resolve(_config(tmp_path / "small", ("augment.recipe", "imagenet")),
                        log=lambda line: None)
  assert (r.dataset.image_size, r.model.name) == (224, "resnet")
  r = from_data.resolve(_config(tmp_path / "small", ("model.name", "resnet")), log=lambda line: None)
  assert (r.dataset.image_size, r.augment.recipe, r.model.name) == (12, "cifar", "resnet")


def test_the_sample_is_fixed_and_bounded():
  a = stats.sample_indices(10_000, 2000)
  assert len(set(a.tolist())) == 2000 and (np.diff(a) > 0).all()
  np.testing.assert_array_equal(a, stats.sample_indices(10_000, 2000))
  assert stats.sample_indices(5, 2000).tolist() == [0, 1, 2, 3, 4]
  images = [np.zeros((20, 30, 3), np.uint8), np.zeros((40, 10, 3), np.uint8),
            np.zeros((50, 50, 3), np.uint8)]  # arrays of different sizes (a TFDS data set)
  assert stats.typical_size(images) == {"size": 40, "min": 30, "max": 50, "sampled": 3,
                                        "unreadable": 0}
  with pytest.raises(errors.DataError, match="no variation in a colour channel"):
    stats.mean_std(images, 8)


def test_unreadable_sampled_images_are_left_out(tmp_path):
  _folder(tmp_path, 12)
  (tmp_path / "train" / "a" / "0.png").write_bytes(b"not a png")
  got = stats.mean_std(stats.FileImages(sorted(map(str, (tmp_path / "train").rglob("*.png")))), 12)
  assert got["sampled"] == 7 and got["unreadable"] == 1


def test_known_data_sets_keep_the_catalogs_values():
  c = config_lib.cifar_lt_config("cifar10", 0.01, 2.5, "quick")
  c.dataset.mean, c.dataset.std = (), ()
  validate(c)
  r = from_data.resolve(c, log=lambda line: None)
  assert (r.dataset.mean, r.dataset.std) == (catalog.CIFAR_MEAN, catalog.CIFAR_STD)
  c.dataset.image_size = 0
  with pytest.raises(errors.ConfigError, match="config.dataset.image_size: is left to the data"):
    validate(c)
  with pytest.raises(errors.ConfigError, match="config.dataset.image_size"):
    from_data.resolve(c)


def test_the_config_file_validates_before_the_data_is_measured():
  c = overrides.load(f"{ROOT}/configs/image_folder.py")
  validate(c)  # the other fields are checked with provisional values
  assert from_data.unresolved(c) and c.dataset.image_size == 0
  p = from_data.provisional(c)
  assert (p.dataset.image_size, p.augment.recipe, p.model.name) == (32, "cifar", "resnet_cifar")
  c.loss.tau = -1.0
  with pytest.raises(errors.ConfigError):
    validate(c)  # still checked


def test_evaluation_takes_the_saved_values():
  c = overrides.load(f"{ROOT}/configs/image_folder.py")
  saved = {"dataset": {"image_size": 12, "mean": [0.1, 0.2, 0.3], "std": [0.4, 0.5, 0.6]},
           "augment": {"recipe": "cifar"}, "model": {"name": "resnet_cifar"}}
  r = from_data.take_saved(c, saved)
  assert (r.dataset.image_size, r.dataset.mean, r.dataset.std) == (12, (0.1, 0.2, 0.3),
                                                                   (0.4, 0.5, 0.6))
  assert from_data.unresolved(r) == []
  del saved["dataset"]["mean"]
  with pytest.raises(errors.CheckpointError, match="no dataset.mean"):
    from_data.take_saved(c, saved)


@pytest.mark.parametrize("side,expect", [(12, (12, "cifar", "resnet_cifar")),
                                         (80, (224, "imagenet", "resnet"))])
def test_split_files_follow_the_data_as_image_folders_do(tmp_path, side, expect):
  """``configs/split_files.py`` leaves the same five fields to the data: the measured size
  picks the recipe and model; mean/std are the training images' (every one in the sample)."""
  pixels = _folder(tmp_path / "images", side)
  lines = [f"{split}/{cls}/{i}.png {label}" for split in ("train",)
           for label, (cls, n) in enumerate(zip(("a", "b"), (5, 3))) for i in range(n)]
  (tmp_path / "splits").mkdir()
  (tmp_path / "splits" / "train.txt").write_text("\n".join(lines) + "\n")
  (tmp_path / "splits" / "test.txt").write_text("test/a/0.png 0\ntest/b/0.png 1\n")
  c = overrides.load(f"{ROOT}/configs/split_files.py:quick",
                     {"dataset.data_dir": str(tmp_path / "images"),
                      "dataset.split_dir": str(tmp_path / "splits")})
  assert from_data.unresolved(c) == ["dataset.image_size", "augment.recipe", "model.name",
                                     "dataset.mean", "dataset.std"]
  r = from_data.resolve(c, log=lambda line: None)
  assert (r.dataset.image_size, r.augment.recipe, r.model.name) == expect
  if side == 12:  # (at 224 the images are resized before the moments)
    flat = pixels.reshape(-1, 3) / 255.0
    np.testing.assert_allclose(r.dataset.mean, flat.mean(0), atol=6e-5)
    np.testing.assert_allclose(r.dataset.std, flat.std(0), atol=6e-5)
  validate(r)


def test_tfds_by_name_measures_its_mean_and_std(tmp_path, capsys):
  """``configs/tfds.py`` leaves mean/std to the data: measured on the training split's
  records (decoded one by one, grey ones as RGB), the size and recipe kept as set."""
  from helpers import tiny_tfds
  tiny_tfds(tmp_path / "tfds", counts=(6, 4, 2), size=(16, 16))
  c = overrides.load(f"{ROOT}/configs/tfds.py:quick",
                     {"dataset.name": "tfds:lgla_tiny_flowers",
                      "dataset.data_dir": str(tmp_path / "tfds")})
  assert from_data.unresolved(c) == ["dataset.mean", "dataset.std"]
  r = from_data.resolve(c)
  import tensorflow_datasets as tfds
  builder = tfds.builder_from_directory(str(tmp_path / "tfds" / "lgla_tiny_flowers" / "1.0.0"))
  source = builder.as_data_source(split="train")
  images = [np.asarray(Image.fromarray(source[i]["image"]).resize((32, 32), Image.BILINEAR))
            for i in range(len(source))]
  flat = np.stack(images).reshape(-1, 3) / 255.0
  np.testing.assert_allclose(r.dataset.mean, flat.mean(0), atol=6e-5)
  np.testing.assert_allclose(r.dataset.std, flat.std(0), atol=6e-5)
  assert (r.dataset.image_size, r.augment.recipe) == (32, "cifar")
  assert "from 12 training images" in capsys.readouterr().out
  validate(r)
