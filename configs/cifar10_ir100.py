"""CIFAR10-LT IR100 with LGLA: the official recipe (config_cifar10_ir100_lgla.json).

  python -m lgla_jax.main --config=configs/cifar10_ir100.py --workdir=workdirs/cifar10_ir100
  python -m lgla_jax.main --config=configs/cifar10_ir100.py:quick --workdir=/tmp/cifar10_quick

Data: tfds 'cifar10' by default (--config.dataset.data_dir=DIR for prepared data), or the
original python archive with --config.dataset.source=cifar_archive
--config.dataset.data_dir=DIR. ResNet-32 with 3 experts and a cosine classifier (s=30);
LGLA with tau 3.0; SGD lr 0.1, momentum 0.9, Nesterov, weight decay 2e-4, batch 128;
400 epochs, 5 warm-up epochs, x0.1 at epochs 320 and 360; AutoAugment (CIFAR-10 policy) +
Cutout 16. Any field can be overridden, e.g. --config.optim.lr=0.05.
"""

from lgla_jax import configlib


def get_config(arg: str = ""):
  return configlib.cifar_lt_config("cifar10", imbalance_factor=0.01, tau=3.0, arg=arg)
