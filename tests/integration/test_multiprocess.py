"""Two processes x 4 CPU devices (JAX's multi-controller runtime, localhost coordinator)
against one process x 8 devices: the same global batches, the same losses."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
from helpers import ROOT

pytestmark = pytest.mark.integration  # Two processes with jax.distributed.

# lr 0.01: early LGLA training amplifies float32 reduction-order noise ~5x per step (see
# test_train.test_one_and_eight_devices_agree); one epoch of the demo is 14 steps, the
# last one a padded incomplete batch.
ARGS = ["--config=configs/demo.py:quick", "--config.num_epochs=1", "--config.optim.lr=0.01",
        "--config.log_every_steps=3", "--config.checkpoint_every_epochs=1"]


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _losses(workdir):
  lines = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
  return [l["loss"] for l in lines if l["kind"] == "train"]


def test_two_processes_match_one(tmp_path):
  env = dict(os.environ, PORT=str(_free_port()), PYTHON=sys.executable)
  env.pop("XLA_FLAGS", None)
  multi = subprocess.run(["bash", "launch/local_multiprocess.sh", "2", "4", "--", *ARGS,
                          f"--workdir={tmp_path / 'multi'}"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
  assert multi.returncode == 0, multi.stderr[-3000:]
  single_env = dict(env, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
  single = subprocess.run([sys.executable, "-m", "lgla_jax.main", *ARGS, f"--workdir={tmp_path / 'single'}"],
                          cwd=ROOT, env=single_env, capture_output=True, text=True, timeout=300)
  assert single.returncode == 0, single.stderr[-3000:]
  assert "on 8 device(s)" in multi.stdout and "on 8 device(s)" in single.stdout
  assert multi.stdout.count("final (epoch 1)") == 1  # reports come from process 0 only
  a, b = _losses(tmp_path / "multi"), _losses(tmp_path / "single")
  assert len(a) == len(b) == 4
  np.testing.assert_allclose(a[:2], b[:2], rtol=1e-5)
  np.testing.assert_allclose(a, b, rtol=1e-3)
  report_a = json.loads((tmp_path / "multi" / "report.json").read_text())["final"]
  report_b = json.loads((tmp_path / "single" / "report.json").read_text())["final"]
  assert report_a["num_images"] == report_b["num_images"] == 400
  assert abs(report_a["top1"] - report_b["top1"]) <= 0.01
  assert sorted(p.name for p in (tmp_path / "multi" / "checkpoints").iterdir() if p.name.isdigit()) == ["14"]


def test_launch_scripts_refuse_missing_variables(tmp_path):
  env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "COORDINATOR"))}
  done = subprocess.run(["bash", "launch/gpu_multinode.sh", "--config=configs/demo.py"], cwd=ROOT,
                        env=env, capture_output=True, text=True, timeout=60)
  assert done.returncode == 2 and "COORDINATOR" in done.stderr
  env.pop("TPU_NAME", None)
  done = subprocess.run(["bash", "launch/tpu_pod.sh", "--config=configs/demo.py"], cwd=ROOT,
                        env=env, capture_output=True, text=True, timeout=60)
  assert done.returncode == 2 and "TPU_NAME" in done.stderr
  done = subprocess.run(["bash", "launch/local_multiprocess.sh", "2"], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=60)
  assert done.returncode == 2 and "usage" in done.stderr
  done = subprocess.run([sys.executable, "-m", "lgla_jax.main", "--config=configs/demo.py"], cwd=ROOT,
                        env=dict(env, JAX_COORDINATOR_ADDRESS="127.0.0.1:1"), capture_output=True,
                        text=True, timeout=60)
  assert done.returncode != 0 and "JAX_NUM_PROCESSES" in done.stderr
