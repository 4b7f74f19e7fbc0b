"""Places-LT with an ImageNet-pretrained 3-expert ResNet-152 and LGLA (config_places_lt_resnet152_lgla.json).

  python -m lgla_jax.main --config=configs/places_lt_resnet152.py --workdir=workdirs/places \
      --config.dataset.data_dir=/data/places365 --config.dataset.split_dir=/data/Places_LT \
      --config.model.pretrained=/data/resnet152_imagenet.npz
  python -m lgla_jax.main --config=configs/places_lt_resnet152.py:quick ...   # smoke run

Separate layer3/layer4 per expert, all initialised from the pretrained ResNet-152's
layer3/layer4 (model.pretrained: the PyTorch state_dict as .pth, read without torch,
or .npz). Recipe: batch 128, SGD lr 0.01 Nesterov, weight decay 4e-4, 30 epochs with x0.1
at epochs 10 and 20, tau 2.4; RandomResizedCrop, ColorJitter, grayscale 0.2, blur 0.5, flip.
Official: 4 GPUs under DataParallel, so BatchNorm over groups of 32 images is the default.
Classes are renumbered by training images, most first, as the official loader does; the
validation split (Places_LT_val.txt) picks the reported epoch (dataset.select_on='val').
Without model.pretrained the run refuses to start (the official model cannot run without
its weights); --config.model.pretrained=none trains from random initialisation on purpose.
"""

from lgla_jax.config import recipes


def get_config(arg: str = ""):
  return recipes.large_lt_config(
      "places_lt", "resnet152", tau=2.4, batch_size=128, lr=0.01, weight_decay=4e-4,
      num_epochs=30, schedule="step", official_gpus=4, arg=arg, model__separate_experts=True,
      model__pretrained="required",  # no run without the weights file (see the docstring)
      optim__step_epochs=(10, 20), optim__warmup_epochs=0)
