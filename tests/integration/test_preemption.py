"""Stopping a run from outside: a disk that fills during a save (one line, nothing after
it), and on several processes a stop request reaching one of them (all save the same step
and exit 75) or a process killed outright (the others end within a bound, one line)."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest
from helpers import ROOT

pytestmark = pytest.mark.integration

_TMPFS_KB = 600  # the demo's first checkpoint (~130 KB of tensors) fails part way in it


def _in_a_small_disk(workdir, args):
  """``lgla_jax.main ARGS --workdir=<a 600 KB tmpfs>/run`` in a private mount namespace
  (``unshare``: root, or user namespaces); None where neither is allowed."""
  if shutil.which("unshare") is None:
    return None
  command = (f'mount -t tmpfs -o size={_TMPFS_KB}k tmpfs "$1" && shift && exec "$@"')
  argv = ["unshare", "-rm", "sh", "-c", command, "sh", str(workdir), sys.executable, "-m",
          "lgla_jax.main", *args, f"--workdir={workdir}/run"]
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2",
             JAX_COMPILATION_CACHE_DIR=str(workdir.parent / "cache"))
  done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  if done.returncode != 0 and "mount" in done.stderr and "error:" not in done.stderr:
    return None
  return done


def test_a_disk_filling_during_a_save_prints_one_line_and_nothing_after_it(tmp_path):
  # A real full disk: the save's parallel writes all fail; the first is reported, the
  # others (asyncio tasks, callbacks onto orbax's closed event loop) must print nothing.
  # Three runs: the noise came in 2 runs of 3 before it was silenced.
  for i in range(3):
    (tmp_path / str(i)).mkdir()
    done = _in_a_small_disk(tmp_path / str(i), [
        f"--config={ROOT / 'configs/demo.py'}:quick", "--config.checkpoint_every_epochs=1",
        "--config.num_epochs=3", "--config.eval_every_epochs=0"])
    if done is None:
      pytest.skip("no tmpfs can be mounted here (unshare -rm not allowed)")
    assert done.returncode == 1, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, f"run {i}: {len(lines)} lines:\n" + done.stderr[-3000:]
    assert lines[0].startswith("error: writing a checkpoint") and "Free space there" in lines[0]


# Six epochs of the demo's quick config (84 steps, ~15 s of training on two processes
# here): room for a stop request to land mid-run (it lands ~6 steps after the signal).
_MULTI_ARGS = [f"--config={ROOT / 'configs/demo.py'}:quick", "--config.num_epochs=6",
               "--config.log_every_steps=3", "--config.eval_every_epochs=3",
               "--config.checkpoint_every_epochs=3"]


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _start_two(workdir, port, extra_env=None):
  """Two processes x 2 CPU devices of one run (what launch/local_multiprocess.sh starts)."""
  procs = []
  for i in range(2):
    env = dict(os.environ, JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES="2",
               JAX_PROCESS_ID=str(i), JAX_PLATFORMS="cpu",
               XLA_FLAGS="--xla_force_host_platform_device_count=2", **(extra_env or {}))
    procs.append(subprocess.Popen([sys.executable, "-m", "lgla_jax.main", *_MULTI_ARGS,
                                   f"--workdir={workdir}"], cwd=ROOT, env=env, text=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE))
  return procs


def _wait_for_training(proc):
  """Read process 0's output until a progress line (training runs); returns what was read."""
  seen = []
  for line in proc.stdout:
    seen.append(line)
    if " step " in line:
      return "".join(seen)
  raise AssertionError("no progress line:\n" + "".join(seen) + proc.stderr.read()[-3000:])


def _finish(procs, timeout=300):
  outs = []
  for p in procs:
    out, err = p.communicate(timeout=timeout)
    outs.append((p.returncode, out, err))
  return outs


def test_a_stop_request_to_one_process_stops_both_at_the_same_step_and_the_rerun_resumes(tmp_path):
  port = _free_port()
  procs = _start_two(tmp_path, port)
  try:
    head = _wait_for_training(procs[0])
    procs[1].send_signal(signal.SIGTERM)  # one host gets the pre-emption notice first
    (rc0, out0, err0), (rc1, out1, err1) = _finish(procs)
  finally:
    for p in procs:
      p.kill()
  assert (rc0, rc1) == (75, 75), err0[-2000:] + err1[-2000:]
  steps = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
  stop = steps[-1]  # the checkpoint of the stop, written by both processes together
  assert 0 < stop < 6 * 14 and not list((tmp_path / "checkpoints").glob("*tmp*")), steps
  assert f"stopped at step {stop} " in head + out0
  assert "Traceback" not in err0 + err1
  procs = _start_two(tmp_path, _free_port())
  (rc0, out0, err0), (rc1, _, err1) = _finish(procs)
  assert (rc0, rc1) == (0, 0), err0[-2000:] + err1[-2000:]
  assert f"resuming from {tmp_path}/checkpoints/{stop} " in out0
  assert "final (epoch 6)" in out0


def test_a_process_killed_outright_ends_the_other_within_the_bound_with_one_line(tmp_path):
  bound_s = 6
  procs = _start_two(tmp_path, _free_port(), {"LGLA_PEER_TIMEOUT_S": str(bound_s)})
  try:
    _wait_for_training(procs[0])
    procs[1].kill()
    t0 = time.monotonic()
    out, err = procs[0].communicate(timeout=120)
    waited = time.monotonic() - t0
  finally:
    for p in procs:
      p.kill()
  assert procs[0].returncode == 1, err[-3000:]
  assert waited < bound_s + 10, waited  # the bound, the watchdog's period, the exit
  lines = err.strip().splitlines()
  assert len(lines) == 1, err[-3000:]
  assert lines[0].startswith("error: process 1 of this run has been silent for")
  assert "LGLA_PEER_TIMEOUT_S" in lines[0] and "rerun the same command" in lines[0]


def test_process_0_killed_outright_ends_the_other_at_once_with_jax_abort(tmp_path):
  # Process 0 hosts JAX's coordination service: when it dies, the other process's client
  # loses the service and JAX ends it at once with SIGABRT (status 134 from a shell), a
  # fatal log line and a stack trace (JAX's, before our watchdog can speak): bounded, not
  # one line (docs/buckets.md says so).
  procs = _start_two(tmp_path, _free_port(), {"LGLA_PEER_TIMEOUT_S": "30"})
  try:
    _wait_for_training(procs[0])
    procs[0].kill()
    t0 = time.monotonic()
    _, err = procs[1].communicate(timeout=120)
    waited = time.monotonic() - t0
  finally:
    for p in procs:
      p.kill()
  assert procs[1].returncode == -signal.SIGABRT, err[-3000:]
  assert waited < 30, waited  # well before our own bound (30 s here)
  assert "JAX distributed service detected fatal errors" in err
