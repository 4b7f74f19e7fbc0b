"""Class probabilities for new images from a trained run (or an official weights file): the
run's evaluation transform, the model's ensemble (the mean of the expert logits) and each
expert, batched on the device with a padded last batch (one compiled program)."""

from __future__ import annotations

import io

import jax
import jax.numpy as jnp
import numpy as np
from ml_collections import ConfigDict
from PIL import Image

from lgla_jax import errors, models
from lgla_jax.augment import imagenet_host, recipes
from lgla_jax.config import from_data, replicas as replicas_config
from lgla_jax.config.validate import validate
from lgla_jax.data.catalog import DATASETS
from lgla_jax.interop import convert, torch_file
from lgla_jax.report import data_summary
from lgla_jax.storage.paths import path
from lgla_jax.train import checkpoint, evaluate_checkpoint, run as run_lib, state as state_lib
from lgla_jax.train.steps import normalize

# The image files a folder is searched for (those PIL reads; case-insensitive), as the
# image-folder source reads them; names starting with "." are skipped.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def find_images(inputs) -> list[str]:
  """The image files of ``inputs`` (files, and folders searched recursively, sorted); a
  missing input, or no image at all, is a ``UsageError``."""
  found = []
  for given in inputs:
    p = path(given)
    if p.is_dir():
      files = []
      for folder, subfolders, names in p.walk():  # (epath refuses rglob: a bucket's many requests)
        subfolders[:] = [s for s in subfolders if not s.startswith(".")]
        files += [str(path(folder) / n) for n in names
                  if not n.startswith(".") and path(n).suffix.lower() in IMAGE_SUFFIXES]
      found += sorted(files)
    elif p.exists():
      found.append(str(p))
    else:
      raise errors.UsageError(f"{given}: no such image file or folder")
  if not found:
    raise errors.UsageError(f"no images ({'/'.join(s[1:] for s in IMAGE_SUFFIXES)}) in "
                            f"{', '.join(map(str, inputs))}")
  return found


def read_image(file) -> np.ndarray:
  """An image file as RGB uint8 ``[H, W, 3]`` (grayscale, palette, RGBA, CMYK and 16-bit
  images converted); an unreadable one is a ``DataError`` naming it."""
  try:
    with Image.open(io.BytesIO(path(file).read_bytes())) as img:
      img.load()
      if img.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16-bit grey: scaled, not clipped
        grey = np.asarray(img, np.float64)
        img = Image.fromarray(np.uint8(np.clip(grey / 257.0, 0, 255)))
      return np.asarray(img.convert("RGB"), np.uint8)
  except (OSError, ValueError, Image.DecompressionBombError) as e:
    raise errors.DataError(f"cannot read image {file}: {e}") from None


def restore_variables(ckpt_path: str, replica: int = 0, num_classes: int | None = None):
  """``(variables, meta, config)`` of the checkpoint at ``ckpt_path`` (replica ``replica``
  of a replica run), without reading any data: the state a run of the saved config starts
  from (``run.initial_state``) is restored into. ``num_classes``: default the data set's."""
  ckpt, directory, step = checkpoint.open_step(ckpt_path)
  try:
    meta = ckpt.read_meta(step)
    if "config" not in meta:
      raise errors.CheckpointError(f"checkpoint {directory}/{step} has no saved config "
                                   f"(made by an older lgla-jax): evaluate it instead")
    config = ConfigDict(meta["config"])
    reps = replicas_config.of(config)
    size = reps.size if reps else 1
    if not 0 <= replica < size:
      raise errors.FlagError(f"--replica={replica}: the run has "
                             f"{f'replicas 0..{size - 1}' if reps else 'one replica (0)'}")
    config.batch_size, config.drop_last_batch = meta["batch_size"], meta["drop_last_batch"]
    if num_classes is None:
      num_classes = known_num_classes(config, run_folder(directory))
    state, _ = run_lib.initial_state(config, num_classes, meta["num_train_images"])
    state, meta = ckpt.restore(step, checkpoint.abstract(state))
  finally:
    ckpt.close()
  if reps:
    state = state_lib.replica(state, replica)
  return jax.device_get(state.variables()), meta, config


def run_folder(checkpoints_dir: str) -> str:
  """The workdir of a run's ``checkpoints/`` folder (where it keeps ``classes.txt``)."""
  return str(path(checkpoints_dir).parent)


def known_num_classes(config, workdir) -> int:
  """The number of classes of ``config``'s data: the names the run stored in ``workdir``,
  else the catalog's count for a data set known by name."""
  names = data_summary.read_class_names(workdir) if workdir else None
  if names is not None:
    return len(names)
  if config.dataset.name in DATASETS:
    return DATASETS[config.dataset.name].num_classes
  raise errors.CheckpointError(f"{workdir or 'beside the weights file'}: no {data_summary.CLASSES_FILE} "
                               f"(the class names, one a line, that a run stores) and data set "
                               f"{config.dataset.name!r} is not a known one: write that file there")


def official_variables(config, file: str, num_classes: int) -> dict:
  """The variables of an official ``.pth`` / exported ``.safetensors`` file for the network
  of ``config`` (every tensor checked, read within the network's sizes)."""
  limits = evaluate_checkpoint.model_limits(config, num_classes)
  state_dict = (torch_file.read_checkpoint(file, limits)["state_dict"] if file.endswith((".pth", ".pt"))
                else convert.read_state_dict(file, "the weights file", "", limits))
  state, _ = run_lib.initial_state(config, num_classes, config.batch_size)
  state = run_lib.load_weights(state, lambda p, s: convert.load_official_model(p, s, state_dict, file),
                               None)
  return jax.device_get(state.variables())


class Predictor:
  """Class probabilities of new images: ``Predictor(workdir)(images_uint8)``.

  ``checkpoint``: a workdir, its ``checkpoints/`` folder or one step folder (the saved
  config is used), or an official ``.pth`` / ``.safetensors`` file with ``config`` given.
  Calling it with uint8 images (``[N, H, W, 3]``, or a list of ``[H, W, 3]`` / ``[H, W]``
  arrays) returns ``probs`` ``[N, C]`` (softmax of the ensemble output), ``expert_probs``
  ``[E, N, C]`` and the ``top_k`` classes (``top_index``, ``top_names``, ``top_probs``).
  """

  def __init__(self, checkpoint_path: str, config=None, replica: int = 0, batch_size=None,
               names=None):
    file = str(checkpoint_path)
    if file.endswith(evaluate_checkpoint.OFFICIAL_SUFFIXES) and path(file).is_file():
      if config is None:
        raise errors.UsageError(f"{file}: a weights file holds no config; give the run's --config")
      config = evaluate_checkpoint.without_starting_weights(config)
      validate(config)
      config = from_data.resolve(config)  # (no saved config: fields left to the data measured)
      if names is None:
        names = data_summary.read_class_names(path(file).parent)
      num_classes = len(names) if names is not None else known_num_classes(config, None)
      variables = official_variables(config, file, num_classes)
    else:
      if not path(file).exists():
        raise errors.NotFound(f"{file}: no such checkpoint (give a run's workdir)")
      directory, _ = checkpoint.resolve(file)
      workdir = run_folder(directory)
      if names is None:
        names = data_summary.read_class_names(workdir)
      variables, _, config = restore_variables(file, replica, None if names is None else len(names))
      num_classes = len(names) if names is not None else known_num_classes(config, None)
    self.config, self.variables, self.num_classes = config, variables, num_classes
    self.names = tuple(names) if names is not None else tuple(str(c) for c in range(num_classes))
    self.image_size = int(config.dataset.image_size)
    self.on_files = recipes.RECIPES[config.augment.recipe].on_files
    self.batch_size = int(batch_size or config.eval_batch_size)
    dtype = jnp.bfloat16 if config.get("dtype") == "bfloat16" else jnp.float32
    model = models.build(config.model, self.num_classes, dtype)
    mean, std = tuple(config.dataset.mean), tuple(config.dataset.std)

    def forward(variables, images_u8):
      params = variables["params"]
      state = {k: v for k, v in variables.items() if k != "params"}
      out, _ = model.apply(params, state, normalize(images_u8, mean, std), train=False)
      return (jax.nn.softmax(out["output"].astype(jnp.float32), -1),
              jax.nn.softmax(out["logits"].astype(jnp.float32), -1))

    self._forward = jax.jit(forward)

  def transform(self, image) -> np.ndarray:
    """One image (uint8 ``[H, W, 3]`` or ``[H, W]``) given the run's evaluation transform:
    the resize and centre crop of an image-file recipe (ImageNet-size), else the image as it
    is (CIFAR-size data is evaluated untouched), resized only when its size is another."""
    img = np.asarray(image)
    if img.dtype != np.uint8:
      raise errors.UsageError(f"images must be uint8 (0..255), got {img.dtype}")
    if img.ndim == 2 or img.shape[-1] != 3:
      img = np.asarray(Image.fromarray(img.squeeze()).convert("RGB"))
    size = self.image_size
    if self.on_files:
      return imagenet_host.eval_image(Image.fromarray(img), size, int(round(size * 256 / 224)))
    if img.shape[:2] != (size, size):
      img = np.asarray(Image.fromarray(img).resize((size, size), Image.BILINEAR))
    return img

  def __call__(self, images, top_k: int = 5) -> dict:
    """Probabilities and the ``top_k`` classes of ``images`` (see the class)."""
    if top_k < 1:
      raise errors.UsageError(f"top_k={top_k}: give at least 1")
    batch = np.stack([self.transform(im) for im in images])
    probs, experts = [], []
    for start in range(0, len(batch), self.batch_size):
      chunk = batch[start:start + self.batch_size]
      padded = np.zeros((self.batch_size, *chunk.shape[1:]), np.uint8)  # one program for every batch
      padded[:len(chunk)] = chunk
      p, e = jax.device_get(self._forward(self.variables, padded))
      probs.append(p[:len(chunk)])
      experts.append(e[:, :len(chunk)])
    probs = np.concatenate(probs)
    k = min(top_k, self.num_classes)
    top = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return {"probs": probs, "expert_probs": np.concatenate(experts, axis=1),
            "top_index": top, "top_names": [[self.names[c] for c in row] for row in top],
            "top_probs": np.take_along_axis(probs, top, 1)}
