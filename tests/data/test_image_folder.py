"""The image-folder source on folders of small JPEG/PNG files written by the test."""

import shutil

import numpy as np
import pytest
from PIL import Image

from lgla_jax import config as config_lib
from lgla_jax import errors
from lgla_jax.data import catalog, sources, splits as splits_lib


def _write(root, split, cls, n, ext="png"):
  d = root / split / cls
  d.mkdir(parents=True, exist_ok=True)
  for i in range(n):
    Image.fromarray(np.full((8, 8, 3), 10 * i, np.uint8)).save(d / f"{i:05d}.{ext}")


def _tree(root):
  for cls, n in (("zebra", 2), ("ant", 6), ("cat", 3)):
    _write(root, "train", cls, n, "png" if cls != "cat" else "JPG")
    _write(root, "test", cls, 2)
  (root / "train" / "ant" / ".DS_Store").write_bytes(b"x")
  (root / "train" / "ant" / "notes.txt").write_text("not an image")


def _config(root, **kw):
  c = config_lib.base_config().dataset
  c.name, c.source, c.data_dir = "my_photos", "image_folder", str(root)
  c.imbalance_factor, c.image_size = 1.0, 224  # files (no decode) unless a test asks for less
  for k, v in kw.items():
    setattr(c, k, v)
  return c


def test_classes_counts_names_and_skips(tmp_path, capsys):
  _tree(tmp_path)
  s = sources.load(_config(tmp_path))
  assert s.class_names == ("ant", "cat", "zebra")  # sorted by folder name
  assert splits_lib.class_names(s) == ("ant", "cat", "zebra")
  assert s.class_counts.tolist() == [6, 3, 2] and s.num_classes == 3
  assert s.train.labels.tolist() == [0] * 6 + [1] * 3 + [2] * 2
  assert s.train.images[0].endswith("ant/00000.png")  # file order: by name in its class
  assert s.train.images[6].endswith("cat/00000.JPG")  # extensions in any case
  assert s.val is None and len(s.test.labels) == 6
  assert "skipped files: 1 hidden, 1 not an image" in capsys.readouterr().out
  assert sources.problems(_config(tmp_path)) == []


def test_val_split_and_missing_test_class(tmp_path):
  _tree(tmp_path)
  _write(tmp_path, "val", "cat", 1)
  shutil.rmtree(tmp_path / "test" / "zebra")  # a test split may show fewer classes
  s = sources.load(_config(tmp_path, select_on="val"))
  assert s.val.labels.tolist() == [1] and sorted(set(s.test.labels.tolist())) == [0, 1]


@pytest.mark.parametrize("case, message", [
    ("empty", "hold no image"),
    ("test_only", "are not in the training split"),
    ("single", "at least two classes"),
    ("no_val", "select on 'test'"),
])
def test_bad_folders(tmp_path, case, message):
  _tree(tmp_path)
  kw = {}
  if case == "empty":
    (tmp_path / "train" / "empty_class").mkdir()
  elif case == "test_only":
    _write(tmp_path, "test", "dog", 1)
  elif case == "single":
    for cls in ("cat", "zebra"):
      shutil.rmtree(tmp_path / "train" / cls)
      shutil.rmtree(tmp_path / "test" / cls)
  else:
    kw["select_on"] = "val"
  with pytest.raises((errors.UsageError, errors.RunError), match=message):
    sources.load(_config(tmp_path, **kw))


def test_imbalance_factor_refused(tmp_path):
  _tree(tmp_path)
  with pytest.raises(errors.ConfigError, match="used as it is"):
    sources.load(_config(tmp_path, imbalance_factor=0.1))
  assert sources.problems(_config(tmp_path, imbalance_factor=0.1))[0][0] == \
      "dataset.imbalance_factor"


def test_known_sets_have_names():

  for name in ("cifar10", "cifar100", "fashion_mnist", "digits"):
    info = catalog.DATASETS[name]
    assert len(info.class_names) == info.num_classes == len(set(info.class_names))
  assert catalog.CIFAR100_NAMES[:2] == ("apple", "aquarium_fish")


def _one_image_tree(root, img, ext="png"):
  for split in ("train", "test"):
    for cls in ("a", "b"):
      (root / split / cls).mkdir(parents=True, exist_ok=True)
      Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(root / split / cls / f"0.{ext}")
  img.save(root / "train" / "a" / f"1.{ext}" if ext != "jpg" else root / "train" / "a" / "1.jpg")


@pytest.mark.parametrize("mode, ext, expect", [
    ("L", "png", 200), ("RGBA", "png", 200), ("CMYK", "jpg", None), ("I;16", "png", 200),
])
def test_modes_converted_to_rgb8(tmp_path, mode, ext, expect):
  if mode == "I;16":
    img = Image.fromarray(np.full((6, 6), 200 * 257, np.uint16))  # 16-bit grey
  else:
    img = Image.new(mode, (6, 6), (200,) * len(mode) if mode != "L" else 200)
  _one_image_tree(tmp_path, img, ext)
  s = sources.load(_config(tmp_path, image_size=8))
  assert s.train.images.shape == (3, 8, 8, 3) and s.train.images.dtype == np.uint8
  if expect is not None:
    assert abs(int(s.train.images[1].mean()) - expect) <= 1  # scaled, not clipped to 255


def test_bad_image_skipped_or_refused(tmp_path, capsys):
  _tree(tmp_path)
  bad = tmp_path / "train" / "ant" / "broken.png"
  bad.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
  s = sources.load(_config(tmp_path, image_size=8))
  assert s.class_counts.tolist() == [6, 3, 2]  # the broken file is not counted
  out = capsys.readouterr().out
  assert "1 unreadable or truncated image(s) skipped" in out and "broken.png" in out
  with pytest.raises(errors.DataError, match="broken.png: not a readable image"):
    sources.load(_config(tmp_path, image_size=8, on_bad_image="error"))


def test_large_images_stay_files(tmp_path):
  _tree(tmp_path)
  s = sources.load(_config(tmp_path, image_size=224))
  assert not splits_lib.in_memory(s) and len(s.train.images) == 11
