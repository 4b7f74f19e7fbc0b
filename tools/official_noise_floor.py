"""Re-run the official PyTorch code's three golden training steps here, to measure how far
the official code itself lands from the stored parameters (its float32 noise floor).

Not part of the package or the tests; needs torch and a checkout of the official code:

  python -m venv /tmp/tvenv && /tmp/tvenv/bin/pip install torch==2.13.0 numpy
  LGLA_REF=/path/to/LGLA /tmp/tvenv/bin/python tools/official_noise_floor.py [32|64]

It imports the official modules from $LGLA_REF (nothing of them is copied here), loads the
stored initial weights, and prints each step's loss and the worst elementwise error after
steps 1 and 3 relative to the bound 1e-4 + 1e-4 |ref| used in tests/train/test_train_steps.py.
"""

import contextlib
import io
import pathlib
import sys

import numpy as np
import torch

from official_ref import official_model_and_loss, official_train_step

GOLDEN = pathlib.Path(__file__).resolve().parents[1] / "tests" / "golden"


def main():
  dtype = torch.float64 if sys.argv[1:] == ["64"] else torch.float32
  torch.set_num_threads(2)
  arch, loss_mod = official_model_and_loss()
  init = np.load(GOLDEN / "resnet32_e3_c100.npz")
  d = np.load(GOLDEN / "train_steps_resnet32_e3_c100_warmuplr.npz")
  keys = [str(k) for k in d["state_dict_keys"]]
  net = arch.ResNet_s(arch.BasicBlock, [5, 5, 5], num_experts=3, num_classes=100,
                      use_norm=True, returns_feat=True)
  net.load_state_dict({k[len("backbone."):]: torch.from_numpy(init[k]) for k in keys})
  net = net.to(dtype).train()
  with contextlib.redirect_stdout(io.StringIO()):
    crit = loss_mod.DiverseExpertLoss(cls_num_list=list(d["cls_num_list"]), num_experts=3,
                                      s=30, tau=float(d["tau"]))
  opt = torch.optim.SGD(net.parameters(), lr=float(d["lr_per_step"][0]), momentum=0.9,
                        weight_decay=2e-4, nesterov=True)
  for k in range(3):
    x = torch.from_numpy(d["batches_nchw"][k]).to(dtype)
    y = torch.from_numpy(d["targets"][k])
    loss = official_train_step(net, crit, opt, x, y)
    print(f"step {k + 1}: loss {loss.item():.6f} (stored {float(d['losses'][k]):.6f})")
    if k in (0, 2):
      sd = {"backbone." + n: t.double().numpy() for n, t in net.state_dict().items()}
      worst = max(float((np.abs(sd[n] - d[f"step{k + 1}.{n}"]) /
                         (1e-4 + 1e-4 * np.abs(d[f"step{k + 1}.{n}"]))).max())
                  for n in keys if "num_batches" not in n)
      print(f"  worst |error| / (1e-4 + 1e-4 |ref|) after step {k + 1}: {worst:.2f}")


if __name__ == "__main__":
  main()
