"""ImageNet-LT with a 3-expert ResNeXt-50 (32x4d) and LGLA (config_imagenet_lt_resnext50_lgla.json).

  python -m lgla_jax.main --config=configs/imagenet_lt_resnext50.py --workdir=workdirs/inlt_rx50 \
      --config.dataset.data_dir=/data/imagenet --config.dataset.split_dir=/data/ImageNet_LT
  python -m lgla_jax.main --config=configs/imagenet_lt_resnext50.py:quick ...   # smoke run

As imagenet_lt_resnet50 (batch 64, lr 0.025, wd 5e-4, cosine over 180 epochs, RandAugment),
with tau 3.0. Official: 2 GPUs under DataParallel, so BatchNorm over groups of 32 images is
the default (model.bn_group_size=0: the whole batch). The validation split picks the
reported epoch (dataset.select_on='val'), as the official trainer.
"""

from lgla_jax.config import recipes


def get_config(arg: str = ""):
  return recipes.large_lt_config(
      "imagenet_lt", "resnext50_32x4d", tau=3.0, batch_size=64, lr=0.025, weight_decay=5e-4,
      num_epochs=180, schedule="cosine", official_gpus=2, arg=arg)
