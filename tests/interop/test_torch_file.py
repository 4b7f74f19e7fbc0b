"""Reading torch.save files without torch (fixtures written by tools/make_torch_file_fixtures.py
with torch 2.13: the zip format, the legacy format, a checkpoint dict)."""

import pathlib
import pickle
import zipfile

import numpy as np
import pytest

from lgla_jax.interop import convert
from lgla_jax.interop import torch_file

DATA = pathlib.Path(__file__).parents[1] / "fixtures" / "data" / "torch_files"


@pytest.mark.parametrize("name", ["weights_zip.pth", "weights_legacy.pth", "checkpoint_zip.pth"])
def test_reads_every_tensor_exactly(name):
  expected = np.load(DATA / "expected.npz")
  state = torch_file.read_state_dict(str(DATA / name))
  assert sorted(state) == sorted(expected.files)
  for key in expected.files:
    value = state[key]
    if key == "bf16":
      assert value.dtype.name == "bfloat16"
      value = value.astype(np.float32)
    assert value.dtype == expected[key].dtype, key
    assert value.shape == expected[key].shape, key
    np.testing.assert_array_equal(value, expected[key], err_msg=key)
  assert state["bn1.num_batches_tracked"].shape == () and state["view"].shape == (4, 3)


def test_convert_reads_pth_without_torch():
  state = convert.read_state_dict(str(DATA / "weights_legacy.pth"))
  np.testing.assert_array_equal(state["conv1.weight"], np.load(DATA / "expected.npz")["conv1.weight"])


def test_refuses_code_and_foreign_files(tmp_path):
  # A pickle that would call os.system when loaded with pickle/torch.load(weights_only=False).
  class Evil:
    def __reduce__(self):
      import os
      return os.system, ("echo pwned",)

  with zipfile.ZipFile(tmp_path / "evil.pth", "w") as z:
    z.writestr("evil/data.pkl", pickle.dumps({"w": Evil()}))
  with pytest.raises(torch_file.TorchFileError, match="posix.system|os.system|not a tensor"):
    torch_file.read_state_dict(str(tmp_path / "evil.pth"))
  (tmp_path / "junk.pth").write_bytes(b"not a torch file at all")
  with pytest.raises(torch_file.TorchFileError, match="neither a zip nor a legacy"):
    torch_file.read_state_dict(str(tmp_path / "junk.pth"))
  truncated = (DATA / "weights_legacy.pth").read_bytes()[:-50]
  (tmp_path / "cut.pth").write_bytes(truncated)
  with pytest.raises(torch_file.TorchFileError, match="truncated"):
    torch_file.read_state_dict(str(tmp_path / "cut.pth"))


def test_a_tensor_past_its_storage_is_an_error():
  # Strides that would read past the storage (a corrupt file) must not read other memory.
  storage = np.arange(6, dtype=np.float32)
  np.testing.assert_array_equal(torch_file._rebuild_tensor(storage, 1, (2, 2), (3, 1)),
                                [[1, 2], [4, 5]])
  with pytest.raises(torch_file.TorchFileError, match="corrupt"):
    torch_file._rebuild_tensor(storage, 2, (2, 2), (3, 1))
