"""The training state: a plain pytree of step, params, model state and optimizer state.

A replica run stacks R states: every leaf but ``step`` (one step for all) gets a leading
replica axis; ``STACKED_AXES`` is that layout as ``jax.vmap`` axes."""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp

from lgla_jax.train import sharding


@flax.struct.dataclass
class TrainState:
  """What a training step reads and writes (a checkpoint saves it, with its meta)."""
  step: jax.Array  # global step (int32), also the position in the training data
  params: Any
  model_state: dict  # the model's other collections ({"batch_stats": ...}, or {})
  opt_state: Any

  def variables(self) -> dict:
    """The model's variables as Flax keeps them: ``{"params": ..., **model_state}``."""
    return {"params": self.params, **self.model_state}


# vmap axes of a stacked (replica) state: the step is shared, everything else stacked.
STACKED_AXES = TrainState(step=None, params=0, model_state=0, opt_state=0)


def initializer(model, tx, rngs, image_shape, mesh):
  """The jitted ``() -> TrainState`` that ``create`` calls; ``jax.eval_shape`` of it gives
  the state's shapes and shardings, and a later call reuses that trace."""

  def one(rng):
    params, model_state = model.init(rng, tuple(image_shape))
    return params, model_state, tx.init(params)

  def init():
    step = jnp.zeros([], jnp.int32)
    if sharding.has_replicas(mesh):
      return TrainState(step, *jax.vmap(one)(rngs))
    return TrainState(step, *one(rngs))

  return jax.jit(init, out_shardings=shardings(mesh),
                 compiler_options=sharding.init_compiler_options(mesh))


def create(model, tx, rngs, image_shape, mesh):
  """Initialise the state of a ``models.Model`` directly with the mesh's sharding (no host
  copy first). ``rngs``: one key (a single run), or ``[R]`` keys stacked (a replica run on
  a mesh with a replica axis): replica k is initialised exactly as a single run with
  ``rngs[k]``."""
  return initializer(model, tx, rngs, image_shape, mesh)()


def shardings(mesh):
  """The state's sharding as a pytree prefix (for ``jax.jit``): replicated, except the
  stacked leaves of a replica run, split on their leading replica axis."""
  rep = sharding.replicated(mesh)
  if not sharding.has_replicas(mesh):
    return rep
  stacked = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(sharding.REPLICA))
  return TrainState(step=rep, params=stacked, model_state=stacked, opt_state=stacked)


def replica(state, k: int):
  """Replica ``k`` of a stacked state, as a single run's state (host arrays)."""
  return state.replace(**{f: jax.tree.map(lambda x: x[k], getattr(state, f))
                          for f in ("params", "model_state", "opt_state")})
