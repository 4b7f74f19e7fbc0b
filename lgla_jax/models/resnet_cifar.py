"""Multi-expert CIFAR ResNet (ResNet-32 for LGLA), after the official ``ResNet_s``.

Stem and ``layer1`` (16 channels) are shared; the ``layer1`` output is repeated E times
along channels and ``layer2s``/``layer3s`` run all experts as one grouped network on the
concatenated channels (32E and 64E wide; ``expert_widths`` changes the per-expert widths,
e.g. RIDE's ``reduce_dimension`` (24, 48)). Each expert's last channels are average-pooled
(``feat``) and fed to its own classifier.

``expert_layout="official"`` applies the option-A (zero-pad) shortcut to the concatenated
tensor, as the official code does: the padding shifts channels across expert boundaries,
so features leak between experts at the first block of layer2s/layer3s. This is needed to
reproduce the official numbers. ``"independent"`` pads every expert's slice on its own,
giving E truly separate branches.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from lgla_jax.models.layers import BatchNorm, ExpertConv, expert_heads

EXPERT_LAYOUTS = ("official", "independent")


def shortcut_option_a(x, out_channels: int, groups: int, layout: str):
  """Option-A shortcut: stride-2 subsampling plus zero channels (``F.pad`` in PyTorch)."""
  x = x[:, ::2, ::2, :]
  if layout == "official":
    pad = (out_channels - x.shape[-1]) // 2
    return jnp.pad(x, ((0, 0), (0, 0), (0, 0), (pad, pad)))
  b, h, w, c = x.shape
  xe = x.reshape(b, h, w, groups, c // groups)
  pad = (out_channels - c) // groups // 2
  xe = jnp.pad(xe, ((0, 0), (0, 0), (0, 0), (0, 0), (pad, pad)))
  return xe.reshape(b, h, w, out_channels)


class BasicBlock(nn.Module):
  """Two 3x3 convs with BN; grouped over ``groups`` experts; option-A shortcut."""

  features: int
  strides: int = 1
  groups: int = 1
  expert_layout: str = "official"
  conv_impl: str = "auto"
  dtype: Any = jnp.float32
  bn_group_size: int = 0

  @nn.compact
  def __call__(self, x, train: bool, mask=None):
    conv = lambda name, s: ExpertConv(self.features, groups=self.groups, strides=s,
                                      impl=self.conv_impl, dtype=self.dtype, name=name)
    y = conv("conv1", self.strides)(x)
    y = nn.relu(BatchNorm(dtype=self.dtype, group_size=self.bn_group_size, name="bn1")(y, train, mask))
    y = conv("conv2", 1)(y)
    y = BatchNorm(dtype=self.dtype, group_size=self.bn_group_size, name="bn2")(y, train, mask)
    if self.strides != 1 or x.shape[-1] != self.features:
      x = shortcut_option_a(x, self.features, self.groups, self.expert_layout)
    return nn.relu(y + x.astype(y.dtype))


class ExpertResNetCifar(nn.Module):
  """Multi-expert ResNet for 32x32 inputs (NHWC), depth 6n+2 (32 for LGLA).

  Returns ``{"output": [B, C], "logits": [E, B, C], "feat": [E, B, F]}``; ``output`` is
  the plain mean of the expert logits (the official prediction). ``mask`` ([B] bool, in
  training) marks the valid images of a padded incomplete batch: BatchNorm statistics
  cover only those.
  """

  num_classes: int
  num_experts: int = 3
  depth: int = 32
  use_norm: bool = True
  scale: float = 30.0
  expert_layout: str = "official"
  conv_impl: str = "auto"
  dtype: Any = jnp.float32
  bn_group_size: int = 0  # see layers.BatchNorm.group_size
  expert_widths: tuple[int, int] = (32, 64)  # per-expert widths of layer2s / layer3s

  @property
  def logit_scale(self) -> float:
    """What the logits are multiplied by: s for the cosine head, 1 for a linear one."""
    return self.scale if self.use_norm else 1.0

  @nn.compact
  def __call__(self, x, train: bool = False, mask=None):
    if (self.depth - 2) % 6 or self.depth < 8:
      raise ValueError(f"depth must be 6n+2 with n >= 1 (e.g. 20, 32, 44, 56), got {self.depth}")
    if self.expert_layout not in EXPERT_LAYOUTS:
      raise ValueError(f"expert_layout must be one of {EXPERT_LAYOUTS}, got {self.expert_layout!r}")
    if self.num_experts < 1:
      raise ValueError(f"num_experts must be >= 1, got {self.num_experts}")
    n = (self.depth - 2) // 6
    e = self.num_experts
    kw = dict(expert_layout=self.expert_layout, conv_impl=self.conv_impl, dtype=self.dtype,
              bn_group_size=self.bn_group_size)

    x = ExpertConv(16, impl=self.conv_impl, dtype=self.dtype, name="conv1")(x)
    x = nn.relu(BatchNorm(dtype=self.dtype, group_size=self.bn_group_size, name="bn1")(x, train, mask))
    for i in range(n):
      x = BasicBlock(16, name=f"layer1_{i}", **kw)(x, train, mask)
    x = jnp.concatenate([x] * e, axis=-1)
    for stage, width in zip(("layer2s", "layer3s"), self.expert_widths):
      for i in range(n):
        x = BasicBlock(width * e, strides=2 if i == 0 else 1, groups=e,
                       name=f"{stage}_{i}", **kw)(x, train, mask)

    return expert_heads(x, self.num_classes, e, use_norm=self.use_norm, scale=self.scale,
                        dtype=self.dtype)


def build(model_config, num_classes: int, dtype) -> ExpertResNetCifar:
  """The model of ``config.model`` (``name="resnet_cifar"``)."""
  m = model_config
  return ExpertResNetCifar(num_classes, m.num_experts, depth=m.depth, use_norm=m.use_norm,
                           scale=m.scale, expert_layout=m.expert_layout, conv_impl=m.conv_impl,
                           dtype=dtype, bn_group_size=m.bn_group_size,
                           expert_widths=tuple(m.expert_widths))


def check(model_config) -> list[tuple[str, str]]:
  """``(field, problem)`` pairs of ``config.model`` for this model."""
  m, found = model_config, []
  if (m.depth - 2) % 6 or m.depth < 8:
    found.append(("model.depth", f"must be 6n+2 (20, 32, 44, ...), got {m.depth}"))
  if m.expert_layout not in EXPERT_LAYOUTS:
    found.append(("model.expert_layout", f"must be one of {EXPERT_LAYOUTS}, got {m.expert_layout!r}"))
  widths = tuple(m.expert_widths)
  if len(widths) != 2 or not 16 <= widths[0] <= widths[1] or any(w % 2 for w in widths):
    found.append(("model.expert_widths", f"two even widths 16 <= layer2s <= layer3s (the "
                  f"zero-pad shortcut only widens), got {widths}"))
  return found
