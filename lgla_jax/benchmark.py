"""Throughput: ``python -m lgla_jax.benchmark --config=configs/cifar100_ir100.py --steps=30 [--synthetic]``.

Prints one JSON object: steady-state training images/s end to end (input pipeline with the
config's augmentation included) and of the jitted step alone, input-pipeline images/s
alone, evaluation images/s, and the compile time, with the context (device, batch, dtype).
``--synthetic`` uses random uint8 images of the config's size with long-tailed labels, so
no data set is needed.
"""

from __future__ import annotations

import json
import time

import jax
import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags

from lgla_jax import datasets, input_pipeline, long_tail, sharding, train

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=False)
_STEPS = flags.DEFINE_integer("steps", 30, "Timed steps (after warm-up).")
_WARMUP = flags.DEFINE_integer("warmup", 3, "Untimed steps first (the first one compiles).")
_SYNTHETIC = flags.DEFINE_bool("synthetic", False, "Random CIFAR-shaped data instead of the data set.")


def synthetic_splits(config, num_train: int, num_test: int) -> datasets.DataSplits:
  """Random uint8 images with labels drawn from the config's long-tailed class counts."""
  num_classes = datasets.DATASETS[config.dataset.name].num_classes
  counts = np.asarray(long_tail.imbalanced_counts(
      num_classes, config.dataset.max_per_class or 500, min(config.dataset.imbalance_factor, 0.01)),
      np.int64)
  rng = np.random.default_rng(0)
  size = config.dataset.image_size
  make = lambda n, p: datasets.ArrayData(
      rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8),
      rng.choice(num_classes, n, p=p).astype(np.int64))
  return datasets.DataSplits(make(num_train, counts / counts.sum()), make(num_test, None),
                             counts, num_classes)


def run(config, steps: int, warmup: int, synthetic: bool) -> dict:
  batch = config.batch_size
  splits = (synthetic_splits(config, batch * (steps + warmup), 4 * config.eval_batch_size)
            if synthetic else None)
  setup = train.setup(config, splits=splits)
  mesh, splits, state, step_fns = setup.mesh, setup.splits, setup.state, setup.steps
  data = sharding.batch_sharding(mesh)
  n = steps + warmup
  make_iter = lambda: input_pipeline.train_iterator(
      splits.train.images, splits.train.labels, seed=config.seed, global_batch=batch,
      num_epochs=-(-n * batch // len(splits.train.labels)), augment_config=config.augment,
      num_workers=config.num_workers, image_size=config.dataset.image_size,
      fill=tuple(round(255 * m) for m in config.dataset.mean),
      drop_last=True)  # steady state: full batches only (a padded one compiles a second step)

  # Input pipeline alone (host side: gather + augmentation).
  it = make_iter()
  next(it)
  t0 = time.perf_counter()
  for _ in range(steps):
    next(it)
  pipeline_rate = steps * batch / (time.perf_counter() - t0)

  # Training end to end: pipeline, transfer and step; metrics fetched one step late.
  batches = input_pipeline.prefetch_to_device(make_iter(), data)
  t0 = time.perf_counter()
  state, metrics = step_fns.train(state, next(batches))
  jax.block_until_ready(metrics)
  compile_s = time.perf_counter() - t0
  for _ in range(warmup - 1):
    state, metrics = step_fns.train(state, next(batches))
  jax.block_until_ready(metrics)
  t0 = time.perf_counter()
  for _ in range(steps):
    state, new_metrics = step_fns.train(state, next(batches))
    jax.device_get(metrics)
    metrics = new_metrics
  jax.block_until_ready(metrics)
  train_rate = steps * batch / (time.perf_counter() - t0)

  # The jitted step alone, on one batch already on the device.
  fixed = input_pipeline.to_global(next(make_iter()), data)
  t0 = time.perf_counter()
  for _ in range(steps):
    state, metrics = step_fns.train(state, fixed)
  jax.block_until_ready(metrics)
  step_rate = steps * batch / (time.perf_counter() - t0)

  # Evaluation over the test set (first pass compiles).
  train.run_evaluation(step_fns, state, splits.test, splits.class_counts, config, mesh)
  t0 = time.perf_counter()
  train.run_evaluation(step_fns, state, splits.test, splits.class_counts, config, mesh)
  eval_rate = len(splits.test.labels) / (time.perf_counter() - t0)
  return {
      "train_images_per_s": round(train_rate, 2),
      "pipeline_images_per_s": round(pipeline_rate, 2),
      "eval_images_per_s": round(eval_rate, 2),
      "train_step_only_images_per_s": round(step_rate, 2),
      "compile_s": round(compile_s, 2),
      "device": f"{jax.devices()[0].device_kind} x{jax.device_count()}",
      "backend": jax.default_backend(), "jax": jax.__version__,
      "batch_size": batch, "dtype": config.dtype, "model_depth": config.model.depth,
      "num_experts": config.model.num_experts, "conv_impl": config.model.conv_impl,
      "xla_cpu_fast_elementwise": config.xla_cpu_fast_elementwise,
      "augment": {k: config.augment[k] for k in config.augment}, "num_workers": config.num_workers,
      "synthetic": synthetic, "steps": steps,
  }


def main(argv):
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if _CONFIG.value is None:
    raise app.UsageError("--config=configs/NAME.py is required")
  print(json.dumps(run(_CONFIG.value, _STEPS.value, max(_WARMUP.value, 1), _SYNTHETIC.value)), flush=True)


if __name__ == "__main__":
  app.run(main)
