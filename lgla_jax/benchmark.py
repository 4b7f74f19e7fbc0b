"""Throughput: ``python -m lgla_jax.benchmark --config=configs/cifar100_ir100.py [--synthetic]``.

Prints one JSON object. Two kinds of numbers:

* ``--steps=N`` (default 30): the parts, in steady state: the batch source alone (host
  decode/augment, or index generation when the data is on the devices), the training
  loop over N dispatches (batches prefetched, metrics fetched one dispatch late), the
  jitted step alone on one batch already on the device, evaluation, compile time.
* ``--epochs=N``: the real thing, ``train.loop.train_and_evaluate`` for N epochs in a fresh
  temporary workdir, with everything a user pays for (compilation, epoch boundaries,
  checkpoints, evaluations as the config schedules them): its wall time and the images/s
  that gives, next to the steady-state training rate and median step time the run reports.
  ``--epochs=0`` skips it. ``--workdir=gs://bucket/folder`` runs it a second time in a new
  folder there (``run_in_workdir``): the step time with a bucket workdir beside a local one.

A replica run (``--config.replicas.seeds=...``) counts the training images of all its
replicas; its evaluation rate counts test images (each evaluated by every replica).

``--synthetic`` uses random uint8 images of the config's size with the config's
long-tailed class counts (the real training-set size), so no data set is needed; for an
ImageNet-size config ``--synthetic_jpeg=N`` makes them N JPEG files instead, which the real
pipeline decodes and augments (arrays skip the decode: the two separate input from compute).
The output also has the device's peak memory (``peak_device_memory_bytes``, GPU/TPU).
"""

from __future__ import annotations

import contextlib
import json
import tempfile
import time

import jax
import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags

from lgla_jax import long_tail
from lgla_jax.augment import recipes
from lgla_jax.data.catalog import DATASETS
from lgla_jax.data.registry import SOURCES
from lgla_jax.data.splits import ArrayData, DataSplits, FileImages
from lgla_jax.models.layers import resolve_conv_impl
from lgla_jax.storage.paths import path as storage_path
from lgla_jax.train import evaluation, feed, loop, run as run_lib

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=False)
_STEPS = flags.DEFINE_integer("steps", 30, "Timed dispatches of the parts (after warm-up).")
_WARMUP = flags.DEFINE_integer("warmup", 3, "Untimed dispatches first (the first one compiles).")
_EPOCHS = flags.DEFINE_integer("epochs", 0, "Also time a real run of this many epochs (0: no).")
_SYNTHETIC = flags.DEFINE_bool("synthetic", False, "Random images instead of the data set.")
_SYNTHETIC_TEST = flags.DEFINE_integer("synthetic_test", 10_000, "Test images with --synthetic.")
_WORKDIR = flags.DEFINE_string("workdir", None, "With --epochs: also time the run in a fresh "
                                "folder under this workdir (a bucket, gs://...), beside the "
                                "local temporary one (``run`` and ``run_in_workdir``).")
_PROFILE = flags.DEFINE_string("profile", None, "Record a jax.profiler trace of the step-alone "
                                "dispatches into this folder (tools/trace_summary.py reads it).")
_JPEG = flags.DEFINE_integer("synthetic_jpeg", 0, "With --synthetic and an image-file data set "
                             "(ImageNet-size): this many distinct JPEG files (500x375) that the "
                             "images cycle through, decoded by the real pipeline (0: arrays).")


def synthetic_splits(config, num_train: int | None = None, num_test: int = 10_000,
                     size: int | None = None) -> DataSplits:
  """Random uint8 images; training labels follow the config's long-tailed class counts
  (``num_train`` images in all, at least one per class; None: as many as those counts sum
  to). The largest class is ``config.dataset.max_per_class``, else the data set's own
  (``DATASETS``; 500 for the image-file data sets)."""
  info = DATASETS[config.dataset.name]
  num_classes = info.num_classes
  largest = config.dataset.max_per_class or info.train_per_class or 500
  counts = np.asarray(long_tail.imbalanced_counts(
      num_classes, largest, config.dataset.imbalance_factor), np.int64)
  rng = np.random.default_rng(0)
  size = size or config.dataset.image_size
  if num_train is None:
    labels = np.repeat(np.arange(num_classes), counts)
  else:  # every class at least once (a long-tailed loss needs each), then by the counts
    num_train = max(num_train, num_classes)
    labels = np.concatenate([np.arange(num_classes), rng.choice(
        num_classes, num_train - num_classes, p=counts / counts.sum())])
  test_labels = np.arange(num_test) % num_classes
  make = lambda y: ArrayData(rng.integers(0, 256, (len(y), size, size, 3), dtype=np.uint8), y)
  return DataSplits(make(labels), make(test_labels),
                             np.bincount(labels, minlength=num_classes), num_classes)


def synthetic_jpeg_splits(config, folder: str, num_files: int, num_train: int,
                          num_test: int) -> DataSplits:
  """Image files for an ImageNet-size config: ``num_files`` smooth random 500x375 JPEGs
  (quality 90, about an ImageNet photo's decode cost) in ``folder``, cycled through by
  ``num_train`` training images with the config's class counts and ``num_test`` test ones."""
  from PIL import Image
  rng = np.random.default_rng(0)
  paths = []
  for k in range(num_files):
    coarse = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)  # low-frequency content
    image = Image.fromarray(coarse).resize((500, 375), Image.BILINEAR)
    paths.append(str(storage_path(folder) / f"img_{k}.jpg"))
    image.save(paths[-1], quality=90)
  splits = synthetic_splits(config, num_train, num_test, size=1)
  files = lambda n: FileImages([paths[i % num_files] for i in range(n)])
  return splits._replace(train=ArrayData(files(len(splits.train.labels)), splits.train.labels),
                         test=ArrayData(files(len(splits.test.labels)), splits.test.labels))


def peak_memory_bytes() -> int | None:
  """The device's peak memory in use so far (None where the backend does not say: CPU)."""
  stats = jax.devices()[0].memory_stats() or {}
  return stats.get("peak_bytes_in_use")


def _rate(n_images, seconds):
  return round(n_images / seconds, 2) if seconds > 0 else None


def parts(config, steps: int, warmup: int, splits=None, profile_dir: str | None = None) -> dict:
  """Steady-state rates of the batch source, the loop, the step alone and evaluation
  (``profile_dir``: a ``jax.profiler`` trace of the step-alone dispatches is written there)."""
  run = run_lib.setup(config, splits=splits)
  config, state, fns = run.config, run.state, run.steps
  k = run.placement.steps_per_dispatch
  n = (steps + warmup) * k
  r = run.replicas.size if run.replicas else 1  # a replica run trains R batches a step
  per_dispatch = k * config.batch_size * r
  step_fn = fns.train_chunk if k > 1 else fns.train

  source = iter(feed.train_batches(run, 0, n))
  next(source)
  t0 = time.perf_counter()
  for _ in range(min(steps * k, n - 1)):
    next(source)
  source_rate = _rate(min(steps * k, n - 1) * config.batch_size * r, time.perf_counter() - t0)

  items = feed.dispatches(run, 0, n)
  t0 = time.perf_counter()
  _, batch = next(items)
  state, metrics = step_fn(state, batch)
  jax.block_until_ready(metrics)
  compile_s = time.perf_counter() - t0
  for _ in range(warmup - 1):
    state, metrics = step_fn(state, next(items)[1])
  jax.block_until_ready(metrics)
  t0 = time.perf_counter()
  for _ in range(steps):
    state, new_metrics = step_fn(state, next(items)[1])
    jax.device_get(metrics)
    metrics = new_metrics
  jax.block_until_ready(metrics)
  loop_rate = _rate(steps * per_dispatch, time.perf_counter() - t0)

  with _maybe_trace(profile_dir):
    t0 = time.perf_counter()
    for _ in range(steps):
      state, metrics = step_fn(state, batch)
    jax.block_until_ready(metrics)
    step_rate = _rate(steps * per_dispatch, time.perf_counter() - t0)

  evaluate = lambda: evaluation.run_evaluation(fns, state, run.splits.test,
                                               run.splits.class_counts, config, run.mesh)
  evaluate()  # compiles
  t0 = time.perf_counter()
  evaluate()
  eval_rate = _rate(len(run.splits.test.labels), time.perf_counter() - t0)
  return {"train_images_per_s": loop_rate, "source_images_per_s": source_rate,
          "train_step_only_images_per_s": step_rate, "eval_images_per_s": eval_rate,
          "compile_s": round(compile_s, 2), **_context(config)}


def _maybe_trace(profile_dir):
  """A ``jax.profiler`` trace (with its Perfetto JSON) into ``profile_dir``, or nothing."""
  if not profile_dir:
    return contextlib.nullcontext()
  return jax.profiler.trace(profile_dir, create_perfetto_trace=True)


def epochs(config, num_epochs: int, splits=None, workdir: str | None = None) -> dict:
  """Wall time of ``train_and_evaluate`` for ``num_epochs`` epochs in a fresh workdir: a
  temporary local folder, or a new folder under ``workdir`` (a bucket: checkpoints upload
  while training goes on), with the median steady-state step time."""
  config = config.copy_and_resolve_references()
  config.num_epochs = num_epochs
  with contextlib.ExitStack() as stack:
    if workdir is None:
      workdir = stack.enter_context(tempfile.TemporaryDirectory())
    else:
      workdir = f"{str(workdir).rstrip('/')}/benchmark-{time.strftime('%Y%m%d-%H%M%S')}"
    t0 = time.perf_counter()
    result = loop.train_and_evaluate(config, workdir, splits=splits)
    wall = time.perf_counter() - t0
  num_train = sum(result["class_counts"])
  r = len(result.get("replicas", [])) or 1
  return {"epochs": num_epochs, "wall_s": round(wall, 2),
          "end_to_end_images_per_s": _rate(num_epochs * num_train * r, wall),
          "steady_train_images_per_s": round(result["train_images_per_s"] or 0, 2),
          "median_step_s": round(result["median_step_s"] or 0, 5), "workdir": workdir,
          "wall_parts_s": result["wall_time_parts_s"], "final_top1": result["final"]["top1"],
          "num_train": num_train,
          "evaluations": len(result["history"]), **_context(result["config"])}


def _context(config) -> dict:
  get = lambda *keys: _dig(config, keys)  # a ConfigDict or its JSON form
  return {"device": f"{jax.devices()[0].device_kind} x{jax.device_count()}",
          "backend": jax.default_backend(), "jax": jax.__version__,
          "batch_size": get("batch_size"), "dtype": get("dtype"),
          "data_on_device": get("dataset", "on_device"),
          "augment_on_device": get("augment", "on_device"),
          "steps_per_dispatch": get("steps_per_dispatch"),
          "conv_impl": resolve_conv_impl(get("model", "conv_impl")),
          "replicas": len(get("replicas", "seeds")) or 1,
          "augment": {k: get("augment", k)  # the recipe and the fields it reads
                      for k in ("recipe",) + recipes.RECIPES[get("augment", "recipe")].fields},
          "num_workers": get("num_workers")}


def _dig(config, keys):
  for key in keys:
    config = config[key]
  return config


def main(argv):
  """The command line: measure the configured run's parts and/or epochs, print one JSON line."""
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if _CONFIG.value is None:
    raise app.UsageError("--config=configs/NAME.py is required")
  config = _CONFIG.value
  out = {"synthetic": _SYNTHETIC.value}
  with tempfile.TemporaryDirectory() as folder:
    make = lambda: None
    files = not SOURCES[config.dataset.source].in_memory  # ImageNet-size: enough images for the steps
    num_train = ((_STEPS.value + _WARMUP.value + 1) * config.batch_size
                 * max(config.steps_per_dispatch, 8) if files else None)
    if _SYNTHETIC.value and _JPEG.value:
      out["synthetic_jpeg_files"] = _JPEG.value
      make = lambda: synthetic_jpeg_splits(config, folder, _JPEG.value, num_train,
                                           _SYNTHETIC_TEST.value)
    elif _SYNTHETIC.value:
      make = lambda: synthetic_splits(config, num_train, num_test=_SYNTHETIC_TEST.value)
    if _STEPS.value > 0:
      out["parts"] = parts(config, _STEPS.value, max(_WARMUP.value, 1), make(), _PROFILE.value)
    if _EPOCHS.value > 0:
      out["run"] = epochs(config, _EPOCHS.value, make())
      if _WORKDIR.value:
        out["run_in_workdir"] = epochs(config, _EPOCHS.value, make(), _WORKDIR.value)
  out["peak_device_memory_bytes"] = peak_memory_bytes()
  print(json.dumps(out), flush=True)


if __name__ == "__main__":
  app.run(main)
