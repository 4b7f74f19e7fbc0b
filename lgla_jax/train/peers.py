"""The processes of one multi-process run watch each other: one that dies outright (SIGKILL,
a host gone) ends the others within a bound, with one line, instead of a hang.

Without this, a survivor waits in its next collective (or in orbax's save barrier) until
the coordination service's heartbeat timeout (JAX's default: 100 s), and then JAX aborts
it (SIGABRT, exit 134) with a fatal log line and a C++ stack trace. Here every process
writes a counter into the coordination service's key-value store every few seconds (a
daemon thread, so a process busy compiling, evaluating or saving still beats) and reads
everyone's; a counter unchanged for ``timeout_s`` seconds, or the store itself unreachable
that long (process 0, which hosts it, is gone), ends this process: one ``error:`` line
naming the process and the checkpoint to resume from, exit status 1. JAX's own heartbeat
timeout is set longer (``jax_heartbeat_timeout``), so this line comes first.

The bound is ``LGLA_PEER_TIMEOUT_S`` (default 60 s): the most a survivor waits for a
silent peer. A process that finished its run (or stopped on request) says so
(``finished``): it is not missed while the others write their reports.
"""

from __future__ import annotations

import os
import sys
import threading
import time

from jax._src import distributed as jax_distributed  # the runtime's client (as orbax reads it)

TIMEOUT_ENV = "LGLA_PEER_TIMEOUT_S"
DEFAULT_TIMEOUT_S = 60.0
_PREFIX = "lgla_jax/alive/"
_DONE = "done"

_watchdog = None  # the process's Watchdog, once started


def timeout_s(environ=os.environ) -> float:
  """The configured bound (``LGLA_PEER_TIMEOUT_S``), in seconds."""
  raw = environ.get(TIMEOUT_ENV, "") or str(DEFAULT_TIMEOUT_S)
  try:
    value = float(raw)
  except ValueError:
    value = -1.0
  if not value > 0:
    raise ValueError(f"{TIMEOUT_ENV}={raw!r}: give a number of seconds > 0")
  return value


def jax_heartbeat_timeout(bound_s: float) -> int:
  """JAX's heartbeat timeout for a run whose watchdog bound is ``bound_s``: long enough
  that the watchdog's one line comes before JAX's abort."""
  return int(max(100, 2 * bound_s + 30))


class Watchdog:
  """Beats into the coordination service and ends this process when a peer falls silent."""

  def __init__(self, client, process_id: int, num_processes: int, bound_s: float,
               exit_fn=os._exit):
    self.client, self.me, self.n, self.bound_s = client, process_id, num_processes, bound_s
    self.period_s = min(2.0, bound_s / 5)
    self.resume_hint = lambda: None  # the newest complete checkpoint (set by the training loop)
    self._exit = exit_fn
    now = time.monotonic()
    self._last_change = {p: now for p in range(num_processes) if p != process_id}
    self._values, self._done, self._last_ok = {}, set(), now
    self._finished = threading.Event()
    self._stopped = threading.Event()  # (ended: the threads return)
    self._count = 0

  def start(self) -> "Watchdog":
    """Start the beating and judging threads (daemons: they never hold up an exit)."""
    threading.Thread(target=self._beat, name="lgla-peer-beat", daemon=True).start()
    threading.Thread(target=self._judge, name="lgla-peer-judge", daemon=True).start()
    return self

  def finished(self) -> None:
    """This process ended its run normally: the others must not miss it from now on."""
    self._finished.set()
    try:
      self.client.key_value_set(f"{_PREFIX}{self.me}", _DONE, allow_overwrite=True)
    except Exception:  # noqa: BLE001 - the store gone: the others judge for themselves
      pass

  def stop(self) -> None:
    """Stop watching (the threads return; for tests, where ``exit_fn`` does not exit)."""
    self._stopped.set()

  def _beat(self):
    while not self._stopped.is_set():
      try:
        if not self._finished.is_set():
          self._count += 1
          self.client.key_value_set(f"{_PREFIX}{self.me}", str(self._count), allow_overwrite=True)
        seen = dict(self.client.key_value_dir_get(_PREFIX))
        now = time.monotonic()
        for key, value in seen.items():
          peer = int(key.rsplit("/", 1)[-1])
          if value == _DONE:
            self._done.add(peer)
          elif self._values.get(peer) != value:
            self._values[peer], self._last_change[peer] = value, now
        self._last_ok = now
      except Exception:  # noqa: BLE001 - an unreachable store is judged by its silence
        pass
      time.sleep(self.period_s)

  def _judge(self):
    while not self._stopped.wait(self.period_s):
      now = time.monotonic()
      if now - self._last_ok > self.bound_s:
        self._lost(f"the run's coordination service (on process 0) has not answered for "
                   f"{now - self._last_ok:.0f} s: process 0 died or its host is gone")
        return
      for peer, seen in sorted(self._last_change.items()):
        if peer not in self._done and now - seen > self.bound_s:
          self._lost(f"process {peer} of this run has been silent for {now - seen:.0f} s "
                     f"(> {self.bound_s:g} s, {TIMEOUT_ENV}): it died or its host is gone")
          return

  def _lost(self, what: str):
    try:
      hint = self.resume_hint()
    except Exception:  # noqa: BLE001 - the message must come out whatever the loop's state
      hint = None
    since = (f"it resumes from the last complete checkpoint, {hint}" if hint
             else "it resumes from the last complete checkpoint, if any")
    sys.stdout.flush()
    sys.stderr.write(f"error: {what}. Ending process {self.me} too; rerun the same command "
                     f"on every host: {since}\n")
    sys.stderr.flush()
    self._stopped.set()
    self._exit(1)  # no interpreter shutdown: JAX's would wait at a barrier for the dead peer


def start(bound_s: float | None = None) -> Watchdog | None:
  """Start this process's watchdog (a multi-process run; None on one process)."""
  global _watchdog
  state = jax_distributed.global_state
  if state.client is None or (state.num_processes or 1) < 2:
    return None
  if _watchdog is None:
    _watchdog = Watchdog(state.client, state.process_id, state.num_processes,
                         bound_s or timeout_s()).start()
  return _watchdog


def current() -> Watchdog | None:
  """The process's watchdog, if one was started."""
  return _watchdog


def set_resume_hint(hint) -> None:
  """``hint() -> str | None``: the newest complete checkpoint, for the watchdog's line."""
  if _watchdog is not None:
    _watchdog.resume_hint = hint


def finished() -> None:
  """This process ended its run normally (see ``Watchdog.finished``)."""
  if _watchdog is not None:
    _watchdog.finished()


def wait_for_verdict() -> None:
  """After an unexpected error in a multi-process run (a collective failing because a peer
  died): give the watchdog its bound to end the process with its one line; returns when
  no peer was found missing (the error is this process's own)."""
  if _watchdog is not None:
    time.sleep(_watchdog.bound_s + 2 * _watchdog.period_s)
