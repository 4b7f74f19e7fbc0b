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
  c.imbalance_factor = 1.0
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
