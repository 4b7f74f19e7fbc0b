"""SGD with PyTorch semantics and the official per-epoch learning-rate schedules.

The official trainer steps its scheduler once per epoch, so every schedule here is a
float64 table ``lr_per_epoch[i]`` (the rate during epoch i+1, 0-based index i), computed
exactly as torch does, and ``per_step_schedule`` turns a table into an optax schedule.
"""

from __future__ import annotations

import bisect
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax


class TorchSGDState(NamedTuple):
  """``torch_sgd``'s state: the step count and PyTorch's momentum buffer."""
  count: jax.Array  # steps taken so far (int32)
  momentum_buffer: optax.Updates


def torch_sgd(learning_rate, momentum: float = 0.9, nesterov: bool = True,
              weight_decay: float = 0.0) -> optax.GradientTransformation:
  """``torch.optim.SGD`` as an optax transformation (dampening 0).

  ``d = g + weight_decay * p`` for every parameter (BN and classifier weights included, as
  in the official single param group); the momentum buffer starts as the first ``d``
  (``buf = d``, then ``buf = m * buf + d``); the update is ``-lr * (d + m * buf)`` with
  Nesterov, ``-lr * buf`` without. ``learning_rate`` is a float or an optax schedule of the
  step count.
  """
  if nesterov and momentum <= 0:
    raise ValueError("Nesterov momentum requires momentum > 0 (as in torch.optim.SGD)")
  if momentum < 0 or weight_decay < 0:
    raise ValueError(f"momentum and weight_decay must be >= 0, got {momentum}, {weight_decay}")

  def init_fn(params):
    return TorchSGDState(count=jnp.zeros([], jnp.int32),
                         momentum_buffer=jax.tree.map(jnp.zeros_like, params))

  def update_fn(grads, state, params=None):
    if weight_decay and params is None:
      raise ValueError("torch_sgd with weight_decay needs params in update()")
    if weight_decay:
      grads = jax.tree.map(lambda g, p: g + weight_decay * p, grads, params)
    lr = learning_rate(state.count) if callable(learning_rate) else learning_rate
    if momentum:
      first = state.count == 0
      buf = jax.tree.map(lambda b, d: jnp.where(first, d, momentum * b + d),
                         state.momentum_buffer, grads)
      direction = (jax.tree.map(lambda d, b: d + momentum * b, grads, buf)
                   if nesterov else buf)
    else:
      buf, direction = state.momentum_buffer, grads
    updates = jax.tree.map(lambda d: (-lr * d).astype(d.dtype), direction)
    return updates, TorchSGDState(count=optax.safe_increment(state.count), momentum_buffer=buf)

  return optax.GradientTransformation(init_fn, update_fn)


# config.optim.schedule -> the config.optim fields it reads (besides lr)
SCHEDULE_FIELDS = {"warmup_multistep": ("milestones", "gamma", "warmup_epochs"),
                   "cosine": ("cosine_t_max", "cosine_eta_min"),
                   "step": ("step_epochs", "gamma", "warmup_epochs")}
SCHEDULES = tuple(SCHEDULE_FIELDS)


def problems(optim_config) -> list[tuple[str, str]]:
  """``(field, problem)`` pairs of a ``config.optim`` section; empty when usable."""
  o, found = optim_config, []
  if o.schedule not in SCHEDULES:
    found.append(("optim.schedule", f"{o.schedule!r} is not one of {SCHEDULES}"))
  if o.lr <= 0:
    found.append(("optim.lr", f"must be positive, got {o.lr}"))
  if list(o.milestones) != sorted(o.milestones):
    found.append(("optim.milestones", f"must be increasing, got {tuple(o.milestones)}"))
  if o.nesterov and o.momentum <= 0:
    found.append(("optim.nesterov", "Nesterov needs optim.momentum > 0"))
  for field in ("momentum", "weight_decay", "warmup_epochs", "cosine_t_max", "cosine_eta_min"):
    if o[field] < 0:
      found.append((f"optim.{field}", f"must be >= 0, got {o[field]}"))
  if o.gamma <= 0:
    found.append(("optim.gamma", f"must be positive, got {o.gamma}"))
  if len(o.step_epochs) != 2 or not 0 <= o.step_epochs[0] <= o.step_epochs[1]:
    found.append(("optim.step_epochs", f"two epochs, in order, of the step schedule's decays; "
                  f"got {tuple(o.step_epochs)}"))
  return found


def describe(optim_config, lr=None) -> str:
  """``schedule(lr=..., field=value, ...)`` with the fields the configured schedule reads
  (the others are not used); ``lr``: what to show instead of ``optim.lr``."""
  o = optim_config
  shown = [f"lr={o.lr if lr is None else lr}"] + [
      f"{f}={tuple(o[f]) if f in ('milestones', 'step_epochs') else o[f]}"
      for f in SCHEDULE_FIELDS[o.schedule]]
  return f"{o.schedule}({', '.join(shown)})"


def warmup_multistep_lr(base_lr: float, num_epochs: int, milestones=(320, 360),
                        gamma: float = 0.1, warmup_epochs: int = 5,
                        warmup_factor: float = 1.0 / 3) -> np.ndarray:
  """Official ``WarmupMultiStepLR`` (linear warm-up from ``warmup_factor``), per epoch.

  Note that epoch 1 already runs at ``base_lr * warmup_factor``.
  """
  if list(milestones) != sorted(milestones):
    raise ValueError(f"milestones must be increasing, got {list(milestones)}")
  lrs = []
  for e in range(num_epochs):
    factor = 1
    if e < warmup_epochs:
      alpha = float(e) / warmup_epochs
      factor = warmup_factor * (1 - alpha) + alpha
    lrs.append(base_lr * factor * gamma ** bisect.bisect_right(list(milestones), e))
  return np.asarray(lrs, dtype=np.float64)


def cosine_lr(base_lr: float, num_epochs: int, t_max: int, eta_min: float = 0.0) -> np.ndarray:
  """``torch.optim.lr_scheduler.CosineAnnealingLR`` stepped once per epoch (torch's
  recursive form, which differs from the closed form only in the last bits)."""
  if t_max <= 0:
    raise ValueError(f"t_max must be positive, got {t_max}")
  lrs = [float(base_lr)]
  for e in range(1, num_epochs):
    prev = lrs[-1]
    if (e - 1 - t_max) % (2 * t_max) == 0:
      lr = prev + (base_lr - eta_min) * (1 - math.cos(math.pi / t_max)) / 2
    else:
      lr = ((1 + math.cos(math.pi * e / t_max)) / (1 + math.cos(math.pi * (e - 1) / t_max))
            * (prev - eta_min) + eta_min)
    lrs.append(lr)
  return np.asarray(lrs, dtype=np.float64)


def step_lr(base_lr: float, num_epochs: int, step1: int, step2: int, gamma: float = 0.1,
            warmup_epochs: int = 0) -> np.ndarray:
  """The official "CustomLR" (Places-LT): x gamma from ``step1``, x gamma^2 from ``step2``,
  optional linear warm-up ``(1 + e) / warmup_epochs``."""
  lrs = []
  for e in range(num_epochs):
    factor = gamma * gamma if e >= step2 else gamma if e >= step1 else 1
    if e < warmup_epochs:
      factor = factor * float(1 + e) / warmup_epochs
    lrs.append(base_lr * factor)
  return np.asarray(lrs, dtype=np.float64)


def per_step_schedule(lr_per_epoch, steps_per_epoch: int):
  """An optax schedule ``step -> lr`` that holds ``lr_per_epoch[step // steps_per_epoch]``
  (the last value after the table ends)."""
  if steps_per_epoch <= 0:
    raise ValueError(f"steps_per_epoch must be positive, got {steps_per_epoch}")
  table = jnp.asarray(np.asarray(lr_per_epoch, np.float32))

  def schedule(step):
    epoch = jnp.minimum(jnp.asarray(step) // steps_per_epoch, table.shape[0] - 1)
    return table[epoch]

  return schedule


def lr_per_epoch(optim_config, num_epochs: int) -> np.ndarray:
  """The configured schedule's per-epoch learning rates (``config.optim``)."""
  o = optim_config
  if o.schedule == "warmup_multistep":
    return warmup_multistep_lr(o.lr, num_epochs, tuple(o.milestones), gamma=o.gamma,
                               warmup_epochs=o.warmup_epochs)
  if o.schedule == "cosine":
    return cosine_lr(o.lr, num_epochs, o.cosine_t_max or num_epochs, o.cosine_eta_min)
  if o.schedule == "step":
    step1, step2 = o.step_epochs
    return step_lr(o.lr, num_epochs, step1, step2, gamma=o.gamma, warmup_epochs=o.warmup_epochs)
  raise ValueError(f"config.optim.schedule: unknown schedule {o.schedule!r}")


def make_optimizer(optim_config, num_epochs: int, steps_per_epoch: int):
  """``torch_sgd`` with the configured per-epoch schedule; returns (tx, lr_per_epoch)."""
  table = lr_per_epoch(optim_config, num_epochs)
  tx = torch_sgd(per_step_schedule(table, steps_per_epoch), momentum=optim_config.momentum,
                 nesterov=optim_config.nesterov, weight_decay=optim_config.weight_decay)
  return tx, table
