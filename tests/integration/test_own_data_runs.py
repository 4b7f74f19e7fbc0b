"""Two-epoch runs on the user's own data: an image folder written by the test, trained and
evaluated from the command line, then evaluated again from the checkpoint."""

import json

import numpy as np
from PIL import Image

from helpers import cli


def _folder(root):
  rng = np.random.RandomState(0)
  for split, counts in (("train", (12, 6, 3)), ("test", (4, 4, 4))):
    for cls, n in zip(("cat", "dog", "owl"), counts):
      (root / split / cls).mkdir(parents=True)
      for i in range(n):
        Image.fromarray(rng.randint(0, 255, (12, 12, 3), dtype=np.uint8)).save(
            root / split / cls / f"{i:03d}.png")


def test_image_folder_trains_and_evaluates(tmp_path):
  _folder(tmp_path / "data")
  common = ["--config=configs/image_folder.py:quick", f"--config.dataset.data_dir={tmp_path / 'data'}",
            f"--workdir={tmp_path / 'wd'}"]
  done = cli(*common)
  assert done.returncode == 0, done.stderr[-2000:]
  assert "3 classes; images: train 21, test 12" in done.stdout
  assert "final (epoch 2) test accuracy" in done.stdout
  evaluated = cli(*common, "--mode=eval", f"--checkpoint={tmp_path / 'wd'}")
  assert evaluated.returncode == 0, evaluated.stderr[-2000:]
  last = json.loads(evaluated.stdout.strip().splitlines()[-1])
  assert last["epoch"] == 2 and 0 <= last["top1"] <= 1
