"""Building blocks shared by the multi-expert networks, with PyTorch semantics."""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any

# torch.nn.init.kaiming_normal_(w) (fan_in, gain sqrt(2), untruncated normal). For a
# grouped conv kernel [kh, kw, in/groups, out] the fan-in is kh*kw*in/groups, as in torch.
kaiming_normal = nn.initializers.variance_scaling(2.0, "fan_in", "normal")


def fb_resnet_conv_init(key, shape, dtype=jnp.float32):
  """The ImageNet ResNets' init: N(0, 2 / (kh * kw * out_channels)), out_channels counted
  whole even for grouped convs (``m.weight.data.normal_(0, sqrt(2 / n))``)."""
  kh, kw, _, out = shape
  return jax.random.normal(key, shape, dtype) * jnp.sqrt(2.0 / (kh * kw * out))


def torch_linear_bias_init(fan_in: int):
  """torch.nn.Linear's default bias init: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
  bound = 1.0 / fan_in**0.5

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


def normed_linear_init(key, shape, dtype=jnp.float32):
  """Official NormedLinear init: U(-1, 1) with every output column renormed to length 1."""
  w = jax.random.uniform(key, shape, dtype, -1.0, 1.0)
  return w / jnp.linalg.norm(w, axis=0, keepdims=True)


def accum_dtype(dtype):
  """Statistics, classifier outputs and losses stay in at least float32 (float64 if asked)."""
  return jnp.promote_types(dtype, jnp.float32)


def l2_normalize(x, axis, eps=1e-12):
  """torch.nn.functional.normalize: x / max(||x||, eps)."""
  norm = jnp.sqrt(jnp.sum(jnp.square(x), axis=axis, keepdims=True))
  return x / jnp.maximum(norm, eps)


def _bn_statistics(x_GxIxPxC, w_GxIx1x1):
  """Per-group mean, biased variance (two-pass, as PyTorch) and count over images and
  pixels; ``w`` (0/1 per image, or None for all) leaves out the padding of a masked batch."""
  axes = (1, 2)
  if w_GxIx1x1 is None:
    mean = x_GxIxPxC.mean(axis=axes, keepdims=True)
    return mean, jnp.square(x_GxIxPxC - mean).mean(axis=axes, keepdims=True), None
  count = jnp.maximum(w_GxIx1x1.sum(axis=axes, keepdims=True) * x_GxIxPxC.shape[2], 1.0)
  mean = (x_GxIxPxC * w_GxIx1x1).sum(axis=axes, keepdims=True) / count
  var = (jnp.square(x_GxIxPxC - mean) * w_GxIx1x1).sum(axis=axes, keepdims=True) / count
  return mean, var, count


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _bn_normalize(x_GxIxPxC, scale, bias, w_GxIx1x1, epsilon):
  """``(x - mean) * rsqrt(var + eps) * scale + bias`` with batch statistics per group."""
  mean, var, _ = _bn_statistics(x_GxIxPxC, w_GxIx1x1)
  return (x_GxIxPxC - mean) * (scale * jax.lax.rsqrt(var + epsilon)) + bias


def _bn_normalize_fwd(x, scale, bias, w, epsilon):
  mean, var, count = _bn_statistics(x, w)
  inv = jax.lax.rsqrt(var + epsilon)
  return (x - mean) * (scale * inv) + bias, (x, mean, inv, scale, w, count)


def _bn_normalize_bwd(epsilon, res, dy):
  # The textbook BatchNorm gradient, written out so that XLA sees two reductions and one
  # elementwise pass instead of autodiff's longer chain through mean and variance. With
  # weights w (0/1 per image) only the weighted images move the statistics:
  # dx = scale * inv * (dy - w / n * (sum dy + xhat * sum dy * xhat)).
  x, mean, inv, scale, w, count = res
  xhat = (x - mean) * inv
  dbias = dy.sum(axis=(1, 2), keepdims=True)
  dscale = (dy * xhat).sum(axis=(1, 2), keepdims=True)
  share = 1.0 / (x.shape[1] * x.shape[2]) if w is None else w / count
  dx = (scale * inv) * (dy - share * (dbias + xhat * dscale))
  return dx, dscale.sum(axis=(0, 1, 2)), dbias.sum(axis=(0, 1, 2)), None


_bn_normalize.defvjp(_bn_normalize_fwd, _bn_normalize_bwd)


def dataparallel_slots(mask_B, group_size: int):
  """Where each image of a padded batch goes so that BatchNorm groups of ``group_size``
  hold what DataParallel's GPUs would: its scatter cuts the n valid images into chunks of
  ``ceil(n / groups)`` (``torch.chunk``), so an epoch's short last batch fills fewer,
  smaller groups than a full one. Returns ``source_B``: the image for each slot (valid
  images chunked at the start of their groups, padding in the rest); a full batch is the
  identity. Valid images must come first in the batch, as a padded batch has them."""
  size = mask_B.shape[0]
  groups = size // group_size
  n = jnp.sum(mask_B.astype(jnp.int32))
  chunk = jnp.maximum((n + groups - 1) // groups, 1)
  slot = jnp.arange(size)
  within, group = slot % group_size, slot // group_size
  valid_slot = (within < chunk) & (group * chunk + within < n)
  rank = jnp.where(valid_slot, group * chunk + within, 0)  # which valid image fills the slot
  pad_rank = jnp.cumsum(~valid_slot) - 1  # which padding image fills it
  return jnp.where(valid_slot, rank, n + pad_rank).astype(jnp.int32)


class BatchNorm(nn.Module):
  """BatchNorm2d with PyTorch semantics over the last (channel) axis.

  Normalises with the biased batch variance, updates the running variance with the
  unbiased one, momentum 0.1 in PyTorch terms (new = 0.9 old + 0.1 batch), eps 1e-5.
  Under ``jax.jit`` with a batch sharded over devices the statistics cover the global
  batch. Running statistics are stored in float32.
  """

  momentum: float = 0.1
  epsilon: float = 1e-5
  dtype: Dtype = jnp.float32
  # > 0: statistics over consecutive groups of this many examples, as PyTorch DataParallel's
  # per-GPU BatchNorm; the running statistics follow the first group (device 0's replica).
  group_size: int = 0

  @nn.compact
  def __call__(self, x, train: bool, mask=None):
    """``mask`` ([batch] bool, training only): statistics over the valid images of a
    padded incomplete batch."""
    features = x.shape[-1]
    scale = self.param("scale", nn.initializers.ones, (features,), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (features,), jnp.float32)
    ra_mean = self.variable("batch_stats", "mean", jnp.zeros, (features,), jnp.float32)
    ra_var = self.variable("batch_stats", "var", jnp.ones, (features,), jnp.float32)
    acc = accum_dtype(self.dtype)
    if train:
      groups = x.shape[0] // self.group_size if self.group_size else 1
      if groups * (self.group_size or x.shape[0]) != x.shape[0]:
        raise ValueError(f"batch {x.shape[0]} is not a multiple of bn group size {self.group_size}")
      # [groups, images, pixels, channels]: a free reshape of the NHWC batch. One code
      # path for full and padded batches (a padded batch weights its padding 0), so the
      # step compiles once.
      xg = x.astype(acc).reshape(groups, x.shape[0] // groups, -1, features)
      w = None if mask is None else jnp.asarray(mask, acc).reshape(groups, -1, 1, 1)
      y = _bn_normalize(xg, scale.astype(acc), bias.astype(acc), w, self.epsilon)
      if w is not None:
        # A group holding only padding (a short last batch in groups) has variance 0, and
        # rsqrt(eps) per layer would overflow to inf, then NaN in the weight gradients
        # (0 * inf), although the loss masks those images out: it leaves as zeros.
        y = jnp.where(w.sum(axis=1, keepdims=True) > 0, y, 0.0)
      mean, var, n = jax.lax.stop_gradient(_bn_statistics(xg, w))
      n = xg.shape[1] * xg.shape[2] if n is None else n[0, 0, 0, 0]
      if not self.is_initializing():
        mean, var = mean[0, 0, 0], var[0, 0, 0]
        unbiased = var * (n / max(n - 1, 1) if isinstance(n, int) else n / jnp.maximum(n - 1, 1))
        m = self.momentum
        ra_mean.value = ((1 - m) * ra_mean.value + m * mean).astype(jnp.float32)
        ra_var.value = ((1 - m) * ra_var.value + m * unbiased).astype(jnp.float32)
      return y.reshape(x.shape).astype(self.dtype)
    a = scale * jax.lax.rsqrt(ra_var.value + self.epsilon)
    y = (x.astype(acc) - ra_mean.value) * a + bias
    return y.astype(self.dtype)


CONV_IMPLS = ("auto", "grouped", "split")


def resolve_conv_impl(impl: str) -> str:
  """``auto`` -> the backend's form: ``split`` (one convolution per expert) on CPU, where
  XLA's grouped convolution is ~10x slower in the backward pass, ``grouped`` elsewhere."""
  if impl != "auto":
    return impl
  return "split" if jax.default_backend() == "cpu" else "grouped"


class ExpertConv(nn.Module):
  """A 3x3 (or kxk) convolution over E experts' concatenated channels, PyTorch padding.

  The kernel is stored as a grouped-conv kernel ``[k, k, in/E, out]`` (``groups = E``,
  the official layout). ``impl`` picks how it is computed; both give the same numbers:
  "grouped" is one convolution with ``feature_group_count=E``, "split" runs one
  convolution per expert on its channel slice (5x faster on XLA:CPU), "auto" picks
  "split" on CPU and "grouped" elsewhere. ``experts`` (default ``groups``) is the number of
  slices "split" makes; each slice keeps ``groups / experts`` groups (ResNeXt).
  """

  features: int
  groups: int = 1
  kernel_size: int = 3
  strides: int = 1
  padding: int = 1
  impl: str = "auto"
  dtype: Dtype = jnp.float32
  experts: int = 0
  kernel_init: Any = kaiming_normal

  @nn.compact
  def __call__(self, x):
    in_features = x.shape[-1]
    if in_features % self.groups or self.features % self.groups:
      raise ValueError(f"channels {in_features}->{self.features} not divisible by {self.groups} groups")
    k = self.kernel_size
    kernel = self.param("kernel", self.kernel_init,
                        (k, k, in_features // self.groups, self.features), jnp.float32)
    impl = resolve_conv_impl(self.impl)
    if impl not in CONV_IMPLS[1:]:
      raise ValueError(f"conv impl must be 'auto', 'grouped' or 'split', got {impl!r}")
    x = x.astype(self.dtype)
    kernel = kernel.astype(self.dtype)
    conv = lambda inp, ker, groups: jax.lax.conv_general_dilated(
        inp, ker, (self.strides, self.strides), [(self.padding, self.padding)] * 2,
        dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=groups)
    slices = self.experts or self.groups
    if impl == "grouped" or slices == 1:
      return conv(x, kernel, self.groups)
    xs = jnp.split(x, slices, axis=-1)
    ks = jnp.split(kernel, slices, axis=-1)
    per_slice = self.groups // slices
    return jnp.concatenate([conv(xi, ki, per_slice) for xi, ki in zip(xs, ks)], axis=-1)


class NormedLinear(nn.Module):
  """Cosine classifier: ``scale * normalize(x) @ normalize(W, axis=0)``, W is ``[in, out]``."""

  features: int
  scale: float = 30.0
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    kernel = self.param("kernel", normed_linear_init, (x.shape[-1], self.features), jnp.float32)
    acc = accum_dtype(self.dtype)
    x_n = l2_normalize(x.astype(acc), axis=-1).astype(self.dtype)
    w_n = l2_normalize(kernel.astype(acc), axis=0).astype(self.dtype)
    return self.scale * jnp.dot(x_n, w_n, preferred_element_type=acc)


class TorchLinear(nn.Module):
  """nn.Linear with torch's default init (kaiming-normal weight as the official
  ``_weights_init`` sets it, uniform bias); the kernel is stored ``[in, out]``."""

  features: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    fan_in = x.shape[-1]
    kernel = self.param("kernel", kaiming_normal, (fan_in, self.features), jnp.float32)
    bias = self.param("bias", torch_linear_bias_init(fan_in), (self.features,), jnp.float32)
    y = jnp.dot(x.astype(self.dtype), kernel.astype(self.dtype),
                preferred_element_type=accum_dtype(self.dtype))
    return y + bias


def expert_heads(x_BxHxWxEF, num_classes: int, num_experts: int, *, use_norm: bool, scale: float,
                 dtype) -> dict:
  """Global average pooling of each expert's channels and one classifier per expert
  (``linears_{e}`` of the calling module: call it inside a compact ``__call__``). Cosine
  heads when ``use_norm``, else plain linear ones (the official code then sets s = 1).
  Returns the models' output dict: ``output`` [B, C] (the mean of the expert logits, the
  official prediction), ``logits`` [E, B, C], ``feat`` [E, B, F]."""
  acc = accum_dtype(dtype)
  b = x_BxHxWxEF.shape[0]
  feat_ExBxF = x_BxHxWxEF.astype(acc).mean(axis=(1, 2)).reshape(b, num_experts, -1).transpose(1, 0, 2)
  logits = []
  for k in range(num_experts):
    head = (NormedLinear(num_classes, scale=scale, dtype=dtype, name=f"linears_{k}") if use_norm
            else TorchLinear(num_classes, dtype=dtype, name=f"linears_{k}"))
    logits.append(head(feat_ExBxF[k]))
  logits_ExBxC = jnp.stack(logits).astype(acc)
  return {"output": logits_ExBxC.mean(axis=0), "logits": logits_ExBxC, "feat": feat_ExBxF}
