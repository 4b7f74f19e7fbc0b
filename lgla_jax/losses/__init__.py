"""Losses by name: ``make(config.loss, class_counts, num_experts, scale)`` builds a run's loss.

The registry and its checks are in ``losses.registry``; LGLA and the logit-adjusted cross
entropy in ``losses.lgla``; the official repository's other losses (focal, class-balanced
CE, LDAM-DRW, RIDE) in ``losses.baselines``. Both register their losses when imported,
which this package does, so ``REGISTRY`` holds every loss. Every public function of those
modules is importable from here (``losses.lgla_loss``, ``losses.ride_loss``, ...).
"""

from lgla_jax.losses.baselines import (class_balanced_weights, focal_loss, ldam_loss,
                                       ldam_margins, ride_diversity_weights, ride_loss,
                                       weighted_cross_entropy)
from lgla_jax.losses.common import (at_least_f32, batch_mean, concrete_counts, cross_entropy,
                                    no_expert_terms, per_example_ce)
from lgla_jax.losses.lgla import (aaw_weights, aaw_weights_from_regions, lgla_expert_losses,
                                  lgla_loss, logit_adjusted_cross_entropy)
from lgla_jax.losses.registry import REGISTRY, LossFn, LossSpec, describe, make, problems, register

__all__ = ["REGISTRY", "LossFn", "LossSpec", "aaw_weights", "aaw_weights_from_regions",
           "at_least_f32", "batch_mean", "class_balanced_weights", "concrete_counts",
           "cross_entropy", "describe", "focal_loss", "ldam_loss", "ldam_margins",
           "lgla_expert_losses", "lgla_loss", "logit_adjusted_cross_entropy", "make",
           "no_expert_terms", "per_example_ce", "problems", "register",
           "ride_diversity_weights", "ride_loss", "weighted_cross_entropy"]
