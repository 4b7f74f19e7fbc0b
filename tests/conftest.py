"""Test set-up: 8 simulated CPU devices (before jax is imported), the golden fixtures, the
shared helpers (``helpers.py``, ``fixtures/official_checkpoint.py``) and the fixtures many
folders use (a loopback file server, the official ResNet-32)."""

import hashlib
import json
import http.server
import os
import pathlib
import shutil
import sys
import tempfile
import threading

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
# loopback and fails at once (the ``server`` fixture below serves files on 127.0.0.1).
os.environ["LGLA_DATA_MIRROR"] = "http://127.0.0.1:9"

import numpy as np  # noqa: E402
import pytest  # noqa: E402

TESTS = pathlib.Path(__file__).parent
GOLDEN = TESTS / "fixtures" / "golden"
sys.path[:0] = [str(TESTS), str(TESTS / "fixtures")]  # helpers, official_checkpoint


@pytest.fixture(scope="session")
def golden():
  """Load a golden file (made by running the official PyTorch code: fixtures/golden/README.md)."""

  def load(name):
    path = GOLDEN / name
    if name.endswith(".npz"):
      return np.load(path)
    return json.loads(path.read_text())

  return load


# grain's worker processes read absl flags: mark them parsed as absl.app.run would.
from absl import flags  # noqa: E402

flags.FLAGS.mark_as_parsed()

import jax.numpy as jnp  # noqa: E402
from helpers import FileHandler  # noqa: E402
from lgla_jax.data import download  # noqa: E402
from lgla_jax.interop import convert  # noqa: E402


def pytest_sessionfinish(session):
  """Remove the session's XLA cache (made by this process, not inherited from the caller)."""
  if "_OWN_CACHE" in globals():
    shutil.rmtree(_OWN_CACHE, ignore_errors=True)


@pytest.fixture(scope="session")
def gcs_server(tmp_path_factory):
  """A fake-gcs-server on loopback for the whole session (``helpers.FakeGcs``); its env is
  set in this process, so epath/gcsfs, google-cloud-storage and orbax reach it."""
  from helpers import FakeGcs
  fake = FakeGcs(tmp_path_factory.mktemp("gcs")).start()
  old = {k: os.environ.get(k) for k in fake.env}
  os.environ.update(fake.env)
  yield fake
  fake.stop()
  for k, v in old.items():
    if v is None:
      os.environ.pop(k, None)
    else:
      os.environ[k] = v


@pytest.fixture
def gcs(gcs_server):
  """A fresh ``gs://`` folder in the running fake server (started again if a test stopped it)."""
  if gcs_server.proc is None:
    gcs_server.start()
  gcs.count = getattr(gcs, "count", 0) + 1
  return f"gs://{gcs_server.bucket}/t{gcs.count}"


@pytest.fixture
def server(monkeypatch):
  """A loopback server; ``serve(name, path, body)`` puts a file on it and points the
  download table's entry for it there."""
  handler = type("Handler", (FileHandler,), {"files": {}, "mode": {}, "requests": []})
  httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
  threading.Thread(target=httpd.serve_forever, daemon=True).start()
  base = f"http://127.0.0.1:{httpd.server_address[1]}"
  monkeypatch.delenv("LGLA_DATA_MIRROR", raising=False)
  table = {k: list(v) for k, v in download.FILES.items()}
  monkeypatch.setattr(download, "FILES", table)

  def serve(name, index, body, md5=None, mode=None):
    remote = table[name][index]
    path = f"/{remote.filename}"
    handler.files[path] = body
    if mode:
      handler.mode[path] = mode
    table[name][index] = download.Remote(remote.filename, base + path,
                                         md5 or hashlib.md5(body).hexdigest())
    return table[name][index]

  serve.handler = handler
  serve.base = base
  yield serve
  httpd.shutdown()



@pytest.fixture(scope="module")
def official(golden):
  d = golden("resnet32_e3_c100.npz")
  sd = {k: d[k] for k in d["state_dict_keys"]}
  x = jnp.asarray(d["input_nchw"].transpose(0, 2, 3, 1))
  return d, convert.variables_from_torch(sd, 3), x



def pytest_collection_modifyitems(config, items):
  """Everything under tests/integration/ is marked ``integration``: the fast tier
  (``-m "not slow and not integration"``) is that folder left out."""
  integration = TESTS / "integration"
  for item in items:
    if integration in pathlib.Path(item.fspath).parents:
      item.add_marker(pytest.mark.integration)
