"""What keeps a workdir consistent: one run at a time, and a resume that trains what the
checkpoint was trained with.

``lock(workdir)`` takes an exclusive lock (a second run refuses, naming the first one's
host and pid; the lock of a dead process is released with it, so stale locks are taken
over; a bucket workdir's lock object carries a heartbeat, and one left by a run whose VM
is gone is taken over once the heartbeat is older than ``LGLA_LOCK_STALE_S``). ``config_changes`` lists the fields that differ between the checkpoint's config and
this run's, leaving out those that cannot change what is trained (logging, workers,
paths, evaluation cadence).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import socket
import sys
import threading
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
                     "started": time.strftime("%Y-%m-%d %H:%M:%S"), "heartbeat": time.time()})


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


# A bucket lock's holder rewrites it every LGLA_LOCK_HEARTBEAT_S; one not rewritten for
# LGLA_LOCK_STALE_S is a dead run's (its VM gone) and is taken over.
HEARTBEAT_ENV, DEFAULT_HEARTBEAT_S = "LGLA_LOCK_HEARTBEAT_S", 60.0
STALE_ENV, DEFAULT_STALE_S = "LGLA_LOCK_STALE_S", 600.0


def _seconds(name: str, default: float) -> float:
  raw = os.environ.get(name, "") or str(default)
  try:
    value = float(raw)
  except ValueError:
    value = -1.0
  if not value > 0:
    raise WorkdirError(f"{name}={raw!r}: give a number of seconds > 0")
  return value


def heartbeat_age_s(holder: str) -> float | None:
  """Seconds since the lock content ``holder`` was last rewritten by its run (its
  ``heartbeat``, the holder's clock); None for a lock without one."""
  try:
    return max(0.0, time.time() - float(json.loads(holder)["heartbeat"]))
  except (ValueError, KeyError, TypeError):
    return None


def _describe(holder: str) -> str:
  """``host H, pid P, started T`` of a lock's content (the content itself if not ours)."""
  try:
    entry = json.loads(holder)
    return f"host {entry['host']}, pid {entry['pid']}, started {entry['started']}"
  except (ValueError, KeyError, TypeError):
    return holder[:200] or "another process"


def _stale_reason(holder: str, stale_s: float) -> str | None:
  """Why the lock ``holder`` may be taken over (its process gone, its heartbeat too old), or
  None."""
  if _dead_here(holder):
    return "its process is gone"
  age = heartbeat_age_s(holder)
  if age is not None and age > stale_s:
    return f"its heartbeat is {age:.0f} s old, > {STALE_ENV}={stale_s:g} s"
  return None


def _acquire(obj, workdir, stale_s: float) -> int:
  """Create the lock object, or take over a stale one (a replace with the generation
  precondition of the stale one: of two runs taking it over, one wins); its generation."""
  gen = paths.write_object(obj, _holder(), if_generation=0)
  if gen is not None:
    return gen
  found = paths.read_object(obj)
  if found is None:  # released meanwhile
    gen = paths.write_object(obj, _holder(), if_generation=0)
    holder = "another process"
  else:
    holder, old_gen = found[0].strip(), found[1]
    reason = _stale_reason(holder, stale_s)
    if reason is not None:
      gen = paths.write_object(obj, _holder(), if_generation=old_gen)
      if gen is not None:
        print(f"warning: took over {obj} from a dead run ({_describe(holder)}): {reason}",
              flush=True)
  if gen is None:
    age = heartbeat_age_s(holder)
    seen = f", heartbeat {age:.0f} s ago" if age is not None else ""
    raise WorkdirError(f"{workdir} is in use by a lgla-jax run ({_describe(holder)}{seen}); wait for it "
                       f"to finish, stop it, or use another --workdir. If that run is dead "
                       f"(its VM gone), its lock is taken over once its heartbeat is older "
                       f"than {stale_s:g} s ({STALE_ENV}), or delete {obj} and rerun")
  return gen


class _Heartbeat:
  """Rewrites the lock object every ``period_s`` (with its generation as the precondition:
  a lock taken over by another run is left to it, with one warning)."""

  def __init__(self, obj, gen: int, period_s: float):
    self.obj, self.gen, self.period_s = obj, gen, period_s
    self.stopped = threading.Event()
    self.thread = threading.Thread(target=self._run, name="lgla-lock-heartbeat", daemon=True)
    self.thread.start()

  def _run(self):
    while not self.stopped.wait(self.period_s):
      try:
        gen = paths.write_object(self.obj, _holder(), if_generation=self.gen)
      except Exception:  # noqa: BLE001 - the bucket gone: the run's own writes end it
        continue
      if gen is None:
        print(f"warning: {self.obj} was taken over by another run; this run no longer "
              f"holds its workdir", file=sys.stderr, flush=True)
        self.gen = None
        return
      self.gen = gen

  def stop(self) -> int | None:
    """Stop beating; the lock's generation (None if lost)."""
    self.stopped.set()
    self.thread.join(timeout=1)
    return self.gen if not self.thread.is_alive() else None


@contextlib.contextmanager
def _bucket_lock(workdir):
  """``workdir/.lock`` as an object created only if absent (a GCS generation precondition)
  holding host, pid, start time and a heartbeat rewritten every ``LGLA_LOCK_HEARTBEAT_S``
  (60 s), deleted on exit. A lock whose process is gone (same host) or whose heartbeat is
  older than ``LGLA_LOCK_STALE_S`` (600 s) is taken over, with one warning line. A store
  without an atomic create (``s3://``) runs unlocked, said in one line."""
  obj = paths.path(workdir) / ".lock"
  if not str(workdir).startswith("gs://"):
    print(f"{workdir}: this store has no atomic create-if-absent, so the workdir is not "
          f"locked; make sure no other run uses it", flush=True)
    yield
    return
  stale_s, period_s = _seconds(STALE_ENV, DEFAULT_STALE_S), _seconds(HEARTBEAT_ENV, DEFAULT_HEARTBEAT_S)
  try:
    gen = _acquire(obj, workdir, stale_s)
  except WorkdirError:
    raise
  except Exception as e:  # noqa: BLE001 - any client error is one line here
    raise WorkdirError(_unusable(workdir, e)) from None
  beat = _Heartbeat(obj, gen, period_s)
  failed = True
  try:
    yield
    failed = False
  finally:
    gen = beat.stop()
    try:  # a failing run (the bucket gone) tries once, quickly: its one line comes first
      if gen is not None:
        paths.delete_object(obj, gen, quick=failed)
    except Exception:  # noqa: BLE001 - the bucket gone: the lock stays and goes stale
      pass


def _unusable(workdir, e: BaseException) -> str:
  """One line for a bucket workdir that cannot even be locked: no credentials, no bucket,
  no permission, or no answer within the deadline."""
  code = getattr(e, "code", None)
  said = str(getattr(e, "message", "") or str(e))
  found = re.search(r'"message": ?"([^"]*)"', said)  # the server's own words, not the URL
  said = found.group(1) if found else (said.splitlines() or [""])[0][:160]
  if type(e).__name__ == "DefaultCredentialsError":
    return (f"no credentials for {workdir}: run `gcloud auth application-default login` or "
            f"set GOOGLE_APPLICATION_CREDENTIALS (a TPU VM uses its service account)")
  if code == 404:
    bucket = "gs://" + str(workdir)[len("gs://"):].split("/")[0]
    return (f"the bucket {bucket} does not exist (404 for {workdir}): create it (`gcloud "
            f"storage buckets create {bucket}`) or fix --workdir")
  if code in (401, 403):
    return (f"no permission to write {workdir}/.lock ({code}: {said}): give this account "
            f"write access to the bucket (roles/storage.objectUser) or use another --workdir")
  return (f"cannot reach {workdir} ({type(e).__name__}: {said[:120]}) within "
          f"{paths.deadline_s():g} s ({paths.DEADLINE_ENV}): check the network and the "
          f"bucket, then rerun the same command")


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
