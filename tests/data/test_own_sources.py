"""Your own split files (``source='split_files'`` with a name the catalog does not know) and
any tfds data set by name (``name='tfds:NAME'``), on data written by the test: split files
over generated PNGs, and tfds sets prepared by a builder defined in the test (no download)."""

import numpy as np
import pytest

from lgla_jax import config as config_lib
from lgla_jax import errors, long_tail
from lgla_jax.config import validate as validate_lib
from lgla_jax.data import sources, splits as splits_lib
from lgla_jax.storage import paths

from helpers import config_of, tiny_tfds, write_split_files, write_tfds_set

BAD = (errors.UsageError, errors.RunError)


def _split_config(images, splits, **kw):
  c = config_lib.base_config().dataset
  c.name, c.source = "my_species", "split_files"
  c.data_dir, c.split_dir = str(images), str(splits)
  c.imbalance_factor, c.image_size = 1.0, 224  # files (no decode) unless a test asks for less
  for k, v in kw.items():
    setattr(c, k, v)
  return c


def test_split_files_counts_names_and_order(tmp_path, capsys):
  images, splits = write_split_files(tmp_path)
  s = sources.load(_split_config(images, splits))
  assert s.num_classes == 3 and s.class_counts.tolist() == [6, 3, 2]
  assert s.class_names == ("ant", "cat", "zebra")  # classes.txt, label order
  assert s.train.labels.tolist() == [0] * 6 + [1] * 3 + [2] * 2  # the file's order
  assert s.train.images[6].endswith("images/train/1/000.png") and s.val is None
  assert "split_files" in capsys.readouterr().out
  assert sources.problems(_split_config(images, splits)) == []
  (splits / "classes.txt").unlink()  # no names: the class index is the name
  s = sources.load(_split_config(images, splits, image_size=8))
  assert s.class_names is None and splits_lib.class_names(s) == ("0", "1", "2")
  assert s.train.images.shape == (11, 8, 8, 3) and s.train.images.dtype == np.uint8  # decoded
  assert sources.in_memory(_split_config(images, splits, image_size=8))
  assert not sources.in_memory(_split_config(images, splits))


def test_split_files_val_and_spaces_in_paths(tmp_path):
  images, splits = write_split_files(tmp_path)
  (images / "train" / "0" / "000.png").rename(images / "train" / "0" / "a b.png")
  text = (splits / "train.txt").read_text().replace("train/0/000.png", "train/0/a b.png")
  (splits / "train.txt").write_text(text)
  (splits / "val.txt").write_text("train/1/000.png 1\ntest/2/000.png 2\n")
  s = sources.load(_split_config(images, splits, select_on="val"))
  assert s.val.labels.tolist() == [1, 2] and s.train.images[0].endswith("a b.png")


@pytest.mark.parametrize("edit, message", [
    (("test.txt", None), r"test\.txt does not exist.*train\.txt and test\.txt"),
    (("train.txt", "train/0/000.png cat\n"), r"train\.txt, line 1: .*label an integer"),
    (("train.txt", "train/0/000.png 1.5\n"), r"train\.txt, line 1: "),
    (("test.txt", "\ntest/0/000.png -1\n"), r"test\.txt, line 2: "),
    (("train.txt", "train/0/000.png 0\ntrain/1/000.png 2\n"), r"train\.txt: no training image has label\(s\) \[1\]"),
    (("test.txt", "test/0/000.png 0\ntest/0/001.png 3\n"), r"test\.txt: .*label 3, a class without training images"),
    (("classes.txt", "ant\ncat\n"), r"classes\.txt: it has 2 names, but .* 3 classes"),
    (("classes.txt", "ant\n\ncat\n"), r"classes\.txt: line 2 is blank"),
    (("train.txt", "train/0/999.png 0\ntrain/1/000.png 1\n"), r"999\.png \(line 1 of .*train\.txt\) does not exist"),
    (("train.txt", "train/0/000.png 0\n"), "at least two classes"),
])
def test_split_files_bad_input_named(tmp_path, edit, message):
  images, splits = write_split_files(tmp_path)
  name, text = edit
  if text is None:
    (splits / name).unlink()
  else:
    (splits / name).write_text(text)
  with pytest.raises(BAD, match=message):
    sources.load(_split_config(images, splits))


def test_split_files_refusals(tmp_path):
  images, splits = write_split_files(tmp_path)
  c = _split_config(images, splits, imbalance_factor=0.1)
  with pytest.raises(errors.ConfigError, match="used as they are"):
    sources.load(c)
  assert sources.problems(c)[0][0] == "dataset.imbalance_factor"
  with pytest.raises(errors.ConfigError, match="split_dir is not set"):
    sources.load(_split_config(images, splits, split_dir=None))
  (splits / "val.txt").unlink(missing_ok=True)
  with pytest.raises(errors.NotFound, match=r"val\.txt does not exist"):
    sources.load(_split_config(images, splits, select_on="val"))


def test_split_files_from_a_bucket(tmp_path, gcs):
  images, splits = write_split_files(tmp_path, counts=(3, 2), test_counts=(1, 1), names=("a", "b"))
  for f in sorted(tmp_path.rglob("*")):
    if f.is_file():
      (paths.path(gcs) / f.relative_to(tmp_path).as_posix()).parent.mkdir(parents=True, exist_ok=True)
      (paths.path(gcs) / f.relative_to(tmp_path).as_posix()).write_bytes(f.read_bytes())
  s = sources.load(_split_config(f"{gcs}/images", f"{gcs}/splits", image_size=8))
  assert s.class_names == ("a", "b") and s.class_counts.tolist() == [3, 2]
  local = sources.load(_split_config(images, splits, image_size=8))
  np.testing.assert_array_equal(s.train.images, local.train.images)  # same pixels


def _tfds_config(data_dir, name="lgla_tiny_flowers", **kw):
  c = config_lib.base_config().dataset
  c.name, c.source, c.data_dir = f"tfds:{name}", "tfds", str(data_dir)
  c.imbalance_factor, c.image_size, c.download = 1.0, 16, False
  for k, v in kw.items():
    setattr(c, k, v)
  return c


@pytest.fixture(scope="module")
def flowers(tmp_path_factory):
  """A prepared tfds set with train, test and validation splits (read-only in the tests)."""
  return tiny_tfds(tmp_path_factory.mktemp("tfds"), val_counts=(2, 1, 1))


def test_tfds_by_name_counts_names_and_features(flowers, capsys):
  s = sources.load(_tfds_config(flowers))
  assert s.num_classes == 3 and s.class_names == ("rose", "tulip", "daisy")  # ClassLabel order
  assert s.class_counts.tolist() == [8, 4, 2] and s.val is None  # val read only when selecting
  assert s.train.images.shape == (14, 16, 16, 3) and s.train.images.dtype == np.uint8
  assert sorted(np.bincount(s.test.labels).tolist()) == [3, 3, 3]
  assert "features image='image' label='label'" in capsys.readouterr().out  # text skipped
  assert sources.problems(_tfds_config(flowers)) == []
  assert sources.in_memory(_tfds_config(flowers))
  s = sources.load(_tfds_config(flowers, select_on="val"))
  assert s.val.labels.shape == (4,)


def test_tfds_long_tailed_by_the_official_rule(flowers):
  s = sources.load(_tfds_config(flowers, imbalance_factor=0.5, max_per_class=4))
  assert s.class_counts.tolist() == long_tail.imbalanced_counts(3, 4, 0.5) == [4, 2, 2]
  assert np.bincount(s.train.labels).tolist() == [4, 2, 2] and s.class_names[0] == "rose"
  with pytest.raises(errors.DataError, match="max_per_class=8 .* lower max_per_class"):
    sources.load(_tfds_config(flowers, imbalance_factor=0.5, max_per_class=8))


def test_tfds_splits_override(flowers):
  s = sources.load(_tfds_config(flowers, splits="train=train+validation,test=test[:3]"))
  assert s.class_counts.tolist() == [10, 5, 3] and len(s.test.labels) == 3
  with pytest.raises(errors.DataError, match=r"cannot read split 'nope'.*'validation'"):
    sources.load(_tfds_config(flowers, splits="train=nope,test=test"))
  for bad in ("train=train", "train=train,test", "train=a,test=b,extra=c"):
    found = sources.problems(_tfds_config(flowers, splits=bad))
    assert found and found[0][0] == "dataset.splits", bad


def test_tfds_features_ambiguous_missing_or_named(tmp_path):
  import tensorflow_datasets as tfds
  rng = np.random.RandomState(0)
  rows = [{"photo": rng.randint(0, 255, (8, 8, 3), dtype=np.uint8),
           "mask": rng.randint(0, 255, (8, 8, 3), dtype=np.uint8),
           "species": i % 2, "count": np.int64(i)} for i in range(6)]
  write_tfds_set(tmp_path, "lgla_two_images", {"train": rows, "test": rows}, {
      "photo": tfds.features.Image(shape=(None, None, 3)),
      "mask": tfds.features.Image(shape=(None, None, 3)),
      "species": tfds.features.ClassLabel(names=["a", "b"]),
      "count": tfds.features.Tensor(shape=(), dtype=np.int64)})
  with pytest.raises(errors.DataError, match=r"2 image features \(.*photo.*\), need exactly one.*image_key.*mask: Image"):
    sources.load(_tfds_config(tmp_path, "lgla_two_images"))
  with pytest.raises(errors.ConfigError, match=r"image_key='picture'.*photo: Image"):
    sources.load(_tfds_config(tmp_path, "lgla_two_images", image_key="picture"))
  with pytest.raises(errors.DataError, match=r"2 label features \(.*species.*\).*label_key"):
    sources.load(_tfds_config(tmp_path, "lgla_two_images", image_key="photo"))
  s = sources.load(_tfds_config(tmp_path, "lgla_two_images", image_key="photo",
                                label_key="species", image_size=8))
  assert s.class_names == ("a", "b") and s.class_counts.tolist() == [3, 3]
  np.testing.assert_array_equal(np.sort(s.train.images.reshape(6, -1).sum(1)),
                                np.sort([r["photo"].reshape(-1).astype(int).sum() for r in rows]))
  s = sources.load(_tfds_config(tmp_path, "lgla_two_images", image_key="mask",
                                label_key="count", image_size=8))
  assert s.class_names is None and s.num_classes == 6  # an int label: largest + 1


def test_tfds_grey_images_and_missing_class(tmp_path):
  tiny_tfds(tmp_path / "grey", grey=True)
  s = sources.load(_tfds_config(tmp_path / "grey"))
  assert s.train.images.shape[1:] == (16, 16, 3)
  assert (s.train.images[..., 0] == s.train.images[..., 2]).all()  # grey to RGB
  tiny_tfds(tmp_path / "gap", counts=(3, 0, 2))
  with pytest.raises(errors.DataError, match=r"\['tulip'\].*no training image"):
    sources.load(_tfds_config(tmp_path / "gap"))


def test_tfds_missing_data_and_config_problems(tmp_path):
  with pytest.raises(errors.NotFound, match="no prepared tfds data for oxford_flowers102"):
    sources.load(_tfds_config(tmp_path, "oxford_flowers102"))
  with pytest.raises(errors.NotFound, match="neither a tfds data set nor prepared"):
    sources.load(_tfds_config(tmp_path, "lgla_no_such_set"))
  assert sources.problems(_tfds_config(tmp_path, source="image_folder"))[0][0] == "dataset.source"
  assert sources.problems(_tfds_config(tmp_path, imbalance_factor=0.01)) == []


def test_tfds_from_a_bucket_is_read_from_a_local_copy(flowers, gcs, tmp_path, monkeypatch):
  from lgla_jax.data import tfds_source
  monkeypatch.setattr(tfds_source, "LOCAL_COPIES", str(tmp_path / "copies"))
  for f in sorted(flowers.rglob("*")):
    if f.is_file() and "lgla_tiny_flowers/" in f.as_posix():
      (paths.path(gcs) / f.relative_to(flowers).as_posix()).write_bytes(f.read_bytes())
  s = sources.load(_tfds_config(gcs))
  local = sources.load(_tfds_config(flowers))
  np.testing.assert_array_equal(s.train.images, local.train.images)
  assert (tmp_path / "copies").is_dir()
  with pytest.raises(errors.NotFound, match="no prepared tfds data for lgla_tiny_flowers in gs://"):
    sources.load(_tfds_config(f"{gcs}/elsewhere"))


def test_the_configs_validate():
  for name, arg, fields in (("split_files", "", {}), ("split_files", "large", {}),
                            ("tfds", "", {}), ("tfds", "large", {}), ("split_files", "quick", {}),
                            ("tfds", "quick", {})):
    c = config_of(name, arg, **fields)
    validate_lib.validate(c, num_devices=1)
