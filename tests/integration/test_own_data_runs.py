"""Two-epoch runs on the user's own data (an image folder, split files and a tfds data set,
all written by the test), trained and evaluated from the command line, then evaluated again
from the checkpoint."""

import csv
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from lgla_jax import predict
from lgla_jax.data import stats

from helpers import ROOT, cli, tiny_tfds, write_split_files


def _folder(root):
  rng = np.random.RandomState(0)
  for split, counts in (("train", (12, 6, 3)), ("test", (4, 4, 4))):
    for cls, n in zip(("cat", "dog", "owl"), counts):
      (root / split / cls).mkdir(parents=True)
      for i in range(n):
        Image.fromarray(rng.randint(0, 255, (12, 12, 3), dtype=np.uint8)).save(
            root / split / cls / f"{i:03d}.png")


def test_image_folder_trains_and_evaluates(tmp_path, monkeypatch):
  _folder(tmp_path / "data")
  common = ["--config=configs/image_folder.py:quick", f"--config.dataset.data_dir={tmp_path / 'data'}",
            f"--workdir={tmp_path / 'wd'}"]
  done = cli(*common)
  assert done.returncode == 0, done.stderr[-2000:]
  assert "3 classes; images: train 21, test 12" in done.stdout
  assert "final (epoch 2) test accuracy" in done.stdout
  # the recipe followed the data (12 px: CIFAR), mean/std computed, printed and recorded
  assert "data-derived: image_size 12 (median larger side 12 px" in done.stdout
  saved = json.loads((tmp_path / "wd" / "report.json").read_text())["config"]
  assert (saved["dataset"]["image_size"], saved["augment"]["recipe"], saved["model"]["name"]) == (
      12, "cifar", "resnet_cifar")
  mean, std = tuple(saved["dataset"]["mean"]), tuple(saved["dataset"]["std"])
  assert f"dataset.mean {mean}, dataset.std {std} from 21 training images" in done.stdout
  _folder(tmp_path / "other")  # new pixels, same files: measured again, mean/std would differ
  for f in (tmp_path / "data" / "train").rglob("*.png"):
    f.write_bytes((tmp_path / "other" / "test" / "cat" / "000.png").read_bytes())
  evaluated = cli(*common, "--mode=eval", f"--checkpoint={tmp_path / 'wd'}")
  assert evaluated.returncode == 0, evaluated.stderr[-2000:]
  assert "data-derived" not in evaluated.stdout  # the saved values, not measured again
  last = json.loads(evaluated.stdout.strip().splitlines()[-1])
  assert last["epoch"] == 2 and 0 <= last["top1"] <= 1
  # predict on the workdir normalises with the saved values and measures nothing
  measured = lambda *a, **k: pytest.fail("predict measured the data again")
  monkeypatch.setattr(stats, "mean_std", measured)
  monkeypatch.setattr(stats, "typical_size", measured)
  p = predict.Predictor(str(tmp_path / "wd"))
  assert (tuple(p.config.dataset.mean), tuple(p.config.dataset.std)) == (mean, std)
  assert p.image_size == 12 and p.names == ("cat", "dog", "owl")


def test_split_files_train_and_evaluate(tmp_path):
  images, splits = write_split_files(tmp_path, counts=(12, 6, 3), test_counts=(4, 4, 4),
                                     names=("cat", "dog", "owl"))
  common = ["--config=configs/split_files.py:quick", f"--config.dataset.data_dir={images}",
            f"--config.dataset.split_dir={splits}", f"--workdir={tmp_path / 'wd'}"]
  done = cli(*common)
  assert done.returncode == 0, done.stderr[-2000:]
  assert "3 classes (named by classes.txt); images: train 21, test 12" in done.stdout
  assert "final (epoch 2) test accuracy" in done.stdout
  assert (tmp_path / "wd" / "classes.txt").read_text().split() == ["cat", "dog", "owl"]
  evaluated = cli(*common, "--mode=eval", f"--checkpoint={tmp_path / 'wd'}")
  assert evaluated.returncode == 0, evaluated.stderr[-2000:]
  last = json.loads(evaluated.stdout.strip().splitlines()[-1])
  assert last["epoch"] == 2 and 0 <= last["top1"] <= 1
  # the run's weights exported under the official names evaluate to the same top-1 (own data:
  # no catalog entry, so the classes and mean/std come from the files again)
  out = tmp_path / "model.safetensors"
  exported = subprocess.run([sys.executable, "-m", "lgla_jax.export", f"--checkpoint={tmp_path / 'wd'}",
                             f"--out={out}"], cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert exported.returncode == 0, exported.stderr[-2000:]
  official = cli(*common[:3], "--mode=eval", f"--checkpoint={out}", f"--workdir={tmp_path / 'ev'}")
  assert official.returncode == 0, official.stderr[-2000:]
  assert json.loads(official.stdout.strip().splitlines()[-1])["top1"] == last["top1"]
  _assert_predict_matches(tmp_path / "wd", images / "test", ("cat", "dog", "owl"), last["top1"])


def _assert_predict_matches(workdir, test_root, names, top1):
  """``predict`` on the test images (``test_root/<label>/*.png``) labels them with class names
  and gives the run's own evaluated top-1."""
  out = workdir.parent / "predictions.csv"
  done = subprocess.run([sys.executable, "-m", "lgla_jax.predict", f"--checkpoint={workdir}",
                         f"--out={out}", str(test_root)], cwd=ROOT, capture_output=True,
                        text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-2000:]
  with open(out) as f:
    rows = list(csv.DictReader(f))
  assert len(rows) == 12 and {r["top1"] for r in rows} <= set(names)
  truth = [int(r["path"].split("/")[-2]) for r in rows]
  assert np.mean([names.index(r["top1"]) == t for r, t in zip(rows, truth)]) == pytest.approx(top1)


def test_tfds_by_name_trains_and_evaluates(tmp_path):
  tiny_tfds(tmp_path / "tfds", counts=(12, 6, 3), test_counts=(4, 4, 4),
            test_png_dir=tmp_path / "test_pngs")
  common = ["--config=configs/tfds.py:quick", "--config.dataset.name=tfds:lgla_tiny_flowers",
            f"--config.dataset.data_dir={tmp_path / 'tfds'}", f"--workdir={tmp_path / 'wd'}"]
  done = cli(*common)
  assert done.returncode == 0, done.stderr[-2000:]
  assert "tfds lgla_tiny_flowers: 3 classes" in done.stdout
  assert "final (epoch 2) test accuracy" in done.stdout
  assert (tmp_path / "wd" / "classes.txt").read_text().split() == ["rose", "tulip", "daisy"]
  evaluated = cli(*common, "--mode=eval", f"--checkpoint={tmp_path / 'wd'}")
  assert evaluated.returncode == 0, evaluated.stderr[-2000:]
  last = json.loads(evaluated.stdout.strip().splitlines()[-1])
  assert last["epoch"] == 2 and 0 <= last["top1"] <= 1
  _assert_predict_matches(tmp_path / "wd", tmp_path / "test_pngs", ("rose", "tulip", "daisy"),
                          last["top1"])
