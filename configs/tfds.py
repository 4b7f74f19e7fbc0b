"""Any tensorflow-datasets data set by name, read without TensorFlow from its prepared
array_record files (tfds.data_source).

  python -m lgla_jax.main --config=configs/tfds.py \
      --config.dataset.name=tfds:oxford_flowers102 --config.dataset.data_dir=TFDS_DIR \
      --workdir=workdirs/flowers
  python -m lgla_jax.main --config=configs/tfds.py \
      --config.dataset.name=tfds:oxford_flowers102 --config.dataset.data_dir=TFDS_DIR \
      --workdir=workdirs/flowers --mode=eval --checkpoint=workdirs/flowers

TFDS_DIR holds NAME/VERSION/ prepared in the array_record format (preparing needs network
access and, for most builders, TensorFlow: `tfds build NAME --file_format=array_record
--data_dir=TFDS_DIR`, or --config.dataset.download=True with TensorFlow installed). The image
and label features are found from the builder's info (image_key / label_key name them when
there are several), classes and names from the label's ClassLabel. The images are held in
memory, resized to image_size. imbalance_factor=1.0 uses the training split as it is; e.g.
0.01 cuts it to IR100 by the official subset rule (with max_per_class for the largest class).
The mean and std are measured from a fixed sample of the training split's images (before any
long-tailed cut) and recorded in the run's config; set them to use your own.
``arg='large'``: 224 px with ResNet-50; ``arg='quick'``: a two-epoch smoke run.
"""

from ml_collections import config_dict

from lgla_jax.config import base_config, refuse_unknown_argument, shrink_own_data_to_quick


def get_config(arg: str = ""):
  refuse_unknown_argument(arg)
  c = base_config()
  c.dataset.name = "tfds:oxford_flowers102"  # tfds:NAME, NAME as tfds.builder knows it
  c.dataset.source = "tfds"  # read through tfds.data_source (array_record, no TensorFlow)
  c.dataset.data_dir = config_dict.placeholder(str)  # tfds's data folder (None: ~/tensorflow_datasets)
  c.dataset.download = False  # True: prepare missing data (needs network access and TensorFlow)
  c.dataset.image_key = config_dict.placeholder(str)  # the image feature (None: the one there is)
  c.dataset.label_key = config_dict.placeholder(str)  # the label feature (None: the one ClassLabel)
  c.dataset.splits = config_dict.placeholder(str)  # e.g. 'train=train[:80%],test=train[80%:]' (None: train, test, validation)
  c.dataset.imbalance_factor = 1.0  # 1.0: the training split as it is; 0.01: made IR100 (official rule)
  c.dataset.max_per_class = config_dict.placeholder(int)  # the largest class when cut (None: the data's)
  c.dataset.image_size = 32  # images are resized to this, in memory
  c.dataset.mean = ()  # per-channel mean of the images in [0, 1]; (): computed from a sample
  c.dataset.std = ()  # per-channel std of the images in [0, 1]; (): computed from a sample
  c.dataset.select_on = "test"  # 'val': the best epoch picked on the validation split
  c.augment.recipe = "cifar"  # random crop + flip (+ AutoAugment, Cutout), on in-memory images
  c.model.depth = 32  # CIFAR ResNet-32 with 3 experts (the official CIFAR model)
  c.batch_size = 128  # images per step
  c.num_epochs = 200  # the official CIFAR schedule
  if arg == "large":  # larger images: ResNet-50 (the in-memory recipe: crop + flip)
    c.dataset.image_size = 224
    c.augment.crop_padding = 28  # the CIFAR crop's 4/32 of the side
    c.augment.autoaugment = False
    c.augment.cutout = 0
    c.model.name = "resnet"
    c.model.arch = "resnet50"
    c.batch_size = 256
    c.num_epochs = 180
  elif arg == "quick":  # a smoke run: tiny network, two epochs
    shrink_own_data_to_quick(c)
  return c
