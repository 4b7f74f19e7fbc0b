"""What keeps a workdir consistent: one run at a time, and a resume that trains what the
checkpoint was trained with.

``lock(workdir)`` takes an exclusive lock (a second run refuses, naming the first one's
host and pid; the lock of a dead process is released with it, so stale locks are taken
over). ``config_changes`` lists the fields that differ between the checkpoint's config and
this run's, leaving out those that cannot change what is trained (logging, workers,
paths, evaluation cadence).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import socket
import time

from lgla_jax.config.defaults import base_config
from lgla_jax.errors import WorkdirError  # noqa: F401 - raised here, named by callers

# Fields that may differ on resume: they change neither the data order nor the math.
MAY_CHANGE_ON_RESUME = (
    "dataset.data_dir", "dataset.split_dir", "dataset.download", "num_workers",
    "log_every_steps", "eval_every_epochs", "checkpoint_every_epochs", "keep_checkpoints",
    "eval_batch_size", "report_best", "xla_cpu_fast_elementwise", "model.conv_impl",
    "resume_with_changes", "dataset.on_device", "steps_per_dispatch", "compilation_cache_dir",
    "replicas.shards", "replicas.mode")
# What an evaluation must share with the checkpoint: the data set and the network.
MUST_MATCH_FOR_EVAL = ("dataset.name", "dataset.imbalance_factor", "dataset.imbalance_kind",
                       "dataset.max_per_class", "dataset.subset_seed", "dataset.image_size",
                       "dataset.mean", "dataset.std", "model.", "replicas.seeds", "replicas.tau")
# ... except the model fields that only say where training started or how a convolution runs.
NOT_READ_BY_EVAL = ("model.pretrained", "model.init_from", "model.conv_impl")


@contextlib.contextmanager
def lock(workdir: str):
  """Hold ``workdir/.lock`` for the duration of a run."""
  try:
    os.makedirs(workdir, exist_ok=True)
    f = open(os.path.join(workdir, ".lock"), "a+")
  except OSError as e:
    raise WorkdirError(f"cannot use {workdir} as the workdir ({e.strerror or e}): choose a "
                       f"writable --workdir") from None
  with f:
    try:
      fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      f.seek(0)
      holder = f.read().strip() or "another process"
      raise WorkdirError(f"{workdir} is in use by a running lgla-jax run ({holder}); wait for "
                         f"it to finish, stop it, or use another --workdir") from None
    f.seek(0)
    f.truncate()
    f.write(json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                        "started": time.strftime("%Y-%m-%d %H:%M:%S")}))
    f.flush()
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


# What a run leaves in its workdir before it has done anything worth keeping.
LEFTOVERS = (".lock", "compilation_cache")


@contextlib.contextmanager
def tidy_if_failed(workdir: str, on_removed=None):
  """A folder that did not exist before and that a failed or refused run leaves holding
  nothing but ``LEFTOVERS`` is removed (then ``on_removed()``); one with anything else (logs,
  checkpoints, reports) is kept."""
  fresh = not os.path.exists(workdir)
  try:
    yield
  except BaseException:
    if fresh and os.path.isdir(workdir) and set(os.listdir(workdir)) <= set(LEFTOVERS):
      shutil.rmtree(workdir, ignore_errors=True)
      if on_removed is not None:
        on_removed()
    raise


def _flatten(d: dict, prefix: str = "") -> dict:
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(_flatten(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = list(v) if isinstance(v, tuple) else v
  return out


def _base_defaults() -> dict:
  return _flatten(json.loads(base_config().to_json_best_effort()))


def config_changes(saved: dict, current: dict, *, only=None, ignore=()) -> list[str]:
  """``field: saved -> current`` for every differing field (``only``: field prefixes to
  compare; ``ignore``: fields to skip)."""
  a, b = _flatten(saved), _flatten(current)
  changes = []
  for key in sorted(set(a) | set(b)):
    if key in ignore or (only is not None and not any(key.startswith(p) for p in only)):
      continue
    if key not in a and b.get(key) == _base_defaults().get(key, "<absent>"):
      continue  # a field added since the checkpoint, at the default that keeps old behaviour
    if a.get(key, "<absent>") != b.get(key, "<absent>"):
      changes.append(f"{key}: {a.get(key, '<absent>')!r} -> {b.get(key, '<absent>')!r}")
  return changes
