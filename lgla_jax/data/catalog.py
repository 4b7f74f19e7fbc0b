"""The data sets lgla-jax knows by name: classes, where they can be read from, their
normalisation and their training recipe. Plain Python: configs read it before jax loads.

``config.dataset.name`` is a key of ``DATASETS``; ``config.dataset.source`` one of its
``sources`` (``data.sources`` reads each). Everything else known of a data set before
reading it lives here too, so that a new data set is one entry.
"""

from __future__ import annotations

from typing import NamedTuple

# Normalisation constants of the official CIFAR loaders (CIFAR-10's, also used for CIFAR-100-LT).
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2023, 0.1994, 0.2010)

# ImageNet-family normalisation of the official loaders; iNaturalist has its own.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INATURALIST_MEAN = (0.466, 0.471, 0.380)
INATURALIST_STD = (0.195, 0.194, 0.192)


class DatasetInfo(NamedTuple):
  """What is known of a data set before reading it."""

  num_classes: int
  sources: tuple[str, ...]  # where config.dataset.source may read it from
  split_files: tuple[str, str] | None = None  # split_files: (train, test) file names
  val_file: str | None = None  # split_files: the validation split the official trainer selects on
  by_frequency: bool = False  # classes renumbered by training images, most first (official Places-LT)
  train_per_class: int | None = None  # the balanced training set's images per class (in memory)
  mean: tuple[float, float, float] = CIFAR_MEAN  # the official loader's normalisation
  std: tuple[float, float, float] = CIFAR_STD
  recipe: str = "cifar"  # the official training augmentation (a name in lgla_jax.augment)
  class_names: tuple[str, ...] | None = None  # a name per class in label order (None: unknown)


# Class names in label order, as the data sets' own metadata gives them (CIFAR's
# batches.meta / meta files, Fashion-MNIST's README); digits are their own names.
CIFAR10_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                 "truck")
CIFAR100_NAMES = tuple("""
apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus butterfly
camel can castle caterpillar cattle chair chimpanzee clock cloud cockroach couch crab crocodile
cup dinosaur dolphin elephant flatfish forest fox girl hamster house kangaroo keyboard lamp
lawn_mower leopard lion lizard lobster man maple_tree motorcycle mountain mouse mushroom oak_tree
orange orchid otter palm_tree pear pickup_truck pine_tree plain plate poppy porcupine possum
rabbit raccoon ray road rocket rose sea seal shark shrew skunk skyscraper snail snake spider
squirrel streetcar sunflower sweet_pepper table tank telephone television tiger tractor train
trout tulip turtle wardrobe whale willow_tree wolf woman worm""".split())
FASHION_MNIST_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                       "Sneaker", "Bag", "Ankle boot")
DIGITS_NAMES = tuple(str(d) for d in range(10))

_IMAGENET = dict(mean=IMAGENET_MEAN, std=IMAGENET_STD, recipe="imagenet")

DATASETS = {  # config.dataset.name -> DatasetInfo: the one table of data sets
    "cifar10": DatasetInfo(10, ("tfds", "cifar_archive"), train_per_class=5000,
                           class_names=CIFAR10_NAMES),
    "cifar100": DatasetInfo(100, ("tfds", "cifar_archive"), train_per_class=500,
                            class_names=CIFAR100_NAMES),
    "fashion_mnist": DatasetInfo(10, ("idx", "tfds"), train_per_class=6000,
                                 class_names=FASHION_MNIST_NAMES),
    "digits": DatasetInfo(10, ("sklearn",), train_per_class=143,
                          class_names=DIGITS_NAMES),  # (its largest class)
    "imagenet_lt": DatasetInfo(1000, ("split_files",),
                               ("ImageNet_LT_train.txt", "ImageNet_LT_test.txt"),
                               "ImageNet_LT_val.txt", **_IMAGENET),
    # iNaturalist 2018 has no separate validation split: its val file is the test set.
    "inaturalist2018": DatasetInfo(8142, ("split_files",),
                                   ("iNaturalist18_train.txt", "iNaturalist18_val.txt"),
                                   mean=INATURALIST_MEAN, std=INATURALIST_STD, recipe="imagenet"),
    "places_lt": DatasetInfo(365, ("split_files",), ("Places_LT_train.txt", "Places_LT_test.txt"),
                             "Places_LT_val.txt", by_frequency=True,
                             **dict(_IMAGENET, recipe="places")),
}
