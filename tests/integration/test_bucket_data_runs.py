"""Data and weights in a bucket (gs://, a fake-gcs-server on loopback): Fashion-MNIST's IDX
files read from the bucket give the same run as from a folder; ``model.init_from`` and
export take bucket URLs; a data file missing from a bucket data_dir is one line."""

import json
import pathlib
import time

import jax
import numpy as np
import pytest
from safetensors.numpy import load_file

from helpers import ROOT, cli, config_of, upload
from lgla_jax import export
from lgla_jax.data import readers, splits as data_splits
from lgla_jax.interop import convert
from lgla_jax.storage import paths
from lgla_jax.train import checkpoint, resume, run as run_lib, sharding

FMNIST = pathlib.Path("/usr/share/datasets/fashion-mnist")
QUICK = [f"--config={ROOT / 'configs/fmnist_lt_ir100.py'}:quick", "--config.dataset.max_per_class=30",
         "--config.dataset.imbalance_factor=0.1",
         "--config.num_epochs=1", "--config.checkpoint_every_epochs=0"]


def test_fashion_mnist_from_a_bucket_gives_the_same_report_as_from_a_folder(gcs, tmp_path):
  if not (FMNIST / "train-images-idx3-ubyte.gz").exists():
    pytest.fail("needs the Debian package dataset-fashion-mnist")
  t0 = time.time()
  upload(FMNIST, f"{gcs}/fm")
  uploaded = time.time() - t0
  for ours, theirs in zip(readers.load_fashion_mnist(f"{gcs}/fm"), readers.load_fashion_mnist(str(FMNIST))):
    np.testing.assert_array_equal(ours.images, theirs.images)  # (a near-chance quick run
    np.testing.assert_array_equal(ours.labels, theirs.labels)  # alone could hide a difference)
  reports = {}
  for where, data_dir in (("folder", str(FMNIST)), ("bucket", f"{gcs}/fm")):
    done = cli(*QUICK, f"--config.dataset.data_dir={data_dir}", f"--workdir={tmp_path / where}")
    assert done.returncode == 0, done.stderr[-3000:]
    reports[where] = json.loads((tmp_path / where / "report.json").read_text())["final"]
  assert reports["bucket"]["top1"] == reports["folder"]["top1"]
  assert reports["bucket"]["per_class"] == reports["folder"]["per_class"]
  print(f"uploaded in {uploaded:.1f} s; top-1 {reports['bucket']['top1']}")


def test_a_data_file_missing_from_a_bucket_is_one_line(gcs, tmp_path, monkeypatch):
  done = cli(*QUICK, f"--config.dataset.data_dir={gcs}/empty", "--config.dataset.download=False",
             f"--workdir={tmp_path / 'w1'}")
  lines = done.stderr.strip().splitlines()
  assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
  assert len(lines) == 1 and f"{gcs}/empty" in lines[0] and "data_dir" in lines[0], lines
  monkeypatch.setenv("LGLA_DATA_MIRROR", "http://127.0.0.1:9")  # download=True, nothing answers
  done = cli(f"--config={ROOT / 'configs/cifar10_ir100.py'}:quick",
             f"--config.dataset.data_dir={gcs}/c10", f"--workdir={tmp_path / 'w2'}")
  lines = done.stderr.strip().splitlines()
  assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
  assert len(lines) == 1, lines
  assert "http://127.0.0.1:9/cifar-10-python.tar.gz" in lines[0]
  assert f"{gcs}/c10/cifar-10-python.tar.gz" in lines[0] and "by hand" in lines[0]


def _synthetic_splits(num_classes, n=200, size=32):
  rng = np.random.RandomState(0)
  labels = np.arange(n) % num_classes
  data = data_splits.ArrayData(rng.randint(0, 256, (n, size, size, 3), np.uint8), labels)
  return data_splits.DataSplits(data, data, np.bincount(labels, minlength=num_classes), num_classes)


def test_export_to_and_from_a_bucket_and_init_from_a_bucket(gcs, tmp_path):
  config = config_of("cifar100_ir100", "")
  mesh = sharding.make_mesh(jax.devices()[:1])
  run = run_lib.setup(config, mesh, _synthetic_splits(100))
  keys = iter(jax.random.split(jax.random.PRNGKey(5), 10_000))
  shake = lambda x: x + 0.1 * jax.random.normal(next(keys), x.shape, x.dtype)
  state = run.state.replace(params=jax.tree.map(shake, run.state.params),
                            model_state=jax.tree.map(shake, run.state.model_state),
                            step=jax.numpy.asarray(7, jax.numpy.int32))
  for wd in (str(tmp_path / "wd"), f"{gcs}/wd"):  # the same checkpoint on a disk and in a bucket
    ckpt = checkpoint.Checkpointer(f"{wd}/checkpoints")
    ckpt.save(7, state, resume.meta(run.config, 1, 7, 200))
    ckpt.close()
  local = export.export(str(tmp_path / "wd"), str(tmp_path / "m.safetensors"))
  remote = export.export(f"{gcs}/wd", f"{gcs}/out/m.safetensors")  # from and to the bucket
  for k in local:
    np.testing.assert_array_equal(local[k], remote[k], err_msg=k)
  header = lambda raw: json.loads(raw[8:8 + int.from_bytes(raw[:8], "little")])  # (key order varies)
  assert header(paths.path(f"{gcs}/out/m.safetensors").read_bytes()) == \
      header((tmp_path / "m.safetensors").read_bytes())
  back = convert.read_state_dict(f"{gcs}/out/m.safetensors")  # the round trip
  assert sorted(back) == sorted(local)
  for k in local:
    np.testing.assert_array_equal(back[k], local[k], err_msg=k)
  assert [p.name for p in paths.path(f"{gcs}/out").iterdir()] == ["m.safetensors"]  # no probe left
  with pytest.raises(export.ExportError, match="is a folder"):
    export.check_out(f"{gcs}/out")
  want = convert.variables_from_torch(load_file(str(tmp_path / "m.safetensors")), 3)
  for init_from in (str(tmp_path / "m.safetensors"), f"{gcs}/out/m.safetensors"):
    config = config_of("cifar100_ir100", "", **{"model.init_from": init_from})
    started = run_lib.setup(config, mesh, _synthetic_splits(100)).state
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(dict(started.variables())), want)
