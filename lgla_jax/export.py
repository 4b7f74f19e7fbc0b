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

import numpy as np
from absl import app, flags, logging
from safetensors.numpy import save_file

from lgla_jax import errors
from lgla_jax.errors import ExportError
from lgla_jax.interop import convert
from lgla_jax.train import prediction

_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "A workdir, its checkpoints/ folder or one step folder.")
_OUT = flags.DEFINE_string("out", None, "The .safetensors file to write.")
_REPLICA = flags.DEFINE_integer("replica", 0, "Which replica of a replica run to export.")


def restore_variables(path: str, replica: int = 0) -> tuple[dict, dict, object]:
  """``(variables, meta, config)`` of the checkpoint at ``path`` (replica ``replica`` of a
  replica run), without reading any data (``train.prediction.restore_variables``)."""
  return prediction.restore_variables(path, replica)


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
