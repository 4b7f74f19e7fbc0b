"""Your own split files: SPLITS/train.txt, SPLITS/test.txt (SPLITS/val.txt, SPLITS/classes.txt
optional), each line 'relative/path label' with paths relative to the image root DATA.

  python -m lgla_jax.main --config=configs/split_files.py \
      --config.dataset.data_dir=DATA --config.dataset.split_dir=SPLITS --workdir=workdirs/mine
  python -m lgla_jax.main --config=configs/split_files.py \
      --config.dataset.data_dir=DATA --config.dataset.split_dir=SPLITS --workdir=workdirs/mine \
      --mode=eval --checkpoint=workdirs/mine

The labels are the classes 0..C-1 (C = the largest training label + 1; every class needs a
training image); classes.txt names them, one a line in label order. The training set is used
as it is (it is your long-tailed data). DATA and SPLITS may be gs:// folders. This config is
the CIFAR recipe for small images (image_size <= 64: decoded once into memory, ResNet-32);
``arg='large'`` is the ImageNet-size recipe (224 px, files decoded by the pipeline's workers,
ResNet-50); ``arg='quick'`` a two-epoch smoke run. See docs/own_data.md.
"""

from lgla_jax.config import base_config, refuse_unknown_argument, shrink_own_data_to_quick
from lgla_jax.data import catalog


def get_config(arg: str = ""):
  refuse_unknown_argument(arg)
  c = base_config()
  c.dataset.name = "my_split_files"  # a label for reports; any name the catalog does not know
  c.dataset.source = "split_files"  # your own split files (a known name reads the official ones)
  c.dataset.data_dir = ""  # the image root the split files' paths are relative to (required)
  c.dataset.split_dir = ""  # the folder of train.txt, test.txt (val.txt, classes.txt) (required)
  c.dataset.imbalance_factor = 1.0  # your data is used as it is; other values are refused
  c.dataset.image_size = 32  # images are resized to this (<= 64: into memory, the CIFAR recipe)
  c.dataset.mean = catalog.IMAGENET_MEAN  # per-channel mean of your images in [0, 1]
  c.dataset.std = catalog.IMAGENET_STD  # per-channel std of your images in [0, 1]
  c.dataset.select_on = "test"  # 'val' with SPLITS/val.txt: the best epoch picked there
  c.augment.recipe = "cifar"  # random crop + flip (+ AutoAugment, Cutout) of the CIFAR runs
  c.model.depth = 32  # CIFAR ResNet-32 with 3 experts (the official CIFAR model)
  c.batch_size = 128  # images per step
  c.num_epochs = 200  # the official CIFAR schedule
  if arg == "large":  # ImageNet-size images: the ImageNet-LT recipe
    c.dataset.image_size = 224
    c.augment.recipe = "imagenet"  # random-resized crop + flip, on the files
    c.augment.cutout = 0
    c.model.name = "resnet"  # the ResNet-50 family
    c.model.arch = "resnet50"
    c.batch_size = 256
    c.num_epochs = 180
    c.num_workers = 12  # the decode of image files runs in grain workers
  elif arg == "quick":  # a smoke run: tiny network, two epochs
    shrink_own_data_to_quick(c)
  return c
