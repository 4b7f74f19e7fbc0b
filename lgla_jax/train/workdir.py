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
import socket
import time

from lgla_jax.config.defaults import base_config
from lgla_jax.storage import paths
from lgla_jax.errors import WorkdirError  # noqa: F401 - raised here, named by callers

# Fields that may differ on resume: they change neither the data order nor the math.
MAY_CHANGE_ON_RESUME = (
    "dataset.data_dir", "dataset.split_dir", "dataset.download", "num_workers",
    "log_every_steps", "eval_every_epochs", "checkpoint_every_epochs", "keep_checkpoints",
    "eval_batch_size", "report_best", "xla_cpu_fast_elementwise", "model.conv_impl",
    "resume_with_changes", "dataset.on_device", "steps_per_dispatch", "compilation_cache_dir",
    "replicas.shards", "replicas.mode", "eval.many_shot_min", "eval.few_shot_max")
# What an evaluation must share with the checkpoint: the data set and the network.
MUST_MATCH_FOR_EVAL = ("dataset.name", "dataset.imbalance_factor", "dataset.imbalance_kind",
                       "dataset.max_per_class", "dataset.subset_seed", "dataset.image_size",
                       "dataset.mean", "dataset.std", "model.", "replicas.seeds", "replicas.tau")
# ... except the model fields that only say where training started or how a convolution runs.
NOT_READ_BY_EVAL = ("model.pretrained", "model.init_from", "model.conv_impl")


@contextlib.contextmanager
def lock(workdir):
  """Hold ``workdir/.lock`` for the duration of a run (a bucket workdir: ``_bucket_lock``)."""
  if paths.is_remote(workdir):
    with _bucket_lock(workdir):
      yield
    return
  try:
    paths.path(workdir).mkdir(parents=True, exist_ok=True)
    f = open(paths.path(workdir) / ".lock", "a+")  # fcntl needs a local file object
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
    f.write(_holder())
    f.flush()
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


def _holder() -> str:
  return json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                     "started": time.strftime("%Y-%m-%d %H:%M:%S")})


def _dead_here(holder: str) -> bool:
  """Whether the lock content ``holder`` names a process of this host that no longer runs."""
  try:
    entry = json.loads(holder)
    if entry.get("host") != socket.gethostname():
      return False
    os.kill(int(entry["pid"]), 0)
  except ProcessLookupError:
    return True
  except (ValueError, KeyError, TypeError, PermissionError):
    return False
  return False


@contextlib.contextmanager
def _bucket_lock(workdir):
  """``workdir/.lock`` as an object created only if absent (a GCS generation precondition),
  deleted on exit. A holder that died leaves it: the message names it and the way out
  (delete the object). A store without an atomic create (``s3://``) runs unlocked, said in
  one line."""
  obj = paths.path(workdir) / ".lock"
  try:
    created = paths.create_if_absent(obj, _holder())
  except Exception as e:  # noqa: BLE001 - any client error is one line here
    raise WorkdirError(f"cannot use {workdir} as the workdir ({type(e).__name__}: "
                       f"{str(e).splitlines()[0] if str(e) else ''}): check the bucket "
                       f"exists and is writable") from None
  if created is None:
    print(f"{workdir}: this store has no atomic create-if-absent, so the workdir is not "
          f"locked; make sure no other run uses it", flush=True)
    yield
    return
  if not created:
    try:
      holder = obj.read_text().strip()
    except Exception:  # noqa: BLE001 - a lock deleted meanwhile
      holder = "another process"
    if _dead_here(holder):  # left by a run on this machine whose process is gone: taken over
      obj.unlink(missing_ok=True)
      created = paths.create_if_absent(obj, _holder())
  if not created:
    raise WorkdirError(f"{workdir} is in use by a lgla-jax run ({holder}); wait for it to "
                       f"finish, stop it, or use another --workdir. If that run is dead "
                       f"(its VM gone), delete {obj} and rerun") from None
  try:
    yield
  finally:
    try:
      obj.unlink()
    except Exception:  # noqa: BLE001 - the bucket gone: the lock stays, the message says how
      pass


# What a run leaves in its workdir before it has done anything worth keeping.
LEFTOVERS = (".lock", "compilation_cache")


@contextlib.contextmanager
def tidy_if_failed(workdir, on_removed=None):
  """A folder that did not exist before and that a failed or refused run leaves holding
  nothing but ``LEFTOVERS`` is removed (then ``on_removed()``); one with anything else (logs,
  checkpoints, reports) is kept. A bucket workdir is left as it is (listing it again may
  fail with the bucket)."""
  remote = paths.is_remote(workdir)
  p = paths.path(workdir)
  fresh = not remote and not p.exists()
  try:
    yield
  except BaseException:
    if fresh and p.is_dir() and {c.name for c in p.iterdir()} <= set(LEFTOVERS):
      p.rmtree(missing_ok=True)
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
