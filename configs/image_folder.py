"""Your own images in class folders: ROOT/train/<class>/*, ROOT/test/<class>/* (ROOT/val optional).

First look at the data (classes, counts, imbalance, the many/medium/few split, the recipe
and the mean/std it gets), then train, then evaluate or label new images:

  python -m lgla_jax.data_summary --config=configs/image_folder.py \
      --config.dataset.data_dir=ROOT --workdir=workdirs/mine
  python -m lgla_jax.main --config=configs/image_folder.py \
      --config.dataset.data_dir=ROOT --workdir=workdirs/mine
  python -m lgla_jax.main --config=configs/image_folder.py \
      --config.dataset.data_dir=ROOT --workdir=workdirs/mine --mode=eval \
      --checkpoint=workdirs/mine
  python -m lgla_jax.predict --checkpoint=workdirs/mine NEW_IMAGES/ --out=predictions.csv

Classes are the folder names under ROOT/train, sorted (torchvision's ImageFolder order); the
training set is used as it is (it is your long-tailed data).

The recipe follows the data. Five fields are left to it by their "auto" value (a value you
set, here or with --config.FIELD=..., is kept): dataset.image_size (0), augment.recipe and
model.name ('auto'), dataset.mean and dataset.std (()). The image size is the median larger
side of 200 sampled training images: up to 64 px the images are used at that size with the
CIFAR recipe and ResNet-32 (decoded into memory); larger ones are used at 224 px with the
ImageNet-size recipe and ResNet-50. mean/std are computed per channel from a fixed sample of
up to 2,000 training images (seed 0, the same for every run). The run prints the values in
its first lines and records them in its config (checkpoints, report.json), which
--mode=eval, export and predict read. The schedule below is the CIFAR one for either size;
``:large`` gives the ImageNet-LT batch and epochs, ``:quick`` a two-epoch smoke run. See
docs/own_data.md.
"""

from lgla_jax.config import base_config, refuse_unknown_argument, shrink_own_data_to_quick


def get_config(arg: str = ""):
  refuse_unknown_argument(arg)
  c = base_config()
  c.dataset.name = "image_folder"  # a label for reports (any name; not looked up in the catalog)
  c.dataset.source = "image_folder"  # ROOT/{train,val,test}/<class>/* (docs/own_data.md)
  c.dataset.data_dir = None  # ROOT (required): --config.dataset.data_dir=ROOT
  c.dataset.imbalance_factor = 1.0  # your data is used as it is; other values are refused
  c.dataset.on_bad_image = "skip"  # an unreadable or truncated image: skip (counted, named) | error
  c.dataset.image_size = 0  # network input side; 0: measured (<= 64 px: as measured, else 224)
  c.dataset.mean = ()  # per-channel mean of your images in [0, 1]; (): computed from a sample
  c.dataset.std = ()  # per-channel std of your images in [0, 1]; (): computed from a sample
  c.dataset.select_on = "test"  # 'val' when ROOT/val exists: the best epoch picked there
  c.augment.recipe = "auto"  # auto: cifar (crop + flip + AutoAugment + Cutout) for small images, imagenet (random-resized crop + flip) for larger
  c.model.name = "auto"  # auto: resnet_cifar (model.depth, ResNet-32) for small images, resnet (model.arch, ResNet-50) for larger
  c.model.depth = 32  # resnet_cifar: CIFAR ResNet-32 with 3 experts (the official CIFAR model)
  c.model.arch = "resnet50"  # resnet: the ResNet-50 family
  c.batch_size = 128  # images per step
  c.num_epochs = 200  # the official CIFAR schedule (the learning-rate milestones are base_config's)
  c.eval.many_shot_min = 100  # many-shot classes: more training images than this (official 100)
  c.eval.few_shot_max = 20  # few-shot classes: fewer training images than this (official 20)
  if arg == "large":  # ImageNet-size images: the ImageNet-LT batch and schedule length
    c.dataset.image_size = 224
    c.batch_size = 256
    c.num_epochs = 180
  elif arg == "quick":  # a smoke run: tiny network, two epochs
    shrink_own_data_to_quick(c)
  return c
