"""Shared set-up of the developer scripts that run the official PyTorch code (from $LGLA_REF).

Nothing of the official code is copied: its modules are imported from the checkout.
"""

import importlib.util
import os
import pathlib

import torch


def load_official(relative_path: str, name: str, cuda: bool = False):
  """Import one module of the official checkout by path; the official loss calls .cuda(),
  which becomes a no-op on the CPU (``cuda=False``)."""
  if not cuda:
    torch.Tensor.cuda = lambda self, *a, **k: self
  path = pathlib.Path(os.environ["LGLA_REF"]) / relative_path
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def official_model_and_loss(cuda: bool = False):
  return (load_official("model/ldam_drw_resnets/expert_resnet_cifar.py", "expert_resnet_cifar", cuda),
          load_official("model/loss.py", "official_loss", cuda))
