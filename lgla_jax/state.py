"""The training state: a plain pytree of step, params, model state and optimizer state."""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp


@flax.struct.dataclass
class TrainState:
  step: jax.Array  # global step (int32), also the position in the training data
  params: Any
  model_state: dict  # the model's other collections ({"batch_stats": ...}, or {})
  opt_state: Any

  def variables(self) -> dict:
    """The model's variables as Flax keeps them: ``{"params": ..., **model_state}``."""
    return {"params": self.params, **self.model_state}


def create(model, tx, rng, image_shape, mesh_sharding):
  """Initialise the state of a ``models.Model`` directly with the given sharding (no host
  copy first)."""

  def init():
    params, model_state = model.init(rng, tuple(image_shape))
    return TrainState(step=jnp.zeros([], jnp.int32), params=params, model_state=model_state,
                      opt_state=tx.init(params))

  abstract = jax.eval_shape(init)
  shardings = jax.tree.map(lambda _: mesh_sharding, abstract)
  return jax.jit(init, out_shardings=shardings)()
