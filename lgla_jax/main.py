"""Command line: ``python -m lgla_jax.main --config=configs/cifar100_ir100.py --workdir=DIR``.

``--mode=eval --checkpoint=PATH`` evaluates a saved checkpoint (a workdir, its
``checkpoints/`` folder or one step folder) instead of training.
"""

from __future__ import annotations

import json
import logging as std_logging
import os
import sys

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from lgla_jax import errors
from lgla_jax.config import overrides
from lgla_jax.config.defaults import base_config
from lgla_jax.storage import paths
from lgla_jax.train import checkpoint, evaluate_checkpoint, loop, peers, resume

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
  one worker. Returns whether a multi-process runtime was started; then the processes
  watch each other (``train.peers``, bound ``LGLA_PEER_TIMEOUT_S``).
  """
  try:
    bound_s = peers.timeout_s(environ)
  except ValueError as e:
    raise app.UsageError(str(e)) from None
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
        initialization_timeout=int(environ.get("LGLA_INIT_TIMEOUT_S", "300")),
        heartbeat_timeout_seconds=peers.jax_heartbeat_timeout(bound_s))
  else:
    slurm_tasks = int(environ.get("SLURM_NTASKS", "1") or 1)
    tpu_workers = [h for h in environ.get("TPU_WORKER_HOSTNAMES", "").split(",") if h]
    if slurm_tasks <= 1 and len(tpu_workers) <= 1:
      return False
    # jax reads the cluster's own environment
    jax.distributed.initialize(heartbeat_timeout_seconds=peers.jax_heartbeat_timeout(bound_s))
  peers.start(bound_s)  # a process that dies ends the others within bound_s, with one line
  return True


# Exit statuses: 0 done; 1 the run failed (data, checkpoint, divergence, workdir); 2 a
# usage error (flags, config); 75 stopped on request (SIGTERM / SIGINT) after saving a
# checkpoint: rerun the same command to resume.
EXIT_FAILED, EXIT_USAGE = 1, 2


def _usage_error(message: str):
  sys.stderr.write(f"error: {message}\n")
  sys.exit(EXIT_USAGE)


def _unknown_override(argv) -> str | None:
  """The first ``--config.a.b=...`` whose field does not exist, with a hint."""
  reference = base_config()
  for arg in argv:
    if not arg.startswith("--config."):
      continue
    path = arg[len("--config."):].split("=", 1)[0]
    node = reference
    for part in path.split("."):
      if not hasattr(node, "keys") or part not in node:
        near = [k for k in (node.keys() if hasattr(node, "keys") else []) if k[:3] == part[:3]]
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        return f"--config.{path}: unknown config field{hint}; the fields are in lgla_jax/config/defaults.py"
      node = node[part]
  return None


def parse_flags(argv):
  """absl flag parsing with one-line messages (exit status 2) instead of tracebacks for a
  missing or failing config file and unknown or ill-typed config overrides."""
  try:
    return flags.FLAGS(argv)
  except Exception as e:  # noqa: BLE001 - absl and ml_collections raise many kinds
    _usage_error(_unknown_override(argv) or str(e).strip().splitlines()[-1] or type(e).__name__)


def _load_config():
  """The parsed config; a config file that is missing or fails to load is a usage error."""
  try:
    config = _CONFIG.value
    if config is not None:
      config.keys()  # a failed load hands back a stand-in that raises on first use
    return config
  except Exception as e:  # noqa: BLE001 - the loader wraps what the file raised
    lines = [l.strip() for l in str(e).strip().splitlines() if l.strip()]
    _usage_error(f"--config={flags.FLAGS['config'].config_filename}: {lines[-1] if lines else type(e).__name__}")


class _QuietOrbaxErrors(std_logging.Filter):
  """A failed asynchronous save is reported once, as a CheckpointError with its cause; the
  tracebacks orbax logs from its background threads on the way would drown that line."""

  def filter(self, record):
    return not (record.levelno >= std_logging.ERROR and "orbax" in record.pathname)


def main(argv):
  """The command line: train or evaluate; bad input ends with one line and a non-zero status."""
  if len(argv) > 1:
    _usage_error(f"unexpected arguments: {argv[1:]}")
  if not flags.FLAGS["verbosity"].present:  # library INFO logs (orbax) drown the progress
    logging.set_verbosity(logging.WARNING)
    logging.get_absl_handler().addFilter(_QuietOrbaxErrors())
  config = _load_config()
  if config is None:
    _usage_error("--config=configs/NAME.py is required")
  try:
    paths.deadline_s()  # a bad LGLA_BUCKET_DEADLINE_S is a usage error before anything runs
  except ValueError as e:
    _usage_error(str(e))
  try:
    several = init_distributed()
  except app.UsageError as e:
    _usage_error(str(e))
  paths.on_deadline(_on_bucket_deadline)
  try:
    stopped = _run(config)
  except (errors.UsageError, app.UsageError) as e:
    _fail(EXIT_USAGE, e, several)
  except errors.RunError as e:  # a problem with the input or the machine, not a bug: no traceback
    _fail(EXIT_FAILED, e, several)
  except Exception as e:  # noqa: BLE001 - a bucket gone mid-run: one line, not a traceback
    target = _WORKDIR.value or _CHECKPOINT.value or ""
    cause = paths.store_failure(e) if paths.is_remote(target) else None
    if cause is not None:
      _fail(EXIT_FAILED, _bucket_failure(target, cause), several)
    if several:  # a collective failing because a peer died: the watchdog's line, not this
      peers.wait_for_verdict()
    raise
  peers.finished()
  if stopped:
    sys.exit(resume.STOPPED_EXIT_STATUS)


def _fail(status: int, e, several: bool):
  """One ``error:`` line and ``status``. On several processes the exit is immediate
  (``os._exit``): ``sys.exit`` would wait at JAX's shutdown barrier for peers that may go
  on, then abort with a stack trace; the peers end within their bound (``train.peers``)."""
  sys.stderr.write(f"error: {e}\n")
  if several:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
  sys.exit(status)


def _last_complete(url: str) -> str | None:
  """The newest checkpoint under ``url`` this process saw complete (restored or saved)."""
  saved = [f"{d}/{s}" for d, s in checkpoint.LAST_COMPLETE.items() if d.startswith(url)]
  return saved[-1] if saved else None


def _bucket_failure(url: str, cause: BaseException) -> str:
  """One line for a bucket that failed: the URL, why, the last complete checkpoint."""
  first = str(cause).splitlines()[0][:200] if str(cause) else ""
  return paths.bucket_failure_message(url, f"{type(cause).__name__}: {first}", _last_complete(url))


def _on_bucket_deadline(url: str, what: str, waited_s: float) -> None:
  """``paths.on_deadline``: a bucket operation of the run passed LGLA_BUCKET_DEADLINE_S (a
  watchdog thread; the main thread is stuck in it): the one line, exit status 1 at once."""
  target = _WORKDIR.value or _CHECKPOINT.value or url
  reason = f"{what}: no answer within {waited_s:g} s, {paths.DEADLINE_ENV}"
  sys.stdout.flush()
  sys.stderr.write(f"error: {paths.bucket_failure_message(url, reason, _last_complete(target))}\n")
  sys.stderr.flush()
  os._exit(EXIT_FAILED)  # no interpreter shutdown: it would wait for the stuck call


def _run(config) -> bool:
  """Train or evaluate; whether the run was stopped before its end."""
  if _MODE.value == "train":
    overrides.check(config, config_flags.get_override_values(flags.FLAGS["config"]))
    workdir = _WORKDIR.value or os.path.join("workdirs", _config_name())
    return "stopped_at_step" in loop.train_and_evaluate(config, workdir)
  else:
    if not _CHECKPOINT.value:
      raise errors.UsageError("--mode=eval needs --checkpoint=PATH")
    report = evaluate_checkpoint.evaluate_checkpoint(config, _CHECKPOINT.value, _WORKDIR.value)
    print(json.dumps({k: report[k] for k in ("epoch", "top1", "many", "medium", "few", "rarest3")}))
    return False


def _config_name() -> str:
  path = flags.FLAGS["config"].config_filename
  return os.path.splitext(os.path.basename(path.split(":")[0]))[0]


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
