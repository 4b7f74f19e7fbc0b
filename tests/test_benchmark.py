import json
import os
import pathlib
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration  # Runs the throughput benchmark.

ROOT = pathlib.Path(__file__).parents[1]
KEYS = ("train_images_per_s", "pipeline_images_per_s", "eval_images_per_s")


def _bench(config, steps):
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1")
  done = subprocess.run([sys.executable, "-m", "lgla_jax.benchmark", f"--config={config}",
                         f"--steps={steps}", "--synthetic"], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=900)
  assert done.returncode == 0, done.stderr[-3000:]
  lines = [l for l in done.stdout.splitlines() if l.startswith("{")]
  assert len(lines) == 1
  result = json.loads(lines[0])
  for key in KEYS:
    assert result[key] > 0, key
  return result


def test_benchmark_quick_config():
  result = _bench("configs/cifar100_ir100.py:quick", 3)
  assert result["batch_size"] == 16 and result["synthetic"] and result["compile_s"] > 0


@pytest.mark.slow
def test_benchmark_full_cifar_config():
  result = _bench("configs/cifar100_ir100.py", 5)
  assert result["batch_size"] == 128 and result["model_depth"] == 32
  print(json.dumps(result))
