"""The lock of a bucket workdir (against a fake GCS server): refused while its holder
beats, taken over (one warning) once its heartbeat is stale, by one of two takers only;
and the one line for a bucket that is missing, forbidden or unreachable."""

import json
import time

import pytest
from helpers import ForbiddingGcs

from lgla_jax.errors import WorkdirError
from lgla_jax.storage import paths
from lgla_jax.train import workdir as workdir_lib


def _lock_of(gcs):
  found = paths.read_object(f"{gcs}/.lock")
  return (json.loads(found[0]), found[1]) if found else (None, None)


def _other_holder(age_s):
  return json.dumps({"host": "vm-gone", "pid": 4242, "started": "2026-12-05 08:00:00",
                     "heartbeat": time.time() - age_s})


def test_the_lock_beats_while_held_and_is_released(gcs, monkeypatch):
  monkeypatch.setenv(workdir_lib.HEARTBEAT_ENV, "0.5")
  with workdir_lib.lock(gcs):
    first, gen = _lock_of(gcs)
    assert first["pid"] > 0 and "host" in first and "started" in first
    time.sleep(1.6)
    later, later_gen = _lock_of(gcs)
    assert later["heartbeat"] > first["heartbeat"] and later_gen != gen
    with pytest.raises(WorkdirError, match="in use by a lgla-jax run"):  # a second run
      with workdir_lib.lock(gcs):
        pass
  assert _lock_of(gcs) == (None, None)


def test_a_fresh_lock_of_another_host_is_refused_a_stale_one_taken_over(gcs, monkeypatch, capsys):
  monkeypatch.setenv(workdir_lib.STALE_ENV, "600")
  assert paths.create_if_absent(f"{gcs}/.lock", _other_holder(age_s=30))
  with pytest.raises(WorkdirError) as refused:
    with workdir_lib.lock(gcs):
      pass
  message = str(refused.value)
  assert "vm-gone" in message and "LGLA_LOCK_STALE_S" in message and f"{gcs}/.lock" in message
  assert "\n" not in message
  paths.delete_object(f"{gcs}/.lock", _lock_of(gcs)[1])
  assert paths.create_if_absent(f"{gcs}/.lock", _other_holder(age_s=700))
  with workdir_lib.lock(gcs):
    assert _lock_of(gcs)[0]["host"] != "vm-gone"
  out = capsys.readouterr().out.strip().splitlines()
  assert len(out) == 1 and out[0].startswith("warning: took over") and "vm-gone" in out[0]
  assert "heartbeat is 70" in out[0] and "LGLA_LOCK_STALE_S=600" in out[0]


def test_of_two_runs_taking_over_a_stale_lock_one_wins(gcs):
  obj = f"{gcs}/.lock"
  assert paths.create_if_absent(obj, _other_holder(age_s=10_000))
  _, stale_gen = _lock_of(gcs)
  # both found the same stale generation; the replace is conditional on it
  assert paths.write_object(obj, "first taker", if_generation=stale_gen) is not None
  assert paths.write_object(obj, "second taker", if_generation=stale_gen) is None
  assert paths.path(obj).read_text() == "first taker"


def test_a_missing_bucket_is_one_line(gcs_server):
  with pytest.raises(WorkdirError) as e:
    with workdir_lib.lock("gs://no-such-bucket-lgla/run"):
      pass
  assert str(e.value).startswith("the bucket gs://no-such-bucket-lgla does not exist")
  assert "\n" not in str(e.value)


def test_no_permission_is_one_line_at_once(monkeypatch):
  # fake-gcs-server has no IAM: a server answering 403 to everything stands for a bucket
  # this account may not write
  denying = ForbiddingGcs()
  try:
    for k, v in denying.env.items():
      monkeypatch.setenv(k, v)
    t0 = time.monotonic()
    with pytest.raises(WorkdirError) as e:
      with workdir_lib.lock("gs://lgla-test/run"):
        pass
  finally:
    denying.stop()
  assert time.monotonic() - t0 < 5  # 403 is not retried
  assert str(e.value).startswith("no permission to write gs://lgla-test/run/.lock (403")
  assert "storage.objects.create" in str(e.value)


def test_an_unreachable_server_is_one_line_within_the_deadline(monkeypatch):
  monkeypatch.setenv("STORAGE_EMULATOR_HOST", "http://127.0.0.1:9")  # nothing listens
  monkeypatch.setenv(paths.DEADLINE_ENV, "3")
  t0 = time.monotonic()
  with pytest.raises(WorkdirError) as e:
    with workdir_lib.lock("gs://lgla-test/run"):
      pass
  assert time.monotonic() - t0 < 3 + 8  # retried within the deadline (+ one try's timeout)
  assert "cannot reach gs://lgla-test/run" in str(e.value) and "3 s" in str(e.value)
  assert "\n" not in str(e.value)
