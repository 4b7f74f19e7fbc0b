"""Weights files in a bucket (``model.init_from=gs://...``, a fake-gcs-server on loopback):
``.pth`` (zip and legacy), ``.npz`` and ``.safetensors`` read from ``gs://`` equal the local
read (the readers seek within the bucket object as within a file), and hostile files are
refused there exactly as on a disk."""

import pathlib
import re
import zipfile

import numpy as np
import pytest
from safetensors.numpy import save_file

from helpers import upload
from hostile import REFUSED_NAME, T, legacy_pth, payloads, zip_pth
from lgla_jax import errors
from lgla_jax.interop import convert, torch_file

DATA = pathlib.Path(__file__).parents[1] / "fixtures" / "data" / "torch_files"


def _equal(a, b):
  assert sorted(a) == sorted(b)
  for k in a:
    assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
    np.testing.assert_array_equal(a[k].astype(np.float64), b[k].astype(np.float64), err_msg=k)


def test_every_weights_format_reads_from_a_bucket_as_from_a_disk(gcs, tmp_path):
  expected = dict(np.load(DATA / "expected.npz"))
  plain = {k: v for k, v in expected.items() if k != "bf16"}
  np.savez(tmp_path / "w.npz", **plain)
  save_file(plain, str(tmp_path / "w.safetensors"))
  files = [DATA / n for n in ("weights_zip.pth", "weights_legacy.pth", "checkpoint_zip.pth")]
  files += [tmp_path / "w.npz", tmp_path / "w.safetensors"]
  for f in files:
    url = upload(f, f"{gcs}/{f.name}")
    _equal(convert.read_state_dict(url), convert.read_state_dict(str(f)))
  got = torch_file.read_checkpoint(f"{gcs}/checkpoint_zip.pth")
  want = torch_file.read_checkpoint(str(DATA / "checkpoint_zip.pth"))
  assert (got["epoch"], got["monitor_best"], got["arch"]) == (want["epoch"], want["monitor_best"], want["arch"])
  with pytest.raises(errors.NotFound, match=f"{gcs}/none.pth do not exist"):
    convert.read_state_dict(f"{gcs}/none.pth")
  with pytest.raises(convert.WeightsFileError, match="is a folder"):
    convert.read_state_dict(gcs)


def test_hostile_files_in_a_bucket_are_refused_as_on_a_disk(gcs, tmp_path):
  marker = tmp_path / "PWNED"
  evil = payloads(marker)["os.system"]
  legacy_pth(tmp_path / "object.pth", object=evil)
  zip_pth(tmp_path / "zip.pth", pkl=evil)
  lie, member = tmp_path / "lie.pth", "archive/data/0"  # a member stating 16 bytes, 64 MB inside
  zip_pth(lie, {"w": T(numel=4)}, {"0": bytes(64 << 20)}, compress=zipfile.ZIP_DEFLATED)
  raw = bytearray(lie.read_bytes())
  with zipfile.ZipFile(lie) as z:
    at = z.getinfo(member).header_offset
  raw[at + 22: at + 26] = (16).to_bytes(4, "little")
  entry = raw.find(b"PK\x01\x02")
  while entry >= 0:
    if raw[entry + 46: entry + 46 + len(member)] == member.encode():
      raw[entry + 24: entry + 28] = (16).to_bytes(4, "little")
    entry = raw.find(b"PK\x01\x02", entry + 1)
  lie.write_bytes(bytes(raw))
  big = tmp_path / "big.pth"
  zip_pth(big, {"w": T(numel=300_000, size=(300_000,))}, {"0": bytes(1_200_000)})
  small = torch_file.Limits.for_shapes([(1000,)])
  cut = tmp_path / "cut.pth"
  cut.write_bytes((DATA / "weights_legacy.pth").read_bytes()[:-50])
  for f, words in ((tmp_path / "object.pth", REFUSED_NAME["os.system"]), (tmp_path / "zip.pth",
                   REFUSED_NAME["os.system"]), (lie, "Bad CRC"), (big, "more than one tensor"),
                   (cut, "truncated")):
    url = upload(f, f"{gcs}/{f.name}")
    messages = []
    for where in (str(f), url):
      with pytest.raises(torch_file.TorchFileError, match=re.escape(words)) as e:
        torch_file.read_state_dict(where, small)
      assert "\n" not in str(e.value)
      messages.append(str(e.value).replace(where, "FILE"))
    assert messages[0] == messages[1]
  assert not marker.exists()
