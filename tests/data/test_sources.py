
import numpy as np
import pytest

from lgla_jax import config as config_lib
from lgla_jax import errors
from lgla_jax import long_tail
from lgla_jax.data import catalog
from lgla_jax.data import readers
from lgla_jax.data import sources
from lgla_jax.data import split_files
from lgla_jax.data import tfds_source
from helpers import make_cifar10_folder, make_cifar100_tarball, make_tree, python2_meta_pickle


def _config(name, source, data_dir, max_per_class, factor):
  c = config_lib.base_config().dataset
  c.name, c.source, c.data_dir = name, source, str(data_dir)
  c.max_per_class, c.imbalance_factor = max_per_class, factor
  c.download = False  # reading only (tests/data/test_download.py covers downloads)
  return c


def test_cifar10_folder(tmp_path):
  images, labels, test_images, test_labels = make_cifar10_folder(tmp_path)
  splits = sources.load(_config("cifar10", "cifar_archive", tmp_path, 12, 0.1))
  counts = long_tail.imbalanced_counts(10, 12, 0.1)
  assert splits.class_counts.tolist() == counts and splits.num_classes == 10
  idx = long_tail.long_tail_indices(labels, counts, seed=0)
  np.testing.assert_array_equal(splits.train.images, images[idx])  # CHW -> HWC right
  np.testing.assert_array_equal(splits.train.labels, labels[idx])
  np.testing.assert_array_equal(splits.test.images, test_images)  # the test set stays balanced
  assert splits.train.images.dtype == np.uint8 and splits.train.labels.dtype == np.int64


def test_cifar100_tarball(tmp_path):
  (images, labels, _), (test_images, _, _) = make_cifar100_tarball(tmp_path)
  splits = sources.load(_config("cifar100", "cifar_archive", tmp_path, 4, 0.25))
  assert splits.train.images.shape[1:] == (32, 32, 3)
  assert len(splits.test.labels) == 200
  np.testing.assert_array_equal(splits.test.images, test_images)
  assert splits.class_counts[0] == 4 and splits.class_counts[-1] == 1


def test_missing_and_corrupt_cifar(tmp_path):
  with pytest.raises(FileNotFoundError, match=r"cifar-100-python.*data_dir"):
    sources.load(_config("cifar100", "cifar_archive", tmp_path, 4, 0.25))
  make_cifar10_folder(tmp_path)
  (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"not a pickle")
  with pytest.raises(ValueError, match="data_batch_3.*corrupt"):
    sources.load(_config("cifar10", "cifar_archive", tmp_path, 12, 0.1))
  bad = tmp_path / "bad"
  bad.mkdir()
  (bad / "cifar-100-python.tar.gz").write_bytes(b"\x1f\x8b garbage")
  with pytest.raises(ValueError, match="tar.gz"):
    sources.load(_config("cifar100", "cifar_archive", bad, 4, 0.25))


def _tfds_records(images, labels, split, seed):
  """What tfds serves for CIFAR: the archive's records in another order, named by index."""
  order = np.random.RandomState(seed).permutation(len(labels))
  return [{"image": images[i], "label": labels[i], "id": f"{split}_{i:05d}".encode()}
          for i in order]


def test_tfds_source_selects_the_archives_images(tmp_path, monkeypatch):
  import tensorflow_datasets as tfds
  images, labels, test_images, test_labels = make_cifar10_folder(tmp_path, per_class=30)
  archive = sources.load(_config("cifar10", "cifar_archive", tmp_path, 15, 0.2))
  records = {"train": _tfds_records(images, labels, "train", 1),
             "test": _tfds_records(test_images, test_labels, "test", 2)}
  c = _config("cifar10", "tfds", None, 15, 0.2)
  c.download = True  # mocked: nothing is downloaded
  monkeypatch.setattr(tfds_source, "_can_prepare_tfds", lambda: True)
  with tfds.testing.mock_data(as_data_source_fn=lambda _, split, *a, **k: records[split]):
    splits = sources.load(c)
  assert splits.class_counts.tolist() == long_tail.imbalanced_counts(10, 15, 0.2)
  np.testing.assert_array_equal(splits.train.images, archive.train.images)  # same images
  np.testing.assert_array_equal(splits.train.labels, archive.train.labels)
  np.testing.assert_array_equal(splits.test.images, test_images)
  records["train"][3]["id"] = records["train"][4]["id"]  # a repeated id: not one archive
  with tfds.testing.mock_data(as_data_source_fn=lambda _, split, *a, **k: records[split]):
    with pytest.raises(errors.DataError, match="repeated ids.*cifar_archive"):
      sources.load(c)


def test_tfds_source_with_random_mock_data(monkeypatch):
  import tensorflow_datasets as tfds
  c = _config("fashion_mnist", "tfds", None, 15, 0.2)  # no ids: tfds order is kept
  c.download = True
  monkeypatch.setattr(tfds_source, "_can_prepare_tfds", lambda: True)
  with tfds.testing.mock_data(num_examples=300):
    splits = sources.load(c)
  assert splits.train.images.shape[1:] == (32, 32, 3) and splits.train.images.dtype == np.uint8
  assert splits.class_counts.tolist() == long_tail.imbalanced_counts(10, 15, 0.2)
  assert len(splits.test.labels) == 300


def test_tfds_missing_data_fails_fast_with_instructions(tmp_path):
  with pytest.raises(FileNotFoundError, match=r"(?s)cifar100.*download=True.*cifar_archive"):
    sources.load(_config("cifar100", "tfds", tmp_path, None, 0.01))
  c = _config("cifar100", "tfds", tmp_path, None, 0.01)
  c.download = True  # allowed, but preparing needs TensorFlow, which the tests do not have
  with pytest.raises(FileNotFoundError, match=r"(?s)needs TensorFlow.*cifar_archive"):
    sources.load(c)


def test_fashion_mnist_idx():
  c = _config("fashion_mnist", "idx", readers.FASHION_MNIST_DEBIAN_DIR, None, 0.01)
  splits = sources.load(c)
  assert splits.train.images.shape == (14886, 32, 32, 3)
  assert splits.test.images.shape == (10000, 32, 32, 3)
  assert (splits.train.images[:, :2] == 0).all() and (splits.train.images[:, :, -2:] == 0).all()
  assert (splits.train.images[..., 0] == splits.train.images[..., 2]).all()
  with pytest.raises(FileNotFoundError, match="dataset-fashion-mnist"):
    readers.fashion_mnist_dir("/nonexistent")


def test_the_table_knows_each_balanced_training_sets_largest_class():
  """``DatasetInfo.train_per_class`` (the synthetic benchmark's largest class) against the
  real data that is offline here; CIFAR's 5,000 / 500 are the published sizes."""
  real = {"fashion_mnist": readers.load_fashion_mnist(readers.FASHION_MNIST_DEBIAN_DIR)[0],
          "digits": readers.load_digits()[0]}
  for name, train in real.items():
    assert catalog.DATASETS[name].train_per_class == np.bincount(train.labels).max(), name


def test_idx_reader_errors(tmp_path):
  path = tmp_path / "x-idx1-ubyte"
  path.write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 5, 1, 2, 3]))
  with pytest.raises(ValueError, match="truncated"):
    readers.read_idx(str(path))
  path.write_bytes(b"hello world")
  with pytest.raises(ValueError, match="magic"):
    readers.read_idx(str(path))
  path.write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 8, 9]))
  np.testing.assert_array_equal(readers.read_idx(str(path)), [7, 8, 9])


def test_digits_demo_data():
  c = _config("digits", "sklearn", None, 130, 0.05)
  splits = sources.load(c)
  assert splits.train.images.shape[1:] == (16, 16, 3)
  assert splits.class_counts.tolist() == [130, 93, 66, 47, 34, 24, 17, 12, 9, 6]
  assert np.bincount(splits.test.labels).tolist() == [40] * 10


def test_places_classes_are_renumbered_most_images_first(tmp_path):
  root, splits = make_tree(tmp_path, "places_lt")
  train_file = splits / "Places_LT_train.txt"
  extra = [f"train/img_1.jpg {c}" for c in (7, 7, 7, 7, 7, 7, 7, 300, 300, 300, 12)]
  train_file.write_text(train_file.read_text() + "\n".join(extra) + "\n")
  (splits / "Places_LT_test.txt").write_text("train/img_2.jpg 7\ntrain/img_3.jpg 300\n"
                                             "train/img_4.jpg 12\ntrain/img_5.jpg 0\n")
  data = split_files.load("places_lt", str(splits), str(root), validation=True)
  original = np.bincount(split_files.read_split_file(str(train_file), str(root)).labels, minlength=365)
  class_map = long_tail.frequency_class_map(original)
  # class 7 (8 images) first, then class 0 (6), 300 (4), 12 (2), then the classes of one image
  assert data.class_ids[:4].tolist() == [7, 0, 300, 12]
  np.testing.assert_array_equal(data.class_counts, original[data.class_ids])
  np.testing.assert_array_equal(np.argsort(class_map), data.class_ids)
  assert data.test.labels.tolist() == [0, 2, 3, 1]  # the test split renumbered the same way
  assert data.val is not None and data.val.labels.max() < 365
  with pytest.raises(errors.DataError, match="no validation split.*select_on='test'"):
    split_files.load("inaturalist2018", str(splits), str(root), validation=True)


def test_cifar100_class_names_come_from_the_archives_meta(tmp_path):
  names = [f"kind_{i:02d}" for i in range(100)]
  meta = python2_meta_pickle({"fine_label_names": names, "coarse_label_names": ["a"] * 20})
  make_cifar100_tarball(tmp_path, meta=meta)
  splits = sources.load(_config("cifar100", "cifar_archive", tmp_path, 4, 0.25))
  assert splits.class_names == tuple(names)  # the archive's, not the catalog's
  (tmp_path / "cifar-100-python.tar.gz").unlink()
  make_cifar100_tarball(tmp_path)  # no meta in the archive: the catalog's names
  assert sources.load(_config("cifar100", "cifar_archive", tmp_path, 4, 0.25)).class_names == \
      catalog.CIFAR100_NAMES


def test_cifar_meta_is_read_without_running_it_and_checked(tmp_path):
  import pickle
  folder = tmp_path / "cifar-100-python"
  folder.mkdir()
  d = _config("cifar100", "cifar_archive", tmp_path, 4, 0.25)
  (folder / "meta").write_bytes(pickle.dumps({"fine_label_names": ["x"] * 100}, protocol=4))
  assert readers.cifar_class_names(d) == ("x",) * 100  # a Python 3 pickle (str) too
  (folder / "meta").write_bytes(b"cos\nsystem\n(S'echo hi'\ntR.")  # a global: refused, not run
  with pytest.raises(errors.DataError, match="meta is not a readable CIFAR metadata file"):
    readers.cifar_class_names(d)
  (folder / "meta").write_bytes(python2_meta_pickle({"fine_label_names": ["a", "b"]}))
  with pytest.raises(errors.DataError, match="should be 100 class names, got 2"):
    readers.cifar_class_names(d)
