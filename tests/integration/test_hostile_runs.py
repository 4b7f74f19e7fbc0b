"""Files and servers from strangers, as an attacker makes them (issue 31): pickles that call
``os.system``, ``builtins.eval``, ``posix.system`` or ``subprocess.Popen`` in every pickle of a
legacy ``.pth``, in a zip's ``data.pkl`` and in a CIFAR batch; stride-0 views and zip bombs;
malformed ``.safetensors`` / ``.npz`` / ``.pth``; a mirror that trickles bytes.

For each, through the real command line: nothing of the file runs (a marker file never
appears), exit status 1 with one ``error:`` line naming the file and no traceback, and the
child's peak memory (``os.wait4``'s ``ru_maxrss``) stays within ``SLACK_MB`` of the same
command refused for a well-formed one-tensor file (``control``): a file stating gigabytes
makes this process hold megabytes.
"""

import http.server
import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import zipfile

import numpy as np
import pytest

from lgla_jax import config as config_lib
from lgla_jax import errors
from lgla_jax.config import validate as validate_lib
from lgla_jax.data import download
from lgla_jax.report import progress

from lgla_jax.train import loop
from lgla_jax.train import workdir as workdir_lib
from helpers import config_of, make_cifar10_folder
from hostile import (zero_bytes_mb, cli, data_pkl, DEMO, flip_stored, LEGACY_PARTS, legacy_pth, npy_member, one_line,
                     payloads, REFUSED_NAME, ROOT, safetensors_file, SLACK_MB, T, zip_pth)


@pytest.fixture(scope="module")
def control(tmp_path_factory):
  """Peak MB of the commands refused for a well-formed one-tensor file read whole (a list,
  not a state dict): ``eval`` (``--mode=eval --checkpoint``) and ``init_from`` (training)."""
  folder = tmp_path_factory.mktemp("control")
  zip_pth(folder / "list.pth", pkl=data_pkl({"t": T()}, as_list=True),
          members={"0": np.arange(4, dtype="<f4").tobytes()})
  peaks = {}
  for kind, args in (("eval", ("--mode=eval", f"--checkpoint={folder / 'list.pth'}")),
                     ("init_from", (f"--config.model.init_from={folder / 'list.pth'}",
                                    f"--workdir={folder / 'wd'}"))):
    done = cli("lgla_jax.main", DEMO, *args)
    assert done.code == 1 and "Traceback" not in done.stderr, done.stderr[-2000:]
    peaks[kind] = done.peak_mb
  return peaks



# ---------------------------------------------------------------- the command lines


def _legacy_case(part):
  def make(tmp, marker):
    legacy_pth(tmp / "model_best.pth", **{part: payloads(marker)["os.system"]})
    return tmp / "model_best.pth", ["os.system"]
  return make


def _zip_pickle_case(name):
  def make(tmp, marker):
    zip_pth(tmp / "model_best.pth", pkl=payloads(marker)[name])
    return tmp / "model_best.pth", [REFUSED_NAME[name]]
  return make


def _pth(state, members, words, compress=zipfile.ZIP_STORED, pkl=None, flip=None):
  def make(tmp, marker):
    zip_pth(tmp / "w.pth", state, members, pkl, compress)
    if flip:
      flip_stored(tmp / "w.pth", flip)
    return tmp / "w.pth", words
  return make


def _npz(members, words):
  def make(tmp, marker):
    with zipfile.ZipFile(tmp / "w.npz", "w") as z:
      for name, body in members.items():
        z.writestr(name, body)
    if words == ["flip"]:
      flip_stored(tmp / "w.npz", "w.npy")
    return tmp / "w.npz", ["Bad CRC"] if words == ["flip"] else words
  return make


def _safetensors(words, raw=None, **kwargs):
  def make(tmp, marker):
    if raw is not None:  # the whole file as given
      (tmp / "w.safetensors").write_bytes(raw)
    else:
      safetensors_file(tmp / "w.safetensors", **kwargs)
    return tmp / "w.safetensors", words
  return make


def _object_npz(tmp, marker):
  np.savez(tmp / "w.npz", w=np.array([{"a": 1}], dtype=object))
  return tmp / "w.npz", ["dtype object"]


FOUR = np.arange(4, dtype="<f4").tobytes()
EVAL_CASES = {
    **{f"legacy_{part}": _legacy_case(part) for part in LEGACY_PARTS},
    **{f"zip_{name}": _zip_pickle_case(name) for name in REFUSED_NAME if name != "os.system"},
    "stride_0": _pth({"w": T(size=(250_000_000,), stride=(0,))}, {"0": FOUR}, ["stride-0"]),
    "zip_bomb_storage": _pth({"w": T(numel=64 << 20, size=(64 << 20,))}, {"0": zero_bytes_mb(256)},
                             ["more than one tensor may hold"], zipfile.ZIP_DEFLATED),
    "zip_bomb_data_pkl": _pth(None, None, ["data.pkl states"], zipfile.ZIP_DEFLATED, bytes(200 << 20)),
    "pth_bad_crc": _pth({"w": T()}, {"0": FOUR}, ["Bad CRC"], flip="archive/data/0"),
    "pth_1e12_elements": _pth({"w": T(numel=10**12, size=(10**12,))}, {"0": FOUR},
                              ["more than one tensor may hold"]),
    "pth_negative_size": _pth({"w": T(size=(-1, 4), stride=(4, 1))}, {"0": FOUR}, ["(-1, 4)"]),
    "pth_missing_member": _pth({"w": T(key="7")}, {"0": FOUR}, ["archive/data/7", "missing"]),
    "npz_bad_crc": _npz({"w.npy": npy_member((4,), data=FOUR)}, ["flip"]),
    "npz_1e12_elements": _npz({"w.npy": npy_member((10**6, 10**6), data=FOUR)}, ["states shape"]),
    "npz_negative_size": _npz({"w.npy": npy_member((-1,), data=FOUR)}, ["states shape (-1,)"]),
    "npz_object_dtype": _object_npz,
    "safetensors_header_2_60": _safetensors(["header length"], (1 << 60).to_bytes(8, "little") + b"{}"),
    "safetensors_not_json": _safetensors(["not JSON"], raw_header=b"{not json"),
    "safetensors_4tb_tensor": _safetensors(["runs past the end"], header={
        "w": {"dtype": "F32", "shape": [1 << 40], "data_offsets": [0, 4 << 40]}}),
    "safetensors_empty": _safetensors(["too short"], b""),
}


@pytest.mark.parametrize("name", sorted(EVAL_CASES))
def test_a_hostile_file_evaluated_is_one_line(tmp_path, name, control):
  marker = tmp_path / "PWNED"
  path, words = EVAL_CASES[name](tmp_path, marker)
  done = cli("lgla_jax.main", DEMO, "--mode=eval", f"--checkpoint={path}")
  one_line(done, str(path), *words, bound_mb=control["eval"] + SLACK_MB)
  assert not marker.exists() and not (tmp_path / "eval").exists()  # no effect, nothing left


def _folder(tmp, marker):
  (tmp / "weights").mkdir()
  return tmp / "weights", ["is a folder"]


INIT_FROM_CASES = {"legacy_sys_info": _legacy_case("sys_info"), "folder": _folder,
                   "stride_0": EVAL_CASES["stride_0"]}


@pytest.mark.parametrize("name", sorted(INIT_FROM_CASES))
def test_a_hostile_file_to_start_from_is_one_line(tmp_path, name, control):
  marker = tmp_path / "PWNED"
  path, words = INIT_FROM_CASES[name](tmp_path, marker)
  done = cli("lgla_jax.main", DEMO, f"--config.model.init_from={path}", f"--workdir={tmp_path / 'wd'}")
  one_line(done, str(path), *words, bound_mb=control["init_from"] + SLACK_MB)
  assert not marker.exists()
  assert not (tmp_path / "wd").exists()  # the refused run left no .lock, no compilation cache


def test_a_hostile_cifar_batch_is_one_line(tmp_path, control):
  make_cifar10_folder(tmp_path / "data", per_class=12)
  marker = tmp_path / "PWNED"
  batch = tmp_path / "data" / "cifar-10-batches-py" / "data_batch_1"
  batch.write_bytes(payloads(marker)["posix.system"])
  done = cli("lgla_jax.main", f"--config={ROOT / 'configs/cifar10_ir100.py'}:quick",
             f"--config.dataset.data_dir={tmp_path / 'data'}", "--config.dataset.max_per_class=12",
             f"--workdir={tmp_path / 'wd'}")
  one_line(done, str(batch), "posix.system", bound_mb=control["eval"] + SLACK_MB)
  assert not marker.exists() and not (tmp_path / "wd").exists()


def test_export_checks_its_output_before_any_work(tmp_path, control):
  (tmp_path / "out").mkdir()
  for out, words in ((tmp_path / "out", ["is a folder"]),
                     ("/proc/lgla-jax-test/m.safetensors", ["does not exist"]),
                     ("/proc/m.safetensors", ["cannot write to /proc"])):
    done = cli("lgla_jax.export", f"--checkpoint={tmp_path / 'no-such-run'}", f"--out={out}")
    one_line(done, f"--out={out}", *words, bound_mb=control["eval"] + SLACK_MB)


# ---------------------------------------------------------------- downloads


class _Trickle(http.server.BaseHTTPRequestHandler):
  """Sends one byte every ``every`` seconds: of the body (``mode="body"``, after headers
  stating 1 MB) or of endless headers (``"headers"``)."""
  mode, every = "body", 0.3

  def do_GET(self):  # noqa: N802 - http.server's name
    try:
      if self.mode == "headers":
        self.wfile.write(b"HTTP/1.0 200 OK\r\nX-Slow: ")
        for _ in range(400):
          self.wfile.write(b"a")
          self.wfile.flush()
          time.sleep(self.every)
        return
      self.send_response(200)
      self.send_header("Content-Length", "1000000")
      self.end_headers()
      for _ in range(400):
        self.wfile.write(b"x")
        self.wfile.flush()
        time.sleep(self.every)
    except OSError:  # the client gave up
      pass

  def log_message(self, *args):
    pass


@pytest.fixture
def trickle():
  """A loopback server that trickles; ``trickle(mode)`` returns its base URL."""
  servers = []

  def start(mode="body"):
    handler = type("Handler", (_Trickle,), {"mode": mode})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    servers.append(httpd)
    return f"http://127.0.0.1:{httpd.server_address[1]}"

  yield start
  for httpd in servers:
    httpd.shutdown()
    httpd.server_close()


def test_a_trickling_mirror_is_left_with_one_line(tmp_path, trickle, control):
  base = trickle("body")
  t0 = time.time()
  done = cli("lgla_jax.main", f"--config={ROOT / 'configs/cifar10_ir100.py'}:quick",
             f"--config.dataset.data_dir={tmp_path / 'data'}", f"--workdir={tmp_path / 'wd'}",
             LGLA_DATA_MIRROR=base, LGLA_DOWNLOAD_RATE_WINDOW_S="2", LGLA_DOWNLOAD_MIN_RATE="1000")
  line = one_line(done, f"{base}/cifar-10-python.tar.gz", "bytes/s", "LGLA_DOWNLOAD_MIN_RATE",
                  bound_mb=control["eval"] + SLACK_MB, extra_ok=("downloading ",))
  assert re.search(r"\d+ bytes came in the last \d s \(\d+\.\d bytes/s", line), line
  assert time.time() - t0 < 60
  assert [p.name for p in (tmp_path / "data").iterdir()] == ["cifar-10-python.tar.gz.lock"]
  assert not (tmp_path / "wd").exists()


def test_slow_headers_and_a_deadline_end_a_download(tmp_path, trickle, monkeypatch):
  monkeypatch.setenv("LGLA_DATA_MIRROR", trickle("headers"))
  monkeypatch.setenv("LGLA_DOWNLOAD_RATE_WINDOW_S", "1")
  t0 = time.time()
  with pytest.raises(download.DownloadError, match=r"0 bytes came in the last 1 s \(0\.0 bytes/s"):
    download.ensure("cifar100", str(tmp_path / "a"))
  assert time.time() - t0 < 5
  monkeypatch.setenv("LGLA_DATA_MIRROR", trickle("body"))
  monkeypatch.setenv("LGLA_DOWNLOAD_MIN_RATE", "0")
  monkeypatch.setenv("LGLA_DOWNLOAD_DEADLINE_S", "1.5")
  with pytest.raises(download.DownloadError, match=r"took more than 2 s \(LGLA_DOWNLOAD_DEADLINE_S\)"):
    download.ensure("cifar100", str(tmp_path / "b"))
  assert time.time() - t0 < 10
  for folder in ("a", "b"):
    assert [p.name for p in (tmp_path / folder).iterdir()] == ["cifar-100-python.tar.gz.lock"]
  monkeypatch.setenv("LGLA_DOWNLOAD_DEADLINE_S", "soon")
  with pytest.raises(download.DownloadError, match="LGLA_DOWNLOAD_DEADLINE_S='soon' is not a number"):
    download.ensure("cifar100", str(tmp_path / "c"))


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_during_a_download_leaves_no_partial_file(tmp_path, trickle, sig):
  code = ("import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler)\n"
          "from lgla_jax.data import download; download.ensure('cifar10', sys.argv[1])\n")
  env = dict(os.environ, LGLA_DATA_MIRROR=trickle("body"), LGLA_DOWNLOAD_RATE_WINDOW_S="600")
  proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], cwd=ROOT, env=env,
                          stderr=subprocess.PIPE, text=True)
  deadline = time.time() + 30
  while not list(tmp_path.glob("*.part.*")) and time.time() < deadline:
    time.sleep(0.1)
  assert list(tmp_path.glob("*.part.*")), "the download never started"
  proc.send_signal(sig)
  _, err = proc.communicate(timeout=30)
  assert proc.returncode == -sig, err[-2000:]  # (an uncaught KeyboardInterrupt re-raises SIGINT)
  assert [p.name for p in tmp_path.iterdir()] == ["cifar-10-python.tar.gz.lock"]


def test_partial_files_of_dead_processes_are_removed(tmp_path):
  dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                        capture_output=True, text=True).stdout.strip()
  host, path = socket.gethostname(), tmp_path / "f.tar.gz"
  for owner in (f"{host}.{dead}", f"{host}.{os.getpid()}", f"otherhost.{dead}"):
    pathlib.Path(f"{path}.part.{owner}").write_bytes(b"x")
  download._remove_stale(str(path))
  assert sorted(p.name for p in tmp_path.iterdir()) == sorted([
      f"f.tar.gz.part.{host}.{os.getpid()}", f"f.tar.gz.part.otherhost.{dead}"])


# ---------------------------------------------------------------- the smaller items


@pytest.mark.parametrize("field,value", [("optim.lr", "inf"), ("optim.lr", "nan"),
                                         ("loss.tau", "inf"), ("loss.tau", "-inf"),
                                         ("replicas.lr", "(0.1, inf)")])
def test_non_finite_numbers_are_refused(field, value):
  config = config_lib.base_config()
  section, name = field.split(".")
  config[section][name] = eval(value, {"inf": float("inf"), "nan": float("nan")})  # noqa: S307
  if field == "replicas.lr":
    config.replicas.seeds = (0, 1)
  with pytest.raises(errors.ConfigError, match=f"config.{re.escape(field)}: must be a finite number"):
    validate_lib.validate(config)


def test_the_divergence_message_is_consistent():
  bad = {"loss": np.float32("nan"), "grad_norm": np.float32(1.0)}
  with pytest.raises(progress.TrainingDiverged) as e:
    progress.check_finite(bad, 5, 1, None)
  assert "no checkpoint had been saved yet" in str(e.value) and "resume" not in str(e.value)
  with pytest.raises(progress.TrainingDiverged) as e:
    progress.check_finite(bad, 5, 1, "/w/checkpoints/3")
  assert "/w/checkpoints/3, is kept" in str(e.value) and "resume from that checkpoint" in str(e.value)


def test_a_refused_run_leaves_nothing_in_a_new_workdir(tmp_path):
  removed = []
  for name, leave in (("new", [".lock", "compilation_cache/x"]), ("used", [".lock", "metrics.jsonl"])):
    with pytest.raises(RuntimeError):
      with workdir_lib.tidy_if_failed(str(tmp_path / name), lambda n=name: removed.append(n)):
        for f in leave:
          (tmp_path / name / f).parent.mkdir(parents=True, exist_ok=True)
          (tmp_path / name / f).write_text("")
        raise RuntimeError("refused")
  assert not (tmp_path / "new").exists() and (tmp_path / "used" / "metrics.jsonl").exists()
  assert removed == ["new"]
  (tmp_path / "old").mkdir()  # a folder that existed before is never removed
  with pytest.raises(RuntimeError):
    with workdir_lib.tidy_if_failed(str(tmp_path / "old")):
      raise RuntimeError("refused")
  assert (tmp_path / "old").is_dir()


# ---------------------------------------------------------------- with a trained run


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """A finished one-epoch demo run (checkpoint at step 14, report, confusion.npy, plots)."""
  run = tmp_path_factory.mktemp("trained") / "run"
  loop.train_and_evaluate(config_of("demo", num_epochs=1), str(run))
  return run


@pytest.mark.integration
def test_evaluating_a_running_run_writes_under_eval_and_holds_its_lock(trained, tmp_path):
  """Without --workdir, --mode=eval writes under RUN/eval/ (holding its lock), never over
  the running job's own files; --workdir=RUN waits for no one: it is refused."""
  before = {p: (trained / p).read_bytes() for p in ("confusion.npy", "report.json")}
  evaluate = lambda *args: cli("lgla_jax.main", DEMO, "--mode=eval", f"--checkpoint={trained}", *args)
  with workdir_lib.lock(str(trained)):  # the training run, still going
    done = evaluate()
    assert done.code == 0, done.stderr[-2000:]
    assert (trained / "eval" / "eval_report.json").exists() and (trained / "eval" / "confusion.npy").exists()
    assert {p: (trained / p).read_bytes() for p in before} == before
    assert not (trained / "eval_report.json").exists()
    one_line(evaluate(f"--workdir={trained}"), str(trained), "is in use by a running lgla-jax run")
    with workdir_lib.lock(str(trained / "eval")):  # a second evaluation at the same time
      one_line(evaluate(), "eval is in use")
  done = evaluate("--config.dataset.imbalance_factor=0.1", f"--workdir={tmp_path / 'new'}")
  one_line(done, "dataset.imbalance_factor: 0.05 -> 0.1")
  assert not (tmp_path / "new").exists()  # the refused evaluation left no folder


@pytest.mark.integration
def test_resuming_from_a_corrupt_only_checkpoint_is_one_line(trained, tmp_path):
  run = tmp_path / "run"
  shutil.copytree(trained, run)
  for manifest in (run / "checkpoints").rglob("manifest.ocdbt"):
    manifest.write_bytes(b"garbage")
  done = cli("lgla_jax.main", DEMO, "--config.num_epochs=1", f"--workdir={run}")
  one_line(done, f"{run / 'checkpoints' / '14'} cannot be restored", "DATA_LOSS")


@pytest.mark.integration
def test_exported_files_are_readable_as_the_umask_allows(trained, tmp_path):
  from lgla_jax import export
  for mask, mode in ((0o022, 0o644), (0o027, 0o640)):
    out = tmp_path / f"m{mask:o}.safetensors"
    old = os.umask(mask)
    try:
      export.export(str(trained), str(out))
    finally:
      os.umask(old)
    assert out.stat().st_mode & 0o777 == mode
  assert sorted(p.name for p in tmp_path.iterdir()) == ["m22.safetensors", "m27.safetensors"]
