"""What agreeing on a stop costs a multi-process run: two processes on this machine.

  python tools/stop_check_cost.py --config=configs/demo.py [--devices=2] [--runs=2]

Starts itself as two processes (JAX's multi-controller runtime on localhost, as
launch/local_multiprocess.sh does) and prints one JSON object from process 0:

* ``sync_point_call_us``: one call of ``multihost_utils.reached_preemption_sync_point``
  (what the training loop makes after every step, ``resume.StopRequests``);
* ``allgather_flag_us``: one ``process_allgather`` of a stop flag (the alternative,
  agreeing on a flag every few steps);
* ``train_images_per_s`` with and without the loop's check (``StopRequests.reached``
  replaced by ``False``): the config trained end to end ``--runs`` times each, alternated.
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import jax
import numpy as np
from absl import app, flags, logging
from jax.experimental import multihost_utils

from lgla_jax import main as entry  # (its --config flag is the config trained)
from lgla_jax.train import loop, resume

_DEVICES = flags.DEFINE_integer("devices", 2, "CPU devices per process.")
_RUNS = flags.DEFINE_integer("runs", 2, "Training runs with and without the check (each).")


def _spawn(argv) -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  folder = tempfile.mkdtemp(prefix="stop_check_cost_")
  procs = [subprocess.Popen([sys.executable, *argv], env=dict(
      os.environ, JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES="2",
      JAX_PROCESS_ID=str(i), JAX_PLATFORMS="cpu", STOP_CHECK_COST_DIR=folder,
      XLA_FLAGS=f"--xla_force_host_platform_device_count={_DEVICES.value}")) for i in range(2)]
  return max(p.wait() for p in procs)


def _per_call_us(fn, n: int) -> float:
  t0 = time.perf_counter()
  for i in range(n):
    fn(i)
  return round((time.perf_counter() - t0) / n * 1e6, 1)


def _measure() -> dict:
  entry.init_distributed()
  out = {"processes": jax.process_count(), "devices": jax.device_count(),
         "sync_point_call_us": _per_call_us(
             lambda i: multihost_utils.reached_preemption_sync_point(10**6 + i), 20000),
         "allgather_flag_us": _per_call_us(
             lambda i: multihost_utils.process_allgather(np.int32(0)), 200)}
  rates = {"with_check": [], "without_check": []}
  real = resume.StopRequests.reached
  for r in range(2 * _RUNS.value):
    kind = "with_check" if r % 2 == 0 else "without_check"
    resume.StopRequests.reached = real if kind == "with_check" else (lambda self, step: False)
    config = flags.FLAGS.config
    workdir = os.path.join(os.environ["STOP_CHECK_COST_DIR"], str(r))
    result = loop.train_and_evaluate(config, workdir)
    rates[kind].append(round(result["train_images_per_s"], 1))
  resume.StopRequests.reached = real
  out.update({f"train_images_per_s_{k}": v for k, v in rates.items()})
  out["median_ratio_with_to_without"] = round(
      statistics.median(rates["with_check"]) / statistics.median(rates["without_check"]), 4)
  return out


def main(argv):
  logging.set_verbosity(logging.WARNING)
  if "JAX_PROCESS_ID" not in os.environ:
    sys.exit(_spawn(sys.argv))
  out = _measure()
  if os.environ["JAX_PROCESS_ID"] == "0":
    print(json.dumps({"config": flags.FLAGS["config"].config_filename, **out}),
          flush=True)


if __name__ == "__main__":
  app.run(main)
