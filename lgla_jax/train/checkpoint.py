"""orbax checkpoints of the train state together with the data position and the config.

Each checkpoint holds ``state`` (the ``TrainState``) and ``meta`` (JSON): the epoch, the
global step (which is the input pipeline's position, see ``data.pipeline``), what the
data position depends on (seed, training-set size, global batch), the run's full config
and a digest of every state tensor. ``restore`` verifies the digests, so flipped bytes in
a checkpoint are found instead of restored; ``save`` surfaces a failed asynchronous write
(a full disk) at the next save or ``check``, not at the end of the run.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint._src.serialization import tensorstore_utils as ts_utils

from lgla_jax import errors
from lgla_jax.errors import CheckpointError  # noqa: F401 - raised here, named by callers
from lgla_jax.storage import paths


def _reason(e: BaseException) -> str:
  """``Type: first line`` of an error, without tensorstore's multi-line spec dump."""
  text = str(e).splitlines()[0] if str(e) else ""
  return f"{type(e).__name__}: {text.split(' See full TensorStore details')[0][:300].rstrip('. ')}"


def _quiet_failed_reads(unraisable) -> None:
  """``sys.unraisablehook``: when an orbax restore or save fails, tensorstore reads or writes
  still in flight complete onto the closed event loop and its abandoned coroutines are
  collected, each printing a traceback ("Event loop is closed", dozens of them) around the
  one error that says what happened. Those, and only those, are dropped."""
  exc, obj = unraisable.exc_value, unraisable.object
  if isinstance(exc, RuntimeError) and "Event loop is closed" in str(exc):
    return
  if inspect.iscoroutine(obj) and "orbax" in obj.cr_code.co_filename:
    return
  _quiet_failed_reads.previous(unraisable)


class _QuietLostWrites(logging.Filter):
  """On the ``asyncio`` logger: when one write of an orbax save fails (a full disk), the
  save's other writes fail the same way, and asyncio logs each of those tasks ("Task
  exception was never retrieved", with a traceback) when it is collected. The first error
  is the one reported (``Checkpointer.check``); those records of orbax's tasks are dropped."""

  def filter(self, record):
    return not ("never retrieved" in str(record.msg) and "orbax" in record.getMessage())


def _quiet_restores() -> None:
  """Install the two quieting hooks above (once per process): the tensorstore reads or
  writes still in flight when an orbax restore or save fails print nothing after the
  failure that is reported."""
  if sys.unraisablehook is not _quiet_failed_reads:
    _quiet_failed_reads.previous = sys.unraisablehook
    sys.unraisablehook = _quiet_failed_reads
  asyncio_log = logging.getLogger("asyncio")
  if not any(isinstance(f, _QuietLostWrites) for f in asyncio_log.filters):
    asyncio_log.addFilter(_QuietLostWrites())


def digests(state) -> dict:
  """``{tensor path: sha256 prefix}`` of a state (whole values; on several processes, the
  process-local copy of a replicated value, the same on every process)."""
  leaves = jax.tree_util.tree_flatten_with_path(state)[0]
  out = {}
  for path, leaf in leaves:
    value = _local_whole(leaf)
    h = hashlib.sha256(str((value.dtype, value.shape)).encode())
    h.update(np.ascontiguousarray(value).tobytes())
    out[jax.tree_util.keystr(path)] = h.hexdigest()[:16]
  return out


def _local_whole(leaf) -> np.ndarray:
  """The whole value of a state leaf from this process's shards: on several processes each
  holds every block of the state (replicated, or a replica run's replica axis, which the
  mesh keeps within each process: ``sharding.make_mesh``)."""
  if getattr(leaf, "is_fully_addressable", True):
    return np.asarray(jax.device_get(leaf))
  value = np.empty(leaf.shape, leaf.dtype)
  for shard in leaf.addressable_shards:
    value[shard.index] = np.asarray(shard.data)
  return value


def bound_tensorstore_retries(deadline_s: float) -> dict:
  """Bound tensorstore's retries of a bucket request (its default: 32 tries, up to 32 s
  apart, many minutes against a dead server) to about ``deadline_s`` in all: delays from
  ``deadline_s / 8`` (at most 1 s) doubling to ``deadline_s / 4`` (at most 32 s). orbax
  builds every tensorstore context from the two dicts changed here (orbax 0.12.8; another
  version without them keeps tensorstore's default). Returns the setting."""
  first = min(1.0, deadline_s / 8)
  longest = max(first, min(32.0, deadline_s / 4))
  tries, total, delay = 0, 0.0, first
  while total + delay <= deadline_s:
    total, tries, delay = total + delay, tries + 1, min(2 * delay, longest)
  setting = {"max_retries": max(tries, 1), "initial_delay": f"{first:g}s",
             "max_delay": f"{longest:g}s"}
  for name in ("_BASE_TS_CONTEXT", "_DEFAULT_OCDBT_TS_CONTEXT"):
    context = getattr(ts_utils, name, None)
    if isinstance(context, dict):
      context["gcs_request_retries"] = dict(setting)
  return setting


# checkpoints folder -> the newest step this process saw written completely (restored, or
# saved and confirmed): what a message names when the store itself can no longer be asked.
LAST_COMPLETE: dict[str, int] = {}


class Checkpointer:
  """Saves every few epochs, keeps the last ``keep``; collective on multi-host runs."""

  def __init__(self, directory: str, keep: int = 2):
    self.directory = paths.display(directory)  # a URL or an absolute path, for messages
    self._keep = keep
    self._unconfirmed = False  # a save was started and its outcome not yet collected
    self._remote = paths.is_remote(self.directory)
    if self._remote:
      bound_tensorstore_retries(paths.deadline_s())
    _quiet_restores()  # (a failed save leaves writes in flight as a failed restore does)
    with paths.bounded(self.directory, "opening the checkpoints folder"):
      self._manager = self._open()

  def _open(self):
    try:
      manager = ocp.CheckpointManager(
          paths.path(self.directory), options=ocp.CheckpointManagerOptions(max_to_keep=self._keep, create=True),
          item_names=("state", "meta"))
    except OSError as e:
      raise CheckpointError(f"cannot create the checkpoint folder {self.directory} "
                            f"({e.strerror or e}): choose a writable --workdir") from None
    # The training loop owns JAX's pre-emption sync point (``resume.StopRequests``): its
    # counter must see only the loop's steps, not the manager's checks with step numbers.
    manager.reached_preemption = lambda step: False
    return manager

  def latest_step(self):
    """The newest saved step, or None when the folder holds none."""
    with paths.bounded(self.directory, "listing the checkpoints"):
      return self._manager.latest_step()

  def all_steps(self):
    """Every saved step, oldest first."""
    with paths.bounded(self.directory, "listing the checkpoints"):
      return sorted(self._manager.all_steps())

  def save(self, step: int, state, meta: dict) -> None:
    """Start saving ``step`` (asynchronously); first raise any error of an earlier save."""
    self.check()
    meta = dict(meta, digests=digests(state))
    try:  # (waits for the save before; a bucket that does not answer ends the run)
      with paths.bounded(self.directory, f"saving checkpoint {step}"):
        self._manager.save(int(step), args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)))
    except Exception as e:  # noqa: BLE001 - a failed write, whatever orbax calls it
      raise self._write_error(step, e) from None
    self._unconfirmed, self._pending = True, int(step)

  def check(self) -> None:
    """Raise ``CheckpointError`` if a finished asynchronous save has failed (cheap, never
    blocks on a save in progress: the training loop calls it every step)."""
    if not self._unconfirmed or self._manager.is_saving_in_progress():
      return  # nothing to collect (the manager is only asked once per save)
    self._unconfirmed = False
    try:
      with paths.bounded(self.directory, f"finishing checkpoint {self._pending}"):
        self._manager.wait_until_finished()  # returns at once; raises the save's error
        self._manager.check_for_errors()
    except Exception as e:  # noqa: BLE001
      raise self._write_error(None, e) from None
    LAST_COMPLETE[self.directory] = self._pending

  def _write_error(self, step, e) -> CheckpointError:
    what = f"checkpoint {step}" if step is not None else "a checkpoint"
    reason = f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"
    if self._remote:  # the bucket, not a disk; asking it for its latest step may hang
      last = LAST_COMPLETE.get(self.directory)
      return CheckpointError(paths.bucket_failure_message(
          self.directory, f"writing {what}: {reason}",
          f"{self.directory}/{last}" if last is not None else None))
    latest = self.latest_step()
    since = f"its last complete checkpoint, step {latest}" if latest is not None else "the start"
    return CheckpointError(f"writing {what} to {self.directory} failed ({reason}). Free space "
                           f"there (or choose another --workdir) and rerun the same command: "
                           f"it resumes from {since}")

  def restore(self, step: int, abstract_state):
    """Restore ``step`` into the shapes and shardings of ``abstract_state``, verifying the
    digests saved with it."""
    hint = (f"delete (or move away) {self.directory}/{step} to resume from an older "
            f"checkpoint{self._older(step)}, or start a new workdir")
    _quiet_restores()
    try:
      with paths.bounded(self.directory, f"reading checkpoint {step}"):
        restored = self._manager.restore(int(step), args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
    except Exception as e:  # noqa: BLE001 - orbax raises many types for unreadable data
      raise CheckpointError(
          f"checkpoint {self.directory}/{step} cannot be restored ({_reason(e)}). It is "
          f"corrupt or from a different model/config: {hint}") from None
    meta = dict(restored.meta)
    saved = meta.pop("digests", None)
    if saved is not None:
      bad = [k for k, v in digests(restored.state).items() if saved.get(k) != v]
      if bad:
        raise CheckpointError(f"checkpoint {self.directory}/{step} is corrupt: {len(bad)} tensor(s) "
                              f"differ from the digests saved with them ({', '.join(bad[:3])}): {hint}")
    LAST_COMPLETE[self.directory] = int(step)
    return restored.state, meta

  def read_meta(self, step: int) -> dict:
    """The meta saved with ``step`` (without reading the state)."""
    _quiet_restores()
    try:
      restored = self._manager.restore(int(step), args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
    except Exception as e:  # noqa: BLE001
      raise CheckpointError(f"the meta of checkpoint {self.directory}/{step} cannot be read "
                            f"({type(e).__name__})") from None
    meta = dict(restored.meta)
    meta.pop("digests", None)
    return meta

  def _older(self, step) -> str:
    older = [s for s in self.all_steps() if s < step]
    return f" ({self.directory}/{older[-1]})" if older else ""

  def set_aside(self, step: int) -> str:
    """Rename a corrupt step folder out of the manager's sight; returns its new path."""
    self._manager.wait_until_finished()
    src = paths.path(self.directory) / str(step)
    dst = paths.path(self.directory) / f"corrupt-{step}"
    src.rename(dst)
    self._manager.reload()
    return str(dst)

  def wait(self):
    """Block until the pending saves are written; raise the first write error."""
    pending, self._unconfirmed = self._unconfirmed, False
    try:
      with paths.bounded(self.directory, "finishing a checkpoint"):
        self._manager.wait_until_finished()
    except Exception as e:  # noqa: BLE001
      raise self._write_error(None, e) from None
    if pending:
      LAST_COMPLETE[self.directory] = self._pending
    self.check()

  def close(self):
    """Finish the pending saves (raising their errors) and release the manager."""
    try:
      self.wait()
    finally:
      self._manager.close()


def resolve(path: str) -> tuple[str, int | None]:
  """A workdir, a checkpoints folder or one step folder -> (checkpoints folder, step or None)."""
  shown = paths.display(path)
  p = paths.path(shown)
  if not p.exists():
    raise errors.NotFound(f"checkpoint path {shown} does not exist")
  if (p / "state").is_dir() and p.name.isdigit():
    return paths.display(p.parent), int(p.name)
  if (p / "checkpoints").is_dir():
    return paths.display(p / "checkpoints"), None
  return shown, None


def open_step(path: str) -> tuple["Checkpointer", str, int]:
  """``resolve(path)``, opened: ``(checkpointer, checkpoints folder, step)`` with the
  latest step where ``path`` names none. The caller closes the checkpointer."""
  directory, step = resolve(path)
  ckpt = Checkpointer(directory)
  step = ckpt.latest_step() if step is None else step
  if step is None:
    ckpt.close()
    raise errors.NotFound(f"no checkpoint in {directory}")
  return ckpt, directory, step


def abstract(state, sharding=None):
  """Shapes, dtypes and sharding of ``state`` (what ``restore`` fills): ``sharding`` for
  every leaf, or (None) each leaf's own, as a freshly built state of the run has it."""
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype,
                                                     sharding=sharding or x.sharding), state)
