"""Shared set-up of the developer scripts that run the official PyTorch code (from $LGLA_REF).

Nothing of the official code is copied: its modules are imported from the checkout.
"""

import importlib.util
import os
import pathlib
import sys

import torch


def _numpy_core_alias():
  """The official loss imports ``numpy.core.fromnumeric`` (numpy 1's path, deprecated since
  numpy 2.0 for removal; the GPU image has numpy 2.5): where it is gone, point the old
  names at ``numpy._core``."""
  try:
    import numpy.core.fromnumeric  # noqa: F401
  except ImportError:
    import numpy._core
    import numpy._core.fromnumeric
    sys.modules.setdefault("numpy.core", numpy._core)
    sys.modules["numpy.core.fromnumeric"] = numpy._core.fromnumeric


def load_official(relative_path: str, name: str, cuda: bool = False):
  """Import one module of the official checkout by path; the official loss calls .cuda(),
  which becomes a no-op on the CPU (``cuda=False``)."""
  if not cuda:
    torch.Tensor.cuda = lambda self, *a, **k: self
  _numpy_core_alias()
  path = pathlib.Path(os.environ["LGLA_REF"]) / relative_path
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def official_model_and_loss(cuda: bool = False):
  return (load_official("model/ldam_drw_resnets/expert_resnet_cifar.py", "expert_resnet_cifar", cuda),
          load_official("model/loss.py", "official_loss", cuda))


def official_train_step(net, crit, opt, x, y):
  """One official training step (forward, LGLA loss on the expert logits, backward, SGD);
  returns the loss."""
  opt.zero_grad()
  out = net(x)
  loss = crit(output_logits=out["output"], target=y,
              extra_info={"logits": out["logits"].transpose(0, 1)})
  loss.backward()
  opt.step()
  return loss


def median_step_seconds(net, crit, opt, x, y, steps: int, cuda: bool) -> float:
  """Median seconds of the official training step (forward, LGLA loss, backward, SGD) over
  ``steps`` steps after two warm-up steps."""
  import statistics
  import time
  sync = torch.cuda.synchronize if cuda else (lambda: None)
  times = []
  for i in range(steps + 2):
    t0 = time.perf_counter()
    official_train_step(net, crit, opt, x, y)
    sync()
    if i >= 2:
      times.append(time.perf_counter() - t0)
  return statistics.median(times)
