"""Untrusted files read in-process: no pickle runs code (every pickle of the package goes
through ``interop.safe_pickle``), sizes are checked before anything is allocated, and the
readers refuse views, bombs and malformed headers."""

import gzip
import io
import pickle
import re
import subprocess
import zipfile

import numpy as np
import pytest

from lgla_jax import errors
from lgla_jax.data import readers
from lgla_jax.interop import safe_pickle
from lgla_jax.interop import torch_file

from hostile import (LEGACY_PARTS, legacy_pth, payloads, REFUSED_NAME, ROOT, T, zip_pth)


# ---------------------------------------------------------------- nothing of a pickle runs


def test_the_payloads_are_live(tmp_path):
  """The attacks are real: plain ``pickle.loads`` of each runs its command."""
  for name in REFUSED_NAME:
    marker = tmp_path / f"M-{name}"
    obj = pickle.loads(payloads(marker)[name])
    if isinstance(obj, subprocess.Popen):
      obj.wait()
    assert marker.exists(), name


@pytest.mark.parametrize("name", sorted(REFUSED_NAME))
def test_no_pickle_of_a_pth_runs_code(tmp_path, name):
  """Every pickle of the legacy format (magic, protocol, sys_info, object, storage keys) and
  the zip's data.pkl: refused, naming the class; the marker never appears."""
  marker = tmp_path / "PWNED"
  payload = payloads(marker)[name]
  files = {part: tmp_path / f"{part}.pth" for part in LEGACY_PARTS}
  for part, path in files.items():
    legacy_pth(path, **{part: payload})
  zip_pth(tmp_path / "zip.pth", pkl=payload)
  for path in [*files.values(), tmp_path / "zip.pth"]:
    refused = REFUSED_NAME[name]
    if name == "nested" and path.stem in ("magic", "protocol", "sys_info", "keys"):
      refused = "collections.OrderedDict"  # (the header pickles allow no class at all)
    for read in (torch_file.read_state_dict, torch_file.read_checkpoint, torch_file.load):
      with pytest.raises(torch_file.TorchFileError, match=re.escape(refused)) as e:
        read(str(path))
      assert str(path) in str(e.value) and "\n" not in str(e.value)
  assert not marker.exists()


def _cifar_batch(n=20, protocol=2):
  rng = np.random.RandomState(0)
  return pickle.dumps({b"data": rng.randint(0, 256, (n, 3072)).astype(np.uint8),
                       b"labels": list(np.arange(n) % 10), b"filenames": [b"x.png"] * n}, protocol)


def test_a_cifar_batch_runs_no_code_and_real_batches_still_read(tmp_path):
  marker = tmp_path / "PWNED"
  for name, payload in payloads(marker).items():  # (OrderedDict is not allowed here either)
    with pytest.raises(errors.DataError, match=re.escape(REFUSED_NAME[name]) + "|collections.OrderedDict"):
      readers._decode_cifar_batch(payload, "data_batch_1", b"labels")
  evil = pickle.dumps({b"data": np.array([{}], dtype=object), b"labels": [0]}, 2)
  with pytest.raises(errors.DataError, match="object arrays are refused|dtype"):
    readers._decode_cifar_batch(evil, "data_batch_1", b"labels")
  assert not marker.exists()
  want = pickle.loads(_cifar_batch())[b"data"]
  for protocol in (2, 3, 4, 5):  # (Python 2's cPickle wrote protocol 2)
    got = readers._decode_cifar_batch(_cifar_batch(protocol=protocol), "b", b"labels")
    np.testing.assert_array_equal(got.images.transpose(0, 3, 1, 2).reshape(20, 3072), want)


BANNED = re.compile(r"\bpickle\.loads?\(|\bpickle\.Unpickler\(|allow_pickle\s*=\s*True|"
                    r"\bnp\.load\(|\bnumpy\.load\(|\btorch\.load\(|\bmarshal\.loads?\(|\bdill\b")


def test_no_bare_unpickling_in_the_package():
  """The grep-able rule: only ``safe_pickle`` unpickles; no pickle.load(s), np.load (pickle
  or unbounded reads), torch.load in ``lgla_jax/``."""
  assert BANNED.search("x = pickle.loads(raw)") and BANNED.search("np.load(p, allow_pickle=True)")
  found = [f"{p.relative_to(ROOT)}:{i}: {line.strip()}"
           for p in sorted((ROOT / "lgla_jax").rglob("*.py"))
           for i, line in enumerate(p.read_text().splitlines(), 1)
           if BANNED.search(line) and not line.lstrip().startswith("#")]
  assert not found, "\n".join(found)


@pytest.mark.parametrize("raw,message", [
    (b"\x80\x02]r\x00\x00\x00\x01.", "memo indices"),  # LONG_BINPUT 2^24: a 128 MB memo
    (b"\x80\x04\x8e" + (1 << 60).to_bytes(8, "little") + b".", "not there"),  # BINBYTES8
    (b"\x80\x05\x96" + (1 << 40).to_bytes(8, "little") + b"x.", "not there"),  # BYTEARRAY8
    (b"\x80\x04\x95" + (1 << 50).to_bytes(8, "little") + b"N.", "frame"),
    (b"\x80\x04\x8f.", "EMPTY_SET"),
    (b"\x80\x02" + b"]" * 10 + b".", "more than 5 opcodes"),
    (b"\x80\x02", "truncated"),
])
def test_the_scan_refuses_what_would_allocate_or_is_not_needed(raw, message):
  with pytest.raises(safe_pickle.PickleRefused, match=message):
    safe_pickle.restricted_load(io.BytesIO(raw), {}, max_bytes=len(raw), max_ops=5)


def test_views_that_reuse_elements_are_refused_and_real_views_read():
  storage = np.arange(12, dtype=np.float32)
  for size, stride in (((4, 3), (0, 1)), ((3, 3), (1, 1)), ((2, 3), (2, 1)), ((3,), (-1,))):
    with pytest.raises(torch_file.TorchFileError, match="more than once"):
      torch_file._rebuild_tensor(storage, 0, size, stride)
  with pytest.raises(torch_file.TorchFileError, match=r"negative size \(-1, 4\)"):
    torch_file._rebuild_tensor(storage, 0, (-1, 4), (4, 1))
  np.testing.assert_array_equal(torch_file._rebuild_tensor(storage, 0, (3, 4), (1, 3)),
                                storage.reshape(4, 3).T)  # transposed
  np.testing.assert_array_equal(torch_file._rebuild_tensor(storage, 1, (2, 3), (6, 2)),
                                storage.reshape(2, 6)[:, 1::2])  # sliced
  np.testing.assert_array_equal(torch_file._rebuild_tensor(storage, 0, (4, 1, 3), (3, 99, 1)),
                                storage.reshape(4, 1, 3))  # a size-1 axis's stride is free


def test_sizes_are_checked_against_the_limits_before_reading(tmp_path, monkeypatch):
  path = tmp_path / "w.pth"
  zip_pth(path, {"w": T(numel=300_000, size=(300_000,))}, {"0": bytes(1_200_000)})
  small = torch_file.Limits.for_shapes([(1000,), (10, 10)])
  assert small.tensor_bytes == 8 * 1000 + (1 << 20) and small.total_bytes == 24 * 1100 + (16 << 20)
  with pytest.raises(torch_file.TorchFileError, match="more than one tensor may hold"):
    torch_file.read_state_dict(str(path), small)
  assert torch_file.read_state_dict(str(path))["w"].shape == (300_000,)  # the defaults
  monkeypatch.setenv("LGLA_MAX_TENSOR_MB", "2")  # the configurable cap
  assert torch_file.read_state_dict(str(path), torch_file.Limits.for_shapes([(1000,)]))["w"].shape == (300_000,)
  monkeypatch.setenv("LGLA_MAX_WEIGHTS_MB", "1")
  with pytest.raises(torch_file.TorchFileError, match="in all"):
    torch_file.read_state_dict(str(path))


def test_a_zip_member_is_never_read_past_its_stated_size(tmp_path):
  """A zip whose headers state 16 bytes for a member that inflates to 64 MB: reading stops
  at the stated size and the CRC refuses it (the bomb is never inflated)."""
  path, member = tmp_path / "lie.pth", "archive/data/0"
  zip_pth(path, {"w": T(numel=4)}, {"0": bytes(64 << 20)}, compress=zipfile.ZIP_DEFLATED)
  raw = bytearray(path.read_bytes())
  with zipfile.ZipFile(path) as z:
    at = z.getinfo(member).header_offset
  raw[at + 22: at + 26] = (16).to_bytes(4, "little")  # the local header's stated size
  entry = raw.find(b"PK\x01\x02")  # the central directory's entries
  while entry >= 0:
    if raw[entry + 46: entry + 46 + len(member)] == member.encode():
      raw[entry + 24: entry + 28] = (16).to_bytes(4, "little")
    entry = raw.find(b"PK\x01\x02", entry + 1)
  path.write_bytes(bytes(raw))
  with zipfile.ZipFile(path) as z:
    assert z.getinfo(member).file_size == 16
  with pytest.raises(torch_file.TorchFileError, match="Bad CRC") as e:
    torch_file.read_state_dict(str(path))
  assert str(path) in str(e.value)


def test_an_idx_gzip_bomb_is_not_inflated(tmp_path):
  header = bytes([0, 0, 8, 2]) + (10).to_bytes(4, "big") + (10).to_bytes(4, "big")
  with gzip.open(tmp_path / "bomb.gz", "wb") as f:
    f.write(header + bytes(100))
    for _ in range(200):
      f.write(bytes(1 << 20))  # 200 MB more than the header states
  with pytest.raises(errors.DataError, match="holds more than that"):
    readers.read_idx(str(tmp_path / "bomb.gz"))
  huge = bytes([0, 0, 8, 2]) + (1 << 30).to_bytes(4, "big") + (1 << 30).to_bytes(4, "big")
  (tmp_path / "huge.gz").write_bytes(gzip.compress(huge))
  with pytest.raises(errors.DataError, match="more than an IDX file"):
    readers.read_idx(str(tmp_path / "huge.gz"))


