"""What the training step is fed: every step's batch, grouped into device calls.

``run`` is a ``train.run.Run`` (this module is below it: ``run.setup`` starts the
compilation of the first dispatch here).

``dispatches`` is the training loop's only source of data; ``compile_in_background``
compiles the step for its first dispatch while the run is still being set up.
"""

from __future__ import annotations

import itertools
import threading

from lgla_jax.data import on_device, pipeline
from lgla_jax.train import replicas, sharding
from lgla_jax.train import steps as steps_lib


def train_batches(run, start_step: int, total_steps: int, num_workers: int | None = None):
  """Every step's batch from ``start_step`` on: indices into the device-resident data, or
  uint8 images from the host pipeline (augmented there unless the step augments). A
  replica run stacks every replica's own batch (its seed's order) on a leading axis.
  ``num_workers``: the host pipeline's worker processes (default ``config.num_workers``)."""
  if run.replicas:
    return replicas.stacked([_seed_batches(run, s, start_step, total_steps, num_workers)
                             for s in run.replicas.seeds])
  return _seed_batches(run, run.config.seed, start_step, total_steps, num_workers)


def _seed_batches(run, seed: int, start_step: int, total_steps: int, num_workers=None):
  config, train_data = run.config, run.splits.train
  if run.placement.data_on_device:
    return on_device.train_index_batches(
        len(train_data.labels), seed=seed, global_batch=config.batch_size,
        steps_per_epoch=run.steps_per_epoch, start_step=start_step, total_steps=total_steps)
  it = pipeline.train_iterator(
      train_data.images, train_data.labels, seed=seed, global_batch=config.batch_size,
      num_epochs=config.num_epochs, start_step=start_step,
      augment_config=config.augment, augment_on_device=run.placement.augment_on_device,
      num_workers=config.num_workers if num_workers is None else num_workers,
      image_size=config.dataset.image_size, drop_last=config.drop_last_batch)
  return itertools.islice(it, total_steps - start_step)


def dispatches(run, start_step: int, total_steps: int, num_workers: int | None = None):
  """``(num_steps, device_batch)`` per device call, prefetched: one step per call, or a
  chunk of ``placement.steps_per_dispatch`` steps (``Steps.train_chunk``)."""
  batches = train_batches(run, start_step, total_steps, num_workers)
  k = run.placement.steps_per_dispatch
  if k == 1:
    data = sharding.train_batch_sharding(run.mesh)
    return pipeline.prefetch(((1, b) for b in batches),
                                   lambda b: pipeline.to_global(b, data))
  steps = sharding.train_batch_sharding(run.mesh, chunked=True)
  return pipeline.prefetch(
      pipeline.chunks(batches, k, run.steps_per_epoch, start_step),
      lambda c: pipeline.chunk_to_global(c, run.mesh, steps))


def compile_in_background(run) -> threading.Thread:
  """Compile the training step for ``run``'s dispatches while the state is initialised,
  restored and placed (``steps.compile_in_thread``). ``run.state`` may be abstract
  (``jax.eval_shape`` of ``state.initializer``): only its shapes and shardings are read.
  The first dispatch of step 0 (the same shapes as every dispatch) is built in the
  thread, without worker processes."""

  def compile_train():
    first = dispatches(run, 0, min(run.placement.steps_per_dispatch, run.steps_per_epoch),
                       num_workers=0)
    _, batch = next(iter(first))
    run.steps.lower_train(run.state, batch).compile()

  return steps_lib.compile_in_thread("compile-train", compile_train)
