"""What differs between the replicas of a replica run, built once per run: one loss per
distinct tau, one optimizer per distinct learning rate, and every replica's batches
stacked on a leading axis (``config.replicas`` describes the replicas)."""

from __future__ import annotations

import copy

import numpy as np

from lgla_jax import losses, optim
from lgla_jax.config.replicas import Replicas


def _per_value(values: tuple, field: str, section, build):
  """``(built, index)``: ``build(copy of section with field = v)`` for each distinct value
  ``v`` of ``values`` (in first-seen order), and which one each replica uses."""
  distinct = sorted(set(values), key=values.index)
  built = []
  for value in distinct:
    changed = copy.deepcopy(section)
    changed[field] = value
    built.append(build(changed))
  return tuple(built), tuple(distinct.index(v) for v in values)


def loss_functions(config, reps: Replicas, class_counts, num_experts: int, scale: float):
  """``(losses, index)``: one loss function per distinct tau (``losses.make``) and which
  one each replica uses."""
  return _per_value(reps.taus, "tau", config.loss,
                    lambda c: losses.make(c, class_counts, num_experts, scale))


def optimizers(config, reps: Replicas, steps_per_epoch: int):
  """``(optimizers, index)``: ``optim.make_optimizer``'s ``(optimizer, per-epoch rates)``
  per distinct learning rate (as ``optim.lr``) and which one each replica uses."""
  return _per_value(reps.lrs, "lr", config.optim,
                    lambda c: optim.make_optimizer(c, config.num_epochs, steps_per_epoch))


def stacked(iterators):
  """Batches of several iterators (one per replica), stacked on a leading replica axis."""
  for batches in zip(*iterators):
    yield {k: np.stack([np.asarray(b[k]) for b in batches]) for k in batches[0] if k != "step"}
