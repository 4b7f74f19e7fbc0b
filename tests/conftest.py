"""Test set-up: 8 simulated CPU devices (before jax is imported) and the golden fixtures."""

import os
import pathlib
import shutil
import tempfile

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# One persistent XLA cache for the whole session (xdist workers and the CLI subprocesses
# inherit it): many tests compile the same quick configs' steps, and compiling is most of a
# test's time on 2 cores. A cache hit is the same executable, so no number changes; the
# tests of the cache itself set their own folder.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="lgla-tests-xla-cache-")
  _OWN_CACHE = os.environ["JAX_COMPILATION_CACHE_DIR"]
# No test reaches the internet: a download a test did not arrange goes to a closed port on
# loopback and fails at once (tests/test_download.py serves files on 127.0.0.1).
os.environ["LGLA_DATA_MIRROR"] = "http://127.0.0.1:9"

import numpy as np  # noqa: E402
import pytest  # noqa: E402

GOLDEN = pathlib.Path(__file__).parent / "golden"


@pytest.fixture(scope="session")
def golden():
  """Load a golden file (copies of ../shared/golden, made by the official PyTorch code)."""

  def load(name):
    path = GOLDEN / name
    if name.endswith(".npz"):
      return np.load(path)
    import json
    return json.loads(path.read_text())

  return load


# grain's worker processes read absl flags: mark them parsed as absl.app.run would.
from absl import flags  # noqa: E402

flags.FLAGS.mark_as_parsed()


def pytest_sessionfinish(session):
  """Remove the session's XLA cache (made by this process, not inherited from the caller)."""
  if "_OWN_CACHE" in globals():
    shutil.rmtree(_OWN_CACHE, ignore_errors=True)
