"""Data sets that fit on the devices: stored there once, batches gathered by index in the step.

Only indices and masks travel per step. The order is the host pipeline's
(``pipeline``): global batch k of epoch e holds ``perm_e[k*B:(k+1)*B]``, the epoch's
incomplete last batch is padded and masked, and each process sends its contiguous share
of the indices, so the batches do not depend on the number of devices or processes.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from lgla_jax.data import pipeline
from lgla_jax.data.splits import DataSplits

# Data sets up to this size (uint8 images of the training and test sets together) are
# kept on the devices when ``config.dataset.on_device`` is None (auto). CIFAR is 180 MB.
AUTO_LIMIT_BYTES = 1 << 30


def nbytes(splits: DataSplits) -> int | None:
  """Bytes of the in-memory images, or None when the images are files (not storable)."""
  if not all(isinstance(d.images, np.ndarray) for d in (splits.train, splits.test)):
    return None
  return splits.train.images.nbytes + splits.test.images.nbytes


def put(splits: DataSplits, mesh) -> dict:
  """Training and test images and labels, replicated on every device of the mesh."""
  rep = NamedSharding(mesh, P())
  arrays = {"train_images": splits.train.images, "train_labels": splits.train.labels,
            "test_images": splits.test.images, "test_labels": splits.test.labels}
  out = {}
  for name, value in arrays.items():
    value = np.asarray(value, np.int32 if name.endswith("labels") else value.dtype)
    out[name] = jax.make_array_from_callback(value.shape, rep, lambda index, v=value: v[index])
  return out


def train_index_batches(num_examples: int, *, seed: int, global_batch: int,
                        steps_per_epoch: int, start_step: int, total_steps: int):
  """This process's share of every step's indices and mask, from ``start_step`` on."""
  pc, pi = jax.process_count(), jax.process_index()
  epoch, perm = -1, None
  for step in range(start_step, total_steps):
    e, k = divmod(step, steps_per_epoch)
    if e != epoch:
      epoch, perm = e, pipeline.epoch_permutation(seed, e, num_examples)
    idx, valid = pipeline.batch_indices(perm, k, global_batch, pi, pc)
    yield {"index": idx.astype(np.int32), "mask": valid}


def eval_index_batches(num_examples: int, global_batch: int):
  """This process's share of each evaluation batch: every test image once, padded, masked."""
  pc, pi = jax.process_count(), jax.process_index()
  order = np.arange(num_examples)
  for k in range(-(-num_examples // global_batch)):
    idx, valid = pipeline.batch_indices(order, k, global_batch, pi, pc)
    yield {"index": idx.astype(np.int32), "mask": valid}
