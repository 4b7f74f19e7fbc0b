"""Faults a long run meets: divergence, a full disk, a crash in evaluation, bad labels,
corrupt checkpoints, changed configs, two runs in one workdir, Ctrl-C, usage errors."""

import errno
import json
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

from lgla_jax import errors
from lgla_jax.train import loop
from lgla_jax.train import run as run_lib
from lgla_jax.data import sources
from lgla_jax.data import split_files
from lgla_jax.report import writer
from lgla_jax.train import checkpoint
from lgla_jax.train import evaluation
from lgla_jax.train import sharding
from lgla_jax.train import workdir as workdir_lib
from helpers import ROOT, config_of, cli, interrupt_once_training, make_cifar10_folder, make_tree

pytestmark = pytest.mark.integration


def _restore_latest(workdir, config):
  mesh = sharding.make_mesh()
  template = run_lib.setup(config, mesh).state
  ckpt = checkpoint.Checkpointer(str(pathlib.Path(workdir) / "checkpoints"))
  try:
    step = ckpt.latest_step()
    return step, ckpt.restore(step, checkpoint.abstract(template, sharding.replicated(mesh)))
  finally:
    ckpt.close()


def test_diverging_run_stops_before_saving_and_keeps_the_last_good_checkpoint(tmp_path):
  done = cli(f"--config={ROOT / 'configs/demo.py'}", "--config.optim.lr=1e4",
              "--config.checkpoint_every_epochs=1", "--config.eval_every_epochs=0",
              f"--workdir={tmp_path}", timeout=600)
  assert done.returncode == 1, done.stderr[-2000:]
  assert "error: training diverged at step" in done.stderr and "Traceback" not in done.stderr
  assert not (tmp_path / "report.json").exists()
  step, (state, meta) = _restore_latest(tmp_path, config_of("demo", arg=""))
  diverged_at = int(done.stderr.split("diverged at step ")[1].split()[0])
  assert step < diverged_at and f"checkpoints/{step}" in done.stderr
  assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(state))
  for line in (tmp_path / "metrics.jsonl").read_text().splitlines():
    json.loads(line)  # strict JSON lines even with a non-finite loss in the window


def _fail_finalize(monkeypatch, after=0):
  """Make orbax's commit of every checkpoint after the first ``after`` fail with ENOSPC."""
  from orbax.checkpoint._src.path import atomicity
  original, calls = atomicity.AtomicRenameTemporaryPath.finalize, []

  def finalize(self, *a, **k):
    calls.append(1)
    if len(calls) > after:
      raise OSError(errno.ENOSPC, "No space left on device")
    return original(self, *a, **k)

  monkeypatch.setattr(atomicity.AtomicRenameTemporaryPath, "finalize", finalize)


def test_full_disk_stops_the_run_at_once(tmp_path, monkeypatch):
  _fail_finalize(monkeypatch)
  config = config_of("demo", num_epochs=4, checkpoint_every_epochs=1, eval_every_epochs=0)
  with pytest.raises(checkpoint.CheckpointError, match="No space left on device.*rerun the same command"):
    loop.train_and_evaluate(config, str(tmp_path))
  trained = [json.loads(l)["step"] for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert max(trained, default=0) < 2 * 14  # stopped in epoch 2, not at the end (56 steps)


def test_a_full_disk_on_the_command_line_is_one_message(tmp_path):
  script = ("import errno, runpy, sys\n"
            "from orbax.checkpoint._src.path import atomicity\n"
            "def finalize(self, *a, **k):\n"
            "  raise OSError(errno.ENOSPC, 'No space left on device')\n"
            "atomicity.AtomicRenameTemporaryPath.finalize = finalize\n"
            "sys.argv = ['lgla_jax.main'] + sys.argv[1:]\n"
            "runpy.run_module('lgla_jax.main', run_name='__main__')\n")
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")
  done = subprocess.run([sys.executable, "-c", script, f"--config={ROOT / 'configs/demo.py'}:quick",
                         "--config.checkpoint_every_epochs=1", "--config.num_epochs=3",
                         f"--workdir={tmp_path}"], cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=300)
  assert done.returncode == 1
  assert done.stderr.strip().splitlines() == [done.stderr.strip()]  # one line, no tracebacks
  assert "No space left on device" in done.stderr and not (tmp_path / "report.json").exists()


def test_a_failing_final_save_still_writes_the_report(tmp_path, monkeypatch):
  _fail_finalize(monkeypatch)
  with pytest.raises(checkpoint.CheckpointError, match="No space left"):
    loop.train_and_evaluate(config_of("demo", num_epochs=1), str(tmp_path))
  report = json.loads((tmp_path / "report.json").read_text())
  assert report["final"]["epoch"] == 1 and 0 <= report["final"]["top1"] <= 1


def test_a_crash_in_evaluation_keeps_the_epochs_training(tmp_path, monkeypatch):
  def broken(*a, **k):
    raise errors.DataError("cannot decode image test/0001.jpg")

  monkeypatch.setattr(evaluation, "evaluate_replicas", broken)  # what the loop evaluates with
  with pytest.raises(errors.DataError):
    loop.train_and_evaluate(config_of("demo", num_epochs=2, checkpoint_every_epochs=1), str(tmp_path))
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["14"]
  monkeypatch.undo()
  result = loop.train_and_evaluate(config_of("demo", num_epochs=2, checkpoint_every_epochs=1), str(tmp_path))
  assert result["final"]["epoch"] == 2
  # The resume evaluated epoch 1 again (its evaluation had logged nothing), then went on.
  assert [h["epoch"] for h in result["history"]] == [1, 2]
  evals = [json.loads(x) for x in open(tmp_path / "metrics.jsonl") if '"eval"' in x]
  assert [(x["step"], x["epoch"]) for x in evals] == [(14, 1), (28, 2)]


def test_flipped_bytes_are_found_and_the_previous_checkpoint_is_taken(tmp_path, capsys):
  config = config_of("demo", num_epochs=2, checkpoint_every_epochs=1)
  loop.train_and_evaluate(config, str(tmp_path))
  chunks = [p for p in (tmp_path / "checkpoints" / "28" / "state").rglob("*")
            if p.is_file() and p.stat().st_size > 4096]
  target = max(chunks, key=lambda p: p.stat().st_size)
  data = bytearray(target.read_bytes())
  for i in range(64):
    data[len(data) // 2 + i] ^= 0xFF
  target.write_bytes(bytes(data))
  done = cli(f"--config={ROOT / 'configs/demo.py'}:quick", "--mode=eval",
              f"--checkpoint={tmp_path / 'checkpoints' / '28'}", f"--workdir={tmp_path / 'eval'}")
  assert done.returncode == 1 and "corrupt" in done.stderr and "checkpoints/14" in done.stderr
  assert "Traceback" not in done.stderr and not (tmp_path / "eval" / "eval_report.json").exists()
  capsys.readouterr()
  result = loop.train_and_evaluate(config_of("demo", num_epochs=2, checkpoint_every_epochs=1),
                                    str(tmp_path))
  out = capsys.readouterr().out
  assert "corrupt" in out and "resuming from" in out and "/14 " in out
  assert (tmp_path / "checkpoints" / "corrupt-28").is_dir()
  assert result["final"]["epoch"] == 2 and 0 <= result["final"]["top1"] <= 1


def test_resuming_with_a_changed_config_is_refused_unless_asked(tmp_path):
  loop.train_and_evaluate(config_of("demo", num_epochs=1), str(tmp_path))
  with pytest.raises(checkpoint.CheckpointError, match=r"(?s)loss.tau: 2.0 -> 3.0.*num_epochs: 1 -> 2"):
    loop.train_and_evaluate(config_of("demo", num_epochs=2, **{"loss.tau": 3.0}), str(tmp_path))
  # fields that cannot change what is trained may differ
  with pytest.raises(checkpoint.CheckpointError) as e:
    loop.train_and_evaluate(config_of("demo", num_epochs=2, log_every_steps=3), str(tmp_path))
  assert "log_every_steps" not in str(e.value)
  result = loop.train_and_evaluate(config_of("demo", num_epochs=2, resume_with_changes=True,
                                            **{"loss.tau": 3.0}), str(tmp_path))
  assert result["config_changes_on_resume"][0]["step"] == 14
  assert "loss.tau: 2.0 -> 3.0" in result["config_changes_on_resume"][0]["changes"]


def test_evaluating_with_another_data_sets_config_is_refused(tmp_path):
  loop.train_and_evaluate(config_of("demo", num_epochs=1), str(tmp_path))
  done = cli(f"--config={ROOT / 'configs/demo.py'}:quick", "--config.dataset.imbalance_factor=0.1",
              "--mode=eval", f"--checkpoint={tmp_path}")
  assert done.returncode == 1 and "dataset.imbalance_factor: 0.05 -> 0.1" in done.stderr
  assert not (tmp_path / "eval_report.json").exists() and not (tmp_path / "eval").exists()


def test_a_second_run_in_the_same_workdir_is_refused(tmp_path):
  with workdir_lib.lock(str(tmp_path)):
    with pytest.raises(workdir_lib.WorkdirError, match=f"in use.*pid.*{os.getpid()}"):
      loop.train_and_evaluate(config_of("demo", num_epochs=1), str(tmp_path))
  # a lock left by a dead process (its content, no lock held) is taken over
  (tmp_path / ".lock").write_text('{"host": "gone", "pid": 999999}')
  assert loop.train_and_evaluate(config_of("demo", num_epochs=1), str(tmp_path))["final"]["epoch"] == 1


def test_ctrl_c_saves_and_exits_with_the_stopped_status(tmp_path):
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")
  args = [sys.executable, "-m", "lgla_jax.main", f"--config={ROOT / 'configs/demo.py'}",
          "--config.log_every_steps=5", f"--workdir={tmp_path}"]
  returncode, out, err = interrupt_once_training(args, ROOT, env)
  assert returncode == 75, err[-2000:]
  assert "stopped at step" in out and "rerun the same command" in out
  assert (tmp_path / "checkpoints").is_dir() and not (tmp_path / "report.json").exists()


def test_labels_outside_the_data_sets_classes_are_named(tmp_path):
  import pickle
  make_cifar10_folder(tmp_path, per_class=12)
  batch = tmp_path / "cifar-10-batches-py" / "test_batch"
  raw = pickle.loads(batch.read_bytes())
  raw[b"labels"][7] = 10
  batch.write_bytes(pickle.dumps(raw))
  c = config_of("cifar10_ir100").dataset
  c.data_dir, c.max_per_class, c.download = str(tmp_path), 12, False
  with pytest.raises(errors.DataError, match="test image 7 has label 10.*10 classes"):
    sources.load(c)


def test_reports_are_strict_json_and_never_replaced_by_a_non_finite_one(tmp_path):
  path = str(tmp_path / "report.json")
  assert writer.write_json(path, {"top1": 0.9, "ece": 0.01}) == []
  found = writer.write_json(path, {"top1": 0.1, "ece": float("nan"), "x": [1.0, float("inf")]})
  assert found == ["ece", "x[1]"]
  assert json.loads(pathlib.Path(path).read_text()) == {"top1": 0.9, "ece": 0.01}
  kept = json.loads((tmp_path / "report.non_finite.json").read_text())
  assert kept == {"top1": 0.1, "ece": None, "x": [1.0, None], "non_finite": ["ece", "x[1]"]}


@pytest.mark.parametrize("args,message", [
    (["--config.nope=1"], "--config.nope: unknown config field"),
    (["--config.model.depht=8"], "did you mean 'depth'"),
    (["--config.model.depth=9"], "config.model.depth: must be 6n+2"),
    (["--config.batch_size=4096"], "larger than the 438 training images"),
    (["--config.loss.name=ce", "--config.loss.tau=2"], "config.loss.tau: the loss 'ce' does not read it"),
])
def test_usage_errors_are_one_line_with_status_2(tmp_path, args, message):
  done = cli(f"--config={ROOT / 'configs/demo.py'}", *args, f"--workdir={tmp_path}", timeout=120)
  assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr


def test_config_file_errors_are_usage_errors(tmp_path):
  for config, message in ((ROOT / "configs/nothere.py", "No such file"),
                          (f"{ROOT / 'configs/demo.py'}:nope", "unknown config argument 'nope'")):
    done = cli(f"--config={config}", f"--workdir={tmp_path}", timeout=120)
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr
  done = cli(f"--config={ROOT / 'configs/demo.py'}", "--workdir=/proc/lgla", timeout=120)
  assert done.returncode == 1 and "choose a writable --workdir" in done.stderr


def test_split_files_are_checked_at_start_and_bad_images_named(tmp_path):
  from lgla_jax.data import pipeline
  root, splits = make_tree(tmp_path, "places_lt")
  train_file = splits / "Places_LT_train.txt"
  lines = train_file.read_text().splitlines()
  train_file.write_text("\n".join(lines + ["train/missing.jpg 3"]) + "\n")
  with pytest.raises(FileNotFoundError, match=f"missing.jpg \\(line {len(lines) + 1} of"):
    split_files.load("places_lt", str(splits), str(root))
  train_file.write_text("\n".join(lines + ["train/img_1.jpg 365"]) + "\n")
  with pytest.raises(errors.DataError, match="Places_LT_train.txt: .*img_1.jpg has label 365.*365 classes"):
    split_files.load("places_lt", str(splits), str(root))
  train_file.write_text("\n".join(lines) + "\n")
  (root / "train" / "img_0.jpg").write_bytes(b"not a jpeg")
  data = split_files.load("places_lt", str(splits), str(root))
  it = pipeline.eval_iterator(data.test.images, data.test.labels, global_batch=10, image_size=32,
                              files=True)
  with pytest.raises(errors.DataError, match="cannot decode image .*img_0.jpg"):
    next(it)


def test_a_checkpoint_path_without_checkpoints_is_named(tmp_path):
  with pytest.raises(FileNotFoundError, match="does not exist"):
    checkpoint.open_step(str(tmp_path / "nowhere"))
  (tmp_path / "checkpoints").mkdir()
  with pytest.raises(FileNotFoundError, match=f"no checkpoint in {tmp_path / 'checkpoints'}"):
    checkpoint.open_step(str(tmp_path))


def test_a_checkpoint_evaluates_without_the_weights_its_run_started_from(tmp_path):
  """``model.init_from`` (and ``model.pretrained``) only say where training started: the
  checkpoint holds the whole network, so evaluating it needs neither file any more."""
  from safetensors.numpy import save_file
  from lgla_jax.interop import convert
  from lgla_jax.train import evaluate_checkpoint
  start = tmp_path / "start.safetensors"
  variables = jax.device_get(dict(run_lib.setup(config_of("demo")).state.variables()))
  save_file({k: np.ascontiguousarray(v) for k, v in convert.torch_from_variables(variables).items()},
            str(start))
  config = config_of("demo", num_epochs=1, **{"model.init_from": str(start)})
  report = loop.train_and_evaluate(config, str(tmp_path / "wd"))
  start.rename(tmp_path / "moved.safetensors")
  evaluated = evaluate_checkpoint.evaluate_checkpoint(config, str(tmp_path / "wd"))
  assert evaluated["top1"] == report["final"]["top1"]


def test_device_data_with_a_validation_split_and_replicas_on_an_official_file_are_refused(
    tmp_path):
  """Two refusals naming the field: device-resident data holds no validation split, and an
  official checkpoint holds one model (not a replica run's)."""
  from lgla_jax import errors
  from lgla_jax.train import evaluate_checkpoint
  config = config_of("demo", **{"dataset.on_device": True})
  splits = sources.load(config.dataset)
  with pytest.raises(errors.ConfigError, match="dataset.on_device"):
    run_lib.setup(config, splits=splits._replace(val=splits.test))
  weights = tmp_path / "model_best.pth"
  weights.write_bytes(b"never read")
  with pytest.raises(errors.ConfigError, match="replicas.seeds"):
    evaluate_checkpoint.evaluate_official(config_of("demo", **{"replicas.seeds": (0, 1)}), str(weights))
