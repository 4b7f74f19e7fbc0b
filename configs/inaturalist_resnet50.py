"""iNaturalist 2018 with a 3-expert ResNet-50 and LGLA (config_iNaturalist_resnet50_lgla.json).

  python -m lgla_jax.main --config=configs/inaturalist_resnet50.py --workdir=workdirs/inat_r50 \
      --config.dataset.data_dir=/data/iNaturalist18 --config.dataset.split_dir=/data/iNaturalist18_splits
  python -m lgla_jax.main --config=configs/inaturalist_resnet50.py:quick ...   # smoke run

Split files iNaturalist18_train.txt / iNaturalist18_val.txt (8,142 classes; evaluation on
val). Recipe: batch 512, SGD lr 0.2 Nesterov, weight decay 2e-4, cosine annealing to 1e-4
over 400 epochs (as the official config), tau 3.0, iNaturalist normalisation, RandAugment.
Official: 4 GPUs under DataParallel, so BatchNorm over groups of 128 images is the default
(model.bn_group_size=0: the whole batch). RandAugment fills with the ImageNet mean grey, as
the official loader does here too.
"""

from lgla_jax.config import recipes


def get_config(arg: str = ""):
  return recipes.large_lt_config(
      "inaturalist2018", "resnet50", tau=3.0, batch_size=512, lr=0.2, weight_decay=2e-4,
      num_epochs=400, schedule="cosine", official_gpus=4, arg=arg, optim__cosine_eta_min=1e-4)
