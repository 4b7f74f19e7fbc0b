"""Your own images in class folders: ROOT/train/<class>/*, ROOT/test/<class>/* (ROOT/val optional).

  python -m lgla_jax.main --config=configs/image_folder.py \
      --config.dataset.data_dir=ROOT --workdir=workdirs/mine
  python -m lgla_jax.main --config=configs/image_folder.py \
      --config.dataset.data_dir=ROOT --workdir=workdirs/mine --mode=eval \
      --checkpoint=workdirs/mine

Classes are the folder names under ROOT/train, sorted (torchvision's ImageFolder order); the
training set is used as it is (it is your long-tailed data). This config is the CIFAR recipe
for small images (image_size <= 64, ResNet-32); ``arg='large'`` is the ImageNet-size recipe
(224 px, ResNet-50). mean/std: set them to your data's (per channel, images in [0, 1]); the
defaults are ImageNet's. See docs/own_data.md.
"""

from lgla_jax.config import base_config
from lgla_jax.data import catalog


def get_config(arg: str = ""):
  c = base_config()
  c.dataset.name = "image_folder"  # a label for reports (any name; not looked up)
  c.dataset.source = "image_folder"  # ROOT/{train,val,test}/<class>/* (docs/own_data.md)
  c.dataset.imbalance_factor = 1.0  # your data is used as it is; other values are refused
  c.dataset.image_size = 32  # images are resized to this (<= 64: the CIFAR recipe)
  c.dataset.mean = catalog.IMAGENET_MEAN  # per-channel mean of your images in [0, 1]
  c.dataset.std = catalog.IMAGENET_STD  # per-channel std of your images in [0, 1]
  c.dataset.select_on = "test"  # 'val' when ROOT/val exists: the best epoch picked there
  c.augment.recipe = "cifar"  # random crop + flip (+ AutoAugment, Cutout) of the CIFAR runs
  c.model.depth = 32  # CIFAR ResNet-32 with 3 experts (the official CIFAR model)
  c.batch_size = 128  # images per step
  c.num_epochs = 200  # the official CIFAR schedule
  if arg == "large":  # ImageNet-size images: the ImageNet-LT recipe
    c.dataset.image_size = 224
    c.augment.recipe = "imagenet"  # random-resized crop + flip
    c.model.name = "resnet"  # the ResNet-50 family
    c.model.arch = "resnet50"
    c.batch_size = 256
    c.num_epochs = 180
  if arg == "quick":  # a smoke run: tiny network, two epochs
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
