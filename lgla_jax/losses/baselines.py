"""The official repository's other losses (``model/loss.py``, shared with RIDE), registered
by name in the loss registry (``losses.registry``): ``class_balanced_ce``, ``focal``, ``ldam`` (LDAM with
deferred re-weighting as an epoch-dependent weight switch) and ``ride``.

Same conventions as ``losses.lgla`` (shape-suffixed names, logits ``[E, B, C]`` or the
ensemble's ``[B, C]``, ``mask_B`` for padded batches, concrete class counts).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from lgla_jax import long_tail
from lgla_jax.losses.common import (at_least_f32, batch_mean, concrete_counts, cross_entropy,
                                    no_expert_terms, per_example_ce)
from lgla_jax.losses.registry import register


def _positive_counts(class_counts, who: str) -> np.ndarray:
  counts = concrete_counts(class_counts).astype(np.float64)
  if (counts <= 0).any():
    raise ValueError(f"{who} needs at least one training image per class; classes "
                     f"{np.where(counts <= 0)[0][:10].tolist()} have none")
  return counts


def class_balanced_weights(class_counts, beta=0.9999) -> np.ndarray:
  """Class-balanced weights ``[C]`` (Cui et al., 2019): ``(1 - beta) / (1 - beta^n_c)``,
  normalised to sum to C as the official code does. ``beta = 0`` gives ones."""
  counts = _positive_counts(class_counts, "class_balanced_weights")
  weights = (1.0 - beta) / (1.0 - np.power(beta, counts))
  return weights / weights.sum() * len(counts)


def weighted_cross_entropy(logits_BxC, labels_B, class_weights_C, mask_B=None):
  """PyTorch's weighted cross entropy: ``sum_b w_yb * ce_b / sum_b w_yb`` (valid samples
  only when ``mask_B`` is given)."""
  w_B = jnp.asarray(class_weights_C, jnp.float32)[jnp.asarray(labels_B)]
  if mask_B is not None:
    w_B = w_B * jnp.asarray(mask_B, jnp.float32)
  return (w_B * per_example_ce(logits_BxC, labels_B)).sum() / w_B.sum()


def focal_loss(logits_BxC, labels_B, gamma, mask_B=None):
  """Focal loss (Lin et al., 2017) as the official ``focal_loss``: the batch mean of
  ``(1 - p_y)^gamma * ce`` with ``p_y = exp(-ce)``."""
  ce_B = per_example_ce(logits_BxC, labels_B)
  if gamma == 0:  # 0^0: keep the gradient finite where p_y rounds to 1
    return batch_mean(ce_B, mask_B)
  # -expm1(-ce) is 1 - p_y without the cancellation of 1 - exp(-ce) near p_y = 1.
  return batch_mean(jnp.power(-jnp.expm1(-ce_B), gamma) * ce_B, mask_B)


def ldam_margins(class_counts, max_m=0.5) -> np.ndarray:
  """LDAM margins ``[C]`` (Cao et al., 2019): ``n_c^(-1/4)``, scaled so the largest is
  ``max_m`` (in cosine units)."""
  margins = 1.0 / np.sqrt(np.sqrt(_positive_counts(class_counts, "ldam_margins")))
  return margins * (max_m / margins.max())


def _ldam_logits(logits_BxC, labels_B, margins_C, s):
  """Subtract ``s * m_y`` from every target logit; the logits are already ``s * cos``
  (as in the official and RIDE code, where the model applies the scale)."""
  logits = at_least_f32(logits_BxC)
  labels = jnp.asarray(labels_B)
  onehot = jax.nn.one_hot(labels, logits.shape[-1], dtype=logits.dtype)
  m_B = jnp.asarray(margins_C, logits.dtype)[labels]
  return logits - (s * m_B)[:, None] * onehot


def ldam_loss(logits_BxC, labels_B, class_counts, *, max_m=0.5, s=30.0, class_weights_C=None,
              mask_B=None):
  """The official ``LDAMLoss``: cross entropy on ``logits - s * m_y`` at the target,
  weighted by ``class_weights_C`` when given (deferred re-weighting passes the
  class-balanced weights after its epoch)."""
  adjusted = _ldam_logits(logits_BxC, labels_B, ldam_margins(class_counts, max_m), s)
  if class_weights_C is None:
    return cross_entropy(adjusted, labels_B, mask_B)
  return weighted_cross_entropy(adjusted, labels_B, class_weights_C, mask_B)


def ride_diversity_weights(class_counts, reweight_factor=0.05) -> np.ndarray:
  """RIDE's per-class temperature factors ``[C]``: ``C * p_c * f + 1 - f``, over the max."""
  prior = long_tail.class_prior(_positive_counts(class_counts, "ride_diversity_weights"))
  w = len(prior) * prior * reweight_factor + 1 - reweight_factor
  return w / w.max()


def _ride_expert_losses(logits_ExBxC, labels_B, *, margins_C, s, reweight_on, base_weights_C,
                        diversity_weights_C, base_diversity_temperature, base_loss_factor,
                        additional_diversity_factor, mask_B=None):
  """Per-expert RIDE losses ``[E]`` (their sum is the loss). ``reweight_on`` (a bool,
  possibly traced) switches the class-balanced weights and per-class temperatures on."""
  logits = at_least_f32(logits_ExBxC)
  output_BxC = logits.mean(axis=0)
  c = logits.shape[-1]
  w_C = jnp.where(reweight_on, jnp.asarray(base_weights_C, jnp.float32), jnp.ones((c,)))
  t_C = base_diversity_temperature * jnp.where(
      reweight_on, jnp.asarray(diversity_weights_C, jnp.float32), jnp.ones((c,)))
  target_BxC = jax.lax.stop_gradient(jax.nn.softmax(output_BxC / t_C, axis=-1))
  log_target_BxC = jnp.log(jnp.where(target_BxC > 0, target_BxC, 1.0))
  per_expert = []
  for e in range(logits.shape[0]):
    # Official quirk: with no diversity term every expert's LDAM part sees the ensemble.
    z = output_BxC if additional_diversity_factor == 0 else logits[e]
    ldam = weighted_cross_entropy(_ldam_logits(z, labels_B, margins_C, s), labels_B, w_C, mask_B)
    logp_BxC = jax.nn.log_softmax(logits[e] / t_C, axis=-1)
    kl_B = (target_BxC * (log_target_BxC - logp_BxC)).sum(axis=-1)  # F.kl_div, 'batchmean'
    diversity = additional_diversity_factor * jnp.mean(t_C) ** 2 * batch_mean(kl_B, mask_B)
    per_expert.append(base_loss_factor * ldam + diversity)
  return jnp.stack(per_expert)


def _reweight_on(reweight: bool, reweight_epoch: int, epoch):
  """The official ``_hook_before_epoch`` rule: re-weighting for ``epoch > reweight_epoch``
  (1-based epochs); ``reweight_epoch = -1`` never re-weights."""
  return jnp.logical_and(bool(reweight) and reweight_epoch != -1, jnp.asarray(epoch) > reweight_epoch)


def ride_loss(logits_ExBxC, labels_B, class_counts, *, epoch, base_diversity_temperature=1.0,
              max_m=0.5, s=30.0, reweight=True, reweight_epoch=-1, base_loss_factor=1.0,
              additional_diversity_factor=-0.2, reweight_factor=0.05, beta=0.9999, mask_B=None):
  """The official ``RIDELoss`` (Wang et al., 2021) over the expert logits (the model
  output is their mean): per expert, LDAM plus ``additional_diversity_factor * T_mean^2 *
  KL(softmax(output / T) || softmax(z_e / T))`` with the target under stop-gradient.
  When ``reweight`` and ``epoch > reweight_epoch`` (``reweight_epoch = -1``: never; the
  official code fails there) the LDAM part uses class-balanced weights and ``T`` becomes
  per class (``ride_diversity_weights``)."""
  counts = _positive_counts(class_counts, "ride_loss")
  return _ride_expert_losses(
      logits_ExBxC, labels_B, margins_C=ldam_margins(counts, max_m), s=s,
      reweight_on=_reweight_on(reweight, reweight_epoch, epoch),
      base_weights_C=class_balanced_weights(counts, beta),
      diversity_weights_C=ride_diversity_weights(counts, reweight_factor),
      base_diversity_temperature=base_diversity_temperature, base_loss_factor=base_loss_factor,
      additional_diversity_factor=additional_diversity_factor, mask_B=mask_B).sum()


@register("class_balanced_ce", fields=("beta",))
def _build_class_balanced_ce(cfg, counts, num_experts, scale):
  weights_C = class_balanced_weights(counts, cfg.beta)

  def loss_fn(output, labels_B, mask_B, epoch):
    return weighted_cross_entropy(output["output"], labels_B, weights_C, mask_B), no_expert_terms()

  return loss_fn


@register("focal", fields=("gamma",))
def _build_focal(cfg, counts, num_experts, scale):
  gamma = float(cfg.gamma)

  def loss_fn(output, labels_B, mask_B, epoch):
    return focal_loss(output["output"], labels_B, gamma, mask_B), no_expert_terms()

  return loss_fn


@register("ldam", fields=("max_m", "reweight_epoch", "beta"), cosine_head=True)
def _build_ldam(cfg, counts, num_experts, scale):
  margins_C = ldam_margins(counts, cfg.max_m)
  weights_C = class_balanced_weights(counts, cfg.beta).astype(np.float32)
  reweight_epoch = int(cfg.reweight_epoch)

  def loss_fn(output, labels_B, mask_B, epoch):
    # Deferred re-weighting (DRW): ones until the epoch, then class-balanced weights.
    w_C = jnp.where(_reweight_on(True, reweight_epoch, epoch), weights_C, 1.0)
    adjusted = _ldam_logits(output["output"], labels_B, margins_C, scale)
    return weighted_cross_entropy(adjusted, labels_B, w_C, mask_B), no_expert_terms()

  return loss_fn


@register("ride", cosine_head=True, fields=(
    "max_m", "reweight", "reweight_epoch", "beta", "base_diversity_temperature",
    "base_loss_factor", "additional_diversity_factor", "reweight_factor"))
def _build_ride(cfg, counts, num_experts, scale):
  constants = dict(
      margins_C=ldam_margins(counts, cfg.max_m), s=scale,
      base_weights_C=class_balanced_weights(counts, cfg.beta),
      diversity_weights_C=ride_diversity_weights(counts, cfg.reweight_factor),
      base_diversity_temperature=cfg.base_diversity_temperature,
      base_loss_factor=cfg.base_loss_factor,
      additional_diversity_factor=cfg.additional_diversity_factor)
  reweight, reweight_epoch = bool(cfg.reweight), int(cfg.reweight_epoch)

  def loss_fn(output, labels_B, mask_B, epoch):
    per_expert = _ride_expert_losses(
        output["logits"], labels_B, reweight_on=_reweight_on(reweight, reweight_epoch, epoch),
        mask_B=mask_B, **constants)
    return per_expert.sum(), per_expert

  return loss_fn
