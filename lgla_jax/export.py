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

import sys

import numpy as np
from absl import app, flags

_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "A workdir, its checkpoints/ folder or one step folder.")
_OUT = flags.DEFINE_string("out", None, "The .safetensors file to write.")
_REPLICA = flags.DEFINE_integer("replica", 0, "Which replica of a replica run to export.")


def restore_variables(path: str, replica: int = 0) -> tuple[dict, dict, object]:
  """``(variables, meta, config)`` of the checkpoint at ``path`` (replica ``replica`` of a
  replica run), without reading any data: the state is rebuilt from the saved config."""
  import jax
  import jax.numpy as jnp
  from ml_collections import ConfigDict
  from lgla_jax import (checkpoint, datasets, input_pipeline, models, optim, replicas,
                        sharding, state as state_lib)
  ckpt, directory, step = checkpoint.open_step(path)
  try:
    meta = ckpt.read_meta(step)
    if "config" not in meta:
      raise checkpoint.CheckpointError(f"checkpoint {directory}/{step} has no saved config "
                                       f"(made by an older lgla-jax): evaluate it instead")
    config = ConfigDict(meta["config"])
    model = models.build(config.model, datasets.DATASETS[config.dataset.name].num_classes,
                         jnp.float32)
    spe = input_pipeline.steps_per_epoch(meta["num_train_images"], meta["batch_size"],
                                         meta["drop_last_batch"])
    tx, _ = optim.make_optimizer(config.optim, config.num_epochs, spe)
    reps = replicas.of(config)
    size = config.dataset.image_size
    if reps:
      if not 0 <= replica < reps.size:
        raise ValueError(f"--replica={replica}: the run has replicas 0..{reps.size - 1}")
      mesh = sharding.make_mesh(jax.devices()[:1], 1)
      rngs = jnp.stack([jax.random.PRNGKey(s) for s in reps.seeds])
    elif replica:
      raise ValueError(f"--replica={replica}: the run has one replica (0)")
    else:
      mesh, rngs = sharding.make_mesh(jax.devices()[:1]), jax.random.PRNGKey(0)
    state = state_lib.create(model, tx, rngs, (size, size, 3), mesh)
    state, meta = ckpt.restore(step, checkpoint.abstract(state))
  finally:
    ckpt.close()
  if reps:
    state = state_lib.replica(state, replica)
  return jax.device_get(state.variables()), meta, config


def official_state_dict(variables: dict, step: int) -> dict[str, np.ndarray]:
  """The official model's ``state_dict`` of Flax ``variables`` (BatchNorm's
  ``num_batches_tracked`` set to the training steps taken)."""
  from lgla_jax import convert
  return convert.torch_from_variables(variables, prefix="backbone.", num_batches_tracked=step)


def export(path: str, out: str, replica: int = 0) -> dict[str, np.ndarray]:
  """Write the checkpoint at ``path`` to ``out`` (.safetensors); returns what was written."""
  from safetensors.numpy import save_file
  variables, meta, config = restore_variables(path, replica)
  tensors = {k: np.array(v, order="C") for k, v in  # (ascontiguousarray makes 0-d 1-d)
             official_state_dict(variables, int(meta["step"])).items()}
  save_file(tensors, out, metadata={"format": "pt", "source": "lgla-jax",
                                    "model": str(config.model.name),
                                    "epoch": str(meta["epoch"]), "step": str(meta["step"])})
  return tensors


def main(argv):
  """The command line: export a checkpoint's weights, print one line (errors: one line, exit 1)."""
  if len(argv) > 1 or not _CHECKPOINT.value or not _OUT.value:
    sys.stderr.write("usage: python -m lgla_jax.export --checkpoint=WORKDIR --out=model.safetensors "
                     "[--replica=K]\n")
    sys.exit(2)
  from absl import logging
  logging.set_verbosity(logging.WARNING)  # orbax's INFO lines would drown the one result line
  from lgla_jax import checkpoint
  try:
    tensors = export(_CHECKPOINT.value, _OUT.value, _REPLICA.value)
  except (FileNotFoundError, ValueError, checkpoint.CheckpointError, OSError) as e:
    sys.stderr.write(f"error: {e}\n")
    sys.exit(1)
  print(f"wrote {len(tensors)} tensors to {_OUT.value}")


if __name__ == "__main__":
  app.run(main)
