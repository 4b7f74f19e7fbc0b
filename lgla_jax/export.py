"""Checkpoints out: a run's weights under the official PyTorch ``state_dict`` names.

  python -m lgla_jax.export --checkpoint=WORKDIR --out=model.safetensors [--replica=K]

The file (the ``safetensors`` format) holds what the official model's ``state_dict()``
holds, named as it names them (``backbone.conv1.weight``, ``backbone.layer2s.0.bn1.
running_var``, ``backbone.linears.2.weight``, ...) in PyTorch's layouts, so
``model.load_state_dict(safetensors.torch.load_file(path))`` loads it into the official
model. No data set is read: the network is rebuilt from the config saved with the
checkpoint.
"""

from __future__ import annotations

import os
import sys
import tempfile

import jax
import numpy as np
from absl import app, flags, logging
from ml_collections import ConfigDict
from safetensors.numpy import save_file

from lgla_jax import errors
from lgla_jax.errors import ExportError
from lgla_jax.config import replicas
from lgla_jax.data.catalog import DATASETS
from lgla_jax.interop import convert
from lgla_jax.train import checkpoint, run, state as state_lib

_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "A workdir, its checkpoints/ folder or one step folder.")
_OUT = flags.DEFINE_string("out", None, "The .safetensors file to write.")
_REPLICA = flags.DEFINE_integer("replica", 0, "Which replica of a replica run to export.")


def restore_variables(path: str, replica: int = 0) -> tuple[dict, dict, object]:
  """``(variables, meta, config)`` of the checkpoint at ``path`` (replica ``replica`` of a
  replica run), without reading any data: the state is rebuilt from the saved config, as
  a run of that config starts (``train.run.initial_state``), and restored into."""
  ckpt, directory, step = checkpoint.open_step(path)
  try:
    meta = ckpt.read_meta(step)
    if "config" not in meta:
      raise errors.CheckpointError(f"checkpoint {directory}/{step} has no saved config "
                                   f"(made by an older lgla-jax): evaluate it instead")
    config = ConfigDict(meta["config"])
    reps = replicas.of(config)
    size = reps.size if reps else 1
    if not 0 <= replica < size:
      raise errors.FlagError(f"--replica={replica}: the run has "
                              f"{f'replicas 0..{size - 1}' if reps else 'one replica (0)'}")
    config.batch_size, config.drop_last_batch = meta["batch_size"], meta["drop_last_batch"]
    state, _ = run.initial_state(config, DATASETS[config.dataset.name].num_classes,
                                 meta["num_train_images"])
    state, meta = ckpt.restore(step, checkpoint.abstract(state))
  finally:
    ckpt.close()
  if reps:
    state = state_lib.replica(state, replica)
  return jax.device_get(state.variables()), meta, config


def official_state_dict(variables: dict, step: int) -> dict[str, np.ndarray]:
  """The official model's ``state_dict`` of Flax ``variables`` (BatchNorm's
  ``num_batches_tracked`` set to the training steps taken)."""
  return convert.torch_from_variables(variables, prefix="backbone.", num_batches_tracked=step)


def _umask() -> int:
  try:
    with open("/proc/self/status") as f:
      return next(int(line.split()[1], 8) for line in f if line.startswith("Umask:"))
  except (OSError, StopIteration, ValueError):
    mask = os.umask(0o22)  # (no other way to read it; set back at once)
    os.umask(mask)
    return mask


def check_out(out: str) -> str:
  """The folder ``out`` goes to, checked before any work: ``out`` must not be a folder, and
  its folder must exist and take a file (tried, not guessed from permission bits)."""
  if os.path.isdir(out):
    raise ExportError(f"--out={out} is a folder: give the name of the .safetensors file to write")
  folder = os.path.dirname(os.path.abspath(out))
  if not os.path.isdir(folder):
    raise ExportError(f"--out={out}: the folder {folder} does not exist")
  try:
    probe, name = tempfile.mkstemp(dir=folder, prefix=".lgla-export-", suffix=".tmp")
  except OSError as e:
    raise ExportError(f"--out={out}: cannot write to {folder} ({e.strerror or e})") from None
  os.close(probe)
  os.remove(name)
  return folder


def export(path: str, out: str, replica: int = 0) -> dict[str, np.ndarray]:
  """Write the checkpoint at ``path`` to ``out`` (.safetensors); returns what was written.
  ``out`` is checked first (``check_out``); the file appears whole (written under a
  temporary name, then renamed), readable as the user's umask allows."""
  folder = check_out(out)
  variables, meta, config = restore_variables(path, replica)
  tensors = {k: np.array(v, order="C") for k, v in  # (ascontiguousarray makes 0-d 1-d)
             official_state_dict(variables, int(meta["step"])).items()}
  tmp = os.path.join(folder, f".{os.path.basename(out)}.{os.getpid()}.tmp")
  try:
    save_file(tensors, tmp, metadata={"format": "pt", "source": "lgla-jax",
                                      "model": str(config.model.name),
                                      "epoch": str(meta["epoch"]), "step": str(meta["step"])})
    os.chmod(tmp, 0o666 & ~_umask())  # (safetensors writes 0600, private to the user)
    os.replace(tmp, out)
  except Exception as e:  # noqa: BLE001 - safetensors' own error type, or the file system's
    raise ExportError(f"writing {out} failed ({type(e).__name__}: {e})") from None
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
  return tensors


def main(argv):
  """The command line: export a checkpoint's weights, print one line (errors: one line, exit 1)."""
  if len(argv) > 1 or not _CHECKPOINT.value or not _OUT.value:
    sys.stderr.write("usage: python -m lgla_jax.export --checkpoint=WORKDIR --out=model.safetensors "
                     "[--replica=K]\n")
    sys.exit(2)
  logging.set_verbosity(logging.WARNING)  # orbax's INFO lines would drown the one result line
  try:
    tensors = export(_CHECKPOINT.value, _OUT.value, _REPLICA.value)
  except (errors.UsageError, errors.RunError, ValueError, OSError) as e:
    sys.stderr.write(f"error: {e}\n")
    sys.exit(1)
  print(f"wrote {len(tensors)} tensors to {_OUT.value}")


if __name__ == "__main__":
  app.run(main)
