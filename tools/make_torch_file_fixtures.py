"""Write the small torch.save files that tests/interop/test_torch_file.py reads without torch.

  /path/to/venv-with-torch/bin/python tools/make_torch_file_fixtures.py tests/fixtures/data

Writes weights_zip.pth (torch's zip format), weights_legacy.pth (the legacy format, as
old torchvision weights), checkpoint_zip.pth ({"state_dict": ..., "epoch": 3}) and
expected.npz (every tensor as numpy; bfloat16 as float32).
"""

import os
import sys

import numpy as np
import torch


def main():
  out = sys.argv[1]
  os.makedirs(out, exist_ok=True)
  g = torch.Generator().manual_seed(0)
  conv = torch.nn.Conv2d(3, 4, 3, bias=False)
  bn = torch.nn.BatchNorm2d(4)
  with torch.no_grad():
    conv.weight.copy_(torch.randn(conv.weight.shape, generator=g))
    bn.running_mean.copy_(torch.randn(4, generator=g))
  state = {f"conv1.{k}": v for k, v in conv.state_dict().items()}
  state.update({f"bn1.{k}": v for k, v in bn.state_dict().items()})  # int64 0-d counter too
  base = torch.arange(30, dtype=torch.float32).reshape(5, 6)
  state["view"] = base[1:, ::2]  # offset and strides into a larger storage
  state["transposed"] = torch.randn(3, 4, generator=g).t()
  state["half"] = torch.randn(5, generator=g).half()
  state["bf16"] = torch.randn(5, generator=g).bfloat16()
  state["mask"] = torch.tensor([True, False, True])
  state["param"] = torch.nn.Parameter(torch.randn(2, 2, generator=g))
  torch.save(state, os.path.join(out, "weights_zip.pth"))
  torch.save(state, os.path.join(out, "weights_legacy.pth"), _use_new_zipfile_serialization=False)
  torch.save({"state_dict": state, "epoch": 3}, os.path.join(out, "checkpoint_zip.pth"))
  np.savez(os.path.join(out, "expected.npz"),
           **{k: (v.detach().float() if v.dtype == torch.bfloat16 else v.detach()).numpy()
              for k, v in state.items()})
  print(sorted(state))


if __name__ == "__main__":
  main()
