"""train.checkpoint: tensorstore's retries of bucket requests bounded by the deadline."""

from orbax.checkpoint._src.serialization import tensorstore_utils as ts_utils

from lgla_jax.train import checkpoint


def _total_s(setting):
  first = float(setting["initial_delay"].rstrip("s"))
  longest = float(setting["max_delay"].rstrip("s"))
  total, delay = 0.0, first
  for _ in range(setting["max_retries"]):
    total, delay = total + delay, min(2 * delay, longest)
  return total


def test_tensorstore_retries_fit_the_deadline():
  saved = {n: dict(getattr(ts_utils, n)) for n in ("_BASE_TS_CONTEXT", "_DEFAULT_OCDBT_TS_CONTEXT")}
  try:
    for deadline in (5.0, 120.0, 180.0):
      setting = checkpoint.bound_tensorstore_retries(deadline)
      assert deadline / 2 < _total_s(setting) <= deadline, (deadline, setting)
      # orbax builds its tensorstore contexts from these
      for ocdbt in (True, False):
        used = ts_utils.get_ts_context(use_ocdbt=ocdbt).spec.to_json()["gcs_request_retries"]
        assert used["max_retries"] == setting["max_retries"], used
  finally:
    for n, v in saved.items():
      getattr(ts_utils, n).clear()
      getattr(ts_utils, n).update(v)
