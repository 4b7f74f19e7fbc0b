"""LGLA's loss and the logit-adjusted cross entropy, as pure jax functions, registered by name.

Shapes are in the names: ``E`` experts, ``B`` batch, ``C`` classes, ``R = E - 1`` regions.
Expert logits are always ``[E, B, C]`` (the models' ``"logits"``); single-head losses use
the ensemble output ``[B, C]`` (the models' ``"output"``, the mean of the expert logits).

LGLA's training loss is the official ``DiverseExpertLoss`` (a **sum** over experts):

  loss = sum_e mean_b [ -w_eb * log_softmax(z_eb + l_e)[y_b] ]

with ``l_e`` the expert's log-prior adjustment (``long_tail.expert_log_priors``) and
``w_eb`` the Adaptive Angular Weight (``aaw_weights``). Two deliberate differences to the
official code, neither of which changes a finite official result (tested): the acos
argument is clamped to [-1, 1] (the official code gives NaN above 1), and the
log-softmax is the stable one (the official ``log(softmax(.))`` underflows to -inf).

Registered here (``losses.registry``): ``lgla``, ``ce`` and ``logit_adjusted``. The official
repository's other losses (focal, class-balanced CE, LDAM-DRW, RIDE) are in
``losses.baselines``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from lgla_jax import long_tail
from lgla_jax.losses.common import (at_least_f32, batch_mean, concrete_counts, cross_entropy,
                                    no_expert_terms, target_values)
from lgla_jax.losses.registry import register


def aaw_weights_from_regions(expert_logits_ExBxC, labels_B, regions_RxC, *, scale=30.0,
                             mask_B=None):
  """Adaptive Angular Weights ``[E, B]`` from precomputed region masks.

  ``theta_eb = acos(z_eb[y_b] / scale)`` on the unadjusted logits; the weight is
  ``1 + max(0, theta_eb - mean theta of the sample's region in this batch, expert e)``.
  Samples in no region get weight 1. No gradient flows through the weights. ``mask_B``
  (padding of an incomplete batch) keeps invalid samples out of the region means.
  """
  logits = jax.lax.stop_gradient(at_least_f32(expert_logits_ExBxC))
  labels = jnp.asarray(labels_B)
  cos_ExB = jnp.clip(target_values(logits, labels) / scale, -1.0, 1.0)
  theta_ExB = jnp.arccos(cos_ExB)
  in_region_RxB = jnp.asarray(regions_RxC, bool)[:, labels].astype(jnp.float32)
  if mask_B is not None:
    in_region_RxB = in_region_RxB * jnp.asarray(mask_B, jnp.float32)[None]
  # Masked sums (not matmuls) keep the region means exact on every backend.
  count_R = in_region_RxB.sum(axis=-1)
  total_ExR = (theta_ExB[:, None, :] * in_region_RxB[None]).sum(axis=-1)
  # An empty region has no sample to use its mean: divide by 1 instead of producing NaN.
  mean_ExR = total_ExR / jnp.maximum(count_R, 1.0)
  sample_mean_ExB = (mean_ExR[:, :, None] * in_region_RxB[None]).sum(axis=1)
  in_any_B = in_region_RxB.sum(axis=0) > 0
  delta_ExB = jnp.where(in_any_B[None], theta_ExB - sample_mean_ExB, 0.0)
  return jnp.where(delta_ExB < 0.0, 1.0, 1.0 + delta_ExB)


def aaw_weights(expert_logits, labels, class_counts, *, scale=30.0):
  """Adaptive Angular Weights ``[E, B]``; regions come from ``class_counts`` (official split)."""
  num_experts = np.shape(expert_logits)[0]
  regions = long_tail.expert_regions(concrete_counts(class_counts), num_experts)
  return aaw_weights_from_regions(expert_logits, labels, regions, scale=scale)


def lgla_expert_losses(expert_logits_ExBxC, labels_B, *, log_priors_ExC, regions_RxC,
                       scale=30.0, mask_B=None):
  """Per-expert LGLA losses ``[E]`` (their sum is the training loss); ``mask_B`` marks
  the valid samples of a padded batch."""
  logits = jnp.asarray(expert_logits_ExBxC)
  weights_ExB = aaw_weights_from_regions(logits, labels_B, regions_RxC, scale=scale,
                                         mask_B=mask_B)
  adjusted = at_least_f32(logits) + jnp.asarray(log_priors_ExC, jnp.float32)[:, None, :]
  logp_ExB = target_values(jax.nn.log_softmax(adjusted, axis=-1), jnp.asarray(labels_B))
  return -batch_mean(weights_ExB * logp_ExB, mask_B)


def lgla_loss(expert_logits, labels, class_counts, *, tau, scale=30.0):
  """The official LGLA training loss (scalar): a sum over experts.

  Args:
    expert_logits: ``[E, B, C]`` raw expert logits (``scale * cos`` for a cosine head).
    labels: int ``[B]``.
    class_counts: ``[C]`` training counts per class (concrete).
    tau: the global expert's adjustment strength (1.0 is used when E = 2, as official).
    scale: the cosine classifier's scale s.
  """
  num_experts = np.shape(expert_logits)[0]
  counts = concrete_counts(class_counts)
  regions = long_tail.expert_regions(counts, num_experts)
  log_priors = long_tail.expert_log_priors(counts, num_experts, tau, regions=regions)
  return lgla_expert_losses(expert_logits, labels, log_priors_ExC=log_priors,
                            regions_RxC=regions, scale=scale).sum()


def logit_adjusted_cross_entropy(logits_BxC, labels_B, class_counts, *, tau=1.0, mask_B=None):
  """Logit-adjusted cross entropy (Menon et al., 2021): CE on ``logits + tau * log prior``."""
  prior = long_tail.class_prior(concrete_counts(class_counts))
  return cross_entropy(at_least_f32(logits_BxC) + tau * jnp.log(prior), labels_B, mask_B)


@register("lgla", fields=("tau",), min_experts=2, cosine_head=True)
def _build_lgla(cfg, counts, num_experts, scale):
  regions = long_tail.expert_regions(counts, num_experts)
  priors = long_tail.expert_log_priors(counts, num_experts, cfg.tau, regions=regions)

  def loss_fn(output, labels_B, mask_B, epoch):
    per_expert = lgla_expert_losses(output["logits"], labels_B, log_priors_ExC=priors,
                                    regions_RxC=regions, scale=scale, mask_B=mask_B)
    return per_expert.sum(), per_expert

  return loss_fn


@register("ce")
def _build_ce(cfg, counts, num_experts, scale):
  def loss_fn(output, labels_B, mask_B, epoch):
    return cross_entropy(output["output"], labels_B, mask_B), no_expert_terms()

  return loss_fn


@register("logit_adjusted", fields=("tau",))
def _build_logit_adjusted(cfg, counts, num_experts, scale):
  adjust_C = (cfg.tau * np.log(long_tail.class_prior(counts))).astype(np.float32)

  def loss_fn(output, labels_B, mask_B, epoch):
    return cross_entropy(at_least_f32(output["output"]) + adjust_C, labels_B, mask_B), no_expert_terms()

  return loss_fn

