"""Decoded images that would not fit in memory are refused before any decoding (tfds by name,
and the small-image path of image folders and split files), with the size and what to do."""

import re

import numpy as np
import pytest
from PIL import Image

from lgla_jax import config as config_lib
from lgla_jax import errors
from lgla_jax.data import memory, sources

from helpers import tiny_tfds, write_split_files


def test_available_bytes_reads_meminfo(tmp_path):
  (tmp_path / "meminfo").write_text("MemTotal:       24000000 kB\nMemAvailable:   2048 kB\n")
  assert memory.available_bytes(str(tmp_path / "meminfo")) == 2048 * 1024
  (tmp_path / "other").write_text("MemTotal: 1 kB\n")
  assert memory.available_bytes(str(tmp_path / "other")) is None
  assert memory.available_bytes(str(tmp_path / "missing")) is None


def test_check_fits_at_the_threshold(monkeypatch):
  need = 10 * 32 * 32 * 3  # 30,720 bytes
  memory.check_fits("x", 10, 32, available=int(need / memory.FRACTION) + 1)
  with pytest.raises(errors.DataError, match=r"x: 10 images of 32x32 need 0.0 MiB in memory, "
                                             r"more than 80% of the 0.0 MiB .* lower "
                                             r"config.dataset.image_size"):
    memory.check_fits("x", 10, 32, available=need)
  with pytest.raises(errors.DataError, match=r"need 140190.1 GiB .* the 16.0 GiB available"):
    memory.check_fits("x", 10**9, 224, available=16 << 30)
  monkeypatch.setattr(memory, "available_bytes", lambda: None)
  memory.check_fits("x", 10**9, 224)  # unknown memory: not refused (nothing to go by)


def _folder(root):
  for split, n in (("train", 6), ("test", 2)):
    for cls in ("a", "b"):
      (root / split / cls).mkdir(parents=True)
      for i in range(n):
        Image.fromarray(np.full((8, 8, 3), i, np.uint8)).save(root / split / cls / f"{i}.png")


@pytest.mark.parametrize("source", ["tfds", "image_folder", "split_files"])
def test_too_many_images_for_memory_are_refused_before_decoding(tmp_path, monkeypatch, source):
  c = config_lib.base_config().dataset
  c.imbalance_factor, c.image_size = 1.0, 16
  if source == "tfds":
    tiny_tfds(tmp_path / "tfds", counts=(8, 4, 2), test_counts=(3, 3, 3))
    c.name, c.source, c.data_dir = "tfds:lgla_tiny_flowers", "tfds", str(tmp_path / "tfds")
    what, n = "tfds lgla_tiny_flowers (train, test)", 23
  elif source == "image_folder":
    _folder(tmp_path / "photos")
    c.name, c.source, c.data_dir = "mine", "image_folder", str(tmp_path / "photos")
    what, n = "image folder", 16
  else:
    images, splits = write_split_files(tmp_path / "sf", counts=(4, 2), test_counts=(2, 2),
                                       names=("ant", "cat"))
    c.name, c.source, c.data_dir, c.split_dir = "mine", "split_files", str(images), str(splits)
    what, n = "split files", 10
  need = n * 16 * 16 * 3
  decoded = []
  monkeypatch.setattr(Image, "open", lambda *a, **k: decoded.append(a) or 1 / 0)
  monkeypatch.setattr(memory, "available_bytes", lambda: need)  # 80% of it is too little
  with pytest.raises(errors.DataError, match=re.escape(what) + f".*: {n} images of 16x16 need"):
    sources.load(c)
  assert decoded == []  # refused before any image was opened
  monkeypatch.undo()
  monkeypatch.setattr(memory, "available_bytes", lambda: int(need / memory.FRACTION) + 1)
  s = sources.load(c)
  assert len(s.train.labels) + len(s.test.labels) == n
