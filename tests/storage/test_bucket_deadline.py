"""storage.paths: the bucket deadline, the retries of transient failures and the watchdog
that ends a bucket operation stuck past its deadline."""

import time

import pytest

from lgla_jax.storage import paths


def test_deadline_from_the_environment():
  assert paths.deadline_s({}) == paths.DEFAULT_DEADLINE_S <= 180
  assert paths.deadline_s({paths.DEADLINE_ENV: "5"}) == 5.0
  for bad in ("0", "-3", "soon"):
    with pytest.raises(ValueError, match=paths.DEADLINE_ENV):
      paths.deadline_s({paths.DEADLINE_ENV: bad})


class _Http(Exception):
  def __init__(self, code):
    super().__init__(f"HTTP {code}")
    self.code = code


def test_transient_errors_are_told_from_the_others():
  assert paths.is_transient(ConnectionRefusedError())
  assert paths.is_transient(_Http(503)) and paths.is_transient(_Http(429))
  assert not paths.is_transient(_Http(403)) and not paths.is_transient(_Http(404))
  assert not paths.is_transient(ValueError("bad"))
  try:  # found in the chain, as a library wraps it
    try:
      raise ConnectionResetError()
    except ConnectionResetError as e:
      raise RuntimeError("upload failed") from e
  except RuntimeError as e:
    assert paths.is_transient(e)


def test_retrying_retries_transient_failures_until_the_deadline():
  calls = []

  def flaky():
    calls.append(time.monotonic())
    if len(calls) < 3:
      raise ConnectionRefusedError()
    return "ok"

  assert paths.retrying(flaky, deadline=10) == "ok" and len(calls) == 3
  assert calls[2] - calls[1] > calls[1] - calls[0] > 0.4  # backoff doubles

  def down():
    calls.append(1)
    raise _Http(503)

  t0 = time.monotonic()
  with pytest.raises(_Http):
    paths.retrying(down, deadline=1.2)
  assert 1.0 < time.monotonic() - t0 < 3

  def denied():
    calls.append(1)
    raise _Http(403)

  calls.clear()
  with pytest.raises(_Http):
    paths.retrying(denied, deadline=10)
  assert len(calls) == 1  # not transient: no retry


def test_a_bounded_operation_stuck_past_its_deadline_calls_the_handler():
  fired = []
  previous = paths._WATCHDOG.handler
  paths.on_deadline(lambda url, what, waited: fired.append((url, what, waited)))
  try:
    with paths.bounded("gs://b/w", "quick", deadline=0.5):
      pass  # done in time: nothing
    with paths.bounded("/local/folder", "local", deadline=0.01):
      time.sleep(0.4)  # a local path is not watched
    with paths.bounded("gs://b/w", "saving checkpoint 7", deadline=0.3):
      t0 = time.monotonic()
      while not fired and time.monotonic() - t0 < 5:
        time.sleep(0.05)
  finally:
    paths.on_deadline(previous)
  assert fired == [("gs://b/w", "saving checkpoint 7", 0.3)]
  assert time.monotonic() - t0 < 1.5


def test_the_failure_line_names_the_url_and_the_checkpoint():
  line = paths.bucket_failure_message("gs://b/run", "ConnectionError: refused", "gs://b/run/checkpoints/42")
  assert "gs://b/run" in line and "gs://b/run/checkpoints/42" in line and "rerun the same command" in line
  assert "no checkpoint" in paths.bucket_failure_message("gs://b/run", "x", None)
  assert "\n" not in line
