"""Time the official PyTorch training step of the 3-expert ResNeXt-50 (ImageNet-LT, 224x224,
batch 64, float32, LGLA loss, SGD Nesterov): the reference of the README's ImageNet-size GPU
speed table. Needs torch and the official code:

  LGLA_REF=/path/to/LGLA python tools/official_large_step_speed.py [STEPS] [cuda|cpu] [BATCH]

Prints one JSON line: images/s (median over the steps), peak GPU memory, device, torch
version. The official modules are imported from $LGLA_REF (nothing copied); its ``utils``
package (which needs pandas) is replaced by the dummy ``autocast`` it defines for float32.
"""

import contextlib
import io
import json
import sys
import types

import numpy as np
import torch

from official_ref import load_official, median_step_seconds


def main():
  steps = int(sys.argv[1]) if len(sys.argv) > 1 else 10
  device = sys.argv[2] if len(sys.argv) > 2 else "cuda"
  batch = int(sys.argv[3]) if len(sys.argv) > 3 else 64
  utils = types.ModuleType("utils")  # the official float32 autocast is a no-op context
  utils.autocast = lambda *a, **k: contextlib.nullcontext()
  sys.modules.setdefault("utils", utils)
  resnext = load_official("model/fb_resnets/Expert_ResNeXt.py", "expert_resnext", device == "cuda")
  loss_mod = load_official("model/loss.py", "official_loss", device == "cuda")
  counts = [max(5, int(1280 * 0.004 ** (i / 999))) for i in range(1000)]  # ImageNet-LT-like
  with contextlib.redirect_stdout(io.StringIO()):
    net = resnext.ResNext(resnext.Bottleneck, [3, 4, 6, 3], num_experts=3, groups=32,
                          width_per_group=4, num_classes=1000, use_norm=True,
                          returns_feat=True).train().to(device)
    crit = loss_mod.DiverseExpertLoss(cls_num_list=counts, num_experts=3, s=30, tau=3.0)
  opt = torch.optim.SGD(net.parameters(), lr=0.025, momentum=0.9, weight_decay=5e-4, nesterov=True)
  rng = np.random.RandomState(0)
  x = torch.from_numpy(rng.randn(batch, 3, 224, 224).astype(np.float32)).to(device)
  y = torch.from_numpy(rng.choice(1000, batch, p=np.asarray(counts) / sum(counts))).to(device)
  seconds = median_step_seconds(net, crit, opt, x, y, steps, device == "cuda")
  print(json.dumps({"official_resnext50_step_images_per_s": round(batch / seconds, 2),
                    "batch": batch, "peak_memory_bytes": (torch.cuda.max_memory_allocated()
                                                          if device == "cuda" else None),
                    "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
                    "torch": torch.__version__}))


if __name__ == "__main__":
  main()
