"""The training state: a plain pytree of step, params, batch_stats and optimizer state."""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp


@flax.struct.dataclass
class TrainState:
  step: jax.Array  # global step (int32), also the position in the training data
  params: Any
  batch_stats: Any
  opt_state: Any


def create(model, tx, rng, image_shape, mesh_sharding):
  """Initialise the state directly with the given sharding (no host copy first)."""

  def init():
    variables = model.init(rng, jnp.zeros((1,) + tuple(image_shape), jnp.float32), train=False)
    params = variables["params"]
    return TrainState(step=jnp.zeros([], jnp.int32), params=params,
                      batch_stats=variables["batch_stats"], opt_state=tx.init(params))

  abstract = jax.eval_shape(init)
  shardings = jax.tree.map(lambda _: mesh_sharding, abstract)
  return jax.jit(init, out_shardings=shardings)()
