"""Command line: ``python -m lgla_jax.main --config=configs/cifar100_ir100.py --workdir=DIR``.

``--mode=eval --checkpoint=PATH`` evaluates a saved checkpoint (a workdir, its
``checkpoints/`` folder or one step folder) instead of training.
"""

from __future__ import annotations

import json
import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file (configs/*.py[:arg]).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints, logs and the report go.")
_MODE = flags.DEFINE_enum("mode", "train", ["train", "eval"], "Train (and resume), or evaluate a checkpoint.")
_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "eval mode: checkpoint to evaluate.")


MULTI_PROCESS_ENV = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")


def init_distributed(environ=os.environ) -> bool:
  """Start JAX's multi-controller runtime when launched as one of several processes.

  Explicit: JAX_COORDINATOR_ADDRESS=host:port, JAX_NUM_PROCESSES, JAX_PROCESS_ID (what
  launch/*.sh set). Detected: SLURM with more than one task, a TPU VM slice with more than
  one worker. Returns whether a multi-process runtime was started.
  """
  import jax
  given = [k for k in MULTI_PROCESS_ENV if environ.get(k)]
  if given:
    missing = [k for k in MULTI_PROCESS_ENV if k not in given]
    if missing:
      raise app.UsageError(f"multi-process launch: {', '.join(given)} set but {', '.join(missing)} "
                           f"missing; set all three (see launch/local_multiprocess.sh)")
    jax.distributed.initialize(
        coordinator_address=environ["JAX_COORDINATOR_ADDRESS"],
        num_processes=int(environ["JAX_NUM_PROCESSES"]),
        process_id=int(environ["JAX_PROCESS_ID"]),
        initialization_timeout=int(environ.get("LGLA_INIT_TIMEOUT_S", "300")))
    return True
  slurm_tasks = int(environ.get("SLURM_NTASKS", "1") or 1)
  tpu_workers = [h for h in environ.get("TPU_WORKER_HOSTNAMES", "").split(",") if h]
  if slurm_tasks > 1 or len(tpu_workers) > 1:
    jax.distributed.initialize()  # jax reads the cluster's own environment
    return True
  return False


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not flags.FLAGS["verbosity"].present:  # library INFO logs (orbax) drown the progress
    logging.set_verbosity(logging.WARNING)
  config = _CONFIG.value
  if config is None:
    raise app.UsageError("--config=configs/NAME.py is required")
  init_distributed()
  from lgla_jax import checkpoint, configlib, datasets, download, evaluate, train  # jax starts here

  user_errors = (FileNotFoundError, configlib.ConfigError, datasets.DataError,
                 checkpoint.CheckpointError, download.DownloadError)
  try:
    _run(config, train, evaluate)
  except user_errors as e:  # a problem with the input, not a bug: no traceback
    sys.exit(f"error: {e}")


def _run(config, train, evaluate):
  if _MODE.value == "train":
    workdir = _WORKDIR.value or os.path.join("workdirs", _config_name())
    train.train_and_evaluate(config, workdir)
  else:
    if not _CHECKPOINT.value:
      raise app.UsageError("--mode=eval needs --checkpoint=PATH")
    report = evaluate.evaluate_checkpoint(config, _CHECKPOINT.value, _WORKDIR.value)
    print(json.dumps({k: report[k] for k in ("epoch", "top1", "many", "medium", "few", "rarest3")}))


def _config_name() -> str:
  path = flags.FLAGS["config"].config_filename
  return os.path.splitext(os.path.basename(path.split(":")[0]))[0]


if __name__ == "__main__":
  app.run(main)
