"""CIFAR100-LT IR50 with LGLA: the official recipe (config_cifar100_ir50_lgla.json).

  python -m lgla_jax.main --config=configs/cifar100_ir50.py --workdir=workdirs/cifar100_ir50
  python -m lgla_jax.main --config=configs/cifar100_ir50.py:quick --workdir=/tmp/cifar100_quick

Data: the original CIFAR python archive (cifar-100-python.tar.gz), downloaded on first use into
~/.cache/lgla_jax (or --config.dataset.data_dir=DIR) and checked against its MD5, as the
official code's torchvision loader does; --config.dataset.source=tfds reads prepared tfds
ArrayRecord data instead. ResNet-32 with 3 experts and a cosine classifier (s=30);
LGLA with tau 2.5; SGD lr 0.1, momentum 0.9, Nesterov, weight decay 2e-4, batch 128;
400 epochs, 5 warm-up epochs, x0.1 at epochs 320 and 360; AutoAugment (CIFAR-10 policy) +
Cutout 16. Any field can be overridden, e.g. --config.optim.lr=0.05.
"""

from lgla_jax.config import recipes


def get_config(arg: str = ""):
  return recipes.cifar_lt_config("cifar100", imbalance_factor=0.02, tau=2.5, arg=arg)
