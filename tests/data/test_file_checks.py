"""Bad input of an image folder found before training: broken and truncated files on the
large-image path (decoded lazily), non-UTF-8 file names, the same file in two splits."""

import io
import os

import numpy as np
import pytest
from PIL import Image

from lgla_jax import config as config_lib
from lgla_jax import errors
from lgla_jax.data import file_checks, pipeline, sources
from lgla_jax.report import data_summary
from lgla_jax.storage import paths


def _image(seed, side=72):
  return np.random.RandomState(seed).randint(0, 256, (side, side, 3), dtype=np.uint8)


def _save(img, file, fmt=None):
  file.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(img).save(file, format=fmt)


def _tree(root, side=72):
  """Two classes, distinct random images in train and test (no duplicates)."""
  k = 0
  for split, n in (("train", 3), ("test", 2)):
    for cls in ("a", "b"):
      for i in range(n):
        k += 1
        _save(_image(k, side), root / split / cls / f"{i}.png")


def _config(root, **kw):
  c = config_lib.base_config().dataset
  c.name, c.source, c.data_dir, c.imbalance_factor, c.image_size = (
      "mine", "image_folder", str(root), 1.0, 224)  # 224: files, decoded in the pipeline
  for k, v in kw.items():
    setattr(c, k, v)
  return c


def _jpeg(img) -> bytes:
  buf = io.BytesIO()
  Image.fromarray(img).save(buf, format="JPEG", quality=90)
  return buf.getvalue()


def test_broken_and_truncated_files_are_found_before_an_epoch(tmp_path, capsys):
  _tree(tmp_path)
  good_jpeg = _jpeg(_image(50))
  (tmp_path / "train" / "a" / "whole.jpg").write_bytes(good_jpeg)
  (tmp_path / "train" / "a" / "cut.jpg").write_bytes(good_jpeg[:len(good_jpeg) // 2])
  png = (tmp_path / "train" / "b" / "0.png").read_bytes()
  (tmp_path / "train" / "b" / "cut.png").write_bytes(png[:len(png) // 2])
  (tmp_path / "train" / "b" / "junk.png").write_bytes(b"not an image at all")
  s = sources.load(_config(tmp_path))
  assert s.class_counts.tolist() == [4, 3]  # whole.jpg kept; the three broken ones skipped
  out = capsys.readouterr().out
  assert "3 unreadable or truncated image(s) skipped" in out
  assert "cut.jpg" in out and "cut.png" in out and "junk.png" in out
  assert "skipped files: 3 unreadable" in out
  # every kept file decodes: an epoch meets no broken file
  assert pipeline.decode_for_eval(list(s.train.images.paths), 32).shape == (7, 32, 32, 3)
  with pytest.raises(errors.DataError, match=r"cut\.jpg: not a readable image \(truncated"):
    sources.load(_config(tmp_path, on_bad_image="error"))


def test_a_file_broken_after_the_scan_is_named_when_decoded(tmp_path):
  _tree(tmp_path)
  s = sources.load(_config(tmp_path))
  (tmp_path / "train" / "a" / "1.png").write_bytes(b"gone bad")
  with pytest.raises(errors.DataError, match=r"cannot decode image .*train/a/1\.png"):
    pipeline.decode_for_eval(list(s.train.images.paths), 32)


@pytest.mark.parametrize("image_size", [32, 224])
def test_non_utf8_file_names_are_read_and_shown_readably(tmp_path, capsys, image_size):
  _tree(tmp_path, side=40)
  raw = os.fsencode(tmp_path)
  for split in (b"train", b"test"):  # a class folder and files whose names are not UTF-8
    os.makedirs(os.path.join(raw, split, b"caf\xe9"))
    for i in range(2):
      _save(_image(100 + i + (10 if split == b"test" else 0), 40),
            tmp_path / os.fsdecode(os.path.join(split, b"caf\xe9", b"im\xff%d.png" % i)))
  with open(os.path.join(raw, b"train", b"a", b"bad\xfe.png"), "wb") as f:
    f.write(b"junk")
  s = sources.load(_config(tmp_path, image_size=image_size))
  assert s.class_names == ("a", "b", "caf\\xe9") and s.class_counts.tolist() == [3, 3, 2]
  out = capsys.readouterr().out
  out.encode("utf-8")  # printable as it is (a surrogate would fail here, and on a UTF-8 console)
  assert "train/a/bad\\xfe.png" in out
  data_summary.write_class_names(s.class_names, tmp_path / "wd")  # (UTF-8, one name a line)
  assert data_summary.read_class_names(tmp_path / "wd") == s.class_names
  assert file_checks.readable(b"x\xff") == "x\\xff" == file_checks.readable(os.fsdecode(b"x\xff"))
  assert file_checks.readable("café") == "café"


def test_the_same_file_in_two_splits_is_warned_not_refused(tmp_path, capsys):
  _tree(tmp_path)
  (tmp_path / "test" / "a" / "copy.png").write_bytes((tmp_path / "train" / "b" / "2.png").read_bytes())
  (tmp_path / "val" / "a").mkdir(parents=True)
  (tmp_path / "val" / "a" / "x.png").write_bytes((tmp_path / "train" / "a" / "0.png").read_bytes())
  (tmp_path / "val" / "a" / "y.png").write_bytes((tmp_path / "test" / "b" / "1.png").read_bytes())
  s = sources.load(_config(tmp_path))
  assert len(s.test.labels) == 5 and len(s.val.labels) == 2  # warned, kept
  out = capsys.readouterr().out
  # splits in order train, val, test: a later split's file is the copy
  assert "warning: 1 val, 2 test image(s) have the same bytes as an image of another split" in out
  assert "val/a/x.png = " in out and "train/a/0.png" in out
  assert "test/a/copy.png = " in out and "train/b/2.png" in out
  pairs = file_checks.cross_split_duplicates({"train": [], "test": []})
  assert pairs == []
  _tree(tmp_path / "clean")
  sources.load(_config(tmp_path / "clean"))
  assert "same bytes" not in capsys.readouterr().out


@pytest.mark.parametrize("image_size", [8, 224])  # decoded into memory | kept as files
def test_an_image_folder_in_a_bucket_equals_the_local_one_and_is_checked(
    tmp_path, gcs, capsys, image_size):
  """``data_dir=gs://...``: the same classes, labels (and pixels) as the local folder; a
  truncated file skipped and named; a test file with the bytes of a training file warned."""
  _tree(tmp_path / "local")
  (tmp_path / "local" / "test" / "a" / "copy.png").write_bytes(
      (tmp_path / "local" / "train" / "b" / "2.png").read_bytes())
  (tmp_path / "local" / "train" / "a" / "cut.png").write_bytes(
      (tmp_path / "local" / "train" / "a" / "0.png").read_bytes()[:300])
  from helpers import upload
  upload(tmp_path / "local", f"{gcs}/photos")
  local = sources.load(_config(tmp_path / "local", image_size=image_size))
  out_local = capsys.readouterr().out
  remote = sources.load(_config(f"{gcs}/photos", image_size=image_size))
  out_remote = capsys.readouterr().out
  assert tuple(remote.class_names) == tuple(local.class_names) == ("a", "b")
  for split in ("train", "test"):
    r, l = getattr(remote, split), getattr(local, split)
    np.testing.assert_array_equal(r.labels, l.labels)
    if image_size == 8:
      np.testing.assert_array_equal(r.images, l.images)
    else:
      assert [str(p).split("/photos/")[-1] for p in r.images.paths] == [
          str(p).split("/local/")[-1] for p in l.images.paths]
  remote_file = f"{gcs}/photos/train/b/2.png"  # the bucket's stored MD5: nothing read
  assert paths.stored_md5(remote_file) == file_checks.content_md5(
      tmp_path / "local" / "train" / "b" / "2.png") == file_checks.content_md5(remote_file)
  for out in (out_local, out_remote):
    assert "1 unreadable or truncated image(s) skipped" in out and "train/a/cut.png" in out
    assert "warning: 1 test image(s) have the same bytes as an image of another split" in out
    assert "test/a/copy.png = " in out and "train/b/2.png" in out
