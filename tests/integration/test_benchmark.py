import json
import os
import subprocess
import sys

import pytest

from lgla_jax import long_tail
from helpers import ROOT

pytestmark = pytest.mark.integration  # Runs the throughput benchmark.

PARTS = ("train_images_per_s", "source_images_per_s", "train_step_only_images_per_s",
         "eval_images_per_s", "compile_s")


def _bench(config, *flags):
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1")
  done = subprocess.run([sys.executable, "-m", "lgla_jax.benchmark", f"--config={config}",
                         "--synthetic", *flags], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=900)
  assert done.returncode == 0, done.stderr[-3000:]
  lines = [l for l in done.stdout.splitlines() if l.startswith("{")]
  assert len(lines) == 1
  return json.loads(lines[0])


def test_benchmark_parts_and_a_real_run_of_two_epochs():
  small = ("--config.dataset.max_per_class=20", "--config.dataset.imbalance_factor=0.05",
           "--synthetic_test=256",
           "--config.augment.autoaugment=False")  # (its compile is tested elsewhere: minutes here)
  result = _bench("configs/cifar100_ir100.py:quick", "--steps=3", "--epochs=2",
                  "--config.steps_per_dispatch=2", *small)
  parts, run = result["parts"], result["run"]
  for key in PARTS:
    assert parts[key] > 0, key
  assert parts["batch_size"] == 16 and parts["steps_per_dispatch"] == 2 and result["synthetic"]
  assert parts["data_on_device"] and parts["augment_on_device"]  # the automatic choice
  assert parts["conv_impl"] == run["conv_impl"] == "split"  # auto, resolved (on CPU)
  # Long-tailed counts of 20 down to 1 image per class, two epochs.
  num_train = sum(long_tail.imbalanced_counts(100, 20, 0.05))
  assert run["epochs"] == 2 and run["num_train"] == num_train and run["evaluations"] >= 1
  # (both rounded to 0.01 in the output: wall_s's rounding moves the ratio by < 1e-3)
  assert run["end_to_end_images_per_s"] == pytest.approx(2 * num_train / run["wall_s"], rel=1e-3)
  assert 0 < run["end_to_end_images_per_s"] < run["steady_train_images_per_s"]
  wall_parts = run["wall_parts_s"]
  assert wall_parts["first_dispatch"] > 0 and sum(wall_parts.values()) < run["wall_s"]


def test_benchmark_host_pipeline(tmp_path):
  result = _bench("configs/cifar100_ir100.py:quick", "--steps=3", "--config.augment.on_device=False",
                  "--synthetic_test=256", f"--profile={tmp_path / 'prof'}")
  assert not result["parts"]["data_on_device"] and not result["parts"]["augment_on_device"]
  assert "run" not in result
  # The profile of the step alone, summed by operation (tools/trace_summary.py).
  sys.path.insert(0, str(ROOT / "tools"))
  import trace_summary
  summary = trace_summary.summarise(trace_summary.load(str(tmp_path / "prof")))
  busy = max(s["busy_us"] for s in summary.values())
  assert busy > 0 and any(s["top"] for s in summary.values())


@pytest.mark.slow
def test_benchmark_full_cifar_config():
  result = _bench("configs/cifar100_ir100.py", "--steps=5")
  assert result["parts"]["batch_size"] == 128
  print(json.dumps(result))


def test_benchmark_decodes_synthetic_jpegs_for_imagenet_size_configs():
  result = _bench("configs/imagenet_lt_resnext50.py:quick", "--steps=2", "--warmup=1",
                  "--synthetic_jpeg=4", "--synthetic_test=16")
  parts = result["parts"]
  assert result["synthetic_jpeg_files"] == 4 and parts["augment"]["recipe"] == "imagenet"
  assert not parts["data_on_device"] and parts["source_images_per_s"] > 0
  assert "peak_device_memory_bytes" in result  # None on CPU, bytes on a GPU
