"""CIFAR-100-LT IR100 with RIDE (Wang et al., ICLR 2021), on the RIDE code base's recipe.

  python -m lgla_jax.main --config=configs/cifar100_ir100_ride.py --workdir=workdirs/cifar100_ir100_ride
  python -m lgla_jax.main --config=configs/cifar100_ir100_ride.py:quick --workdir=/tmp/ride_quick

Follows configs/config_imbalance_cifar100_ride.json of frank-xwang/RIDE-LongTailRecognition
(plain RIDE: no distillation, no expert assignment): its ResNet32Model with 3 experts,
reduce_dimension (layer2s / layer3s of 24 / 48 channels per expert), every expert a
separate branch (no shortcut leak between experts), cosine classifier with s = 30;
RIDELoss with additional_diversity_factor -0.45 and reweight_epoch 160 (its other arguments
at their defaults: base_diversity_temperature 1, max_m 0.5, reweight_factor 0.05); SGD lr
0.1, momentum 0.9, Nesterov, weight decay 5e-4, batch 128; 200 epochs under its CustomLR
(linear warm-up over 5 epochs, x0.01 at epoch 160 and again at 180); the augmentation of
its ImbalanceCIFAR100DataLoader: pad-4 crop, flip, RandomRotation(15), no AutoAugment or
Cutout. Data and the long-tailed subset as in configs/cifar100_ir100.py.
"""

from lgla_jax.config import recipes


def get_config(arg: str = ""):
  c = recipes.cifar_200_epoch_recipe(
      recipes.cifar_lt_config("cifar100", imbalance_factor=0.01, tau=2.5))
  c.model.expert_layout = "independent"
  c.model.expert_widths = (24, 48)
  c.loss.name = "ride"
  c.loss.additional_diversity_factor = -0.45
  c.loss.reweight_epoch = 160
  c.optim.weight_decay = 5e-4
  c.augment.rotate = 15.0
  c.num_workers = 2  # rotation is cheap next to AutoAugment
  if arg == "quick":
    recipes.shrink_to_quick(c)
  elif arg:
    raise ValueError(f"unknown config argument {arg!r} (use '' or 'quick')")
  return c
