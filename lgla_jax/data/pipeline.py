"""grain input pipelines: uint8 batches on the host, global jax arrays on the device.

Training: global batch ``k`` of epoch ``e`` is ``perm_e[k*B:(k+1)*B]`` with ``perm_e`` a
permutation seeded by (seed, epoch); every process gathers only its contiguous share of
each global batch, so the global batch does not depend on the number of processes, and
the position in the data is a pure function of the global step (which is how a resumed
run continues at the exact batch). The incomplete last batch of an epoch is kept, as
PyTorch's DataLoader does (``drop_last=True`` drops it): it is padded to the full batch
and carries a ``mask`` of its valid images. Augmentation runs per batch in grain
(optionally in worker processes) with a per-batch seed.

Evaluation: every test image exactly once; the last batch is padded and masked.
"""

from __future__ import annotations

import dataclasses

import grain
import jax
import numpy as np
from jax.sharding import NamedSharding

from lgla_jax.augment import imagenet_host, recipes


def epoch_permutation(seed: int, epoch: int, n: int) -> np.ndarray:
  """The training order of ``epoch``: a function of (seed, epoch, n) only, the same on every process."""
  return np.random.default_rng([seed, epoch, 0x5EED]).permutation(n)


@dataclasses.dataclass
class GatherTrainBatch(grain.transforms.Map):
  """Global step -> this process's share of that step's global batch (uint8 images)."""

  images: np.ndarray
  labels: np.ndarray
  seed: int
  global_batch: int
  steps_per_epoch: int
  process_index: int = 0
  process_count: int = 1

  def __post_init__(self):
    self._epoch, self._perm = -1, None

  def map(self, step):
    """Step -> ``image``, ``label``, ``mask`` (False on the padding of the last batch) and ``step``."""
    epoch, k = divmod(int(step), self.steps_per_epoch)
    if epoch != self._epoch:
      self._epoch, self._perm = epoch, epoch_permutation(self.seed, epoch, len(self.labels))
    idx, valid = batch_indices(self._perm, k, self.global_batch, self.process_index,
                               self.process_count)
    return {"image": self.images[idx], "label": self.labels[idx], "mask": valid,
            "step": np.int64(step)}


def batch_indices(perm: np.ndarray, k: int, global_batch: int, process_index: int = 0,
                  process_count: int = 1):
  """This process's share of global batch ``k`` of an epoch: (indices, valid mask).

  Every batch carries its mask, so full batches and the epoch's incomplete last batch
  (padded with a repeat of the epoch's first image, mask False) run the same compiled step."""
  local = global_batch // process_count
  start = k * global_batch + process_index * local
  positions = np.arange(start, start + local)
  valid = positions < len(perm)
  return perm[np.where(valid, positions, 0)], valid


@dataclasses.dataclass
class AugmentBatch(grain.transforms.Map):
  """The configured training augmentation (``augment.recipes``), seeded by (seed, step): a
  process augments its share exactly as a single process would augment those images of the
  global batch. ``params``: the recipe's ``config.augment`` fields; ``crop_only``: a file
  recipe stops after its crop (the step does the rest)."""

  seed: int
  recipe: str
  params: dict
  global_batch: int
  process_index: int = 0
  image_size: int = 224
  crop_only: bool = False

  def map(self, batch):
    """Augment a gathered batch; random numbers keyed by (seed, step, global position)."""
    rng = np.random.default_rng([self.seed, int(batch["step"]), 0xA06])
    local = len(batch["label"])
    positions = self.process_index * local + np.arange(local)
    images = recipes.RECIPES[self.recipe].host(
        batch["image"], rng, self.params, positions=positions, total=self.global_batch,
        image_size=self.image_size, crop_only=self.crop_only)
    return {"image": images, "label": batch["label"], "mask": batch["mask"]}


@dataclasses.dataclass
class DecodeBatch(grain.transforms.Map):
  """Image files decoded without augmentation (the evaluation transform: resize + centre crop)."""

  image_size: int = 224

  def map(self, batch):
    """Decode a gathered batch of image paths."""
    return dict(batch, image=decode_for_eval(batch["image"], self.image_size))


def decode_for_eval(paths, image_size: int) -> np.ndarray:
  """The evaluation transform of image files: shorter side to 256/224 of the input size,
  then the centre crop (the official loaders' Resize(256) + CenterCrop(224))."""
  resize = int(round(image_size * 256 / 224))
  return np.stack([imagenet_host.eval_image(imagenet_host.open_image(p), image_size, resize)
                   for p in paths])


def steps_per_epoch(num_examples: int, global_batch: int, drop_last: bool = False) -> int:
  """Steps per epoch: ``ceil(n / B)`` (PyTorch's default), ``floor`` with ``drop_last``."""
  if global_batch > num_examples:
    raise ValueError(f"config.batch_size={global_batch} is larger than the training set "
                     f"({num_examples} images)")
  return num_examples // global_batch if drop_last else -(-num_examples // global_batch)


def train_iterator(images, labels, *, seed: int, global_batch: int, num_epochs: int,
                   start_step: int = 0, augment_config=None, augment_on_device: bool = False,
                   num_workers: int = 0, image_size: int = 224, drop_last: bool = False):
  """An iterator of this process's training batches from global step ``start_step`` on.

  ``augment_config`` (``config.augment``; None: no augmentation); ``augment_on_device``
  leaves an in-memory recipe to the step entirely and a file recipe after its crop."""
  pc, pi = jax.process_count(), jax.process_index()
  if global_batch % pc:
    raise ValueError(f"config.batch_size={global_batch} is not divisible by {pc} processes")
  spe = steps_per_epoch(len(labels), global_batch, drop_last)
  total = spe * num_epochs
  ds = grain.MapDataset.range(start_step, total).map(
      GatherTrainBatch(images, labels, seed, global_batch, spe, pi, pc))
  a = augment_config
  if a is not None and augment_on_device and not recipes.RECIPES[a.recipe].on_files:
    a = None  # the step augments the raw uint8 batch
  if a is not None:
    ds = ds.map(AugmentBatch(seed, a.recipe, recipes.params(a), global_batch, pi, image_size,
                             crop_only=augment_on_device))
  elif not isinstance(images, np.ndarray):
    ds = ds.map(DecodeBatch(image_size))
  it = ds.to_iter_dataset(grain.ReadOptions(num_threads=0, prefetch_buffer_size=0))
  if num_workers > 0:
    it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers))
  return iter(it)


@dataclasses.dataclass
class GatherEvalBatch(grain.transforms.Map):
  """Eval batch index -> this process's share, padded to full size, with a validity mask
  (``files``: the images are decoded and given the evaluation transform)."""

  images: np.ndarray
  labels: np.ndarray
  global_batch: int
  process_index: int = 0
  process_count: int = 1
  image_size: int = 224
  files: bool = False

  def map(self, k):
    """Evaluation batch ``k`` in file order, the padding past the end masked."""
    local = self.global_batch // self.process_count
    start = int(k) * self.global_batch + self.process_index * local
    idx = np.arange(start, start + local)
    valid = idx < len(self.labels)
    idx = np.where(valid, idx, 0)
    images = self.images[idx]
    if self.files:  # resize + centre crop
      images = decode_for_eval(images, self.image_size)
    return {"image": images, "label": self.labels[idx], "mask": valid}


def eval_iterator(images, labels, *, global_batch: int, image_size: int = 224,
                  files: bool = False, num_workers: int = 0):
  """This process's evaluation batches in order. ``files``: the images are decoded (an
  image-file recipe's evaluation transform), in ``num_workers`` processes."""
  pc, pi = jax.process_count(), jax.process_index()
  if global_batch % pc:
    raise ValueError(f"config.eval_batch_size={global_batch} is not divisible by {pc} processes")
  num_batches = -(-len(labels) // global_batch)
  ds = grain.MapDataset.range(num_batches).map(
      GatherEvalBatch(images, labels, global_batch, pi, pc, image_size, files))
  it = ds.to_iter_dataset(grain.ReadOptions(num_threads=0, prefetch_buffer_size=0))
  if num_workers > 0 and files:
    it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers))
  return iter(it)


def to_global(batch: dict, sharding: NamedSharding) -> dict:
  """The one host -> device point: this process's share -> global arrays sharded on 'data'."""
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
          for k, v in batch.items() if k != "step"}


def chunk_to_global(chunk: dict, mesh, steps: NamedSharding | None = None) -> dict:
  """A chunk of K steps (``chunks``): leading step axis whole, batch axis on 'data' (or
  as ``steps`` says: a replica run's chunks are [K, R, B])."""
  steps = steps or NamedSharding(mesh, jax.sharding.PartitionSpec(None, "data"))
  out = {k: jax.make_array_from_process_local_data(steps, np.asarray(v))
         for k, v in chunk.items() if k not in ("step", "active")}
  out["active"] = jax.device_put(chunk["active"], NamedSharding(mesh, jax.sharding.PartitionSpec()))
  return out


def chunks(batches, size: int, steps_per_epoch: int, start_step: int):
  """Group consecutive step batches into chunks of ``size`` steps that never cross an
  epoch's end (checkpoints and evaluations happen there). An epoch's last chunk is filled
  up with copies marked ``active=False``, so every chunk has the same shape and the
  multi-step function compiles once. Yields ``(num_steps, chunk)``."""
  step, group = start_step, []
  for batch in batches:
    group.append(batch)
    step += 1
    if len(group) == size or step % steps_per_epoch == 0:
      n = len(group)
      group += [group[-1]] * (size - n)
      chunk = {k: np.stack([np.asarray(b[k]) for b in group]) for k in group[0] if k != "step"}
      chunk["active"] = np.arange(size) < n
      yield n, chunk
      group = []
  assert not group, "the batches ended inside an epoch"


def prefetch(iterator, put, size: int = 2):
  """Keep ``size`` items already transferred with ``put`` (transfers are asynchronous).
  Items may be ``(extra, batch)`` pairs, of which only the batch is transferred."""
  queue = []
  for item in iterator:
    queue.append((item[0], put(item[1])) if isinstance(item, tuple) else put(item))
    if len(queue) > size - 1:
      yield queue.pop(0)
  yield from queue


def prefetch_to_device(iterator, sharding: NamedSharding, size: int = 2):
  """``prefetch`` of single-step batches onto the 'data' axis."""
  return prefetch(iterator, lambda b: to_global(b, sharding), size)
