"""What ``config.model.pretrained`` may say: a weights file for the trunk, or one of two words.

``"none"`` trains from random initialisation, explicitly; ``"required"`` marks a recipe
that starts from pretrained weights (Places-LT) and refuses to run without a file.
"""

from __future__ import annotations

PRETRAINED_NONE = "none"  # train from random initialisation, explicitly
PRETRAINED_REQUIRED = "required"  # the recipe starts from pretrained weights: refuse without them
PRETRAINED_HINT = (
    "the official Places-LT model always starts from the ImageNet ResNet-152 that OLTR "
    "distributes (the official code loads model/pretrained_model_places/resnet152.pth with "
    "init_weights(caffe=True): a plain state dict, conv1.weight, layer3.0.conv1.weight, ...; "
    "the trunk by name, every expert's layer3s/layer4s from layer3/layer4). Give its path: "
    "--config.model.pretrained=/path/resnet152.pth (torchvision's resnet152 weights also "
    "load: other weights, other numbers), or --config.model.pretrained=none to train from "
    "random initialisation")


def pretrained_file(model_config) -> str | None:
  """The weights file ``model.pretrained`` names, or None (not set, or "none")."""
  p = model_config.pretrained
  return None if p in (None, "", PRETRAINED_NONE, PRETRAINED_REQUIRED) else p
