import jax
import numpy as np
import pytest

from lgla_jax import config as config_lib
from lgla_jax.augment import recipes
from lgla_jax.data import pipeline
from lgla_jax.train import sharding
from helpers import small_arrays, image_ids


def test_train_batches_cover_each_epoch_once_and_reshuffle():
  images, labels = small_arrays()
  it = pipeline.train_iterator(images, labels, seed=3, global_batch=10, num_epochs=3,
                                     drop_last=True)
  batches = list(it)
  assert len(batches) == 3 * (103 // 10)
  epochs = [np.concatenate([image_ids(b["image"]) for b in batches[e * 10:(e + 1) * 10]]) for e in range(3)]
  for ids in epochs:
    assert len(set(ids.tolist())) == 100  # no repeats within an epoch, 3 dropped
  assert not np.array_equal(epochs[0], epochs[1])
  np.testing.assert_array_equal(labels[epochs[0]], np.concatenate([b["label"] for b in batches[:10]]))
  assert all(b["mask"].all() for b in batches)  # every batch carries a mask: one compiled step


def test_incomplete_last_batch_is_kept_padded_and_masked():
  # PyTorch's DataLoader default (drop_last=False), which the official code uses: every
  # image once per epoch, ceil(103 / 10) = 11 steps, the last one with 3 valid images.
  images, labels = small_arrays()
  batches = list(pipeline.train_iterator(images, labels, seed=3, global_batch=10,
                                               num_epochs=2))
  assert len(batches) == 2 * 11 == 2 * pipeline.steps_per_epoch(103, 10)
  for e in range(2):
    epoch = batches[e * 11:(e + 1) * 11]
    assert all(b["mask"].all() for b in epoch[:-1])
    last = epoch[-1]
    assert last["image"].shape == (10, 8, 8, 3) and last["mask"].tolist() == [True] * 3 + [False] * 7
    ids = np.concatenate([image_ids(b["image"]) for b in epoch[:-1]] + [image_ids(last["image"])[:3]])
    assert sorted(ids.tolist()) == list(range(103))
    np.testing.assert_array_equal(last["label"][:3], labels[image_ids(last["image"])[:3]])


def test_train_position_is_a_function_of_the_step():
  images, labels = small_arrays()
  full = list(pipeline.train_iterator(images, labels, seed=3, global_batch=10, num_epochs=2))
  resumed = list(pipeline.train_iterator(images, labels, seed=3, global_batch=10,
                                               num_epochs=2, start_step=13))
  assert len(resumed) == len(full) - 13
  for a, b in zip(full[13:], resumed):
    np.testing.assert_array_equal(a["image"], b["image"])


def test_augmented_batches_deterministic_with_worker_processes():
  images, labels = small_arrays()
  aug = config_lib.base_config().augment
  aug.autoaugment = True
  kw = dict(seed=5, global_batch=10, num_epochs=1, augment_config=aug)
  a = list(pipeline.train_iterator(images, labels, **kw))
  b = list(pipeline.train_iterator(images, labels, num_workers=2, **kw))
  assert len(a) == len(b) == 11 and "mask" in a[-1] and "mask" in b[-1]
  for x, y in zip(a, b):
    assert sorted(x) == sorted(y)
    for key in x:
      np.testing.assert_array_equal(x[key], y[key])


def test_process_shares_make_up_the_global_batch():
  images, labels = small_arrays()
  spe = pipeline.steps_per_epoch(len(labels), 12)
  whole = pipeline.GatherTrainBatch(images, labels, 1, 12, spe)
  parts = [pipeline.GatherTrainBatch(images, labels, 1, 12, spe, p, 3) for p in range(3)]
  for step in (0, 5, spe - 1, spe + 2):  # spe - 1: the padded last batch (7 valid)
    ref = whole.map(step)
    shares = [p.map(step) for p in parts]
    for key in ("image", "label", "mask"):
      np.testing.assert_array_equal(np.concatenate([s[key] for s in shares]), ref[key])
  assert whole.map(spe - 1)["mask"].sum() == 103 - 12 * (spe - 1) == 7


@pytest.mark.parametrize("devices", [1, 8])
@pytest.mark.parametrize("batch", [8, 24, 40])
def test_eval_covers_every_image_exactly_once(devices, batch):
  images, labels = small_arrays(n=101)
  mesh = sharding.make_mesh(jax.devices()[:devices])
  seen = []
  for b in pipeline.prefetch_to_device(
      pipeline.eval_iterator(images, labels, global_batch=batch),
      sharding.batch_sharding(mesh)):
    assert b["image"].shape[0] == batch and len(b["image"].sharding.device_set) == devices
    mask = np.asarray(b["mask"])
    seen.extend(image_ids(np.asarray(b["image"]))[mask].tolist())
  assert sorted(seen) == list(range(101))


def test_batch_larger_than_data_is_an_error():
  images, labels = small_arrays(n=5)
  with pytest.raises(ValueError, match="batch_size"):
    pipeline.train_iterator(images, labels, seed=0, global_batch=8, num_epochs=1)


def test_augmented_global_batch_does_not_depend_on_process_count():
  images, labels = small_arrays()
  aug = config_lib.base_config().augment
  aug.autoaugment = True
  spe = pipeline.steps_per_epoch(len(labels), 12)
  make = lambda p, n: pipeline.AugmentBatch(2, "cifar", recipes.params(aug), 12, p)
  for step in (0, 7):
    whole = pipeline.GatherTrainBatch(images, labels, 2, 12, spe).map(step)
    ref = make(0, 1).map(whole)["image"]
    shares = [pipeline.GatherTrainBatch(images, labels, 2, 12, spe, p, 3).map(step) for p in range(3)]
    got = np.concatenate([make(p, 3).map(s)["image"] for p, s in enumerate(shares)])
    np.testing.assert_array_equal(got, ref)
