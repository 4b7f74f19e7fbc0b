"""A run whose workdir is a bucket (gs://, a fake-gcs-server on loopback): the whole run
lands there, nothing under the current directory, eval reads it back, a busy one is refused."""

import json
import os
import subprocess
import sys

from helpers import ROOT, interrupt_once_training
from lgla_jax.storage import paths


def bucket_cli(cwd, *args, timeout=600):
  """``python -m lgla_jax.main ARGS`` from ``cwd`` (an empty folder), env pointing at the fake server."""
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2",
             PYTHONPATH=f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
             JAX_COMPILATION_CACHE_DIR="")
  return subprocess.run([sys.executable, "-m", "lgla_jax.main", *args], cwd=cwd, env=env,
                        capture_output=True, text=True, timeout=timeout)


def test_demo_trains_into_a_bucket_and_evaluates_from_it(gcs, tmp_path):
  cwd = tmp_path / "cwd"
  cwd.mkdir()
  common = [f"--config={ROOT / 'configs/demo.py'}", "--config.num_epochs=2", f"--workdir={gcs}"]
  done = bucket_cli(cwd, *common)
  assert done.returncode == 0, done.stderr[-3000:]
  assert list(cwd.iterdir()) == []  # nothing under the current directory
  w = paths.path(gcs)
  names = {p.name for p in w.iterdir()}
  assert {"report.json", "confusion.npy", "metrics.jsonl", "tensorboard", "checkpoints",
          "per_class_accuracy.png"} <= names, names
  assert ".lock" not in names  # released on exit
  assert list((w / "tensorboard").glob("events.out.tfevents.*"))
  final = json.loads((w / "report.json").read_text())["final"]
  evaluated = bucket_cli(cwd, *common, "--mode=eval", f"--checkpoint={gcs}")
  assert evaluated.returncode == 0, evaluated.stderr[-3000:]
  paths.forget_listings()  # written by another process
  again = json.loads((w / "eval_report.json").read_text())  # --workdir given: written there
  assert again["top1"] == final["top1"] and again["per_class"] == final["per_class"]
  assert list(cwd.iterdir()) == []
  # a busy bucket workdir (its lock object present) is refused in one line
  paths.create_if_absent(w / ".lock", '{"host": "elsewhere", "pid": 1}')
  refused = bucket_cli(cwd, *common)
  assert refused.returncode != 0 and "in use" in refused.stderr + refused.stdout
  assert "Traceback" not in refused.stderr


def test_ctrl_c_then_rerun_resumes_from_the_bucket(gcs, tmp_path):
  cwd = tmp_path / "cwd"
  cwd.mkdir()
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2",
             PYTHONPATH=f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
  args = [sys.executable, "-m", "lgla_jax.main", f"--config={ROOT / 'configs/demo.py'}",
          "--config.num_epochs=3", "--config.log_every_steps=5", f"--workdir={gcs}"]
  returncode, out, err = interrupt_once_training(args, cwd, env)
  assert returncode == 75, err[-2000:]
  stopped = int(out.split("stopped at step")[1].split()[0].strip(",.:;"))
  again = bucket_cli(cwd, *args[3:])
  assert again.returncode == 0, again.stderr[-3000:]
  assert f"resuming from {gcs}/checkpoints/{stopped}" in again.stdout, again.stdout[-2000:]
  paths.forget_listings()
  assert (paths.path(gcs) / "report.json").exists()
  assert list(cwd.iterdir()) == []
