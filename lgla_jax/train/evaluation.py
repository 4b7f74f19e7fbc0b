"""Evaluating a split with a run's jitted eval step (every image once; the padded last
batch masked), and compiling that step ahead of time while training runs."""

from __future__ import annotations

import threading

import jax
import jax.numpy as jnp

from lgla_jax import long_tail
from lgla_jax.augment import recipes
from lgla_jax.data import on_device, pipeline
from lgla_jax.data.splits import ArrayData
from lgla_jax.report import metrics as metrics_lib
from lgla_jax.train import sharding
from lgla_jax.train.steps import Steps, compile_in_thread

# One compiled program sums the per-batch counts (a jitted tree sum compiles once; an
# eager add compiles one program per leaf shape).
_add_counts = jax.jit(lambda a, b: jax.tree.map(jnp.add, a, b))


def batches(steps: Steps, split: ArrayData, config, num_workers: int | None = None):
  """This process's evaluation batches of ``split``: indices into the device-resident
  data, or uint8 images (image files decoded in ``num_workers`` processes; default the
  config's)."""
  if steps.data_on_device:
    return on_device.eval_index_batches(len(split.labels), config.eval_batch_size)
  return pipeline.eval_iterator(
      split.images, split.labels, global_batch=config.eval_batch_size,
      image_size=config.dataset.image_size, files=recipes.RECIPES[config.augment.recipe].on_files,
      num_workers=config.num_workers if num_workers is None else num_workers)


def evaluate_replicas(steps: Steps, state, split: ArrayData, class_counts, config,
                      mesh) -> list[dict]:
  """Evaluate on every image of ``split`` exactly once; one accuracy report per replica
  (one for a single run). With the data on the devices only indices travel."""
  totals = None
  for batch in pipeline.prefetch_to_device(batches(steps, split, config),
                                                 sharding.batch_sharding(mesh)):
    counts = steps.eval(state, batch)
    totals = counts if totals is None else _add_counts(totals, counts)
  totals = jax.device_get(totals)
  shots = shot_thresholds(config)
  if not sharding.has_replicas(mesh):
    return [metrics_lib.report_from_counts(totals, class_counts, *shots)]
  return [metrics_lib.report_from_counts(jax.tree.map(lambda x, k=k: x[k], totals), class_counts,
                                         *shots)
          for k in range(len(totals["confusion"]))]


def shot_thresholds(config) -> tuple[int, int]:
  """``(many_shot_min, few_shot_max)`` of ``config.eval`` (the official 100 / 20 for a
  config saved before the section existed)."""
  e = config.get("eval") or {}
  return (int(e.get("many_shot_min", long_tail.MANY_SHOT_MIN)),
          int(e.get("few_shot_max", long_tail.FEW_SHOT_MAX)))


def run_evaluation(steps: Steps, state, split: ArrayData, class_counts, config,
                   mesh) -> dict:
  """The accuracy report of ``split`` (of the first replica in a replica run:
  ``evaluate_replicas`` gives all)."""
  return evaluate_replicas(steps, state, split, class_counts, config, mesh)[0]


def compile_in_background(steps: Steps, state, split: ArrayData, config,
                          mesh) -> threading.Thread:
  """Compile the eval step for ``split``'s batches (and the sum of their counts) while the
  training loop goes on (``steps.compile_in_thread``), so that the first evaluation does
  not wait for the compiler. ``state`` may be abstract (``jax.eval_shape`` of
  ``state.initializer``): only its shapes and shardings are read, so call it before the
  first training step donates the buffers."""
  spec = lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
  state_spec = jax.tree.map(spec, state)
  replicated = sharding.replicated(mesh)

  def compile_eval():
    first = next(iter(batches(steps, split, config, num_workers=0)))
    batch = pipeline.to_global(first, sharding.batch_sharding(mesh))
    lowered = steps.lower_eval(state_spec, batch)
    lowered.compile()
    counts = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=replicated),
                          lowered.out_info)
    _add_counts.lower(counts, counts).compile()

  return compile_in_thread("compile-eval", compile_eval)
