"""ImageNet-LT with a 3-expert ResNet-50 and LGLA (config_imagenet_lt_resnet50_lgla.json).

  python -m lgla_jax.main --config=configs/imagenet_lt_resnet50.py --workdir=workdirs/inlt_r50 \
      --config.dataset.data_dir=/data/imagenet --config.dataset.split_dir=/data/ImageNet_LT
  python -m lgla_jax.main --config=configs/imagenet_lt_resnet50.py:quick ...   # smoke run

data_dir is the ImageNet image root the split files' paths are relative to; split_dir holds
ImageNet_LT_train.txt / _val.txt / _test.txt. As the official trainer, the validation split is
evaluated every epoch and picks the reported epoch (dataset.select_on='val': report.json's
best_epoch_selected_on_val_set has that epoch's test accuracy). Recipe: batch 64, SGD lr 0.025 Nesterov,
weight decay 5e-4, cosine annealing over 180 epochs (eta_min 0), tau 2.8; RandomResizedCrop
224, flip, ColorJitter 0.4, RandAugment n2 m10 mstd0.5. The official run used 2 GPUs under
DataParallel, so BatchNorm normalised each GPU's 32 images: model.bn_group_size=32 is the
default (running statistics from the first group); 0 normalises over the whole batch.
"""

from lgla_jax.config import recipes


def get_config(arg: str = ""):
  return recipes.large_lt_config(
      "imagenet_lt", "resnet50", tau=2.8, batch_size=64, lr=0.025, weight_decay=5e-4,
      num_epochs=180, schedule="cosine", official_gpus=2, arg=arg)
