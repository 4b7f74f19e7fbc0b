"""Time the official PyTorch training step (ResNet-32, 3 experts, CIFAR-100, batch 128) here,
the reference for lgla-jax's CPU speed target. Needs torch and the official code:

  LGLA_REF=/path/to/LGLA /tmp/tvenv/bin/python tools/official_step_speed.py [STEPS] [cpu|cuda]

Prints one JSON line: images/s (median over the steps), device, threads, torch version. Nothing of
the official code is copied here; it is imported from $LGLA_REF.
"""

import contextlib
import io
import json
import os
import sys

import numpy as np
import torch

from official_ref import median_step_seconds, official_model_and_loss


def main():
  steps = int(sys.argv[1]) if len(sys.argv) > 1 else 10
  device = sys.argv[2] if len(sys.argv) > 2 else "cpu"
  torch.set_num_threads(os.cpu_count())
  arch, loss_mod = official_model_and_loss(cuda=device == "cuda")
  counts = [int(500 * 0.01 ** (i / 99)) for i in range(100)]
  net = arch.ResNet_s(arch.BasicBlock, [5, 5, 5], num_experts=3, num_classes=100, use_norm=True,
                      returns_feat=True).train().to(device)
  with contextlib.redirect_stdout(io.StringIO()):
    crit = loss_mod.DiverseExpertLoss(cls_num_list=counts, num_experts=3, s=30, tau=2.5)
  opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=2e-4, nesterov=True)
  rng = np.random.RandomState(0)
  x = torch.from_numpy(rng.randn(128, 3, 32, 32).astype(np.float32)).to(device)
  y = torch.from_numpy(rng.choice(100, 128, p=np.asarray(counts) / sum(counts))).to(device)
  seconds = median_step_seconds(net, crit, opt, x, y, steps, device == "cuda")
  print(json.dumps({"official_step_images_per_s": round(128 / seconds, 2),
                    "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
                    "threads": torch.get_num_threads(), "torch": torch.__version__}))


if __name__ == "__main__":
  main()
