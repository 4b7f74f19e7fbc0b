"""Checkpoints out: a run's weights under the official PyTorch ``state_dict`` names.

  python -m lgla_jax.export --checkpoint=WORKDIR --out=model.safetensors [--replica=K]

``--checkpoint`` and ``--out`` may be bucket URLs (``gs://...``).

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

import numpy as np
from absl import app, flags, logging
from safetensors.numpy import save as safetensors_bytes

from lgla_jax import errors
from lgla_jax.errors import ExportError
from lgla_jax.interop import convert
from lgla_jax.storage import paths
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


def check_out(out: str):
  """The folder ``out`` goes to (an ``epath.Path``), checked before any work: ``out`` must
  not be a folder, and its folder must exist and take a file (tried, not guessed from
  permission bits). In a bucket, folders need not exist: a probe object is written and
  removed (a missing bucket or no permission shows here)."""
  target = paths.path(out)
  if target.is_dir():
    raise ExportError(f"--out={out} is a folder: give the name of the .safetensors file to write")
  folder = target.parent if paths.is_remote(target) else paths.path(paths.display(out)).parent
  if not paths.is_remote(folder) and not folder.is_dir():
    raise ExportError(f"--out={out}: the folder {folder} does not exist")
  probe = folder / f".lgla-export-{os.getpid()}.tmp"
  try:
    probe.write_bytes(b"")
    probe.unlink()
  except Exception as e:  # noqa: BLE001 - the file system's or the bucket's error: one line
    reason = getattr(e, "strerror", None) or (str(e).splitlines() or [type(e).__name__])[0][:200]
    raise ExportError(f"--out={out}: cannot write to {folder} ({reason})") from None
  return folder


def export(path: str, out: str, replica: int = 0) -> dict[str, np.ndarray]:
  """Write the checkpoint at ``path`` to ``out`` (.safetensors; either may be a bucket URL);
  returns what was written. ``out`` is checked first (``check_out``); the file appears whole
  (a local one written under a temporary name, then renamed; a bucket object in one
  upload), readable as the user's umask allows."""
  folder = check_out(out)
  variables, meta, config = restore_variables(path, replica)
  tensors = {k: np.array(v, order="C") for k, v in  # (ascontiguousarray makes 0-d 1-d)
             official_state_dict(variables, int(meta["step"])).items()}
  target = paths.path(out)
  tmp = folder / f".{target.name}.{os.getpid()}.tmp"
  try:
    data = safetensors_bytes(tensors, metadata={
        "format": "pt", "source": "lgla-jax", "model": str(config.model.name),
        "epoch": str(meta["epoch"]), "step": str(meta["step"])})
    if paths.is_remote(target):
      target.write_bytes(data)  # (an object appears whole, on GCS as on S3)
    else:
      tmp.write_bytes(data)  # (created as open() does: 0666 less the umask)
      tmp.replace(target)
  except Exception as e:  # noqa: BLE001 - safetensors' own error type, or the file system's
    raise ExportError(f"writing {out} failed ({type(e).__name__}: {e})") from None
  finally:
    if not paths.is_remote(target) and tmp.exists():
      tmp.unlink()
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
