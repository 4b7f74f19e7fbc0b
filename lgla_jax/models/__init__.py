"""Models found by name: ``build(model_config, num_classes, dtype)`` returns a ``Model``.

A registered model is a Flax module ``__call__(images_BxHxWx3, train, mask=None)`` that
returns ``{"output": [B, C], "logits": [E, B, C], "feat": [E, B, F]}`` (``output`` the
prediction, the mean of the expert logits; ``mask`` marks the valid images of a padded
batch) and may have a ``logit_scale`` property (the cosine head's s; 1 when absent). Its
variables other than ``params`` (BatchNorm's ``batch_stats``, or none) are its state,
found at ``init``: a model without BatchNorm needs nothing more. Register one with
``register(name, build, check)``; ``config.model.name`` then selects it.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax.linen as nn
import jax.numpy as jnp

from lgla_jax.models import layers, pretrained, resnet, resnet_cifar
from lgla_jax.models.resnet import ExpertResNet
from lgla_jax.models.resnet_cifar import ExpertResNetCifar

__all__ = ["ExpertResNet", "ExpertResNetCifar", "Model", "REGISTRY", "build", "problems",
           "register"]


@dataclasses.dataclass(frozen=True)
class Model:
  """A built model: its module, its logit scale and its pure init/apply functions."""

  module: nn.Module
  logit_scale: float
  load_pretrained_fn: Callable | None = None  # (variables, path) -> variables

  def init(self, rng, image_shape) -> tuple[Any, dict]:
    """``(params, model_state)`` for images of ``image_shape`` (H, W, 3)."""
    variables = dict(self.module.init(rng, jnp.zeros((1, *image_shape), jnp.float32), train=False))
    params = variables.pop("params")
    return params, variables

  def apply(self, params, model_state: dict, images, *, train: bool, mask=None):
    """``(output, new_model_state)``; in training the state collections are updated."""
    variables = {"params": params, **model_state}
    if train and model_state:
      out, updated = self.module.apply(variables, images, train=True, mask=mask,
                                       mutable=list(model_state))
      return out, dict(updated)
    return self.module.apply(variables, images, train=train, mask=mask), model_state

  def load_pretrained(self, params, model_state: dict, path: str) -> tuple[Any, dict]:
    """``(params, model_state)`` with pretrained weights from ``path`` filled in."""
    if self.load_pretrained_fn is None:
      raise ValueError(f"{type(self.module).__name__} has no pretrained weights to load")
    loaded = dict(self.load_pretrained_fn({"params": params, **model_state}, path))
    return loaded.pop("params"), loaded


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """How to build, check and load pretrained weights into one registered model."""
  build: Callable[..., nn.Module]  # (model_config, num_classes, dtype) -> module
  check: Callable[..., list]  # model_config -> [(field, problem)]
  load_pretrained: Callable | None  # (variables, path, model_config) -> variables
  fields: tuple[str, ...] = ()  # the config.model fields only this model reads


REGISTRY: dict[str, ModelSpec] = {}


def register(name: str, build, check=lambda model_config: [], load_pretrained=None, fields=()):
  """Make a model buildable as ``config.model.name = name``; ``fields``: the ``config.model``
  fields it reads that not every model reads (a command-line override of one of them for
  another model is refused)."""
  REGISTRY[name] = ModelSpec(build, check, load_pretrained, tuple(fields))


register("resnet_cifar", resnet_cifar.build, resnet_cifar.check,
         fields=("depth", "expert_layout", "expert_widths"))
register("resnet", resnet.build, resnet.check, resnet.load_pretrained,
         fields=("arch", "separate_experts", "base_planes", "pretrained"))


def build(model_config, num_classes: int, dtype=jnp.float32) -> Model:
  """The model of ``model_config`` (``model_config.name`` in ``REGISTRY``)."""
  spec = REGISTRY.get(model_config.name)
  if spec is None:
    raise ValueError(f"unknown model {model_config.name!r}: one of {sorted(REGISTRY)}")
  module = spec.build(model_config, num_classes, dtype)
  load = None
  if spec.load_pretrained is not None:
    load = lambda variables, path: spec.load_pretrained(variables, path, model_config)
  return Model(module, float(getattr(module, "logit_scale", 1.0)), load)


def problems(model_config) -> list[tuple[str, str]]:
  """``(field, problem)`` pairs of ``model_config``; empty when it is usable."""
  spec = REGISTRY.get(model_config.name)
  if spec is None:
    return [("model.name", f"{model_config.name!r} is not one of {sorted(REGISTRY)}")]
  m = model_config
  found = list(spec.check(m))
  if m.num_experts < 1:
    found.append(("model.num_experts", f"must be >= 1, got {m.num_experts}"))
  if m.conv_impl not in layers.CONV_IMPLS:
    found.append(("model.conv_impl", f"must be one of {layers.CONV_IMPLS}, got {m.conv_impl!r}"))
  if pretrained.pretrained_file(model_config) and spec.load_pretrained is None:
    found.append(("model.pretrained", f"model {model_config.name!r} has no pretrained weights"))
  if m.pretrained == pretrained.PRETRAINED_REQUIRED and not m.init_from:  # a whole model has the trunk
    found.append(("model.pretrained", pretrained.PRETRAINED_HINT))
  if m.init_from and pretrained.pretrained_file(m):
    found.append(("model.init_from", "a whole model replaces the pretrained trunk of "
                  "model.pretrained: set only one of them"))
  return found
