"""Losses as pure jax functions, and the registry that builds a run's loss by name.

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

The official repository's other losses (``model/loss.py``, shared with RIDE: focal,
class-balanced CE, LDAM-DRW, RIDE) live in ``lgla_jax.other_losses`` and register
themselves here; this module imports it last, so ``REGISTRY`` always holds every loss.

``make(loss_config, class_counts, num_experts, scale)`` returns the configured loss as
``(model_output, labels_B, mask_B, epoch) -> (loss, per_expert_losses)``; everything a
loss precomputes (regions, priors, margins, class weights) is built there, once. A new
loss is a builder function decorated with ``@register(name, ...)`` plus its config fields.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from lgla_jax import long_tail


def concrete_counts(class_counts) -> np.ndarray:
  """``class_counts`` as a numpy array; a traced value is refused (losses precompute from it)."""
  if isinstance(class_counts, jax.core.Tracer):
    raise TypeError(
        "class_counts must be concrete (a list or numpy array), not a traced value: inside "
        "jit, compute long_tail.expert_regions / expert_log_priors once outside and call "
        "lgla_expert_losses / aaw_weights_from_regions")
  return np.asarray(class_counts)


def at_least_f32(x):
  """``x`` promoted to at least float32: losses are computed in float32 under bfloat16."""
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
  logits = jax.lax.stop_gradient(at_least_f32(expert_logits_ExBxC))
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
  regions = long_tail.expert_regions(concrete_counts(class_counts), num_experts)
  return aaw_weights_from_regions(expert_logits, labels, regions, scale=scale)


def batch_mean(x_xB, mask_B):
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
  adjusted = at_least_f32(logits) + jnp.asarray(log_priors_ExC, jnp.float32)[:, None, :]
  logp_ExB = _target_values(jax.nn.log_softmax(adjusted, axis=-1), jnp.asarray(labels_B))
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


def per_example_ce(logits_BxC, labels_B):
  """Softmax cross entropy of every example ``[B]``."""
  logp = jax.nn.log_softmax(at_least_f32(logits_BxC), axis=-1)
  return -_target_values(logp[None], jnp.asarray(labels_B))[0]


def cross_entropy(logits_BxC, labels_B, mask_B=None):
  """Mean softmax cross entropy (over the valid samples when ``mask_B`` is given)."""
  return batch_mean(per_example_ce(logits_BxC, labels_B), mask_B)


def logit_adjusted_cross_entropy(logits_BxC, labels_B, class_counts, *, tau=1.0, mask_B=None):
  """Logit-adjusted cross entropy (Menon et al., 2021): CE on ``logits + tau * log prior``."""
  prior = long_tail.class_prior(concrete_counts(class_counts))
  return cross_entropy(at_least_f32(logits_BxC) + tau * jnp.log(prior), labels_B, mask_B)


# --- The registry: a run's loss, found by name ------------------------------------------

# (model_output, labels_B, mask_B or None, epoch) -> (loss, per_expert_losses [E] or [0]).
# ``model_output`` holds "output" [B, C] and "logits" [E, B, C]; ``epoch`` is 1-based.
LossFn = Callable


@dataclasses.dataclass(frozen=True)
class LossSpec:
  """How to build one loss: ``build(loss_config, class_counts, num_experts, scale)``."""

  build: Callable[..., LossFn]
  fields: tuple[str, ...]  # the config.loss fields it reads, besides the name
  min_experts: int  # the fewest experts it works with
  cosine_head: bool  # it needs logits = scale * cosine (angles, margins in cosine units)


REGISTRY: dict[str, LossSpec] = {}


def register(name: str, *, fields=(), min_experts: int = 1, cosine_head: bool = False):
  """Decorator: register a loss builder under ``name``."""

  def add(build):
    REGISTRY[name] = LossSpec(build, tuple(fields), min_experts, cosine_head)
    return build

  return add


def make(loss_config, class_counts, num_experts: int, scale: float) -> LossFn:
  """The configured loss (``loss_config.name`` in ``REGISTRY``) as a pure function, with
  everything it precomputes from the training counts built here, once. ``scale`` is the
  model's logit scale (the cosine classifier's s; 1 for a plain linear head)."""
  spec = REGISTRY.get(loss_config.name)
  if spec is None:
    raise ValueError(f"unknown loss {loss_config.name!r}: one of {sorted(REGISTRY)}")
  return spec.build(loss_config, concrete_counts(class_counts), int(num_experts), float(scale))


_FIELD_RULES = {  # field -> (valid?, what a valid value is)
    "tau": (lambda v: v >= 0, "must be >= 0"),
    "gamma": (lambda v: v >= 0, "must be >= 0"),
    "beta": (lambda v: 0 <= v < 1, "must be in [0, 1)"),
    "max_m": (lambda v: v > 0, "must be positive"),
    "reweight_epoch": (lambda v: v >= -1, "must be -1 (never) or an epoch"),
    "base_diversity_temperature": (lambda v: v > 0, "must be positive"),
    "reweight_factor": (lambda v: 0 <= v <= 1, "must be in [0, 1]"),
}


def problems(loss_config, num_experts: int, cosine_head: bool) -> list[tuple[str, str]]:
  """``(field, problem)`` pairs of a loss config for a model with ``num_experts`` heads
  (``cosine_head``: a cosine classifier); empty when the config is usable."""
  spec = REGISTRY.get(loss_config.name)
  if spec is None:
    return [("loss.name", f"{loss_config.name!r} is not one of {sorted(REGISTRY)}")]
  found = [(f"loss.{f}", f"{rule[1]}, got {loss_config[f]}") for f in spec.fields
           if (rule := _FIELD_RULES.get(f)) and not rule[0](loss_config[f])]
  if num_experts < spec.min_experts:
    found.append(("model.num_experts", f"loss {loss_config.name!r} needs at least "
                  f"{spec.min_experts} experts, got {num_experts}"))
  if spec.cosine_head and not cosine_head:
    found.append(("model.use_norm", f"loss {loss_config.name!r} works on cosine logits "
                  f"(scale * cos): it needs the cosine classifier, model.use_norm=True"))
  return found


def describe(loss_config) -> str:
  """``name(field=value, ...)`` with the fields the configured loss reads."""
  spec = REGISTRY[loss_config.name]
  return f"{loss_config.name}(" + ", ".join(f"{f}={loss_config[f]}" for f in spec.fields) + ")"


def no_expert_terms():
  """The empty per-expert term ``[0]`` of a single-head loss."""
  return jnp.zeros((0,), jnp.float32)


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


# Imported last, for its registrations: everything it uses from here exists by then.
importlib.import_module("lgla_jax.other_losses")
