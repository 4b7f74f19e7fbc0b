"""Checkpoints out (``lgla_jax.export``) under the official names, and official ones in."""

import subprocess
import sys

import jax
import numpy as np
import pytest

from lgla_jax import export
from lgla_jax.train import run as run_lib
from lgla_jax.data import splits as data_splits
from lgla_jax.interop import convert
from lgla_jax.train import checkpoint
from lgla_jax.train import resume
from lgla_jax.train import sharding
from helpers import ROOT, config_of, cli

pytestmark = pytest.mark.integration  # builds full networks, runs the command lines


def _synthetic_splits(num_classes, n=200, size=32):
  rng = np.random.RandomState(0)
  labels = np.arange(n) % num_classes
  data = data_splits.ArrayData(rng.randint(0, 256, (n, size, size, 3), np.uint8), labels)
  return data_splits.DataSplits(data, data, np.bincount(labels, minlength=num_classes), num_classes)


def _saved_run(tmp_path, name="cifar100_ir100", arg="", **overrides):
  """A run's state with random weights (not its init), saved as a checkpoint of step 7."""
  config = config_of(name, arg, **overrides)
  mesh = sharding.make_mesh(jax.devices()[:1])
  run = run_lib.setup(config, mesh, _synthetic_splits(100))
  keys = iter(jax.random.split(jax.random.PRNGKey(5), 10_000))
  shake = lambda x: x + 0.1 * jax.random.normal(next(keys), x.shape, x.dtype)
  state = run.state.replace(params=jax.tree.map(shake, run.state.params),
                            model_state=jax.tree.map(shake, run.state.model_state),
                            step=jax.numpy.asarray(7, jax.numpy.int32))
  ckpt = checkpoint.Checkpointer(str(tmp_path / "wd" / "checkpoints"))
  ckpt.save(7, state, resume.meta(run.config, 1, 7, 200))
  ckpt.close()
  return run, state


def test_export_writes_the_official_state_dict(tmp_path, golden):
  from safetensors.numpy import load_file
  _, state = _saved_run(tmp_path)
  out = tmp_path / "model.safetensors"
  done = subprocess.run([sys.executable, "-m", "lgla_jax.export", f"--checkpoint={tmp_path / 'wd'}",
                         f"--out={out}"], cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr
  tensors = load_file(str(out))
  official = golden("resnet32_e3_c100.npz")  # the official model's own state_dict
  names = list(official["state_dict_keys"])
  assert sorted(tensors) == sorted(names)  # strict load_state_dict: no missing, no extra
  for name in names:
    assert tensors[name].shape == official[name].shape, name
    assert tensors[name].dtype == official[name].dtype, name
  assert int(tensors["backbone.bn1.num_batches_tracked"]) == 7
  back = convert.variables_from_torch(tensors, 3)  # the values are the checkpoint's
  jax.tree.map(np.testing.assert_array_equal, back,
               jax.device_get(dict(state.variables())))


def test_export_errors(tmp_path):
  done = subprocess.run([sys.executable, "-m", "lgla_jax.export", f"--checkpoint={tmp_path}/none",
                         f"--out={tmp_path}/m.safetensors"], cwd=ROOT, capture_output=True,
                        text=True, timeout=300)
  assert done.returncode == 1 and "does not exist" in done.stderr and "Traceback" not in done.stderr
  with pytest.raises(ValueError, match="one replica"):
    _saved_run(tmp_path, "cifar100_ir100", "quick")
    export.export(str(tmp_path / "wd"), str(tmp_path / "m.safetensors"), replica=1)


def test_export_takes_one_replica_of_a_replica_run(tmp_path):
  from lgla_jax.train import state as state_lib
  _, state = _saved_run(tmp_path, "cifar100_ir100", "quick", **{"replicas.seeds": (3, 4)})
  tensors = export.export(str(tmp_path / "wd"), str(tmp_path / "m.safetensors"), replica=1)
  want = jax.device_get(dict(state_lib.replica(state, 1).variables()))
  jax.tree.map(np.testing.assert_array_equal, convert.variables_from_torch(tensors, 3), want)
  with pytest.raises(ValueError, match="replicas 0..1"):
    export.export(str(tmp_path / "wd"), str(tmp_path / "m.safetensors"), replica=2)


def _official_state_dict(golden):
  d = golden("resnet32_e3_c100.npz")
  return d, {k: d[k] for k in d["state_dict_keys"]}


def test_an_official_trainer_checkpoint_is_evaluated(tmp_path, golden):
  import official_checkpoint
  from lgla_jax.interop import torch_file
  from lgla_jax.train import evaluate_checkpoint
  d, sd = _official_state_dict(golden)
  path = tmp_path / "model_best.pth"
  official_checkpoint.write(path, sd, epoch=200, monitor_best=0.4321)
  read = torch_file.read_checkpoint(str(path))
  assert read["epoch"] == 200 and read["monitor_best"] == pytest.approx(0.4321)
  assert read["arch"] == "ResNet32Model" and sorted(read["state_dict"]) == sorted(sd)
  # Test images labelled with the official model's own predictions: 100% if and only if
  # the checkpoint is read and evaluated as the official code evaluates it.
  predicted = d["eval.output"].argmax(-1)
  images = d["input_uint8_nhwc"]
  splits = data_splits.DataSplits(data_splits.ArrayData(images, predicted),
                               data_splits.ArrayData(images, predicted),
                               np.bincount(np.arange(100) % 100, minlength=100) * 5, 100)
  config = config_of("cifar100_ir100", "", eval_batch_size=16, batch_size=16)
  report = evaluate_checkpoint.evaluate_official(config, str(path), str(tmp_path), splits=splits)
  assert report["top1"] == pytest.approx(1.0) and report["num_images"] == 16
  assert report["epoch"] == 200 and report["official_monitor_best"] == pytest.approx(0.4321)


def test_an_official_checkpoint_that_does_not_fit_names_the_tensors(tmp_path, golden):
  import official_checkpoint
  from lgla_jax.train import evaluate_checkpoint
  _, sd = _official_state_dict(golden)
  sd = dict(sd)
  sd["backbone.extra.weight"] = sd.pop("backbone.layer3s.2.conv1.weight")
  sd["backbone.linears.0.weight"] = sd["backbone.linears.0.weight"][:, :10]
  path = tmp_path / "model_best.pth"
  official_checkpoint.write(path, sd)
  config = config_of("cifar100_ir100", "", eval_batch_size=16, batch_size=16)
  with pytest.raises(ValueError, match=r"(?s)missing \(1\): layer3s.2.conv1.weight.*"
                                       r"unexpected \(1\): extra.weight.*other shapes \(1\): "
                                       r"linears.0.weight is \(64, 10\), the model's \(64, 100\)"):
    evaluate_checkpoint.evaluate_official(config, str(path), str(tmp_path), splits=_synthetic_splits(100))


def test_a_run_starts_from_an_official_checkpoint_or_an_export(tmp_path, golden):
  import official_checkpoint
  _, sd = _official_state_dict(golden)
  path = tmp_path / "model_best.pth"
  official_checkpoint.write(path, sd)
  mesh = sharding.make_mesh(jax.devices()[:1])
  config = config_of("cifar100_ir100", "", **{"model.init_from": str(path)})
  state = run_lib.setup(config, mesh, _synthetic_splits(100)).state
  want = convert.variables_from_torch(sd, 3)
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(dict(state.variables())), want)
  assert int(state.step) == 0  # a fresh run (optimizer and step), from those weights
  out = tmp_path / "m.safetensors"  # and lgla-jax's own export starts a run the same way
  from safetensors.numpy import save_file
  save_file(export.official_state_dict(want, 5), str(out))
  config = config_of("cifar100_ir100", "", **{"model.init_from": str(out)})
  again = run_lib.setup(config, mesh, _synthetic_splits(100)).state
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(dict(again.variables())), want)


def test_the_command_line_evaluates_an_official_checkpoint(tmp_path, golden):
  import json
  import official_checkpoint
  from lgla_jax import models
  config = config_of("demo", "quick")
  model = models.build(config.model, 10, jax.numpy.float32)
  params, model_state = model.init(jax.random.PRNGKey(3), (config.dataset.image_size,) * 2 + (3,))
  sd = export.official_state_dict(jax.device_get({"params": params, **model_state}), 0)
  official_checkpoint.write(tmp_path / "model_best.pth", sd, epoch=12)
  done = cli(f"--config={ROOT / 'configs/demo.py'}:quick", "--mode=eval",
              f"--checkpoint={tmp_path / 'model_best.pth'}", f"--workdir={tmp_path}")
  assert done.returncode == 0, done.stderr
  assert json.loads(done.stdout.strip().splitlines()[-1])["epoch"] == 12
  assert (tmp_path / "eval_report.json").exists()
  _, cifar = _official_state_dict(golden)  # another network's checkpoint: one clear line
  official_checkpoint.write(tmp_path / "other.pth", cifar)
  done = cli(f"--config={ROOT / 'configs/demo.py'}:quick", "--mode=eval",
              f"--checkpoint={tmp_path / 'other.pth'}", f"--workdir={tmp_path}")
  assert done.returncode == 1 and "does not fit this config's network" in done.stderr
  assert "Traceback" not in done.stderr


def test_init_from_errors_are_one_line(tmp_path):
  demo = f"--config={ROOT / 'configs/demo.py'}:quick"
  done = cli(demo, f"--config.model.init_from={tmp_path}/none.pth", f"--workdir={tmp_path}/w")
  assert done.returncode == 1 and "config.model.init_from: the weights" in done.stderr
  assert "Traceback" not in done.stderr
  done = cli(f"--config={ROOT / 'configs/places_lt_resnet152.py'}:quick",
              f"--config.model.init_from={tmp_path}/x.pth", "--config.model.pretrained=/x.pth",
              f"--workdir={tmp_path}/w2")
  assert done.returncode == 2 and "model.init_from" in done.stderr and "Traceback" not in done.stderr
