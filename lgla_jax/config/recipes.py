"""The benchmarks' recipes as configs: CIFAR-LT (``cifar_lt_config``), the schedule LDAM-DRW
and RIDE share (``cifar_200_epoch_recipe``), the ImageNet-size benchmarks
(``large_lt_config``) and the smoke variants that tests and quick runs use."""

from __future__ import annotations

import ml_collections

from lgla_jax.config.defaults import base_config
from lgla_jax.data.catalog import DATASETS


def cifar_lt_config(name: str, imbalance_factor: float, tau: float, arg: str = ""):
  """The official CIFAR-LT recipe for ``name`` (cifar10 | cifar100); ``arg='quick'`` gives a
  tiny smoke variant (``shrink_to_quick``)."""
  c = base_config()
  c.dataset.name = name
  c.dataset.imbalance_factor = imbalance_factor
  c.loss.tau = tau
  c.num_workers = 4  # AutoAugment runs in PIL per image: spread it over processes
  if arg == "quick":
    shrink_to_quick(c)
  elif arg:
    raise ValueError(f"unknown config argument {arg!r} (use '' or 'quick')")
  return c


def cifar_200_epoch_recipe(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The schedule and augmentation LDAM-DRW and RIDE share on CIFAR-LT: 200 epochs, linear
  warm-up over 5, x0.01 at epoch 160 and again at 180 (their CustomLR /
  adjust_learning_rate), pad-4 crop and flip without AutoAugment or Cutout."""
  c.num_epochs = 200
  c.optim.schedule = "step"
  c.optim.step_epochs = (160, 180)
  c.optim.gamma = 0.01
  c.optim.warmup_epochs = 5
  c.augment.autoaugment = False
  c.augment.cutout = 0
  return c


def shrink_to_quick(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A CIFAR config's smoke variant: depth 8, 100 images in the largest class, 2 epochs
  (the schedule's decays and any re-weighting fall at epoch 1), batch 16."""
  c.num_workers = 0
  c.model.depth = 8
  c.dataset.max_per_class = 100  # IR100 keeps >= 1 image in the rarest class
  c.num_epochs = 2
  c.optim.warmup_epochs = 1
  c.optim.milestones = (1,)
  c.optim.step_epochs = (1, 2)
  if c.loss.reweight_epoch != -1:
    c.loss.reweight_epoch = 1  # the second epoch re-weights
  c.batch_size = 16
  c.eval_batch_size = 64
  c.log_every_steps = 5
  return c


def shrink_own_data_to_quick(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The smoke variant of the own-data configs (image folder, split files, tfds): depth 8,
  batch 8, two epochs without warm-up (the decay at epoch 1), no AutoAugment or Cutout, an
  evaluation and a checkpoint every epoch. The data are used whole: own data sets in tests
  are small already."""
  c.model.depth = 8
  c.batch_size = 8
  c.eval_batch_size = 16
  c.num_epochs = 2
  c.optim.warmup_epochs = 0
  c.optim.milestones = (1,)
  c.augment.autoaugment = False
  c.augment.cutout = 0
  c.eval_every_epochs = 1
  c.checkpoint_every_epochs = 1
  return c


def refuse_unknown_argument(arg: str, known=("large", "quick")):
  """Raises for a config argument the file does not define, so that a mistyped variant
  (``:quik``) never trains the full config instead."""
  if arg and arg not in known:
    names = ", ".join(repr(k) for k in ("",) + tuple(known))
    raise ValueError(f"unknown config argument {arg!r} (use {names})")


def large_lt_config(dataset: str, arch: str, *, tau: float, batch_size: int, lr: float,
                    weight_decay: float, num_epochs: int, schedule: str, official_gpus: int,
                    arg: str = "", **extra):
  """The official recipe of an ImageNet-size benchmark (ImageNet-LT, iNaturalist 2018,
  Places-LT); ``arg='quick'`` shrinks it to a smoke run (64x64 images, 1/8-width network,
  batch 8, one epoch). The official runs used DataParallel on ``official_gpus`` GPUs, so
  BatchNorm saw ``batch_size / official_gpus`` images: that is the default grouping."""
  c = base_config()
  c.dataset.name = dataset
  c.dataset.source = "split_files"
  c.dataset.imbalance_factor = 1.0  # the split files are long-tailed already
  c.dataset.image_size = 224
  info = DATASETS[dataset]
  c.dataset.mean, c.dataset.std = info.mean, info.std
  c.augment.recipe = info.recipe
  c.model.name = "resnet"
  c.model.arch = arch
  c.model.bn_group_size = batch_size // official_gpus
  c.loss.tau = tau
  c.batch_size = batch_size
  c.eval_batch_size = 500
  c.optim.lr = lr
  c.optim.weight_decay = weight_decay
  c.optim.schedule = schedule
  c.num_epochs = num_epochs
  c.num_workers = 12
  if info.val_file:  # the official trainer validates every epoch
    c.dataset.select_on = "val"
    c.eval_every_epochs = 1
  else:
    c.eval_every_epochs = 10
  c.checkpoint_every_epochs = 5
  c.log_every_steps = 100
  for key, value in extra.items():
    section, _, field = key.partition("__")
    c[section][field] = value
  if arg == "quick":
    c.dataset.image_size = 64
    c.model.base_planes = 16 if arch.startswith("resnext") else 8  # ResNeXt needs 16 for 32 groups
    c.batch_size = 8
    c.model.bn_group_size = 8 // min(official_gpus, 4)  # still grouped, as the real recipe
    if c.model.pretrained == "required":  # (models.pretrained's words, as config values)
      c.model.pretrained = "none"  # a smoke run from random weights, said so
    c.eval_batch_size = 8
    c.num_epochs = 1
    c.num_workers = 0
    c.optim.warmup_epochs = 0
    c.log_every_steps = 1
    c.eval_every_epochs = 1
    c.checkpoint_every_epochs = 1
  elif arg:
    raise ValueError(f"unknown config argument {arg!r} (use '' or 'quick')")
  return c
