"""Stopping and resuming a run: the stop request (SIGTERM, SIGINT), what a checkpoint
records about its run, and restoring the latest good checkpoint of a workdir."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading

import jax
from jax.experimental import multihost_utils

from lgla_jax.storage import paths
from lgla_jax.train import checkpoint, workdir as workdir_lib

# Set by SIGTERM / SIGINT or by ``request_stop()``: the loop saves a checkpoint at the
# current step and returns; rerunning the same command resumes at that exact batch.
STOP = threading.Event()
# A stopped run's exit status (EX_TEMPFAIL: "try again"), so that wrappers do not take it
# for success.
STOPPED_EXIT_STATUS = 75


def synced() -> bool:
  """Whether stop requests go through JAX's pre-emption sync point: a run of several
  processes (``jax.distributed.initialize`` starts the coordination service's pre-emption
  sync manager, which catches SIGTERM itself). One process: the ``STOP`` flag."""
  return jax.process_count() > 1 and bool(jax.config.jax_enable_preemption_service)


def request_stop():
  """Ask the training loop to stop at its next step, with a checkpoint (on several
  processes: a pre-emption notice to this process, which all of them act on together)."""
  if synced():
    os.kill(os.getpid(), signal.SIGTERM)
  else:
    STOP.set()


@contextlib.contextmanager
def stop_on_signals():
  """SIGTERM (preemption) and a first Ctrl-C ask the loop to stop at the next step with a
  checkpoint; a second Ctrl-C interrupts at once. On several processes SIGTERM stays with
  JAX's pre-emption notifier and a first Ctrl-C is passed on to it as SIGTERM."""
  if threading.current_thread() is not threading.main_thread():
    yield
    return
  several = synced()

  def on_int(*_):
    request_stop()
    signal.signal(signal.SIGINT, signal.default_int_handler)

  signals = (signal.SIGINT,) if several else (signal.SIGTERM, signal.SIGINT)
  previous = {s: signal.getsignal(s) for s in signals}
  if not several:
    signal.signal(signal.SIGTERM, lambda *_: STOP.set())
  signal.signal(signal.SIGINT, on_int)
  try:
    yield
  finally:
    for s, handler in previous.items():
      signal.signal(s, handler)


class StopRequests:
  """Asked after every dispatch whether to stop there. One process: whether ``STOP`` is
  set. Several: JAX's pre-emption sync point (``multihost_utils.
  reached_preemption_sync_point``), True on every process at the same step once any one
  of them got SIGTERM (or a Ctrl-C, passed on as SIGTERM). Its counter must run through
  every step from the same start on every process: here the steps taken since the loop
  started (``CheckpointManager.reached_preemption`` is kept from calling it with other
  numbers: ``checkpoint.Checkpointer``). A dispatch of several steps asks for each of them
  in turn and stops at its end, the same end on every process."""

  def __init__(self, start_step: int):
    self.several, self.start, self.asked = synced(), start_step, start_step

  def reached(self, step: int) -> bool:
    """Whether to stop at ``step`` (call once per dispatch, on every process)."""
    if not self.several:
      return STOP.is_set()
    hit = False
    for s in range(self.asked + 1, step + 1):
      hit = multihost_utils.reached_preemption_sync_point(s - self.start) or hit
    self.asked = step
    return hit

  def asked_here(self) -> bool:
    """One process: a request that came during the epoch's save or evaluation (several
    processes: those wait for the sync point)."""
    return not self.several and STOP.is_set()


def config_json(config) -> dict:
  """A config as plain JSON data, as checkpoints and workdirs record it."""
  return json.loads(config.to_json_best_effort())


def meta(config, epoch, step, num_train, epoch_steps: int = 0) -> dict:
  """What a checkpoint records about its run (besides the digests ``checkpoint`` adds):
  ``epoch`` counts completed epochs, ``epoch_steps`` the steps taken into the next one (a
  checkpoint saved on a stop request; 0 at the end of an epoch)."""
  return {"epoch": int(epoch), "epoch_steps": int(epoch_steps), "step": int(step),
          "seed": int(config.seed),
          "num_train_images": int(num_train), "batch_size": int(config.batch_size),
          "drop_last_batch": bool(config.drop_last_batch), "config": config_json(config)}


def restore_latest(ckpt, state, config, mesh, num_train, log) -> tuple:
  """Resume from the latest checkpoint of the workdir. One made for other data, or with
  other training settings (unless ``config.resume_with_changes``), is refused, from its
  meta before the state is read; a corrupt one is set aside (with a message) for the one
  before it. Returns ``(state, config changes accepted on resume)``."""
  abstract = checkpoint.abstract(state)
  while (latest := ckpt.latest_step()) is not None:
    changes = _compare(ckpt, latest, config, num_train)
    try:
      restored, saved = ckpt.restore(latest, abstract)
      break
    except checkpoint.CheckpointError as e:
      if changes:  # the accepted changes may not fit the saved state: it is not corrupt
        raise checkpoint.CheckpointError(f"{e}\n(the config changes accepted on resume, "
                                         f"{'; '.join(changes)}, may not fit it)") from None
      if len(ckpt.all_steps()) < 2 or jax.process_count() > 1:
        raise
      moved = ckpt.set_aside(latest)
      log.print(f"warning: {e}\nmoved it to {moved}; resuming from the checkpoint before it")
  else:
    return state, []
  into = f" + {saved['epoch_steps']} steps" if saved.get("epoch_steps") else ""
  log.print(f"resuming from {ckpt.directory}/{latest} (epoch {saved['epoch']}{into}, step "
            f"{int(jax.device_get(restored.step))})" +
            (f" with changed settings: {'; '.join(changes)}" if changes else ""))
  return restored, [{"step": int(latest), "changes": changes}] if changes else []


def _compare(ckpt, step: int, config, num_train) -> list[str]:
  """Refuse a checkpoint whose meta says it belongs to another run; returns the config
  changes accepted (``resume_with_changes``). An unreadable meta passes: restoring the
  state finds it corrupt."""
  try:
    saved = ckpt.read_meta(step)
  except checkpoint.CheckpointError:
    return []
  expected = meta(config, 0, step, num_train)
  saved.setdefault("drop_last_batch", True)  # checkpoints from before the option dropped it
  for key in ("seed", "num_train_images", "batch_size", "drop_last_batch"):
    if saved.get(key) != expected[key]:
      raise checkpoint.CheckpointError(
          f"checkpoint {ckpt.directory}/{step} was made with {key}={saved.get(key)}, this "
          f"run has {expected[key]}: use a new workdir")
  if "config" not in saved:
    return []
  changes = workdir_lib.config_changes(saved["config"], expected["config"],
                                       ignore=workdir_lib.MAY_CHANGE_ON_RESUME)
  if changes and not config.resume_with_changes:
    raise checkpoint.CheckpointError(
        f"checkpoint {ckpt.directory}/{step} was trained with another config; changed: "
        f"{'; '.join(changes)}. Use a new workdir, or pass "
        f"--config.resume_with_changes=True to continue with the new values (the report "
        f"records them)")
  return changes


def earlier_evaluations(workdir: str, upto_step: int, kind: str = "eval") -> list[dict]:
  """The evaluation history of the runs this one resumes, from their metrics.jsonl (the
  last entry per step, none after the checkpoint resumed from); ``kind``: ``eval`` (test)
  or ``val`` (the validation split)."""
  by_step = {}
  path = paths.path(workdir) / "metrics.jsonl"
  if upto_step and path.exists():
    with path.open() as f:
      for line in f:
        try:
          entry = json.loads(line)
        except json.JSONDecodeError:  # a line cut short by a crash
          continue
        if entry.get("kind") == kind and entry.get("step", upto_step + 1) <= upto_step:
          by_step[entry["step"]] = {k: v for k, v in entry.items() if k not in ("step", "kind")}
  return [by_step[k] for k in sorted(by_step)]
