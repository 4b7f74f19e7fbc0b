"""``predict`` on image files agrees with the run's own evaluation of the same images; the
command line's CSV, ``--experts``, ``--top_k`` and one-line errors; an exported weights
file predicts as its checkpoint does."""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from lgla_jax import export, predict
from lgla_jax.data import sources
from lgla_jax.train import loop
from helpers import ROOT, config_of

pytestmark = pytest.mark.integration  # trains the demo, runs the command line


def write_pngs(images, labels, folder):
  """Each image as a lossless PNG named ``<index>_<label>.png``; the paths in index order."""
  folder.mkdir(parents=True, exist_ok=True)
  paths = []
  for i, (image, label) in enumerate(zip(images, labels)):
    paths.append(folder / f"{i:05d}_{label}.png")
    Image.fromarray(image).save(paths[-1])
  return paths


def _predict_cli(*args):
  return subprocess.run([sys.executable, "-m", "lgla_jax.predict", *map(str, args)], cwd=ROOT,
                        capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """The digits demo, 2 epochs, and its test images written as PNG files."""
  root = tmp_path_factory.mktemp("predict")
  config = config_of("demo", "quick")
  loop.train_and_evaluate(config, str(root / "run"))
  test = sources.load(config.dataset).test
  write_pngs(test.images, test.labels, root / "images")
  return root, config, test


def test_predict_on_a_folder_gives_the_runs_own_evaluation(trained):
  root, _, test = trained
  done = _predict_cli(f"--checkpoint={root / 'run'}", f"--out={root / 'p.csv'}", "--top_k=3",
                      "--experts", root / "images")
  assert done.returncode == 0, done.stderr
  with open(root / "p.csv") as f:
    rows = list(csv.DictReader(f))
  assert len(rows) == len(test.labels)
  assert list(rows[0])[:7] == ["path", "top1", "prob1", "top2", "prob2", "top3", "prob3"]
  assert "expert2_top3" in rows[0] and "top4" not in rows[0]
  truth = [int(r["path"].rsplit("_", 1)[1][:-4]) for r in rows]
  names = (root / "run" / "classes.txt").read_text().split()
  predicted = [names.index(r["top1"]) for r in rows]
  confusion = np.zeros((10, 10), np.int64)
  np.add.at(confusion, (truth, predicted), 1)
  # image for image: the run's confusion matrix of its test set, exactly
  np.testing.assert_array_equal(confusion, np.load(root / "run" / "confusion.npy"))
  report = json.loads((root / "run" / "report.json").read_text())
  assert np.mean(np.array(truth) == predicted) == report["final"]["top1"]
  probs = np.array([[float(r[f"prob{j}"]) for j in (1, 2, 3)] for r in rows])
  assert (np.diff(probs, axis=1) <= 0).all() and (probs > 0).all() and (probs[:, 0] <= 1).all()


def test_python_form_and_an_exported_file_agree(trained, tmp_path):
  root, config, test = trained
  p = predict.Predictor(str(root / "run"), batch_size=64)  # 400 images: a padded last batch
  out = p(list(test.images[:70]), top_k=2)
  assert out["probs"].shape == (70, 10) and out["expert_probs"].shape == (3, 70, 10)
  np.testing.assert_allclose(out["probs"].sum(1), 1, rtol=1e-5)
  assert out["top_index"].shape == (70, 2) and out["top_names"][0][0] == p.names[out["top_index"][0, 0]]
  export.export(str(root / "run"), str(tmp_path / "model.safetensors"))
  again = predict.Predictor(str(tmp_path / "model.safetensors"), config, batch_size=64)(
      list(test.images[:70]), top_k=2)
  np.testing.assert_allclose(again["probs"], out["probs"], rtol=1e-5, atol=1e-6)
  gray = p([test.images[0][..., 0]])  # [H, W] grey: given three channels
  np.testing.assert_allclose(gray["probs"][0], out["probs"][0], rtol=1e-5, atol=1e-6)


def test_command_line_errors_are_one_line(trained, tmp_path):
  root, _, _ = trained
  done = _predict_cli(f"--checkpoint={tmp_path / 'nothing'}", root / "images")
  assert done.returncode == 1 and done.stderr.strip().count("\n") == 0
  assert "no such checkpoint" in done.stderr
  (tmp_path / "empty").mkdir()
  done = _predict_cli(f"--checkpoint={root / 'run'}", tmp_path / "empty")
  assert done.returncode == 2 and "error: no images" in done.stderr
  (tmp_path / "mixed").mkdir()
  Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "mixed" / "ok.png")
  (tmp_path / "mixed" / "bad.jpg").write_bytes(b"\xff\xd8 not a jpeg")
  done = _predict_cli(f"--checkpoint={root / 'run'}", f"--out={tmp_path / 'p.csv'}", tmp_path / "mixed")
  assert done.returncode == 0, done.stderr
  assert f"skipped 1 unreadable image(s): {tmp_path / 'mixed' / 'bad.jpg'}" in done.stderr
  assert "1 image(s) labelled" in done.stdout


def test_data_summary_command_prints_what_the_run_printed_first(trained, tmp_path):
  root, _, _ = trained
  done = subprocess.run([sys.executable, "-m", "lgla_jax.data_summary", "--config=configs/demo.py",
                         f"--workdir={tmp_path}", "--few_shot_max=10"], cwd=ROOT,
                        capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr
  lines = done.stdout.splitlines()
  assert lines[0] == ("data: 10 classes, 438 training images, imbalance factor 21.7 "
                      "(largest / smallest class)")
  assert "few-shot (< 10 images): 2 class(es)" in lines[3]
  assert (tmp_path / "class_counts.png").exists() and (root / "run" / "class_counts.png").exists()
  assert (tmp_path / "classes.txt").read_text() == (root / "run" / "classes.txt").read_text()


def test_non_utf8_file_names_are_labelled_and_written(trained, tmp_path):
  root, _, test = trained
  folder = tmp_path / "new"
  folder.mkdir()
  Image.fromarray(test.images[0]).save(folder / os.fsdecode(b"caf\xe9.png"))  # not UTF-8
  (folder / os.fsdecode(b"bad\xff.png")).write_bytes(b"junk")
  rows, unreadable = predict.predict_files(predict.Predictor(str(root / "run")), [folder], 2)
  assert [r["path"][-12:] for r in rows] == ["new/caf\\xe9.png"[-12:]]
  assert unreadable == [str(folder / "bad\\xff.png")]
  predict.write_csv(rows, str(tmp_path / "p.csv"))  # (UTF-8: a surrogate would fail here)
  assert "caf\\xe9.png" in (tmp_path / "p.csv").read_text()
