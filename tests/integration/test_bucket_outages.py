"""A bucket workdir whose server goes away: the run ends with one line naming the URL and
the last complete checkpoint within ``LGLA_BUCKET_DEADLINE_S`` (5 s here), and the same
command resumes once the server is back; no credentials, or a server unreachable from the
start, are one line too, within a bound."""

import os
import subprocess
import sys
import time

from helpers import ROOT

from lgla_jax.storage import paths

# tensorstore (orbax's writer) logs this once per process against a test server, which
# needs no credentials; a real bucket's credentials silence it. Every other line counts.
_TENSORSTORE_NOTICE = "Could not find the credentials file in the standard gcloud location"


def _env(extra, drop=()):
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2",
             PYTHONPATH=f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", **extra)
  for k in drop:
    env.pop(k, None)
  return env


def _lines(stderr):
  return [l for l in stderr.strip().splitlines() if _TENSORSTORE_NOTICE not in l]


_ARGS = [sys.executable, "-m", "lgla_jax.main", f"--config={ROOT / 'configs/demo.py'}",
         "--config.num_epochs=6", "--config.checkpoint_every_epochs=1",
         "--config.eval_every_epochs=0", "--config.log_every_steps=5"]


def test_the_server_stopped_mid_run_is_one_line_and_the_rerun_resumes(gcs_server, gcs, tmp_path):
  env = _env({"LGLA_BUCKET_DEADLINE_S": "5"})
  args = _ARGS + [f"--workdir={gcs}"]
  proc = subprocess.Popen(args, cwd=tmp_path, env=env, text=True, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE)
  try:
    complete = None
    for line in proc.stdout:  # a few steps after a checkpoint is complete in the bucket
      step = int(line.split(" step ")[1].split("/")[0]) if " step " in line else 0
      if complete is None and step:
        paths.forget_listings()
        done = sorted(int(p.parent.name) for p in
                      (paths.path(gcs) / "checkpoints").glob("*/commit_success.txt"))
        complete = done[-1] if done else None
      elif complete is not None and step >= complete + 5:
        break
    gcs_server.stop()
    t0 = time.monotonic()
    out, err = proc.communicate(timeout=120)
    waited = time.monotonic() - t0
  finally:
    proc.kill()
    gcs_server.start()  # same store: the objects written before the outage are there
  assert proc.returncode == 1, err[-3000:]
  assert waited < 5 + 15, waited  # the deadline, and a save or an upload that meets it
  lines = _lines(err)
  assert len(lines) == 1 and "Traceback" not in err, err[-3000:]
  assert lines[0].startswith(f"error: the bucket {gcs}") and "rerun the same command" in lines[0]
  last = lines[0].split("the last complete checkpoint is ")[1].split(".")[0]
  assert last.startswith(f"{gcs}/checkpoints/"), lines[0]
  again = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
  assert again.returncode == 0, again.stderr[-3000:]
  assert f"resuming from {last} " in again.stdout, again.stdout[-2000:]
  assert "warning: took over" in again.stdout  # the lock the failed run left, same host
  assert "final (epoch 6)" in again.stdout


def test_no_credentials_and_no_server_are_one_line_each_within_a_bound(tmp_path):
  # No credentials: no emulator, no ADC file, no GOOGLE_APPLICATION_CREDENTIALS, and the
  # metadata server (a GCE VM's credentials) at a closed port, as off a cloud VM.
  home = tmp_path / "home"
  home.mkdir()
  no_creds = _env({"HOME": str(home), "CLOUDSDK_CONFIG": str(home / "gcloud"),
                   "GCE_METADATA_HOST": "127.0.0.1:9", "GCE_METADATA_IP": "127.0.0.1:9"},
                  drop=("STORAGE_EMULATOR_HOST", "TENSORSTORE_GCS_HTTP_URL",
                        "GOOGLE_APPLICATION_CREDENTIALS"))
  # The server unreachable from the start: nothing listens at the emulator's address.
  no_server = _env({"STORAGE_EMULATOR_HOST": "http://127.0.0.1:9",
                    "TENSORSTORE_GCS_HTTP_URL": "http://127.0.0.1:9", "LGLA_BUCKET_DEADLINE_S": "3"})
  for env, start in ((no_creds, "error: no credentials for gs://lgla-test/x"),
                     (no_server, "error: cannot reach gs://lgla-test/x")):
    t0 = time.monotonic()
    done = subprocess.run(_ARGS + ["--workdir=gs://lgla-test/x"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    took = time.monotonic() - t0
    lines = _lines(done.stderr)
    assert done.returncode == 1 and len(lines) == 1, done.stderr[-3000:]
    assert lines[0].startswith(start), lines[0]
    assert took < 60, took  # the interpreter and jax start, then a bounded wait
  assert not (tmp_path / "gs:").exists()
