"""Multi-expert ImageNet ResNets: ResNet-50, ResNeXt-50 (32x4d), ResNet-152 (Places-LT).

Official layout (``fb_resnets/Expert_ResNet.py``, ``Expert_ResNeXt.py``,
``Expert_ResNet_ori.py``): the stem, ``layer1`` and ``layer2`` are shared; every expert
has a full-width ``layer3``/``layer4``. ResNet-50 and ResNeXt-50 run the experts as grouped
convolutions over the concatenated experts (downsample convs grouped too, so, unlike the
CIFAR ResNet, nothing leaks between experts); the Places ResNet-152 keeps separate
``layer3s[e]``/``layer4s[e]`` per expert (``separate_experts=True``). Global average
pooling (the official ``AvgPool2d(7)`` at 224x224), one classifier per expert.
Returns ``{"output": [B, C], "logits": [E, B, C], "feat": [E, B, 2048]}``.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from lgla_jax.interop import convert
from lgla_jax.models.pretrained import pretrained_file
from lgla_jax.models.layers import BatchNorm, ExpertConv, expert_heads, fb_resnet_conv_init

ARCHS = {  # name -> (blocks per stage, groups of the 3x3 conv, width per group)
    "resnet50": ((3, 4, 6, 3), 1, 64),
    "resnext50_32x4d": ((3, 4, 6, 3), 32, 4),
    "resnet152": ((3, 8, 36, 3), 1, 64),
    "resnet26": ((2, 2, 2, 2), 1, 64),  # not in the paper: for smoke tests and quick configs
}
EXPANSION = 4


class Bottleneck(nn.Module):
  """1x1 -> 3x3 (stride, ``card`` groups) -> 1x1, with a 1x1 projection shortcut when the
  shape changes; ``experts`` > 1 makes every conv grouped over the concatenated experts."""

  planes: int  # over all experts
  strides: int = 1
  experts: int = 1
  card: int = 1  # ResNeXt cardinality (per expert)
  base_width: int = 64
  conv_impl: str = "auto"
  dtype: Any = jnp.float32
  bn_group_size: int = 0

  @nn.compact
  def __call__(self, x, train: bool, mask=None):
    width = int(self.planes * (self.base_width / 64.0)) * self.card
    out = self.planes * EXPANSION
    conv = lambda name, f, k, s, groups: ExpertConv(
        f, groups=groups, kernel_size=k, strides=s, padding=k // 2, impl=self.conv_impl,
        dtype=self.dtype, experts=self.experts, kernel_init=fb_resnet_conv_init, name=name)
    bn = lambda name: BatchNorm(dtype=self.dtype, group_size=self.bn_group_size, name=name)
    y = nn.relu(bn("bn1")(conv("conv1", width, 1, 1, self.experts)(x), train, mask))
    y = nn.relu(bn("bn2")(conv("conv2", width, 3, self.strides, self.card * self.experts)(y), train, mask))
    y = bn("bn3")(conv("conv3", out, 1, 1, self.experts)(y), train, mask)
    if self.strides != 1 or x.shape[-1] != out:
      x = bn("downsample_1")(conv("downsample_0", out, 1, self.strides, self.experts)(x), train, mask)
    return nn.relu(y + x.astype(y.dtype))


class ExpertResNet(nn.Module):
  """Multi-expert ResNet for ImageNet-size input (NHWC); ``arch`` from ``ARCHS``.

  ``mask`` ([B] bool, in training): the valid images of a padded incomplete batch, the
  only ones BatchNorm statistics cover."""

  num_classes: int
  num_experts: int = 3
  arch: str = "resnet50"
  separate_experts: bool = False  # the Places ResNet-152 layout
  use_norm: bool = True
  scale: float = 30.0
  conv_impl: str = "auto"
  dtype: Any = jnp.float32
  base_planes: int = 64  # the stem width; the stages use 1x, 2x, 4x, 8x (smaller for tests)
  bn_group_size: int = 0  # see layers.BatchNorm.group_size

  @property
  def logit_scale(self) -> float:
    """What the logits are multiplied by: s for the cosine head, 1 for a linear one."""
    return self.scale if self.use_norm else 1.0

  @nn.compact
  def __call__(self, x, train: bool = False, mask=None):
    if self.arch not in ARCHS:
      raise ValueError(f"arch must be one of {sorted(ARCHS)}, got {self.arch!r}")
    layers, card, base_width = ARCHS[self.arch]
    e = self.num_experts
    kw = dict(card=card, base_width=base_width, conv_impl=self.conv_impl, dtype=self.dtype,
              bn_group_size=self.bn_group_size)

    b = self.base_planes
    x = ExpertConv(b, kernel_size=7, strides=2, padding=3, impl=self.conv_impl, dtype=self.dtype,
                   kernel_init=fb_resnet_conv_init, name="conv1")(x)
    x = nn.relu(BatchNorm(dtype=self.dtype, group_size=self.bn_group_size, name="bn1")(x, train, mask))
    x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    for stage, planes, stride in (("layer1", b, 1), ("layer2", 2 * b, 2)):
      for i in range(layers[int(stage[-1]) - 1]):
        x = Bottleneck(planes, stride if i == 0 else 1, name=f"{stage}_{i}", **kw)(x, train, mask)

    if self.separate_experts:
      outs = []
      for k in range(e):
        y = x
        for stage, planes, n in (("layer3s", 4 * b, layers[2]), ("layer4s", 8 * b, layers[3])):
          for i in range(n):
            y = Bottleneck(planes, 2 if i == 0 else 1, name=f"{stage}_{k}_{i}", **kw)(y, train, mask)
        outs.append(y)
      x = jnp.concatenate(outs, axis=-1)
    else:
      x = jnp.concatenate([x] * e, axis=-1)
      for stage, planes, n in (("layer3s", 4 * b, layers[2]), ("layer4s", 8 * b, layers[3])):
        for i in range(n):
          x = Bottleneck(planes * e, 2 if i == 0 else 1, experts=e, name=f"{stage}_{i}", **kw)(x, train, mask)

    return expert_heads(x, self.num_classes, e, use_norm=self.use_norm, scale=self.scale,
                        dtype=self.dtype)


def build(model_config, num_classes: int, dtype) -> ExpertResNet:
  """The model of ``config.model`` (``name="resnet"``)."""
  m = model_config
  return ExpertResNet(num_classes, m.num_experts, arch=m.arch, separate_experts=m.separate_experts,
                      use_norm=m.use_norm, scale=m.scale, conv_impl=m.conv_impl, dtype=dtype,
                      base_planes=m.base_planes, bn_group_size=m.bn_group_size)


def check(model_config) -> list[tuple[str, str]]:
  """``(field, problem)`` pairs of ``config.model`` for this model."""
  m, found = model_config, []
  if m.arch not in ARCHS:
    found.append(("model.arch", f"{m.arch!r} is not one of {tuple(ARCHS)}"))
  if pretrained_file(m) and not m.separate_experts:
    found.append(("model.pretrained", "pretrained trunks load into the separate-experts ResNet "
                  "(Places-LT): set model.separate_experts=True"))
  return found


def load_pretrained(variables: dict, path: str, model_config) -> dict:
  """Fill the trunk and every expert's layer3/layer4 from ImageNet weights (.npz/.pth)."""
  return convert.load_pretrained_resnet(variables, path, model_config.num_experts)
