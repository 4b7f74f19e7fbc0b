"""The watchdog of a multi-process run (``train.peers``) against a stand-in for the
coordination service's key-value store, and the stop requests of one process."""

import threading
import time

import pytest

from lgla_jax.train import peers, resume


class FakeStore:
  """The two calls of JAX's distributed client the watchdog makes."""

  def __init__(self):
    self.values, self.lock, self.up = {}, threading.Lock(), True

  def key_value_set(self, key, value, allow_overwrite=False):
    if not self.up:
      raise RuntimeError("UNAVAILABLE: Socket closed")
    with self.lock:
      self.values[key] = value

  def key_value_dir_get(self, prefix):
    if not self.up:
      raise RuntimeError("UNAVAILABLE: Socket closed")
    with self.lock:
      return [(k, v) for k, v in self.values.items() if k.startswith(prefix)]


@pytest.fixture
def watch():
  """``watch(store, me, n) -> (watchdog, exit statuses)``; every watchdog stopped after."""
  started = []

  def start(store, me, n, bound_s=0.5):
    ended = []
    dog = peers.Watchdog(store, me, n, bound_s, exit_fn=ended.append)
    dog.resume_hint = lambda: "/runs/a/checkpoints/140"
    started.append(dog)
    return dog.start(), ended

  yield start
  for dog in started:
    dog.stop()


def _wait(ended, seconds):
  t0 = time.monotonic()
  while not ended and time.monotonic() - t0 < seconds:
    time.sleep(0.05)
  return time.monotonic() - t0


def test_a_silent_peer_ends_the_process_within_the_bound_with_one_line(capsys, watch):
  store = FakeStore()
  a, ended_a = watch(store, 0, 2)
  b, ended_b = watch(store, 1, 2)
  time.sleep(1.0)  # both beat: nobody is missed
  assert ended_a == ended_b == []
  b.stop()  # process 1 stops beating (as if killed) without saying it is done
  waited = _wait(ended_a, 5)
  assert ended_a == [1] and waited < 0.5 + 3 * a.period_s + 0.5
  lines = capsys.readouterr().err.strip().splitlines()
  assert len(lines) == 1
  assert lines[0].startswith("error: process 1 of this run has been silent") and "checkpoints/140" in lines[0]


def test_a_peer_that_finished_is_not_missed(watch):
  store = FakeStore()
  a, ended_a = watch(store, 0, 2)
  b, _ = watch(store, 1, 2)
  time.sleep(0.4)
  b.finished()  # its run ended normally: process 0 writes its reports meanwhile
  b.stop()
  time.sleep(1.5)
  assert ended_a == []


def test_an_unreachable_coordinator_ends_the_process(capsys, watch):
  store = FakeStore()
  watch(store, 0, 2)
  _, ended = watch(store, 1, 2)
  time.sleep(0.3)
  store.up = False  # process 0, which hosts the store, is gone
  _wait(ended, 5)
  assert ended == [1]
  assert "coordination service (on process 0) has not answered" in capsys.readouterr().err


@pytest.mark.parametrize("raw", ["0", "-3", "soon"])
def test_a_bad_bound_is_refused(raw):
  with pytest.raises(ValueError, match="LGLA_PEER_TIMEOUT_S"):
    peers.timeout_s({"LGLA_PEER_TIMEOUT_S": raw})
  assert peers.timeout_s({}) == peers.DEFAULT_TIMEOUT_S
  assert peers.jax_heartbeat_timeout(60) > 60  # JAX's abort comes after the watchdog's line


def test_one_process_stops_on_its_own_flag():
  stops = resume.StopRequests(start_step=10)
  assert not stops.several and not stops.reached(11)
  resume.request_stop()
  try:
    assert stops.reached(12) and stops.asked_here()
  finally:
    resume.STOP.clear()
