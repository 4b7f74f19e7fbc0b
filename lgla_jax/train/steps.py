"""The jitted train and eval steps of a run, built from a model, a loss and an optimizer.

They know no method by name: the model is a ``models.Model`` and the loss a
``losses.make`` function ``(model_output, labels, mask, epoch) -> (loss, per_expert)``.
Data may be on the host (batches of uint8 images) or on the devices (batches of indices),
and augmentation may run in the step; after that, the step is the same.
"""

from __future__ import annotations

import dataclasses
import functools
import threading
from typing import Callable

import jax
import jax.numpy as jnp
import optax

from lgla_jax.augment import recipes
from lgla_jax.report import metrics as metrics_lib
from lgla_jax.train import sharding, state as state_lib
from lgla_jax.models.layers import dataparallel_slots


def normalize(images_u8, mean, std):
  """uint8 images -> float32, per-channel ``(x / 255 - mean) / std`` (on the device)."""
  x = images_u8.astype(jnp.float32) / 255.0
  return (x - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)


@dataclasses.dataclass(frozen=True)
class Steps:
  """The jitted steps of one run. Batches hold either uint8 ``image`` and ``label`` (the
  host pipeline) or ``index`` into the device-resident data; always a ``mask``."""

  train: Callable  # (state, batch) -> (state, metrics)
  train_chunk: Callable  # (state, chunk of K batches + "active" [K]) -> (state, metrics [K])
  eval: Callable  # (state, batch) -> per-batch evaluation counts
  data_on_device: bool = False  # batches are indices into device-resident data
  lower_eval: Callable | None = None  # (state, batch) -> the eval step's ``jax.stages.Lowered``
  # (state, dispatch) -> the ``Lowered`` training step of one dispatch (a chunk if it has "active")
  lower_train: Callable | None = None


def compile_in_thread(name: str, compile_fn: Callable[[], None]) -> threading.Thread:
  """Start ``compile_fn`` (which lowers and compiles a step) in a daemon thread: XLA
  compiles outside the GIL while the caller goes on, and the program lands in JAX's
  in-memory cache, where the step's own first call finds it. ``join`` before that call.
  A failure is dropped on purpose: the step then compiles, and fails with the real
  error, in the caller's thread."""

  def work():
    try:
      compile_fn()
    except Exception:  # pylint: disable=broad-except
      pass

  thread = threading.Thread(target=work, name=name, daemon=True)
  thread.start()
  return thread


def unrolled_chunks(mesh) -> bool:
  """How a chunk of K steps runs: unrolled, an inactive step computed and dropped (True,
  on CPU), or a ``lax.scan`` with a ``lax.cond`` per step (accelerators). XLA:CPU runs a
  convolution inside a loop or a conditional ~25x slower than at the top of a program
  (jax-ml/jax#12868; a 6-convolution gradient step here: 16 ms alone, 435 ms in a cond,
  451 ms in a scan); on a GPU the loop keeps the program (and its compile) one step long."""
  return sharding.on_cpu(mesh)


@dataclasses.dataclass(frozen=True)
class ReplicaAxis:
  """What differs between the replicas of a replica run (``replicas``): replica k uses
  seed ``seeds[k]`` (data order, augmentation), loss ``losses[loss_index[k]]`` and
  optimizer ``optimizers[optimizer_index[k]]`` (empty: the run's)."""

  seeds: tuple[int, ...]
  losses: tuple[Callable, ...]
  loss_index: tuple[int, ...]
  mode: str = "vmap"  # vmap | sequential (lax.map) | unrolled (see config.replicas.MODES)
  optimizers: tuple = ()  # optax transformations with one state structure
  optimizer_index: tuple[int, ...] = ()


def make_steps(model, tx, loss_fn, *, mean, std, steps_per_epoch: int, mesh,
               xla_cpu_fast_elementwise: bool = True, device_data: dict | None = None,
               augment_config=None, seed: int = 0, replicas: ReplicaAxis | None = None,
               bn_group_size: int = 0) -> Steps:
  """Build the sharded, jitted steps. The epoch the loss sees (1-based, for deferred
  re-weighting) is ``state.step // steps_per_epoch + 1``.

  ``device_data`` (``data.on_device.put``): batches are indices into these arrays.
  ``augment_config``: the configured recipe runs in the step (``augment.recipes``), keyed by
  (``seed``, step, position in the global batch); None: images arrive augmented.
  ``replicas``: the state is stacked (``state.STACKED_AXES``) and the step is vmapped over
  it, each replica with its own batch, seed, loss and optimizer (``loss_fn`` and ``seed``
  unused; ``tx`` where ``replicas.optimizers`` is empty); the
  mesh has a replica axis. Evaluation gives each replica's counts, stacked.
  ``bn_group_size``: the model's BatchNorm groups; a padded batch is rearranged so that
  they hold what DataParallel's GPUs would (``layers.dataparallel_slots``)."""
  mean, std = tuple(mean), tuple(std)
  data = sharding.batch_sharding(mesh)  # within one replica

  def inputs(step, batch, arrays, split, seed=seed):
    if ("index" in batch) != (arrays is not None):
      raise ValueError("this run's data lives on the " + ("devices: batches hold indices"
                       if arrays is not None else "host: batches hold images") +
                       " (feed.train_batches makes the right ones; run.placement.data_on_device)")
    if arrays is None:
      images, labels = batch["image"], batch["label"]
    else:
      images = arrays[f"{split}_images"][batch["index"]]
      labels = arrays[f"{split}_labels"][batch["index"]]
    if split == "train" and augment_config is not None:
      positions = jax.lax.with_sharding_constraint(jnp.arange(labels.shape[0]), data)
      keys = recipes.image_keys(seed, step, positions)
      images = recipes.device_augment(images, keys, augment_config)
    return normalize(images, mean, std), labels

  def loss_and_aux(params, model_state, images, labels, mask, epoch, loss_fn):
    out, new_model_state = model.apply(params, model_state, images, train=True, mask=mask)
    loss, per_expert = loss_fn(out, labels, mask, epoch)
    return loss, (new_model_state, per_expert, out["output"])

  def one_train_step(state, batch, arrays, seed, loss_fn, tx=tx):
    images, labels = inputs(state.step, batch, arrays, "train", seed)
    mask = batch.get("mask")
    if bn_group_size and mask is not None:  # everything after is order-free (masked means)
      source = dataparallel_slots(mask, bn_group_size)
      images, labels, mask = images[source], labels[source], mask[source]
    epoch = state.step // steps_per_epoch + 1
    (loss, (model_state, per_expert, output)), grads = jax.value_and_grad(
        loss_and_aux, has_aux=True)(state.params, state.model_state, images, labels, mask,
                                    epoch, loss_fn)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    new_state = state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                              model_state=model_state, opt_state=opt_state)
    correct = jnp.argmax(output, -1) == labels
    if mask is not None:
      correct &= mask
    metrics = {"loss": loss, "expert_losses": per_expert, "correct": jnp.sum(correct),
               "grad_norm": jnp.sqrt(sum(jnp.vdot(g, g) for g in jax.tree.leaves(grads)))}
    return new_state, metrics

  def one_eval_step(state, batch, arrays=None):
    images, labels = inputs(None, batch, arrays, "test")
    out, _ = model.apply(state.params, state.model_state, images, train=False)
    return metrics_lib.eval_counts(out["output"], out["logits"], labels, batch["mask"])

  if replicas is None:
    train_step = lambda state, batch, arrays=None: one_train_step(state, batch, arrays, seed, loss_fn)
    eval_step = one_eval_step
  else:
    train_step, eval_step = _vmapped(one_train_step, one_eval_step, replicas, tx)
  return _jitted(train_step, _chunk_of(train_step, unrolled_chunks(mesh)), eval_step, mesh,
                 device_data, sharding.compiler_options(mesh, xla_cpu_fast_elementwise))


def _chunk_of(train_step, unroll: bool):
  """K steps in one dispatch; the inactive steps that fill an epoch's last chunk are skipped
  (a scalar cond: nothing runs; ``unroll``, on CPU: a select) and report zeros."""

  def train_chunk(state, chunk, arrays=None):
    batches = {k: v for k, v in chunk.items() if k != "active"}
    first = jax.tree.map(lambda x: x[0], batches)
    shapes = jax.eval_shape(lambda s: train_step(s, first, arrays)[1], state)
    zeros = jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), shapes)

    def body(s, xs):
      batch, active = xs
      if unroll:
        done = train_step(s, batch, arrays)
        return jax.tree.map(lambda new, old: jnp.where(active, new, old), done, (s, zeros))
      return jax.lax.cond(active, lambda t: train_step(t, batch, arrays), lambda t: (t, zeros), s)

    return jax.lax.scan(body, state, (batches, chunk["active"]), unroll=unroll)

  return train_chunk


def _jitted(train_step, train_chunk, eval_step, mesh, device_data, options) -> Steps:
  """The steps jitted with the mesh's shardings, the state donated; device-resident data
  bound as their last argument."""
  rep = sharding.replicated(mesh)
  st = state_lib.shardings(mesh)
  batch_in = sharding.train_batch_sharding(mesh)
  steps_axis = sharding.train_batch_sharding(mesh, chunked=True)
  chunk_in = {"active": rep, "mask": steps_axis,
              **({"index": steps_axis} if device_data else {"image": steps_axis, "label": steps_axis})}
  extra = (rep,) if device_data else ()
  train = jax.jit(train_step, in_shardings=(st, batch_in) + extra, out_shardings=(st, rep),
                  donate_argnums=0, compiler_options=options)
  chunked = jax.jit(train_chunk, in_shardings=(st, chunk_in) + extra, out_shardings=(st, rep),
                    donate_argnums=0, compiler_options=options)
  evaluate = jax.jit(eval_step, in_shardings=(st, sharding.batch_sharding(mesh)) + extra,
                     out_shardings=rep, compiler_options=options)
  arrays = (device_data,) if device_data else ()
  lower_train = lambda state, batch: (chunked if "active" in batch else train).lower(
      state, batch, *arrays)
  lower_eval = lambda state, batch: evaluate.lower(state, batch, *arrays)
  if device_data:
    bind = lambda f: functools.wraps(f)(lambda state, batch: f(state, batch, device_data))
    return Steps(bind(train), bind(chunked), bind(evaluate), data_on_device=True,
                 lower_eval=lower_eval, lower_train=lower_train)
  return Steps(train, chunked, evaluate, lower_eval=lower_eval, lower_train=lower_train)


def _vmapped(one_train_step, one_eval_step, replicas: ReplicaAxis, tx):
  """The train and eval steps of a stacked state: each replica's step with its own batch
  (leading replica axis), seed and loss; evaluation of one shared batch by every replica.
  vmap (``spmd_axis_name`` puts the mesh's replica axis on the vmapped dimension); mode
  ``sequential``: a ``lax.map``, one replica after the other; ``unrolled``: every
  replica's own single-run program side by side in one step (no batched convolutions)."""
  seeds = jnp.asarray(replicas.seeds, jnp.int32)
  index = jnp.asarray(replicas.loss_index, jnp.int32)
  txs = replicas.optimizers or (tx,)
  tx_index = jnp.asarray(replicas.optimizer_index or (0,) * len(replicas.seeds), jnp.int32)
  axes = state_lib.STACKED_AXES

  def replica_loss(k):
    if len(replicas.losses) == 1:
      return replicas.losses[0]
    # (vmapped over replicas, the switch computes every loss and selects: cheap next to
    # the network)
    return lambda *args: jax.lax.switch(k, replicas.losses, *args)

  def replica_tx(k):
    if len(txs) == 1:
      return txs[0]
    # (the same switch: every learning rate's update is computed and one selected)
    update = lambda *args: jax.lax.switch(k, [t.update for t in txs], *args)
    return optax.GradientTransformation(txs[0].init, update)

  def over_replicas(fn, state, *xs, out_state: bool):
    """``fn(single state, *x)`` for every replica; ``xs`` have a leading replica axis."""
    if replicas.mode == "unrolled":
      take = lambda tree, k: jax.tree.map(lambda x: x[k], tree)
      outs = []
      for k in range(len(replicas.seeds)):
        single = state.replace(**{f: take(getattr(state, f), k)
                                  for f in ("params", "model_state", "opt_state")})
        outs.append(fn(single, *(take(x, k) for x in xs)))
      stack = lambda *trees: jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)
      if not out_state:
        return stack(*outs)
      new = [o[0] for o in outs]
      return state.replace(step=state.step + 1, params=stack(*[n.params for n in new]),
                           model_state=stack(*[n.model_state for n in new]),
                           opt_state=stack(*[n.opt_state for n in new])), stack(*[o[1] for o in outs])
    if replicas.mode == "vmap":
      return jax.vmap(fn, in_axes=(axes,) + (0,) * len(xs), out_axes=(axes, 0) if out_state else 0,
                      spmd_axis_name=sharding.REPLICA)(state, *xs)
    stacked = (state.params, state.model_state, state.opt_state)

    def one(args):
      (params, model_state, opt_state), *x = args
      out = fn(state.replace(params=params, model_state=model_state, opt_state=opt_state), *x)
      if not out_state:
        return out
      new, metrics = out
      return (new.params, new.model_state, new.opt_state), metrics

    out = jax.lax.map(one, (stacked, *xs))
    if not out_state:
      return out
    (params, model_state, opt_state), metrics = out
    return state.replace(step=state.step + 1, params=params, model_state=model_state,
                         opt_state=opt_state), metrics

  def train_step(state, batch, arrays=None):
    one = lambda s, b, seed, k, j: one_train_step(s, b, arrays, seed, replica_loss(k), replica_tx(j))
    return over_replicas(one, state, batch, seeds, index, tx_index, out_state=True)

  def eval_step(state, batch, arrays=None):
    return over_replicas(lambda s: one_eval_step(s, batch, arrays), state, out_state=False)

  return train_step, eval_step
