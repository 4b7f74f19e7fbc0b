"""LGLA losses as pure jax functions (jit- and grad-friendly, no Python-side state).

Shapes are in the names: ``E`` experts, ``B`` batch, ``C`` classes, ``R = E - 1`` regions.
The training loss is the official ``DiverseExpertLoss`` (a **sum** over experts):

  loss = sum_e mean_b [ -w_eb * log_softmax(z_eb + l_e)[y_b] ]

with ``l_e`` the expert's log-prior adjustment (``long_tail.expert_log_priors``) and
``w_eb`` the Adaptive Angular Weight (``aaw_weights``). Two deliberate differences to the
official code, neither of which changes a finite official result (tested): the acos
argument is clamped to [-1, 1] (the official code gives NaN above 1), and the
log-softmax is the stable one (the official ``log(softmax(.))`` underflows to -inf).

For jitted training compute ``regions`` and ``log_priors`` once with ``long_tail`` and
call ``lgla_expert_losses``; the ``class_counts`` signatures build them on every call and
need concrete (numpy) counts.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from lgla_jax import long_tail


def _concrete_counts(class_counts) -> np.ndarray:
  if isinstance(class_counts, jax.core.Tracer):
    raise TypeError(
        "class_counts must be concrete (a list or numpy array), not a traced value: inside "
        "jit, compute long_tail.expert_regions / expert_log_priors once outside and call "
        "lgla_expert_losses / aaw_weights_from_regions")
  return np.asarray(class_counts)


def _at_least_f32(x):
  x = jnp.asarray(x)
  return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _target_values(x_ExBxC: jax.Array, labels_B: jax.Array) -> jax.Array:
  """``x[e, b, labels[b]]`` -> [E, B]."""
  idx = jnp.broadcast_to(labels_B[None, :, None], x_ExBxC.shape[:2] + (1,))
  return jnp.take_along_axis(x_ExBxC, idx.astype(jnp.int32), axis=-1)[..., 0]


def aaw_weights_from_regions(expert_logits_ExBxC, labels_B, regions_RxC, *, scale=30.0,
                             mask_B=None):
  """Adaptive Angular Weights ``[E, B]`` from precomputed region masks.

  ``theta_eb = acos(z_eb[y_b] / scale)`` on the unadjusted logits; the weight is
  ``1 + max(0, theta_eb - mean theta of the sample's region in this batch, expert e)``.
  Samples in no region get weight 1. No gradient flows through the weights. ``mask_B``
  (padding of an incomplete batch) keeps invalid samples out of the region means.
  """
  logits = jax.lax.stop_gradient(_at_least_f32(expert_logits_ExBxC))
  labels = jnp.asarray(labels_B)
  cos_ExB = jnp.clip(_target_values(logits, labels) / scale, -1.0, 1.0)
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
  regions = long_tail.expert_regions(_concrete_counts(class_counts), num_experts)
  return aaw_weights_from_regions(expert_logits, labels, regions, scale=scale)


def _batch_mean(x_xB, mask_B):
  """Mean over the last (batch) axis, over the valid samples only when ``mask_B`` is given."""
  if mask_B is None:
    return x_xB.mean(axis=-1)
  m = jnp.asarray(mask_B, x_xB.dtype)
  return (x_xB * m).sum(axis=-1) / jnp.maximum(m.sum(), 1.0)


def lgla_expert_losses(expert_logits_ExBxC, labels_B, *, log_priors_ExC, regions_RxC,
                       scale=30.0, mask_B=None):
  """Per-expert LGLA losses ``[E]`` (their sum is the training loss); ``mask_B`` marks
  the valid samples of a padded batch."""
  logits = jnp.asarray(expert_logits_ExBxC)
  weights_ExB = aaw_weights_from_regions(logits, labels_B, regions_RxC, scale=scale,
                                         mask_B=mask_B)
  adjusted = _at_least_f32(logits) + jnp.asarray(log_priors_ExC, jnp.float32)[:, None, :]
  logp_ExB = _target_values(jax.nn.log_softmax(adjusted, axis=-1), jnp.asarray(labels_B))
  return -_batch_mean(weights_ExB * logp_ExB, mask_B)


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
  counts = _concrete_counts(class_counts)
  regions = long_tail.expert_regions(counts, num_experts)
  log_priors = long_tail.expert_log_priors(counts, num_experts, tau, regions=regions)
  return lgla_expert_losses(expert_logits, labels, log_priors_ExC=log_priors,
                            regions_RxC=regions, scale=scale).sum()


def cross_entropy(logits_BxC, labels_B, mask_B=None):
  """Mean softmax cross entropy (over the valid samples when ``mask_B`` is given)."""
  logp = jax.nn.log_softmax(_at_least_f32(logits_BxC), axis=-1)
  return -_batch_mean(_target_values(logp[None], jnp.asarray(labels_B))[0], mask_B)


def logit_adjusted_cross_entropy(logits_BxC, labels_B, class_counts, *, tau=1.0, mask_B=None):
  """Logit-adjusted cross entropy (Menon et al., 2021): CE on ``logits + tau * log prior``."""
  prior = long_tail.class_prior(_concrete_counts(class_counts))
  return cross_entropy(_at_least_f32(logits_BxC) + tau * jnp.log(prior), labels_B, mask_B)
