"""The jitted train and eval steps of a run, built from a model, a loss and an optimizer.

They know no method by name: the model is a ``models.Model`` and the loss a
``losses.make`` function ``(model_output, labels, mask, epoch) -> (loss, per_expert)``.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import optax

from lgla_jax import metrics as metrics_lib
from lgla_jax import sharding


def normalize(images_u8, mean, std):
  """uint8 images -> float32, per-channel ``(x / 255 - mean) / std`` (on the device)."""
  x = images_u8.astype(jnp.float32) / 255.0
  return (x - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)


@dataclasses.dataclass(frozen=True)
class Steps:
  """The jitted train and eval steps of one run."""

  train: Callable  # (state, batch) -> (state, metrics)
  eval: Callable  # (state, batch) -> per-batch evaluation counts


def make_steps(model, tx, loss_fn, *, mean, std, steps_per_epoch: int, mesh,
               xla_cpu_fast_elementwise: bool = True) -> Steps:
  """Build the sharded, jitted steps. The epoch the loss sees (1-based, for deferred
  re-weighting) is ``state.step // steps_per_epoch + 1``."""
  mean, std = tuple(mean), tuple(std)

  def loss_and_aux(params, model_state, images, labels, mask, epoch):
    out, new_model_state = model.apply(params, model_state, images, train=True, mask=mask)
    loss, per_expert = loss_fn(out, labels, mask, epoch)
    return loss, (new_model_state, per_expert, out["output"])

  def train_step(state, batch):
    # A batch with a "mask" (an epoch's padded incomplete last batch) traces a second
    # version of this step; full batches never pay for masking.
    images = normalize(batch["image"], mean, std)
    labels, mask = batch["label"], batch.get("mask")
    epoch = state.step // steps_per_epoch + 1
    (loss, (model_state, per_expert, output)), grads = jax.value_and_grad(
        loss_and_aux, has_aux=True)(state.params, state.model_state, images, labels, mask, epoch)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    new_state = state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                              model_state=model_state, opt_state=opt_state)
    correct = jnp.argmax(output, -1) == labels
    if mask is not None:
      correct &= mask
    metrics = {"loss": loss, "expert_losses": per_expert, "correct": jnp.sum(correct),
               "grad_norm": jnp.sqrt(sum(jnp.vdot(g, g) for g in jax.tree.leaves(grads)))}
    return new_state, metrics

  def eval_step(state, batch):
    images = normalize(batch["image"], mean, std)
    out, _ = model.apply(state.params, state.model_state, images, train=False)
    return metrics_lib.eval_counts(out["output"], out["logits"], batch["label"], batch["mask"])

  rep = sharding.replicated(mesh)
  data = sharding.batch_sharding(mesh)
  options = sharding.compiler_options(mesh, xla_cpu_fast_elementwise)
  train = jax.jit(train_step, in_shardings=(rep, data), out_shardings=(rep, rep), donate_argnums=0,
                  compiler_options=options)
  evaluate = jax.jit(eval_step, in_shardings=(rep, data), out_shardings=rep,
                     compiler_options=options)
  return Steps(train, evaluate)
