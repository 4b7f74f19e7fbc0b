"""Predictions' inputs and output: which files a folder gives, image modes converted, the
CSV rows (top-k, experts), and one-line errors (the model itself: tests/integration)."""

import csv

import numpy as np
import pytest
from PIL import Image

from lgla_jax import errors, predict
from lgla_jax.train import prediction


def _tree(root):
  (root / "a" / "deep").mkdir(parents=True)
  (root / ".hidden").mkdir()
  img = Image.fromarray(np.full((6, 6, 3), 90, np.uint8))
  for name in ("a/x.JPG", "a/deep/y.png", "b.webp", "c.Bmp", "d.jpeg", ".e.png", ".hidden/f.png"):
    img.save(root / name, format={"jpg": "JPEG", "jpeg": "JPEG", "png": "PNG", "webp": "WEBP",
                                  "bmp": "BMP"}[name.rsplit(".", 1)[1].lower()])
  (root / "notes.txt").write_text("not an image")


def test_folders_searched_recursively_by_extension_hidden_skipped(tmp_path):
  _tree(tmp_path)
  found = prediction.find_images([str(tmp_path)])
  assert [p[len(str(tmp_path)) + 1:] for p in found] == ["a/deep/y.png", "a/x.JPG", "b.webp",
                                                          "c.Bmp", "d.jpeg"]
  assert prediction.find_images([str(tmp_path / "b.webp")]) == [str(tmp_path / "b.webp")]


def test_a_missing_input_or_a_folder_without_images_is_one_line(tmp_path):
  with pytest.raises(errors.UsageError, match="no such image file or folder"):
    prediction.find_images([str(tmp_path / "gone")])
  (tmp_path / "empty").mkdir()
  (tmp_path / "empty" / "x.txt").write_text("")
  with pytest.raises(errors.UsageError, match=r"no images \(jpg/jpeg/png/bmp/webp\) in .*empty"):
    prediction.find_images([str(tmp_path / "empty")])


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK", "I;16"])
def test_image_modes_become_rgb(tmp_path, mode):
  file = tmp_path / ("x.tif" if mode == "CMYK" else "x.png")
  if mode == "I;16":
    Image.fromarray(np.full((5, 4), 257 * 200, np.uint16)).save(file)
  else:
    Image.new(mode, (4, 5), 100 if mode in "LP" else (100, 100, 100, 0)).save(file)
  img = prediction.read_image(str(file))
  assert img.shape == (5, 4, 3) and img.dtype == np.uint8
  if mode == "I;16":
    assert (img == 200).all()  # scaled from 16 bits, not clipped


def test_a_bad_image_is_named(tmp_path):
  (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
  with pytest.raises(errors.DataError, match="cannot read image .*bad.png"):
    prediction.read_image(str(tmp_path / "bad.png"))


class _Stub:
  """A predictor of 3 named classes, 2 experts: image i's probabilities favour class i % 3."""
  names = ("cat", "dog", "owl")

  def __call__(self, images, top_k):
    probs = np.array([np.roll([0.7, 0.2, 0.1], i % 3) for i in range(len(images))])
    experts = np.stack([probs, np.roll(probs, 1, axis=1)])
    top = np.argsort(-probs, 1, kind="stable")[:, :top_k]
    return {"probs": probs, "expert_probs": experts, "top_index": top,
            "top_names": [[self.names[c] for c in r] for r in top],
            "top_probs": np.take_along_axis(probs, top, 1)}


def test_csv_rows_with_top_k_experts_and_unreadable_files_listed(tmp_path):
  for i in range(2):
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / f"{i}.png")
  (tmp_path / "2.png").write_bytes(b"broken")
  rows, bad = predict.predict_files(_Stub(), [str(tmp_path)], top_k=2, experts=True)
  assert bad == [str(tmp_path / "2.png")]
  assert list(rows[1]) == ["path", "top1", "prob1", "top2", "prob2", "expert0_top1",
                           "expert0_prob1", "expert0_top2", "expert0_prob2", "expert1_top1",
                           "expert1_prob1", "expert1_top2", "expert1_prob2"]
  assert rows[1]["top1"] == "dog" and rows[1]["prob1"] == "0.700000" and rows[1]["top2"] == "owl"
  assert rows[1]["expert1_top1"] == "owl" and rows[1]["expert1_top2"] == "cat"  # the shifted expert
  predict.write_csv(rows, str(tmp_path / "out" / "p.csv"))
  with open(tmp_path / "out" / "p.csv") as f:
    assert [r["top1"] for r in csv.DictReader(f)] == ["cat", "dog"]
  rows, _ = predict.predict_files(_Stub(), [str(tmp_path / "0.png")], top_k=1)
  assert list(rows[0]) == ["path", "top1", "prob1"]


def test_a_missing_checkpoint_is_one_line(tmp_path):
  with pytest.raises(errors.NotFound, match="no such checkpoint"):
    prediction.Predictor(str(tmp_path / "no_run"))
  (tmp_path / "w.pth").write_bytes(b"")
  with pytest.raises(errors.UsageError, match="holds no config; give the run's --config"):
    prediction.Predictor(str(tmp_path / "w.pth"))
