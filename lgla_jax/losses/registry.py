"""The registry of losses: ``config.loss.name`` selects one of ``REGISTRY``.

A loss is a builder ``build(loss_config, class_counts, num_experts, scale)`` registered
with ``@register(name, fields=...)``; it precomputes what it needs from the training counts
(regions, priors, margins, class weights) once and returns the pure function the step
calls. ``problems`` checks the ``config.loss`` fields the chosen loss reads.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

from lgla_jax.losses.common import concrete_counts

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
