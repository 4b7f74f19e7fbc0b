"""What a run is made of, built once by ``setup``: the mesh, the data, the network, the loss,
the optimizer, the jitted steps, the initial state and where everything runs (``Placement``).

``setup`` is shared by training (``train.loop``), evaluating a checkpoint
(``train.evaluate_checkpoint``) and the benchmark; ``initial_state`` is its data-free part,
which export uses to rebuild a checkpoint's state from the config saved with it.
"""

from __future__ import annotations

import copy
import dataclasses
import threading

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lgla_jax import errors, losses, models, optim
from lgla_jax.augment import recipes
from lgla_jax.config import from_data, replicas as replicas_config
from lgla_jax.config.validate import validate
from lgla_jax.data import on_device, pipeline, sources
from lgla_jax.data.splits import DataSplits
from lgla_jax.interop import convert, torch_file
from lgla_jax.models import pretrained
from lgla_jax.train import evaluation, feed, replicas, sharding, state as state_lib
from lgla_jax.train.steps import ReplicaAxis, Steps, make_steps


@dataclasses.dataclass(frozen=True)
class Placement:
  """Where a run's data and augmentation live and how its steps are grouped: the automatic
  choices of the config (``None`` / ``0`` / ``"auto"`` fields) made for this mesh and data."""

  data_on_device: bool  # the in-memory images live on the devices, batches gathered there
  augment_on_device: bool  # the recipe runs in the jitted step (file recipes: after the crop)
  steps_per_dispatch: int  # training steps per device call
  replica_mode: str  # how a replica run's step runs over its replicas (config.replicas.MODES)

  def recorded(self, config):
    """A copy of ``config`` with these choices filled in: what checkpoints and reports
    record, and what a resume compares."""
    config = copy.deepcopy(config)
    config.dataset.on_device = self.data_on_device
    config.augment.on_device = self.augment_on_device
    config.steps_per_dispatch = self.steps_per_dispatch
    config.replicas.mode = self.replica_mode
    return config


def resolve_placement(config, splits: DataSplits, mesh) -> Placement:
  """The choices ``config`` leaves automatic: in-memory data under
  ``on_device.AUTO_LIMIT_BYTES`` on the devices (unless augmented on the host); the recipe
  where the data is (in-memory recipes); 1 step per dispatch on CPU, 8 on accelerators;
  replicas unrolled on CPU, vmapped elsewhere (measured: ``config.replicas.MODES``)."""
  size = on_device.nbytes(splits)
  cpu = sharding.on_cpu(mesh)
  in_memory_recipe = not recipes.RECIPES[config.augment.recipe].on_files
  data_on = config.dataset.on_device
  if data_on is None:  # host augmentation needs the images on the host
    data_on = (config.augment.on_device is not False and in_memory_recipe
               and size is not None and size <= on_device.AUTO_LIMIT_BYTES)
  if data_on and size is None:
    raise errors.ConfigError("config.dataset.on_device: this data set's images are files; "
                             "set it to False")
  augment_on = config.augment.on_device
  if augment_on is None:
    augment_on = in_memory_recipe and data_on
  if data_on and not augment_on:
    raise errors.ConfigError("config.augment.on_device: False augments on the host, which "
                             "needs dataset.on_device=False")
  mode = config.replicas.mode
  if mode == "auto":
    mode = "unrolled" if cpu and config.replicas.shards == 1 else "vmap"
  return Placement(bool(data_on), bool(augment_on),
                   config.steps_per_dispatch or (1 if cpu else 8), mode)


@dataclasses.dataclass(frozen=True)
class Run:
  """Everything a run is made of, built once by ``setup``."""

  mesh: jax.sharding.Mesh
  splits: DataSplits
  model: models.Model
  tx: optax.GradientTransformation
  lr_table: np.ndarray  # learning rate of every epoch
  steps_per_epoch: int
  state: state_lib.TrainState  # freshly initialised (or pretrained), placed on the mesh (state.shardings)
  steps: Steps
  config: object  # the config as recorded: ``placement`` filled in (``Placement.recorded``)
  placement: Placement
  replicas: replicas_config.Replicas | None = None  # a replica run's replicas (None: a single run)
  compiling: dict[str, threading.Thread] = dataclasses.field(default_factory=dict)  # ``setup``


@dataclasses.dataclass(frozen=True)
class _Optimizer:
  tx: optax.GradientTransformation
  lr_table: np.ndarray
  per_replica: tuple = ()  # a learning-rate sweep: one optimizer per distinct rate ...
  index: tuple[int, ...] = ()  # ... and which one each replica uses


def _optimizer(config, reps, spe: int) -> _Optimizer:
  """The run's optimizer and per-epoch rates (a replica run with several rates: one each)."""
  tx, lr_table = optim.make_optimizer(config.optim, config.num_epochs, spe)
  if reps and reps.lrs:  # one optimizer per rate; the log shows the first replica's
    made, index = replicas.optimizers(config, reps, spe)
    if len(made) == 1:  # one rate for every replica: the run's optimizer, at that rate
      return _Optimizer(*made[0])
    return _Optimizer(tx, made[index[0]][1], tuple(t for t, _ in made), index)
  return _Optimizer(tx, lr_table)


def _mesh(config, mesh, reps):
  """The mesh of the run: all devices by default; a replica run adds its replica axis."""
  mesh = mesh or sharding.make_mesh()
  validate(config, num_devices=mesh.size)
  if reps and not sharding.has_replicas(mesh):  # the same devices, with a replica axis
    if jax.process_count() > 1 and jax.local_device_count() % reps.shards:
      raise errors.ConfigError(
          f"config.replicas.shards: {reps.shards} must divide each process's "
          f"{jax.local_device_count()} devices (every process holds all replica groups)")
    mesh = sharding.make_mesh(list(mesh.devices.flat), reps.shards)
  return mesh


def _initializer(config, model, tx, reps, mesh):
  """The jitted initial state (``state.initializer``): replica k from seed k."""
  rngs = (jnp.stack([jax.random.PRNGKey(s) for s in reps.seeds]) if reps
          else jax.random.PRNGKey(config.seed))
  size = config.dataset.image_size
  return state_lib.initializer(model, tx, rngs, (size, size, 3), mesh)


def initial_state(config, num_classes: int, num_train: int, mesh=None):
  """``(state, model)``: the state a run of ``config`` starts from (random weights), on
  ``mesh`` (default: one device), without reading any data: what a checkpoint of that
  run restores into."""
  reps = replicas_config.of(config)
  mesh = mesh or sharding.make_mesh(jax.devices()[:1], 1 if reps else None)
  model = models.build(config.model, num_classes, jnp.float32)
  spe = pipeline.steps_per_epoch(num_train, config.batch_size, config.drop_last_batch)
  opt = _optimizer(config, reps, spe)
  return _initializer(config, model, opt.tx, reps, mesh)(), model


def _check_data(config, splits: DataSplits, placement: Placement):
  if config.batch_size > len(splits.train.labels):
    raise errors.ConfigError(f"config.batch_size: {config.batch_size} is larger than the "
                             f"{len(splits.train.labels)} training images; lower it")
  if placement.data_on_device and splits.val is not None:  # (its eval step reads test images)
    raise errors.ConfigError("config.dataset.on_device: device-resident data holds the "
                             "training and test splits only; a validation split needs False")
  size = config.dataset.image_size
  if isinstance(splits.train.images, np.ndarray) and splits.train.images.shape[1:] != (size, size, 3):
    raise errors.ConfigError(f"config.dataset.image_size={size} but the images are "
                             f"{splits.train.images.shape[1:]}")


def _steps(config, placement, splits, mesh, model, opt, reps) -> Steps:
  """The run's jitted steps: its loss (one per distinct tau of a replica run), optimizer,
  data and augmentation placement."""
  if reps:
    loss_fn = None
    fns, index = replicas.loss_functions(config, reps, splits.class_counts,
                                         config.model.num_experts, model.logit_scale)
    replica_axis = ReplicaAxis(reps.seeds, fns, index, mode=placement.replica_mode,
                               optimizers=opt.per_replica, optimizer_index=opt.index)
  else:
    loss_fn = losses.make(config.loss, splits.class_counts, config.model.num_experts,
                          model.logit_scale)
    replica_axis = None
  return make_steps(
      model, opt.tx, loss_fn, mean=config.dataset.mean, std=config.dataset.std,
      steps_per_epoch=pipeline.steps_per_epoch(len(splits.train.labels), config.batch_size,
                                               config.drop_last_batch),
      mesh=mesh, xla_cpu_fast_elementwise=config.xla_cpu_fast_elementwise,
      device_data=on_device.put(splits, mesh) if placement.data_on_device else None,
      augment_config=config.augment if placement.augment_on_device else None,
      seed=config.seed, replicas=replica_axis, bn_group_size=config.model.get("bn_group_size", 0))


def setup(config, mesh=None, splits=None, compile_ahead: bool = False) -> Run:
  """Validate, read the data (unless given), build model, loss, optimizer, steps and state.
  ``compile_ahead``: the training step and the first evaluation's step compile in
  background threads (``Run.compiling``) while the state is made. Fields the config
  leaves to the data are filled first (``config.from_data``; ``Run.config`` records them)."""
  if from_data.unresolved(config):
    validate(config)  # (the other fields, before the data is measured)
    config = from_data.resolve(config, splits.train.images if splits is not None else None)
  reps = replicas_config.of(config)
  mesh = _mesh(config, mesh, reps)
  splits = splits or sources.load(config.dataset)
  placement = resolve_placement(config, splits, mesh)
  config = placement.recorded(config)
  dtype = jnp.bfloat16 if config.dtype == "bfloat16" else jnp.float32
  model = models.build(config.model, splits.num_classes, dtype)
  _check_data(config, splits, placement)
  spe = pipeline.steps_per_epoch(len(splits.train.labels), config.batch_size,
                                 config.drop_last_batch)
  opt = _optimizer(config, reps, spe)
  steps = _steps(config, placement, splits, mesh, model, opt, reps)
  init = _initializer(config, model, opt.tx, reps, mesh)
  run = Run(mesh, splits, model, opt.tx, opt.lr_table, spe, None, steps, config, placement, reps)
  compiling = {}
  if compile_ahead:  # (what the training loop runs first: the training step, then this split)
    run = dataclasses.replace(run, state=jax.eval_shape(init))  # (shapes and shardings only)
    compiling = {"train": feed.compile_in_background(run), "eval": evaluation.compile_in_background(
        steps, run.state, splits.val if splits.val is not None else splits.test, config, mesh)}
  try:
    state = _starting_weights(init(), config, model, reps)
  except BaseException:
    join(compiling)
    raise
  return dataclasses.replace(run, state=state, compiling=compiling)


def _starting_weights(state, config, model, reps):
  """The initial state with the configured pretrained trunk or whole model loaded (no
  tensor larger than the network's is read from ``init_from``)."""
  weights = pretrained.pretrained_file(config.model)
  if weights and not config.model.init_from:
    state = load_weights(state, lambda p, s: model.load_pretrained(p, s, weights), reps)
  if config.model.init_from:
    whole = convert.read_state_dict(
        config.model.init_from, "config.model.init_from: the weights",
        "give an official checkpoint (model_best.pth), a state_dict .pth/.npz or an "
        "lgla_jax.export .safetensors file",
        torch_file.Limits.for_shapes(np.shape(x) for x in jax.tree.leaves(
            (state.params, state.model_state))))
    state = load_weights(state, lambda p, s: convert.load_official_model(
        p, s, whole, config.model.init_from), reps)
  return state


def join(compiling: dict):
  """Wait for background compilations: a thread still in the compiler when the process
  exits (an error, an interrupt) aborts the interpreter."""
  for thread in compiling.values():
    thread.join()


def load_weights(state, load, reps):
  """``load(params, model_state) -> (params, model_state)`` applied to the state (to every
  replica's: whatever the weights do not hold keeps each one's own initialisation)."""
  params, model_state = jax.device_get((state.params, state.model_state))
  if reps is None:
    params, model_state = load(params, model_state)
  else:
    loaded = [load(*jax.tree.map(lambda x, k=k: x[k], (params, model_state)))
              for k in range(reps.size)]
    params, model_state = jax.tree.map(lambda *xs: np.stack(xs), *loaded)
  placed = jax.tree.map(lambda x, ref: jax.device_put(x, ref.sharding), (params, model_state),
                        (state.params, state.model_state))
  return state.replace(params=placed[0], model_state=placed[1])
