"""What every loss shares: shapes, dtypes, masked batch means and cross entropy.

Shapes are in the names: ``E`` experts, ``B`` batch, ``C`` classes. Losses are computed in
(at least) float32 whatever the model's compute dtype, and every batch mean takes the
``mask_B`` of a padded batch into account.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


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


def target_values(x_ExBxC: jax.Array, labels_B: jax.Array) -> jax.Array:
  """``x[e, b, labels[b]]`` -> [E, B]."""
  idx = jnp.broadcast_to(labels_B[None, :, None], x_ExBxC.shape[:2] + (1,))
  return jnp.take_along_axis(x_ExBxC, idx.astype(jnp.int32), axis=-1)[..., 0]


def batch_mean(x_xB, mask_B):
  """Mean over the last (batch) axis, over the valid samples only when ``mask_B`` is given."""
  if mask_B is None:
    return x_xB.mean(axis=-1)
  m = jnp.asarray(mask_B, x_xB.dtype)
  return (x_xB * m).sum(axis=-1) / jnp.maximum(m.sum(), 1.0)


def per_example_ce(logits_BxC, labels_B):
  """Softmax cross entropy of every example ``[B]``."""
  logp = jax.nn.log_softmax(at_least_f32(logits_BxC), axis=-1)
  return -target_values(logp[None], jnp.asarray(labels_B))[0]


def cross_entropy(logits_BxC, labels_B, mask_B=None):
  """Mean softmax cross entropy (over the valid samples when ``mask_B`` is given)."""
  return batch_mean(per_example_ce(logits_BxC, labels_B), mask_B)


def no_expert_terms():
  """The empty per-expert term ``[0]`` of a single-head loss."""
  return jnp.zeros((0,), jnp.float32)
