"""Your own split files: SPLITS/train.txt, SPLITS/test.txt (SPLITS/val.txt, SPLITS/classes.txt
optional), each line 'relative/path label' with paths relative to the image root DATA.

  python -m lgla_jax.main --config=configs/split_files.py \
      --config.dataset.data_dir=DATA --config.dataset.split_dir=SPLITS --workdir=workdirs/mine
  python -m lgla_jax.main --config=configs/split_files.py \
      --config.dataset.data_dir=DATA --config.dataset.split_dir=SPLITS --workdir=workdirs/mine \
      --mode=eval --checkpoint=workdirs/mine

The labels are the classes 0..C-1 (C = the largest training label + 1; every class needs a
training image); classes.txt names them, one a line in label order. The training set is used
as it is (it is your long-tailed data). DATA and SPLITS may be gs:// folders. As for image
folders, the recipe follows the data: the image size, recipe and model (``0`` / ``'auto'``)
and the mean and std (``()``) are measured from a fixed sample of the training images and
recorded in the run's config. Small images (<= 64 px) get the CIFAR recipe and ResNet-32,
decoded once into memory; larger ones 224 px, the ImageNet-size recipe (files decoded by the
pipeline's workers) and ResNet-50. Any field set here or on the command line is kept.
``arg='large'``: the ImageNet-LT batch and schedule length at 224 px; ``arg='quick'``: a
two-epoch smoke run. See docs/own_data.md.
"""

from lgla_jax.config import base_config, refuse_unknown_argument, shrink_own_data_to_quick


def get_config(arg: str = ""):
  refuse_unknown_argument(arg)
  c = base_config()
  c.dataset.name = "my_split_files"  # a label for reports; any name the catalog does not know
  c.dataset.source = "split_files"  # your own split files (a known name reads the official ones)
  c.dataset.data_dir = ""  # the image root the split files' paths are relative to (required)
  c.dataset.split_dir = ""  # the folder of train.txt, test.txt (val.txt, classes.txt) (required)
  c.dataset.imbalance_factor = 1.0  # your data is used as it is; other values are refused
  c.dataset.on_bad_image = "skip"  # an unreadable image (decoded into memory): skip (counted) | error
  c.dataset.image_size = 0  # network input side; 0: measured (<= 64 px: as measured, else 224)
  c.dataset.mean = ()  # per-channel mean of your images in [0, 1]; (): computed from a sample
  c.dataset.std = ()  # per-channel std of your images in [0, 1]; (): computed from a sample
  c.dataset.select_on = "test"  # 'val' with SPLITS/val.txt: the best epoch picked there
  c.augment.recipe = "auto"  # auto: cifar (crop + flip + AutoAugment + Cutout) for small images, imagenet (random-resized crop + flip, on the files) for larger
  c.model.name = "auto"  # auto: resnet_cifar (model.depth, ResNet-32) for small images, resnet (model.arch, ResNet-50) for larger
  c.model.depth = 32  # resnet_cifar: CIFAR ResNet-32 with 3 experts (the official CIFAR model)
  c.model.arch = "resnet50"  # resnet: the ResNet-50 family
  c.batch_size = 128  # images per step
  c.num_epochs = 200  # the official CIFAR schedule
  if arg == "large":  # ImageNet-size images: the ImageNet-LT batch and schedule length
    c.dataset.image_size = 224
    c.batch_size = 256
    c.num_epochs = 180
    c.num_workers = 12  # the decode of image files runs in grain workers
  elif arg == "quick":  # a smoke run: tiny network, two epochs
    shrink_own_data_to_quick(c)
  return c
