"""Flax multi-expert networks. Every model returns ``{"output", "logits", "feat"}``."""

from lgla_jax.models.resnet import ExpertResNet
from lgla_jax.models.resnet_cifar import ExpertResNetCifar

__all__ = ["ExpertResNet", "ExpertResNetCifar"]
