"""Device-resident data and multi-step dispatch: the same batches as the host pipeline,
one compilation, exact evaluation, the automatic choices, and the compilation cache."""


import jax
import numpy as np
import pytest

from lgla_jax import errors
from lgla_jax.train import run as run_lib
from lgla_jax.config import validate as validate_lib
from lgla_jax.data import on_device
from lgla_jax.data import pipeline
from lgla_jax.data import split_files
from lgla_jax.data import splits as data_splits
from lgla_jax.train import sharding
from helpers import config_of, FakeGpuMesh, small_arrays


def _splits(n=103):
  images, labels = small_arrays(n)
  counts = np.bincount(labels, minlength=7)
  return data_splits.DataSplits(data_splits.ArrayData(images, labels),
                             data_splits.ArrayData(images[:37], labels[:37]), counts, 7)


@pytest.mark.parametrize("devices", [1, 8])
def test_device_batches_equal_the_host_pipelines(devices):
  """Same images, same order, same mask, for every step of 2 epochs and after a resume."""
  splits = _splits()
  mesh = sharding.make_mesh(jax.devices()[:devices])
  arrays = on_device.put(splits, mesh)
  gather = jax.jit(lambda a, b: (a["train_images"][b["index"]], a["train_labels"][b["index"]]))
  spe = pipeline.steps_per_epoch(103, 8)
  for start in (0, 13):
    host = pipeline.train_iterator(splits.train.images, splits.train.labels, seed=3,
                                         global_batch=8, num_epochs=2, start_step=start)
    device = on_device.train_index_batches(103, seed=3, global_batch=8, steps_per_epoch=spe,
                                             start_step=start, total_steps=2 * spe)
    count = 0
    for h, d in zip(host, device, strict=True):
      batch = pipeline.to_global(d, sharding.batch_sharding(mesh))
      images, labels = jax.device_get(gather(arrays, batch))
      np.testing.assert_array_equal(images, h["image"])
      np.testing.assert_array_equal(labels, h["label"])
      np.testing.assert_array_equal(np.asarray(batch["mask"]), h["mask"])
      count += 1
    assert count == 2 * spe - start


def test_eval_index_batches_cover_the_test_set_once():
  seen = []
  for b in on_device.eval_index_batches(103, 20):
    seen.extend(b["index"][b["mask"]].tolist())
  assert seen == list(range(103))


def test_chunks_never_cross_an_epoch_and_fill_with_inactive_steps():
  images, labels = small_arrays()
  spe = pipeline.steps_per_epoch(103, 10)  # 11
  batches = list(pipeline.train_iterator(images, labels, seed=1, global_batch=10,
                                               num_epochs=2))
  chunks = list(pipeline.chunks(iter(batches), 4, spe, 0))
  assert [n for n, _ in chunks] == [4, 4, 3, 4, 4, 3]
  steps = [c["image"][i] for n, c in chunks for i in range(n)]
  assert all(np.array_equal(a, b["image"]) for a, b in zip(steps, batches, strict=True))
  assert chunks[2][1]["active"].tolist() == [True, True, True, False]
  assert chunks[2][1]["mask"][2].sum() == 3  # the epoch's padded last batch keeps its mask
  resumed = list(pipeline.chunks(iter(batches[5:]), 4, spe, 5))
  assert [n for n, _ in resumed] == [4, 2, 4, 4, 3]


def test_automatic_choices_are_made_once_and_recorded():
  splits = _splits()
  mesh = sharding.make_mesh(jax.devices()[:1])
  c = run_lib.resolve_placement(config_of("demo"), splits, mesh)
  assert (c.data_on_device, c.augment_on_device, c.steps_per_dispatch) == (True, True, 1)
  c = run_lib.resolve_placement(config_of("demo", **{"augment.on_device": False}), splits, mesh)
  assert (c.data_on_device, c.augment_on_device) == (False, False)  # host augmentation, host data
  replica_run = lambda shards: config_of("demo", **{"replicas.seeds": (0, 1), "replicas.shards": shards})
  assert run_lib.resolve_placement(replica_run(1), splits, mesh).replica_mode == "unrolled"
  assert run_lib.resolve_placement(replica_run(2), splits, mesh).replica_mode == "vmap"

  c = run_lib.resolve_placement(replica_run(1), splits, FakeGpuMesh())  # the accelerators' choices
  assert (c.data_on_device, c.augment_on_device, c.steps_per_dispatch, c.replica_mode) == (
      True, True, 8, "vmap")
  c = run_lib.resolve_placement(config_of("imagenet_lt_resnet50"), splits, mesh)  # in-memory arrays
  assert (c.data_on_device, c.augment_on_device) == (False, False)  # its recipe runs on the host
  files = splits._replace(train=data_splits.ArrayData(split_files.FileImages(["a.jpg"] * 103),
                                                   splits.train.labels))
  c = run_lib.resolve_placement(config_of("demo"), files, mesh)
  assert (c.data_on_device, c.augment_on_device) == (False, False)
  with pytest.raises(errors.ConfigError, match="dataset.on_device"):
    run_lib.resolve_placement(config_of("demo", **{"dataset.on_device": True}), files, mesh)


@pytest.mark.parametrize("fields, message", [
    ({"dataset.on_device": True, "augment.on_device": False}, "augment.on_device"),
    ({"steps_per_dispatch": -1}, "steps_per_dispatch"),
])
def test_inconsistent_placements_are_refused(fields, message):
  c = config_of("demo")
  for key, value in fields.items():
    section, _, field = key.rpartition(".")
    (c[section] if section else c)[field] = value
  with pytest.raises(errors.ConfigError, match=message):
    validate_lib.validate(c)


def test_a_batch_of_the_other_placement_is_refused_with_a_hint():
  mesh = sharding.make_mesh(jax.devices()[:1])
  run = run_lib.setup(config_of("demo", **{"dataset.on_device": True}), mesh)
  images = {"image": np.zeros((32, 16, 16, 3), np.uint8), "label": np.zeros(32, np.int64),
            "mask": np.ones(32, bool)}
  with pytest.raises(ValueError, match="train_batches"):
    run.steps.train(run.state, pipeline.to_global(images, sharding.batch_sharding(mesh)))


